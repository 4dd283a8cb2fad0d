package db

import (
	"maps"
	"slices"
	"strings"
)

// textSettings fix every setting that changes how a value prints as text, or how its text is
// read back, so that every pgshift session — the copy's COPY on both sides, the replication
// session the walsender renders changes in, the applier's target session, verify's hashing —
// renders a value identically, whatever the servers' and roles' defaults:
//
//   - TimeZone UTC and DateStyle ISO: timestamps and dates print the same on both sides;
//   - IntervalStyle postgres: intervals print in the one style every server reads back;
//   - extra_float_digits 3: floats print exactly (shortest exact form on PostgreSQL 12+,
//     all 17 digits before, which round-trips too);
//   - bytea_output hex;
//   - lc_monetary C: money prints and parses alike (its text depends on it);
//   - xmloption content: every xml value the source holds is accepted (pg_dump sets it too);
//   - search_path pg_catalog: reg* values (regclass, regtype, ...) print schema-qualified and
//     resolve the same names on the other side, whatever either side's path is.
var textSettings = map[string]string{
	"TimeZone":           "UTC",
	"DateStyle":          "ISO, YMD",
	"IntervalStyle":      "postgres",
	"extra_float_digits": "3",
	"bytea_output":       "hex",
	"lc_monetary":        "C",
	"xmloption":          "content",
	"search_path":        "pg_catalog",
}

// TextSettings returns the settings under which values render identically in every pgshift
// session (see textSettings), as startup parameters. Each call returns a new map.
func TextSettings() map[string]string { return maps.Clone(textSettings) }

// SetTextSettings returns the SET statements (SET LOCAL when local) that apply TextSettings
// on an open session, in a fixed order.
func SetTextSettings(local bool) []string {
	verb := "SET "
	if local {
		verb = "SET LOCAL "
	}
	var out []string
	for _, k := range slices.Sorted(maps.Keys(textSettings)) {
		out = append(out, verb+k+" = '"+strings.ReplaceAll(textSettings[k], "'", "''")+"'")
	}
	return out
}
