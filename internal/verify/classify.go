package verify

import (
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/unicode/norm"
)

// Classify names why a source value and a target value of one column differ. typ is the
// column's type as format_type prints it (source side). Values are PostgreSQL's text output
// in pgshift's fixed session settings (ISO dates, UTC, shortest exact floats); nil is NULL.
//
// The classes are the fixes an operator reaches for: a timestamp column created with a
// lower precision on the target, a text column double-encoded on the way, floats printed
// and re-parsed with too few digits, char(n) padding lost through a varchar, NULLs turned
// into empty strings by a CSV round trip.
func Classify(typ string, src, tgt *string) string {
	switch {
	case src == nil && tgt == nil:
		return ""
	case src == nil || tgt == nil:
		v := src
		if v == nil {
			v = tgt
		}
		if *v == "" || *v == `""` || *v == "{}" {
			return ClassNullEmpty
		}
		return ClassValue
	}
	s, t := *src, *tgt
	if s == t {
		return ""
	}
	base := baseType(typ)
	switch {
	case strings.HasPrefix(base, "timestamp") || strings.HasPrefix(base, "time") || base == "date":
		if timestampPrecision(s, t) {
			return ClassTimestamp
		}
	case base == "real" || base == "double precision":
		if floatRounding(s, t) {
			return ClassFloat
		}
	case base == "numeric":
		if numericRounding(s, t) {
			return ClassNumeric
		}
	}
	if strings.TrimRight(s, " ") == strings.TrimRight(t, " ") {
		return ClassCharPadding
	}
	if encodingDiffers(s, t) {
		return ClassEncoding
	}
	if strings.EqualFold(s, t) {
		return ClassCollation
	}
	return ClassValue
}

// baseType strips modifiers and array brackets: "timestamp(3) without time zone" → "timestamp".
func baseType(typ string) string {
	t := strings.TrimSuffix(typ, "[]")
	if i := strings.IndexByte(t, '('); i >= 0 {
		t = t[:i]
	}
	t = strings.TrimSpace(t)
	switch {
	case strings.HasPrefix(t, "timestamp"):
		return "timestamp"
	case strings.HasPrefix(t, "time"):
		return "time"
	}
	return t
}

// timestampLayouts are the ISO forms PostgreSQL prints with DateStyle = ISO and TimeZone = UTC.
var timestampLayouts = []string{
	"2006-01-02 15:04:05.999999999Z07",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999",
	"2006-01-02",
	"15:04:05.999999999Z07",
	"15:04:05.999999999",
}

func parseTimestamp(s string) (time.Time, bool) {
	s = strings.TrimSuffix(s, " BC")
	for _, l := range timestampLayouts {
		if t, err := time.Parse(l, s); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// timestampPrecision reports whether the two values are the same instant at a coarser precision:
// one is the other truncated or rounded to milliseconds, seconds, or the day.
func timestampPrecision(s, t string) bool {
	a, ok1 := parseTimestamp(s)
	b, ok2 := parseTimestamp(t)
	if !ok1 || !ok2 || a.Equal(b) {
		return false
	}
	for _, d := range []time.Duration{time.Microsecond * 10, time.Microsecond * 100, time.Millisecond,
		10 * time.Millisecond, 100 * time.Millisecond, time.Second, time.Minute, 24 * time.Hour} {
		if a.Truncate(d).Equal(b.Truncate(d)) || a.Round(d).Equal(b.Round(d)) {
			return true
		}
	}
	return false
}

// floatRounding reports whether two float texts are equal to about single precision: the
// target kept fewer significant digits than the source printed.
func floatRounding(s, t string) bool {
	a, err1 := strconv.ParseFloat(s, 64)
	b, err2 := strconv.ParseFloat(t, 64)
	if err1 != nil || err2 != nil || math.IsNaN(a) || math.IsNaN(b) || math.IsInf(a, 0) || math.IsInf(b, 0) {
		return false
	}
	if a == b { // e.g. -0 vs 0, or the same value printed differently
		return true
	}
	scale := math.Max(math.Abs(a), math.Abs(b))
	return math.Abs(a-b) <= scale*1e-6
}

// numericRounding reports whether two numeric texts are the same number, or the same after
// rounding one of them to fewer decimal places.
func numericRounding(s, t string) bool {
	a, ok1 := new(big.Rat).SetString(s)
	b, ok2 := new(big.Rat).SetString(t)
	if !ok1 || !ok2 {
		return false
	}
	if a.Cmp(b) == 0 {
		return true
	}
	// Round the value with more significant decimals to the other's: numeric(p,s) pads with
	// zeros, so 12.350000 has two.
	sd, td := decimals(trimZeros(s)), decimals(trimZeros(t))
	if sd == td {
		return false
	}
	if sd > td {
		return a.FloatString(td) == b.FloatString(td)
	}
	return b.FloatString(sd) == a.FloatString(sd)
}

func trimZeros(s string) string {
	if strings.IndexByte(s, '.') < 0 {
		return s
	}
	return strings.TrimSuffix(strings.TrimRight(s, "0"), ".")
}

func decimals(s string) int {
	if i := strings.IndexByte(s, '.'); i >= 0 {
		return len(s) - i - 1
	}
	return 0
}

// encodingDiffers reports whether the texts are the same characters encoded differently:
// Unicode normalization (NFC vs NFD), UTF-8 decoded as Latin-1/Windows-1252 and re-encoded
// (mojibake), or characters replaced by U+FFFD or '?' in a lossy conversion.
func encodingDiffers(s, t string) bool {
	if norm.NFC.String(s) == norm.NFC.String(t) {
		return true
	}
	if mojibake(s) == t || mojibake(t) == s {
		return true
	}
	return lossyEqual(s, t) || lossyEqual(t, s)
}

// mojibake is what UTF-8 text becomes when its bytes are read as Windows-1252 and written back as UTF-8.
func mojibake(s string) string {
	out, err := charmap.Windows1252.NewDecoder().String(s)
	if err != nil {
		return ""
	}
	return out
}

// lossyEqual reports whether lossy equals orig with some non-ASCII characters replaced by
// U+FFFD or '?', as a conversion to a smaller character set does.
func lossyEqual(orig, lossy string) bool {
	if !strings.ContainsAny(lossy, "\uFFFD?") {
		return false
	}
	o, l := []rune(orig), []rune(lossy)
	if len(o) != len(l) {
		return false
	}
	replaced := false
	for i := range o {
		if o[i] == l[i] {
			continue
		}
		if o[i] >= utf8.RuneSelf && (l[i] == '\uFFFD' || l[i] == '?') {
			replaced = true
			continue
		}
		return false
	}
	return replaced
}

// truncate shortens long values for display, keeping valid UTF-8 and saying how much was cut.
func truncate(v *string, limit int) *string {
	if v == nil || limit <= 0 || len(*v) <= limit {
		return v
	}
	cut := limit
	for cut > 0 && !utf8.RuneStart((*v)[cut]) {
		cut--
	}
	s := (*v)[:cut] + "…(" + strconv.Itoa(len(*v)) + " bytes)"
	return &s
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
