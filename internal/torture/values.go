package torture

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Values are drawn as their PostgreSQL input text and always travel as text parameters cast
// to the column's type ($n::text::type), so no value is ever spliced into SQL.

// scripts are samples of many writing systems and of characters that break naive quoting.
var scripts = []string{
	"plain ascii",
	"Grüße, Jürgen — ½ €",
	"Ελληνικά κείμενα",
	"Кириллица ёЁ",
	"日本語のテキスト、漢字",
	"中文字符测试",
	"한국어 텍스트",
	"العربية نص",
	"עברית טקסט",
	"हिन्दी पाठ",
	"ไทย ข้อความ",
	"emoji 😀👍🏽🇫🇷 👨‍👩‍👧",
	"combining e\u0301 a\u0308 \u200d zero\u200bwidth",
	`quotes ' " \ backslash \\ and "double"`,
	"tab\there\nnewline\r\ncrlf",
	"{braces},[brackets],(parens) NULL null",
	"",
	" leading and trailing spaces ",
	"ǅ ǈ ǋ Σσς ßẞ İı",
	"\u00a0nbsp\u2028line sep\u2029para",
}

// wideRunes are drawn from to build long strings that pglz cannot compress.
var wideRunes = []rune("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789ÄÖÜßéèêàçñøåæœЖЩЯжщяΩΨΦωψφ日本語中文한글😀🎉ؠبتثעבר")

func genText(g *rng) string {
	if g.chance(0.5) {
		return pick(g, scripts)
	}
	var b strings.Builder
	for i, n := 0, g.between(1, 4); i < n; i++ {
		b.WriteString(pick(g, scripts))
		b.WriteString(strconv.Itoa(g.intn(1000)))
	}
	return b.String()
}

// longText is at least min bytes of incompressible text, so it is stored out of line.
func longText(g *rng, min int) string {
	var b strings.Builder
	for b.Len() < min {
		b.WriteRune(wideRunes[g.intn(len(wideRunes))])
	}
	return b.String()
}

func genBytes(g *rng, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		switch g.intn(4) {
		case 0:
			b[i] = 0
		default:
			b[i] = byte(g.intn(256))
		}
	}
	return b
}

func byteaLit(b []byte) string { return `\x` + hex.EncodeToString(b) }

func genInt(g *rng, bits int) string {
	var specials []string
	switch bits {
	case 16:
		specials = []string{"0", "1", "-1", "32767", "-32768"}
	case 32:
		specials = []string{"0", "-1", "2147483647", "-2147483648"}
	default:
		specials = []string{"0", "-1", "9223372036854775807", "-9223372036854775808", "4294967296"}
	}
	if g.chance(0.3) {
		return pick(g, specials)
	}
	v := g.int64()
	switch bits {
	case 16:
		v = int64(int16(v))
	case 32:
		v = int64(int32(v))
	}
	return strconv.FormatInt(v, 10)
}

func digits(g *rng, n int) string {
	var b strings.Builder
	b.WriteByte(byte('1' + g.intn(9)))
	for i := 1; i < n; i++ {
		b.WriteByte(byte('0' + g.intn(10)))
	}
	return b.String()
}

func genNumeric(g *rng) string {
	switch g.intn(10) {
	case 0:
		return pick(g, []string{"NaN", "Infinity", "-Infinity"})
	case 1:
		return "-" + digits(g, g.between(30, 60)) // 30+ digits
	case 2:
		return digits(g, g.between(1, 40)) + "." + digits(g, g.between(1, 40))
	case 3:
		return "0." + strings.Repeat("0", g.between(20, 40)) + digits(g, 3)
	case 4:
		return pick(g, []string{"0", "-0", "0.000", "1e100", "-1.5e-20", "100.10"})
	default:
		return fmt.Sprintf("%d.%0*d", g.int64()%1_000_000_000, g.between(0, 6), g.intn(1000))
	}
}

