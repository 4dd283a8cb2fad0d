package torture

import (
	"fmt"
	"strconv"
	"strings"
)

// colType is a column type the generator can use, with its value generator. Values are
// PostgreSQL input text; nil-ness (NULL) is decided by the caller.
type colType struct {
	class string // generator class that enables it
	sql   string // the type as written in DDL and in parameter casts (schema-qualified for user types)
	gen   func(g *rng) string
	// long, when set, draws a value big enough to be TOASTed out of line.
	long func(g *rng) string
}

// keyType is a type a key column can have; fromN maps the row number to a unique key value.
type keyType struct {
	sql   string
	fromN func(n int64) string
}

// builtinTypes lists the column types of the built-in families that classes switch on.
func builtinTypes(cl Classes, s *Schema) []*colType {
	all := []*colType{
		{class: "int", sql: "int2", gen: func(g *rng) string { return genInt(g, 16) }},
		{class: "int", sql: "int4", gen: func(g *rng) string { return genInt(g, 32) }},
		{class: "int", sql: "int8", gen: func(g *rng) string { return genInt(g, 64) }},
		{class: "numeric", sql: "numeric", gen: genNumeric},
		{class: "numeric", sql: "numeric(40,20)", gen: func(g *rng) string {
			if g.chance(0.2) {
				return pick(g, []string{"NaN", "0", "-0.00000000000000000001", "99999999999999999999.99999999999999999999"})
			}
			return fmt.Sprintf("%d.%s", g.int64()%1_000_000_000_000, digits(g, 20))
		}},
		{class: "float", sql: "float4", gen: func(g *rng) string { return genFloat(g, 32) }},
		{class: "float", sql: "float8", gen: func(g *rng) string { return genFloat(g, 64) }},
		{class: "text", sql: "text", gen: genText, long: func(g *rng) string { return longText(g, g.between(2100, 12000)) }},
		{class: "text", sql: "varchar(40)", gen: func(g *rng) string { return truncRunes(genText(g), 40) }},
		{class: "text", sql: "char(12)", gen: func(g *rng) string { return truncRunes(pick(g, scripts), 10) + pick(g, []string{"", " ", "  "}) }},
		{class: "bytea", sql: "bytea", gen: func(g *rng) string { return byteaLit(genBytes(g, g.between(0, 40))) },
			long: func(g *rng) string { return byteaLit(genBytes(g, g.between(2100, 9000))) }},
		{class: "bool", sql: "bool", gen: func(g *rng) string { return pick(g, []string{"t", "f"}) }},
		{class: "datetime", sql: "date", gen: genDate},
		{class: "datetime", sql: "timestamp", gen: func(g *rng) string { return genTimestamp(g, false, false) }},
		{class: "datetime", sql: "timestamptz", gen: func(g *rng) string { return genTimestamp(g, true, false) }},
		{class: "datetime", sql: "timestamp(0)", gen: func(g *rng) string { return genTimestamp(g, false, true) }},
		{class: "interval", sql: "interval", gen: genInterval},
		{class: "time", sql: "time", gen: func(g *rng) string { return genTime(g, false) }},
		{class: "time", sql: "timetz", gen: func(g *rng) string { return genTime(g, true) }},
		{class: "uuid", sql: "uuid", gen: genUUID},
		{class: "json", sql: "json", gen: func(g *rng) string { return genJSON(g, 0, false) }},
		{class: "json", sql: "jsonb", gen: func(g *rng) string { return genJSON(g, 0, true) },
			long: func(g *rng) string { return jsonString(g, longText(g, g.between(2100, 6000))) }},
		{class: "array", sql: "int4[]", gen: func(g *rng) string { return genArray(g, func() string { return genInt(g, 32) }) }},
		{class: "array", sql: "text[]", gen: func(g *rng) string { return genArray(g, func() string { return genText(g) }) }},
		{class: "array", sql: "numeric[]", gen: func(g *rng) string { return genArray(g, func() string { return genNumeric(g) }) }},
		{class: "array", sql: "timestamptz[]", gen: func(g *rng) string { return genArray(g, func() string { return genTimestamp(g, true, false) }) }},
		{class: "range", sql: "int4range", gen: func(g *rng) string { return genRange(g, "int4range") }},
		{class: "range", sql: "numrange", gen: func(g *rng) string { return genRange(g, "numrange") }},
		{class: "range", sql: "tstzrange", gen: func(g *rng) string { return genRange(g, "tstzrange") }},
		{class: "range", sql: "daterange", gen: func(g *rng) string { return genRange(g, "daterange") }},
		{class: "range", sql: "int4multirange", gen: func(g *rng) string { return genRange(g, "multi") }},
		{class: "net", sql: "inet", gen: func(g *rng) string { return genInet(g, false) }},
		{class: "net", sql: "cidr", gen: func(g *rng) string { return genInet(g, true) }},
		{class: "net", sql: "macaddr", gen: func(g *rng) string { return genMac(g, false) }},
		{class: "net", sql: "macaddr8", gen: func(g *rng) string { return genMac(g, true) }},
		{class: "bit", sql: "bit(8)", gen: func(g *rng) string { return genBits(g, 8) }},
		{class: "bit", sql: "varbit(24)", gen: func(g *rng) string { return genBits(g, g.between(0, 24)) }},
		{class: "money", sql: "money", gen: genMoney},
		{class: "tsvector", sql: "tsvector", gen: genTSVector},
		{class: "tsvector", sql: "tsquery", gen: func(g *rng) string {
			return pick(g, []string{"fat & rat", "'über' | !cat", "a:* <-> b", "'x y' & z:AB"})
		}},
		{class: "xml", sql: "xml", gen: genXML},
		{class: "point", sql: "point", gen: genPoint},
		{class: "oid", sql: "oid", gen: func(g *rng) string { return strconv.FormatUint(uint64(uint32(g.uint64())), 10) }},
		{class: "oid", sql: "pg_lsn", gen: func(g *rng) string { return fmt.Sprintf("%X/%X", uint32(g.uint64()), uint32(g.uint64())) }},
		{class: "oid", sql: `"char"`, gen: func(g *rng) string { return pick(g, []string{"a", "Z", "\\", " ", "é"}) }},
		{class: "oid", sql: "name", gen: func(g *rng) string { return truncBytes(genText(g), 63) }},
		{class: "reg", sql: "regclass", gen: func(g *rng) string { return s.regclassValue(g) }},
		{class: "reg", sql: "regtype", gen: func(g *rng) string {
			return pick(g, append([]string{"integer", "text[]", "timestamp with time zone", "pg_catalog.numeric"}, s.userTypeNames()...))
		}},
		{class: "reg", sql: "regprocedure", gen: func(g *rng) string {
			return pick(g, []string{"now()", "lower(text)", "pg_catalog.md5(text)", "array_length(anyarray,integer)"})
		}},
		{class: "reg", sql: "regnamespace", gen: func(g *rng) string { return pick(g, append([]string{"public", "pg_catalog"}, quoteAll(s.Schemas)...)) }},
		{class: "reg", sql: "regrole", gen: func(g *rng) string { return pick(g, []string{"postgres", ownerRole}) }},
		{class: "reg", sql: "regconfig", gen: func(g *rng) string { return pick(g, []string{"english", "simple", "pg_catalog.german"}) }},
		{class: "reg", sql: "regoperator", gen: func(g *rng) string {
			return pick(g, []string{"+(integer,integer)", "||(text,text)", "=(bigint,bigint)"})
		}},
		{class: "aclitem", sql: "aclitem", gen: func(g *rng) string {
			return pick(g, []string{"postgres=arwdDxt/postgres", "=r/postgres", ownerRole + "=r*w/postgres", "postgres=U/postgres"})
		}},
		{class: "aclitem", sql: "aclitem[]", gen: func(g *rng) string { return `{postgres=arwdDxt/postgres,=r/postgres}` }},
	}
	var out []*colType
	for _, t := range all {
		if cl.On(t.class) {
			out = append(out, t)
		}
	}
	return out
}

