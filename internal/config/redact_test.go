package config

import (
	"net/url"
	"strings"
	"testing"
)

// TestRedactForeignSchemes: a DSN whose scheme is mistyped or foreign is the one that fails to
// parse and gets echoed in an error; it must lose its password like a valid one.
func TestRedactForeignSchemes(t *testing.T) {
	cases := []string{
		"postgress://app:Tr0ub4dor@db:5432/prod",
		"Postgres://app:Tr0ub4dor@db/prod",
		"POSTGRESQL://app:Tr0ub4dor@db/prod",
		"postgresql+psycopg2://app:Tr0ub4dor@db/prod",
		"jdbc:postgresql://app:Tr0ub4dor@db/prod",
		"postgres://app:Tr0ub4dor@db/prod@weird",
		"postgres://app:Tr0u@b4dor@db/prod",
		"postgres://app:Tr0/ub4dor@db/prod",
		"error: cannot parse `postgress://app:Tr0ub4dor@db/prod`: bad scheme",
		`{"dsn":"postgres://app:Tr0ub4dor@db/prod"}`,
		"host=db password='Tr0ub4dor",
		"host=db password=Tr0ub4dor",
		"postgres://db/prod?sslmode=disable&password=Tr0ub4dor",
	}
	for _, dsn := range cases {
		got := RedactDSN(dsn)
		for _, part := range []string{"Tr0ub4dor", "Tr0u@b4dor", "Tr0/ub4dor", "b4dor"} {
			if strings.Contains(got, part) {
				t.Errorf("RedactDSN(%q) = %q still shows %q", dsn, got, part)
			}
		}
		if !strings.Contains(got, "db") && !strings.HasSuffix(dsn, "@weird") { // hiding too much is allowed there
			t.Errorf("RedactDSN(%q) = %q lost the host", dsn, got)
		}
		if sec := Secrets(dsn); len(sec) == 0 {
			t.Errorf("Secrets(%q) found no password", dsn)
		}
	}
	for _, dsn := range []string{"postgres://app@db/prod", "host=db user=app", "PGPASSWORD is not set"} {
		if got := RedactDSN(dsn); got != dsn {
			t.Errorf("no password in %q, but it became %q", dsn, got)
		}
		if PasswordInDSN(dsn) {
			t.Errorf("PasswordInDSN(%q) = true", dsn)
		}
	}
	if !PasswordInDSN("postgres://a:b@h/d") || !PasswordInDSN("host=h password=x") {
		t.Error("PasswordInDSN missed a password")
	}
}

// FuzzRedact: whatever the scheme, user, password and rest, the redaction of a DSN never holds
// its password, and neither does a message scrubbed with its Secrets.
func FuzzRedact(f *testing.F) {
	f.Add("postgres", "app", "s3cret!", "db:5432/prod?sslmode=require", false)
	f.Add("postgress", "app", "p@ss:w/rd", "db/prod", false)
	f.Add("Postgresql+psycopg2", "u", "x y z", "h", true)
	f.Add("postgres", "", "p%40ss", "h/d", false)
	f.Fuzz(func(t *testing.T, scheme, user, pass, rest string, kv bool) {
		if len(pass) < 4 || strings.ContainsAny(pass, "\x00") || strings.Contains(scheme+user+rest, pass) ||
			strings.Contains(pass, "xxxxx") {
			return
		}
		var dsn string
		if kv {
			if strings.ContainsAny(pass, `'\`) || strings.ContainsAny(rest, "'\\") {
				return
			}
			dsn = "host=" + strings.Fields(rest + " h")[0] + " user=app password='" + pass + "' dbname=d"
		} else {
			if !validScheme(scheme) || strings.ContainsAny(user, "/@: \t\n\r\v\f\"") || strings.ContainsAny(pass, " \t\n\r\v\f\"\u0085\u00a0") ||
				strings.ContainsAny(rest, " \t\n\r\v\f\"@\u0085\u00a0") {
				return
			}
			dsn = scheme + "://" + user + ":" + pass + "@" + rest
		}
		// The password must occur exactly once, in its place, for its absence to mean anything.
		if strings.Count(dsn, pass) != 1 || strings.Contains("connect  failed: password  rejected xxxxx", pass) {
			return
		}
		got := RedactDSN(dsn)
		if strings.Contains(got, pass) {
			t.Fatalf("RedactDSN(%q) = %q holds the password %q", dsn, got, pass)
		}
		msg := Scrub("connect "+dsn+" failed: password "+pass+" rejected", Secrets(dsn))
		if strings.Contains(msg, pass) {
			t.Fatalf("Scrub left the password %q in %q", pass, msg)
		}
		if d, err := url.PathUnescape(pass); err == nil && len(d) >= 4 && strings.Contains(msg, d) && !strings.Contains("connect failed: password rejected xxxxx", d) {
			t.Fatalf("Scrub left the decoded password %q in %q", d, msg)
		}
	})
}

func validScheme(s string) bool {
	if s == "" || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '+' || r == '.' || r == '-') {
			return false
		}
	}
	return true
}