func genFloat(g *rng, bits int) string {
	specials := []string{"-0", "0", "NaN", "Infinity", "-Infinity", "0.1", "-1e-10"}
	if bits == 32 {
		specials = append(specials, "1.4e-45", "3.4028235e+38", "1e-40", "1.17549435e-38")
	} else {
		specials = append(specials, "5e-324", "1.7976931348623157e+308", "2.2250738585072014e-308", "0.30000000000000004")
	}
	if g.chance(0.35) {
		return pick(g, specials)
	}
	v := (g.float() - 0.5) * 1e6
	if bits == 32 {
		return strconv.FormatFloat(float64(float32(v)), 'g', -1, 32)
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
}

func genDate(g *rng) string {
	if g.chance(0.25) {
		return pick(g, []string{"infinity", "-infinity", "4713-01-01 BC", "0001-01-01 BC", "0001-01-01", "5874897-12-31", "2000-02-29", "1999-12-31"})
	}
	d := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(g.intn(9000), g.intn(12), g.intn(31))
	s := d.Format("2006-01-02")
	if d.Year() <= 4713 && !(d.Month() == 2 && d.Day() == 29) && g.chance(0.1) {
		s += " BC"
	}
	return s
}

// genTimestamp draws a timestamp; rounded says the column has a precision below 6, where the
// largest value would round past the end of the range (PostgreSQL stores it, and then neither
// text nor binary COPY can read it back), so it is left out there.
func genTimestamp(g *rng, tz, rounded bool) string {
	if g.chance(0.25) {
		sp := []string{"infinity", "-infinity", "4713-01-01 00:00:00 BC", "2000-01-01 00:00:00.000001", "1970-01-01 00:00:00"}
		if !rounded {
			sp = append(sp, "294276-12-31 23:59:59.999999")
		}
		s := pick(g, sp)
		if tz && g.chance(0.5) && !strings.Contains(s, "infinity") && !strings.Contains(s, "BC") && !strings.HasPrefix(s, "294276") {
			s += pick(g, []string{"+05:30", "-11:00", "+14:00", "Z"})
		}
		return s
	}
	t := time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(g.between(1000, 3000), g.intn(12), g.intn(28)).
		Add(time.Duration(g.intn(86400)) * time.Second).Add(time.Duration(g.intn(1_000_000)) * time.Microsecond)
	s := t.Format("2006-01-02 15:04:05.999999")
	if tz {
		s += pick(g, []string{"+00", "+05:30", "-08", "+13:45", "-00:30"})
	}
	if g.chance(0.05) {
		s += " BC"
	}
	return s
}

func genInterval(g *rng) string {
	if g.chance(0.3) {
		return pick(g, []string{"0", "-178000000 years", "178000000 years", "1 mon -30 days", "P1Y2M3DT4H5M6.789S", "-1 day +23:59:59.999999", "@ 1 minute ago"})
	}
	return fmt.Sprintf("%d years %d mons %d days %02d:%02d:%02d.%06d", g.between(-500, 500), g.between(-20, 20), g.between(-400, 400),
		g.intn(100), g.intn(60), g.intn(60), g.intn(1_000_000))
}

func genTime(g *rng, tz bool) string {
	s := pick(g, []string{"00:00:00", "23:59:59.999999", "24:00:00", "12:34:56.5"})
	if g.chance(0.6) {
		s = fmt.Sprintf("%02d:%02d:%02d.%06d", g.intn(24), g.intn(60), g.intn(60), g.intn(1_000_000))
	}
	if tz {
		s += pick(g, []string{"+00", "+05:30", "-15:59", "+15:59", "-03"})
	}
	return s
}

func genUUID(g *rng) string {
	if g.chance(0.1) {
		return pick(g, []string{"00000000-0000-0000-0000-000000000000", "ffffffff-ffff-ffff-ffff-ffffffffffff"})
	}
	b := genBytes(g, 16)
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// jsonString renders s as a JSON string literal with some characters escaped as \u.
func jsonString(g *rng, s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r < 0x20:
			fmt.Fprintf(&b, `\u%04x`, r)
		case r > 0x7f && r < 0xffff && g.chance(0.2):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

func genJSON(g *rng, depth int, jsonb bool) string {
	ws := func() string {
		if jsonb {
			return ""
		}
		return pick(g, []string{"", " ", "  ", "\n", "\t"})
	}
	k := g.intn(7)
	if depth > 2 {
		k = g.intn(4)
	}
	switch k {
	case 0:
		return pick(g, []string{"null", "true", "false"})
	case 1:
		return pick(g, []string{"0", "-0", "1e400", "123456789012345678901234567890", "0.1", "-1.5E-7", "3"})
	case 2, 3:
		return jsonString(g, genText(g))
	case 4:
		n := g.intn(4)
		parts := make([]string, n)
		for i := range parts {
			parts[i] = ws() + genJSON(g, depth+1, jsonb) + ws()
		}
		return "[" + strings.Join(parts, ",") + "]"
	default:
		n := g.intn(4)
		parts := make([]string, n)
		for i := range parts {
			key := pick(g, []string{"a", "b", "a", "ключ", "", "k e y", "😀"})
			parts[i] = ws() + jsonString(g, key) + ws() + ":" + ws() + genJSON(g, depth+1, jsonb)
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
}

// arrayElem quotes an element of an array literal.
func arrayElem(s string) string {
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `\"`) + `"`
}

// genArray draws an array literal of up to two dimensions with NULLs.
func genArray(g *rng, elem func() string) string {
	dims := 1
	if g.chance(0.3) {
		dims = 2
	}
	if g.chance(0.1) {
		return "{}"
	}
	n, m := g.between(1, 4), g.between(1, 3)
	one := func() string {
		parts := make([]string, n)
		for i := range parts {
			if g.chance(0.2) {
				parts[i] = "NULL"
			} else {
				parts[i] = arrayElem(elem())
			}
		}
		return "{" + strings.Join(parts, ",") + "}"
	}
	var s string
	if dims == 1 {
		s = one()
		if g.chance(0.15) {
			lo := g.between(-3, 5)
			s = fmt.Sprintf("[%d:%d]=%s", lo, lo+n-1, s)
		}
	} else {
		rows := make([]string, m)
		for i := range rows {
			rows[i] = one()
		}
		s = "{" + strings.Join(rows, ",") + "}"
	}
	return s
}

// recordField quotes a field of a composite literal (NULL is an empty field).
func recordField(s string, null bool) string {
	if null {
		return ""
	}
	return `"` + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), `"`, `""`) + `"`
}

func genRange(g *rng, kind string) string {
	if g.chance(0.1) {
		if kind == "multi" {
			return "{}"
		}
		return "empty"
	}
	lb := pick(g, []string{"[", "("})
	ub := pick(g, []string{"]", ")"})
	switch kind {
	case "int4range":
		a := g.between(-1000, 1000)
		b := a + g.between(1, 100)
		lo, hi := strconv.Itoa(a), strconv.Itoa(b)
		if g.chance(0.15) {
			lo = ""
		}
		if g.chance(0.15) {
			hi = ""
		}
		return lb + lo + "," + hi + ub
	case "numrange":
		a := g.float() * 100
		return fmt.Sprintf("%s%.3f,%.10f%s", lb, a, a+g.float()*100+0.001, ub)
	case "tstzrange":
		hi := pick(g, []string{"infinity", "2100-01-01 00:00:00+00", ""})
		return lb + `"2000-01-01 00:00:00+00",` + quoteRangeBound(hi) + ub
	case "daterange":
		return lb + "-infinity," + pick(g, []string{"2000-01-01", "infinity", ""}) + ub
	default: // int4multirange
		a := g.between(-100, 100)
		return fmt.Sprintf("{[%d,%d), [%d,%d]}", a, a+3, a+10, a+20)
	}
}

func quoteRangeBound(s string) string {
	if s == "" {
		return ""
	}
	return `"` + s + `"`
}

func genInet(g *rng, cidr bool) string {
	if cidr {
		return pick(g, []string{"10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32", "0.0.0.0/0", "::/0", fmt.Sprintf("172.%d.0.0/16", g.intn(256))})
	}
	if g.chance(0.5) {
		return fmt.Sprintf("%d.%d.%d.%d/%d", g.intn(256), g.intn(256), g.intn(256), g.intn(256), g.between(0, 32))
	}
	return pick(g, []string{"::1", "2001:db8::1/64", "fe80::1", "::ffff:1.2.3.4", "192.168.1.1"})
}

func genMac(g *rng, eight bool) string {
	n := 6
	if eight {
		n = 8
	}
	b := genBytes(g, n)
	parts := make([]string, n)
	for i := range b {
		parts[i] = hex.EncodeToString(b[i : i+1])
	}
	return strings.Join(parts, ":")
}

func genBits(g *rng, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteByte(byte('0' + g.intn(2)))
	}
	return b.String()
}

func genMoney(g *rng) string {
	return pick(g, []string{"0", "-92233720368547758.08", "92233720368547758.07", "12.34", "-0.01", fmt.Sprintf("%d.%02d", g.intn(1_000_000), g.intn(100))})
}

func genTSVector(g *rng) string {
	words := []string{"fat", "cat", "rat", "über", "naïve", "don't", "a:b", "日本", "x y"}
	n := g.between(0, 5)
	parts := make([]string, n)
	for i := range parts {
		w := pick(g, words)
		w = "'" + strings.ReplaceAll(w, "'", "''") + "'"
		if g.chance(0.6) {
			w += fmt.Sprintf(":%d%s", g.between(1, 100), pick(g, []string{"", "A", "B", "C", "D"}))
		}
		parts[i] = w
	}
	return strings.Join(parts, " ")
}

func genXML(g *rng) string {
	esc := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	return pick(g, []string{
		"<a>" + esc.Replace(genText(g)) + "</a>",
		`<r xmlns:x="urn:x"><x:e attr="` + esc.Replace(pick(g, scripts)) + `"/></r>`,
		"text only " + esc.Replace(pick(g, scripts)),
		"<a/><b>two roots</b>",
		"<!-- comment --><c><![CDATA[<not markup>]]></c>",
		"",
	})
}

func genPoint(g *rng) string {
	if g.chance(0.2) {
		return pick(g, []string{"(0,0)", "(-0,0)", "(NaN,1)", "(Infinity,-Infinity)", "(1e300,-1e-300)"})
	}
	return fmt.Sprintf("(%s,%s)", strconv.FormatFloat((g.float()-0.5)*1000, 'g', -1, 64), strconv.FormatFloat((g.float()-0.5)*1000, 'g', -1, 64))
}
