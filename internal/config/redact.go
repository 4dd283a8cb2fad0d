package config

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// Redaction works on the shape of a connection string, not on whether it is valid: a mistyped
// scheme (postgress://, Postgres://, postgresql+psycopg2://) is exactly the DSN that fails to
// parse and gets echoed in an error, so it must be redacted as carefully as a correct one.

// urlUserinfo matches scheme://user:password@ anywhere in a text, for any scheme and any case.
// The password runs to the LAST '@' before the next whitespace or double quote: a raw '@', ':'
// or '/' typed into a password is hidden with it. That may hide more than the password (a later
// '@' in the same word); hiding too much is the safe side.
var urlUserinfo = regexp.MustCompile(`(?i)\b([a-z][a-z0-9+.\-]*://)([^\s/@:"]*):([^\s"]*)@`)

// queryPassword matches password=... as a URL query parameter.
var queryPassword = regexp.MustCompile(`(?i)([?&]password=)([^&\s#]*)`)

// kvPassword matches password=... in keyword/value connection strings, quoted or not: at the
// start or after a separator, so a URL's ?password= (queryPassword's) is not taken twice.
var kvPassword = regexp.MustCompile(`(?i)((?:^|[\s,;(])password\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)`)

const hidden = "xxxxx"

// RedactDSN returns dsn with any password replaced by "xxxxx". It never fails and does not need
// dsn to be valid: URL-shaped text of any scheme loses the password in its user information
// and in a password query parameter; keyword/value text loses password=... .
func RedactDSN(dsn string) string { return RedactText(dsn) }

// RedactText hides every password of every connection string found in s, which may be a whole
// log line or error message holding DSNs among other words.
func RedactText(s string) string {
	s = urlUserinfo.ReplaceAllString(s, "${1}${2}:"+hidden+"@")
	s = queryPassword.ReplaceAllString(s, "${1}"+hidden)
	return kvPassword.ReplaceAllString(s, "${1}"+hidden)
}

// Secrets returns the passwords carried by the given DSNs, so that errors and logs can be
// scrubbed of them even when a library echoes a value back in another form (decoded, or
// quoted). DSNs that do not parse still give up the passwords their shape shows.
func Secrets(dsns ...string) []string {
	var out []string
	add := func(p string) {
		if p == "" || p == hidden {
			return
		}
		out = append(out, p)
		if e := url.QueryEscape(p); e != p {
			out = append(out, e)
		}
		if e := url.PathEscape(p); e != p {
			out = append(out, e)
		}
		if d, err := url.PathUnescape(p); err == nil && d != p {
			out = append(out, d)
		}
	}
	for _, d := range dsns {
		if d == "" {
			continue
		}
		if cfg, err := pgconn.ParseConfig(d); err == nil {
			add(cfg.Password)
		}
		for _, m := range urlUserinfo.FindAllStringSubmatch(d, -1) {
			add(m[3])
		}
		for _, m := range queryPassword.FindAllStringSubmatch(d, -1) {
			add(m[2])
		}
		for _, m := range kvPassword.FindAllStringSubmatch(d, -1) {
			p := m[2]
			if len(p) >= 2 && p[0] == '\'' && p[len(p)-1] == '\'' {
				p = strings.ReplaceAll(strings.ReplaceAll(p[1:len(p)-1], `\'`, `'`), `\\`, `\`)
			}
			add(p)
		}
	}
	return out
}

// PasswordInDSN reports whether dsn carries a password itself (rather than leaving it to
// PGPASSWORD, a passfile or the config file): on a command line it is visible to `ps`.
func PasswordInDSN(dsn string) bool {
	return urlUserinfo.MatchString(dsn) || queryPassword.MatchString(dsn) || kvPassword.MatchString(dsn)
}

// Scrub replaces every occurrence of each secret in s, then redacts any connection string left
// in it. Secrets shorter than 3 characters are still scrubbed; a password that short is a bigger
// problem than a mangled message.
func Scrub(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, hidden)
		}
	}
	return RedactText(s)
}
