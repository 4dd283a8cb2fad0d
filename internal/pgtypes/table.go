package pgtypes

import (
	"strings"
)

// TableID names a relation by schema and name, exactly as stored in the catalog (case kept).
type TableID struct {
	Schema string
	Name   string
}

// QuoteIdent quotes one identifier the way PostgreSQL's quote_ident does for any input:
// always double-quoted, embedded quotes doubled, so mixed case, spaces and reserved words survive.
func QuoteIdent(s string) string {
	return `"` + strings.ReplaceAll(s, `"`, `""`) + `"`
}

// Sanitize returns the fully quoted "schema"."name" form, safe to splice into SQL.
func (t TableID) Sanitize() string {
	return QuoteIdent(t.Schema) + "." + QuoteIdent(t.Name)
}

// String returns a readable schema.name for logs and reports (quoted only where needed).
func (t TableID) String() string {
	return maybeQuote(t.Schema) + "." + maybeQuote(t.Name)
}

// maybeQuote leaves plain lower-case identifiers alone and quotes everything else,
// so reports read naturally but stay unambiguous.
func maybeQuote(s string) string {
	if s == "" {
		return `""`
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r == '_':
		case r >= '0' && r <= '9' && i > 0:
		default:
			return QuoteIdent(s)
		}
	}
	return s
}

// QuoteIdents quotes and comma-joins a list of column names.
func QuoteIdents(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = QuoteIdent(n)
	}
	return strings.Join(q, ", ")
}

// TruncateOnly is the statement that empties exactly the tables ids, none of their
// inheritance children: ONLY binds to one name in a TRUNCATE list, so every name gets its own
// ("TRUNCATE ONLY a, b" empties b's children too).
func TruncateOnly(ids []TableID) string {
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = "ONLY " + id.Sanitize()
	}
	return "TRUNCATE " + strings.Join(names, ", ")
}
