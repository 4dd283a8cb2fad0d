package config

import (
	"net/url"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// kvPassword matches password=... in keyword/value connection strings, quoted or not.
var kvPassword = regexp.MustCompile(`(?i)(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s]*)`)

// RedactDSN returns dsn with any password replaced by "xxxxx". It never fails: text it cannot
// parse as a URL is treated as keyword/value pairs.
func RedactDSN(dsn string) string {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		if u, err := url.Parse(dsn); err == nil {
			if _, has := u.User.Password(); has {
				u.User = url.UserPassword(u.User.Username(), "xxxxx")
			}
			q := u.Query()
			if q.Has("password") {
				q.Set("password", "xxxxx")
				u.RawQuery = q.Encode()
			}
			return u.String()
		}
		// Unparseable URL: cut everything between "//" and "@".
		if at := strings.LastIndex(dsn, "@"); at > 0 {
			scheme := dsn[:strings.Index(dsn, "//")+2]
			return scheme + "xxxxx@" + dsn[at+1:]
		}
	}
	return kvPassword.ReplaceAllString(dsn, "${1}xxxxx")
}

// Secrets returns the passwords carried by the given DSNs, so that errors and logs can be
// scrubbed of them even when a library echoes a value back.
func Secrets(dsns ...string) []string {
	var out []string
	for _, d := range dsns {
		if d == "" {
			continue
		}
		if cfg, err := pgconn.ParseConfig(d); err == nil && cfg.Password != "" {
			out = append(out, cfg.Password)
			if e := url.QueryEscape(cfg.Password); e != cfg.Password {
				out = append(out, e)
			}
			if e := url.PathEscape(cfg.Password); e != cfg.Password {
				out = append(out, e)
			}
		}
	}
	return out
}

// Scrub replaces every occurrence of each secret in s. Secrets shorter than 3 characters are
// still scrubbed; a password that short is a bigger problem than a mangled message.
func Scrub(s string, secrets []string) string {
	for _, sec := range secrets {
		if sec != "" {
			s = strings.ReplaceAll(s, sec, "xxxxx")
		}
	}
	return s
}