// keyTypes are the types key columns are drawn from; each maps a row number to a unique value.
func keyTypes(cl Classes) []keyType {
	out := []keyType{
		{sql: "int8", fromN: func(n int64) string { return strconv.FormatInt(n, 10) }},
		{sql: "int4", fromN: func(n int64) string { return strconv.FormatInt(n, 10) }},
	}
	if cl.On("text") {
		out = append(out,
			keyType{sql: "text", fromN: func(n int64) string { return keyPrefixes[n%int64(len(keyPrefixes))] + strconv.FormatInt(n, 10) }},
			keyType{sql: "varchar(30)", fromN: func(n int64) string { return "k" + strconv.FormatInt(n, 36) + " Ω" }})
	}
	if cl.On("uuid") {
		out = append(out, keyType{sql: "uuid", fromN: func(n int64) string { return fmt.Sprintf("%08x-1234-4abc-8def-%012x", n*2654435761%(1<<32), n) }})
	}
	if cl.On("numeric") {
		out = append(out, keyType{sql: "numeric", fromN: func(n int64) string { return fmt.Sprintf("%d.%030d", n, n) }})
	}
	if cl.On("datetime") {
		out = append(out,
			keyType{sql: "date", fromN: func(n int64) string { return dateFromDays(n) }},
			keyType{sql: "timestamptz", fromN: func(n int64) string { return tstzFromN(n) }})
	}
	if cl.On("bytea") {
		out = append(out, keyType{sql: "bytea", fromN: func(n int64) string { return fmt.Sprintf(`\x00%016x00`, n) }})
	}
	return out
}

// keyPrefixes make text keys whose byte order differs from most collations' order.
var keyPrefixes = []string{"a", "B", "é", "Z", "ß", "日", "a b", "_", "Ä", "z"}

func truncRunes(s string, n int) string {
	r := []rune(s)
	if len(r) > n {
		r = r[:n]
	}
	return string(r)
}

func truncBytes(s string, n int) string {
	for len(s) > n {
		r := []rune(s)
		s = string(r[:len(r)-1])
	}
	return s
}

func quoteAll(xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = qi(x)
	}
	return out
}

// qi quotes an identifier (the harness's own, so a quoting bug in pgshift cannot hide).
func qi(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// ql quotes a string literal; used only for the harness's own fixed DDL text (labels, defaults).
func ql(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
