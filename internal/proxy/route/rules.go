package route

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net/netip"
	"path"
	"strings"
)

// KeyKind names what a rule hashes to pick its percentage of sessions.
type KeyKind string

const (
	KeyUser            KeyKind = "user"
	KeyApplicationName KeyKind = "application_name"
	KeyClientAddress   KeyKind = "client_address"
	// KeyParam hashes a startup parameter named by Rule.KeyParam (e.g. a tenant id in "options").
	KeyParam KeyKind = "param"
)

// Rule moves reads of matching sessions to the target. Every non-empty condition must hold;
// patterns use shell wildcards (* ? [..]).
type Rule struct {
	Name         string
	Users        []string
	Databases    []string
	Applications []string
	Addresses    []netip.Prefix
	// Tables, when set, must match every table a statement reads: "table" patterns match that
	// name in any schema; "schema.table" patterns only tables the statement qualifies with a
	// schema, because where an unqualified name resolves depends on the session's search_path.
	Tables []string
	// Percent of session keys (0–100, fractions allowed) whose reads this rule sends to the target.
	Percent float64
	Key     KeyKind
	// KeyParam is the startup parameter hashed when Key is KeyParam.
	KeyParam string
}

// Validate checks a rule's fields.
func (r Rule) Validate() error {
	if r.Name == "" {
		return fmt.Errorf("routing rule without a name: every rule needs one (it names the route in metrics and seeds its hash)")
	}
	if r.Percent < 0 || r.Percent > 100 {
		return fmt.Errorf("routing rule %q: percent must be between 0 and 100, got %v", r.Name, r.Percent)
	}
	switch r.Key {
	case "", KeyUser, KeyApplicationName, KeyClientAddress:
	case KeyParam:
		if r.KeyParam == "" {
			return fmt.Errorf("routing rule %q: key param needs key_param, the startup parameter to hash", r.Name)
		}
	default:
		return fmt.Errorf("routing rule %q: key %q: want user, application_name, client_address or param", r.Name, r.Key)
	}
	for _, p := range append(append(append(append([]string{}, r.Users...), r.Databases...), r.Applications...), r.Tables...) {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("routing rule %q: pattern %q: %w", r.Name, p, err)
		}
	}
	return nil
}

// Session is what the rules know about a client session.
type Session struct {
	User, Database, ApplicationName string
	ClientAddr                      netip.Addr
	Params                          map[string]string
}

// Rules is an ordered rule list; the first rule that matches a statement decides.
type Rules struct{ rules []Rule }

// NewRules validates and returns the rules.
func NewRules(rules []Rule) (*Rules, error) {
	for _, r := range rules {
		if err := r.Validate(); err != nil {
			return nil, err
		}
	}
	return &Rules{rules: append([]Rule(nil), rules...)}, nil
}

// List returns the rules.
func (rs *Rules) List() []Rule { return append([]Rule(nil), rs.rules...) }

// SessionRoutes are the rules that apply to one session, with the session's hash decided once.
type SessionRoutes struct {
	matches []sessionRule
}

type sessionRule struct {
	rule   *Rule
	target bool // the session's key falls in the rule's percentage
}

// ForSession evaluates the session conditions of every rule once.
func (rs *Rules) ForSession(s Session) *SessionRoutes {
	sr := &SessionRoutes{}
	for i := range rs.rules {
		r := &rs.rules[i]
		if !matchAny(r.Users, s.User) || !matchAny(r.Databases, s.Database) || !matchAny(r.Applications, s.ApplicationName) {
			continue
		}
		if len(r.Addresses) > 0 && !inPrefixes(r.Addresses, s.ClientAddr) {
			continue
		}
		sr.matches = append(sr.matches, sessionRule{rule: r, target: InPercent(r.Name, KeyOf(r, s), r.Percent)})
	}
	return sr
}

// Decision is where the rules send one read-only statement.
type Decision struct {
	Rule   string // "" when no rule matched
	Target bool
}

// Decide picks the first rule whose table condition holds for the statement's tables.
func (sr *SessionRoutes) Decide(tables []string) Decision {
	if sr == nil {
		return Decision{}
	}
	for _, m := range sr.matches {
		if len(m.rule.Tables) > 0 && !allTablesMatch(m.rule.Tables, tables) {
			continue
		}
		return Decision{Rule: m.rule.Name, Target: m.target}
	}
	return Decision{}
}

// KeyOf returns the session key a rule hashes.
func KeyOf(r *Rule, s Session) string {
	switch r.Key {
	case KeyApplicationName:
		return s.ApplicationName
	case KeyClientAddress:
		if s.ClientAddr.IsValid() {
			return s.ClientAddr.Unmap().String()
		}
		return ""
	case KeyParam:
		return s.Params[r.KeyParam]
	}
	return s.User
}

// InPercent reports whether key falls in the first percent of the hash space of rule name. The
// hash is SHA-256 of the rule name and the key, so the answer is the same in every process, on
// every machine and after restarts (unlike a language's randomised string hash), and two rules
// pick independent sets of keys.
func InPercent(name, key string, percent float64) bool {
	if percent <= 0 {
		return false
	}
	if percent >= 100 {
		return true
	}
	h := sha256.Sum256([]byte(name + "\x00" + key))
	bucket := binary.BigEndian.Uint64(h[:8]) % 1_000_000
	return float64(bucket) < percent*10_000
}

func matchAny(patterns []string, s string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if ok, _ := path.Match(p, s); ok {
			return true
		}
	}
	return false
}

func inPrefixes(ps []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// allTablesMatch reports whether every table read matches one of the patterns. A statement that
// reads no table (SELECT 1) matches no table rule.
func allTablesMatch(patterns, tables []string) bool {
	if len(tables) == 0 {
		return false
	}
	for _, t := range tables {
		if !tableMatches(patterns, t) {
			return false
		}
	}
	return true
}

func tableMatches(patterns []string, table string) bool {
	schema, name, qualified := strings.Cut(table, ".")
	if !qualified {
		name, schema = schema, ""
	}
	for _, p := range patterns {
		ps, pn, pq := strings.Cut(p, ".")
		if !pq {
			pn, ps = ps, ""
		}
		if ok, _ := path.Match(pn, name); !ok {
			continue
		}
		if ps == "" {
			return true
		}
		// A schema-qualified pattern matches only tables the statement qualifies: which schema
		// an unqualified name resolves to depends on the session's search_path.
		if schema == "" {
			continue
		}
		if ok, _ := path.Match(ps, schema); ok {
			return true
		}
	}
	return false
}
