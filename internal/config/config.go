// Package config defines pgshift's settings, their defaults, and how they are resolved:
// command-line flags win over the YAML config file, which wins over the environment
// (PGSHIFT_SOURCE, PGSHIFT_TARGET). It also owns DSN redaction, because every place
// that prints a DSN or an error about one must hide its password.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Config is everything a pgshift command may need. Zero values mean "use the default".
type Config struct {
	// Source and Target are libpq connection strings: URLs or keyword/value pairs.
	Source string `yaml:"source"`
	Target string `yaml:"target"`

	// Jobs is how many parallel workers copy, build indexes and verify.
	Jobs int `yaml:"jobs"`

	// Include and Exclude are table patterns "schema.table" with shell wildcards (* ? [..]).
	// An empty Include means every user table.
	Include []string `yaml:"include"`
	Exclude []string `yaml:"exclude"`

	// Slot and Publication name the source objects pgshift creates; defaults derive from the database name.
	Slot        string `yaml:"slot"`
	Publication string `yaml:"publication"`

	// LagWarn is the replication lag above which pgshift warns (the case study alerted at 5 minutes).
	LagWarn time.Duration `yaml:"lag_warn"`

	// HTTP is the address of the status API; Proxy the address the routing proxy listens on.
	HTTP  string `yaml:"http"`
	Proxy string `yaml:"proxy"`

	// ReplicaIdentityFull lets copy set REPLICA IDENTITY FULL on the source for tables with no
	// key and no usable replica identity (recorded, and restored by finish); without it such
	// tables are refused.
	ReplicaIdentityFull bool `yaml:"replica_identity_full"`
	// NoOwner, NoPrivileges and NoRoles opt out of recreating owners, privileges and roles on
	// the target, as pg_restore's options of those names do.
	NoOwner      bool `yaml:"no_owner"`
	NoPrivileges bool `yaml:"no_privileges"`
	NoRoles      bool `yaml:"no_roles"`
	// DDL is what the agent does with schema changes made on the source while it follows:
	// "follow" (the default) captures each one on the source (an event trigger that copy
	// installs, which needs a superuser there: without one, copy warns and the agent behaves as
	// with stop) and replays it on the target in order with the rows, in the same target
	// transaction as the rest of its source transaction — tables created meanwhile included —,
	// stopping with the fix on what it cannot prove safe; "stop" applies only row changes, and
	// stops with the DDL to run on the target when a table's columns no longer match.
	DDL string `yaml:"ddl"`
	// RecopyUnlogged copies unlogged tables again during the cutover pause (their changes are
	// not in the WAL, so they cannot be followed).
	RecopyUnlogged bool `yaml:"recopy_unlogged"`

	// ProxySettings tune the routing proxy (pgshift proxy, pgshift run --proxy).
	ProxySettings ProxySettings `yaml:"proxy_settings"`

	// HTTPSettings secure the HTTP API; HTTPToken comes from PGSHIFT_HTTP_TOKEN only (never
	// from the file: a token belongs in a file of its own, http_settings.token_file).
	HTTPSettings HTTPSettings `yaml:"http_settings"`
	HTTPToken    string       `yaml:"-"`
	// Alerts are the agent's alert rules and webhooks (observe.go).
	Alerts Alerts `yaml:"alerts"`
	// Cutover tunes pgshift cutover and rollback.
	Cutover CutoverSettings `yaml:"cutover"`
}

// CutoverSettings tune the cutover and rollback; zero values take the defaults.
type CutoverSettings struct {
	// MaxLag is the applied lag (seconds behind the source) above which the pre-checks refuse
	// to start (default 10s).
	MaxLag time.Duration `yaml:"max_lag"`
	// CatchUpTimeout bounds the wait, traffic paused, for the other side to apply the live
	// side's last position (default 10s; keep it under proxy_settings.max_pause).
	CatchUpTimeout time.Duration `yaml:"catch_up_timeout"`
	// SequenceMargin is added to every sequence (in its direction) when it is set on the side
	// traffic moves to (default 0: the exact next value).
	SequenceMargin int64 `yaml:"sequence_margin"`
	// VerifyMaxAge: the last saved verify must be clean and at most this old (default 24h);
	// RequireVerify false skips that pre-check.
	VerifyMaxAge  time.Duration `yaml:"verify_max_age"`
	RequireVerify *bool         `yaml:"require_verify"`
	// FenceSource fences writers that bypass the proxy while traffic is on the target: at the
	// switch the source database gets default_transaction_read_only = on (for new sessions)
	// and its other client sessions are ended; rollback resets it. Needs the database's owner
	// (or a superuser) and pg_signal_backend.
	FenceSource bool `yaml:"fence_source"`
	// FenceRoles are roles whose sessions bypass the proxy (batch jobs, cron): at the switch
	// they lose LOGIN on the source (ALTER ROLE ... NOLOGIN: roles are the whole server's, so
	// no database of it takes them meanwhile) and their sessions in the source database are
	// ended; a rollback gives LOGIN back before traffic returns. Needs CREATEROLE (with ADMIN
	// OPTION on them from 16) and pg_signal_backend.
	FenceRoles []string `yaml:"fence_roles"`
	// FenceTables fences writers that bypass the proxy and are inside a transaction when the
	// pause begins: in the pause, before the catch-up, LOCK TABLE … IN EXCLUSIVE MODE on every
	// migrated table of the side traffic leaves (readers are not blocked) waits until they
	// commit, so the catch-up carries their rows, and holds off every other write until the
	// switch, where the sessions queued behind it are ended before it is released. A lock not
	// had within FenceLockTimeout (default 2s) aborts: traffic resumes where it was. Cannot be
	// combined with trigger and rule statements the copy kept back.
	FenceTables      bool          `yaml:"fence_tables"`
	FenceLockTimeout time.Duration `yaml:"fence_lock_timeout"`
	// PreHooks are shell commands (sh -c) run by the pre-checks: one that fails (non-zero exit,
	// or HookTimeout) aborts the cutover before anything changes. PostSwitchHooks run after
	// the switch and resume (e.g. kubectl rollout restart for apps not behind the proxy); a
	// failure is reported, and rollback is the user's call. Both get PGSHIFT_OP (cutover or
	// rollback) and PGSHIFT_LIVE (the side traffic is on) in their environment.
	PreHooks        []string      `yaml:"pre_hooks"`
	PostSwitchHooks []string      `yaml:"post_switch_hooks"`
	HookTimeout     time.Duration `yaml:"hook_timeout"`
	// SmokeSQL are queries run on the target, and HTTPChecks URLs fetched (2xx expected), by
	// the pre-checks and again after the switch.
	SmokeSQL   []string `yaml:"smoke_sql"`
	HTTPChecks []string `yaml:"http_checks"`
	// WatchWindow, after a cutover, runs the smoke and health checks every WatchInterval
	// (default 5s) for this long (0: no watch); with AutoRollback a failed check rolls back.
	WatchWindow   time.Duration `yaml:"watch_window"`
	WatchInterval time.Duration `yaml:"watch_interval"`
	AutoRollback  bool          `yaml:"auto_rollback"`
	// MatViews say, per materialized view, when a cutover refreshes it on the target (the
	// first rule whose name matches decides; views no rule names are refreshed in the pause).
	MatViews []MatViewRule `yaml:"matviews"`
}

// MatViewRule is when the cutover refreshes the materialized views a pattern names.
type MatViewRule struct {
	// Name is a "schema.view" or "view" pattern (path.Match syntax, as include/exclude).
	Name string `yaml:"name"`
	// Refresh is "pause" (in the write pause: the view is exact when traffic arrives, and the
	// refresh's time is part of the pause), "after" (once traffic runs on the target,
	// CONCURRENTLY when the view has a unique index on plain columns: stale until then, and
	// the pause stays short) or "skip" (left as the copy made it, for the user to refresh).
	Refresh string `yaml:"refresh"`
}

// MatViewRefresh is the Refresh of the first rule that names schema.name ("pause" when none).
func (c CutoverSettings) MatViewRefresh(schema, name string) string {
	for _, r := range c.MatViews {
		if matchAny([]string{r.Name}, schema, name) {
			return r.Refresh
		}
	}
	return "pause"
}

// ProxySettings are the proxy's settings; zero values take the proxy's defaults.
type ProxySettings struct {
	// Mode is source (default), split or target.
	Mode string `yaml:"mode"`
	// AuthFile is a PgBouncer userlist.txt: "user" "secret" per line, the secret in plain text,
	// md5… or SCRAM-SHA-256$….
	AuthFile string `yaml:"auth_file"`
	// AuthType is scram-sha-256 (default), md5 or password (clear text, TLS only).
	AuthType string `yaml:"auth_type"`
	// AdminUsers may use the admin console (database "pgshift"); default the source DSN's user.
	AdminUsers []string `yaml:"admin_users"`
	// TLSCertFile and TLSKeyFile enable TLS to clients.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
	// MaxClientConn (default 10000) and MaxServerConn (per server, default no limit).
	MaxClientConn int `yaml:"max_client_conn"`
	MaxServerConn int `yaml:"max_server_conn"`
	// ConnectTimeout (default 10s) and ClientIdleTimeout (default none).
	ConnectTimeout    time.Duration `yaml:"connect_timeout"`
	ClientIdleTimeout time.Duration `yaml:"client_idle_timeout"`
	// PauseTimeout bounds the wait for safe points (default 30s); MaxPause resumes a pause
	// nobody ended (default 60s); CancelLaggards cancels the queries of sessions that do not
	// reach a safe point in time.
	PauseTimeout   time.Duration `yaml:"pause_timeout"`
	MaxPause       time.Duration `yaml:"max_pause"`
	CancelLaggards bool          `yaml:"cancel_laggards"`
	// LagLimit: reads go to the target only while the lag is under it (default 30s).
	LagLimit time.Duration `yaml:"lag_limit"`
	// ReadYourWrites keeps a session's reads on the source until its writes are applied on the
	// target (default true).
	ReadYourWrites *bool `yaml:"read_your_writes"`
	// AllowFunctions are user functions a statement may call and still go to the target.
	AllowFunctions []string `yaml:"allow_functions"`
	// Rules route reads of split mode; the first matching rule decides.
	Rules []RouteRule `yaml:"rules"`
	// TargetReplicas are DSNs of the target's physical replicas (the target's database, a
	// user that can read pgshift.position): split mode spreads routed reads over the target
	// and the healthy replicas, each session keeping one for its life; a replica's replay lag
	// counts against lag_limit. ReplicaCheckInterval is how often each is checked (default 1s).
	TargetReplicas       []string      `yaml:"target_replicas"`
	ReplicaCheckInterval time.Duration `yaml:"replica_check_interval"`
}

// RouteRule is one read-routing rule (the case study's feature flags, as configuration).
type RouteRule struct {
	// Name identifies the rule in SHOW ROUTES and the metrics.
	Name string `yaml:"name"`
	// Users, Databases and Applications (application_name) the rule applies to; empty: any.
	Users        []string `yaml:"users"`
	Databases    []string `yaml:"databases"`
	Applications []string `yaml:"application_names"`
	// Addresses are client address prefixes (CIDR) or single addresses.
	Addresses []string `yaml:"client_addresses"`
	// Tables must match every table a statement reads ("schema.table" or "table" patterns).
	Tables []string `yaml:"tables"`
	// Percent of session keys routed to the target (0–100).
	Percent float64 `yaml:"percent"`
	// Key is what is hashed: user (default), application_name, client_address or param
	// (the startup parameter KeyParam).
	Key      string `yaml:"key"`
	KeyParam string `yaml:"key_param"`
}

// Defaults returns the configuration used when nothing else is said.
func Defaults() Config {
	return Config{Jobs: 4, LagWarn: 5 * time.Minute, DDL: DDLFollow}
}

// The values of Config.DDL.
const (
	DDLFollow = "follow"
	DDLStop   = "stop"
)

// FollowDDL reports whether schema changes on the source are captured and replayed (ddl: follow).
func (c Config) FollowDDL() bool { return c.DDL == DDLFollow }

// Load builds a Config from the defaults, then the environment (looked up with getenv), then
// the YAML file at path (if path is not empty). Flags are applied afterwards by the caller,
// because only it knows which flags were set explicitly.
func Load(path string, getenv func(string) string) (Config, error) {
	cfg := Defaults()
	if v := getenv("PGSHIFT_SOURCE"); v != "" {
		cfg.Source = v
	}
	if v := getenv("PGSHIFT_TARGET"); v != "" {
		cfg.Target = v
	}
	if v := getenv("PGSHIFT_HTTP_TOKEN"); v != "" {
		cfg.HTTPToken = v
	}
	if path == "" {
		return cfg, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("config file %s: %w", path, err)
	}
	if err := mergeYAML(&cfg, data); err != nil {
		return cfg, fmt.Errorf("config file %s: %w", path, err)
	}
	return cfg, nil
}

// mergeYAML decodes data over cfg. Unknown keys are errors, so a typo such as "sorce:"
// is reported instead of silently ignored.
func mergeYAML(cfg *Config, data []byte) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return errors.New(cleanYAMLError(err))
	}
	if len(doc.Content) == 0 { // empty file
		return nil
	}
	if err := checkYAML(&doc, reflect.TypeFor[Config](), ""); err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return errors.New(cleanYAMLError(err))
	}
	return nil
}

// cleanYAMLError drops yaml's prefix and folds its multi-line "unmarshal errors" list into
// one line, so the command's error stays a single line.
func cleanYAMLError(err error) string {
	lines := strings.Split(strings.TrimPrefix(err.Error(), "yaml: "), "\n")
	for i := range lines {
		lines[i] = strings.TrimSpace(lines[i])
	}
	return strings.Join(lines, " ")
}

// Validate checks values that do not depend on which command runs.
func (c Config) Validate() error {
	if c.Jobs < 1 || c.Jobs > 256 {
		return fmt.Errorf("--jobs (jobs: in the config file) must be between 1 and 256, got %d", c.Jobs)
	}
	for _, p := range append(append([]string{}, c.Include...), c.Exclude...) {
		if _, err := path.Match(p, ""); err != nil {
			return fmt.Errorf("table pattern %q (--include/--exclude, or include:/exclude: in the config file): %w", p, err)
		}
	}
	if c.LagWarn < 0 {
		return fmt.Errorf("lag_warn: in the config file must not be negative, got %s", c.LagWarn)
	}
	for _, r := range c.Cutover.MatViews {
		if _, err := path.Match(r.Name, ""); err != nil || r.Name == "" {
			return fmt.Errorf("cutover.matviews: name %q: want a \"schema.view\" or \"view\" pattern", r.Name)
		}
		switch r.Refresh {
		case "pause", "after", "skip":
		default:
			return fmt.Errorf("cutover.matviews: %s: refresh %q: want pause, after or skip", r.Name, r.Refresh)
		}
	}
	switch c.DDL {
	case "", DDLFollow, DDLStop:
	default:
		return fmt.Errorf("ddl: %q in the config file: want follow or stop", c.DDL)
	}
	switch c.ProxySettings.Mode {
	case "", "source", "split", "target":
	default:
		return fmt.Errorf("proxy mode %q (--mode, or proxy_settings.mode: in the config file): want source, split or target", c.ProxySettings.Mode)
	}
	return nil
}

// RequireSource returns an error naming every way to supply the source DSN when it is missing.
func (c Config) RequireSource() error {
	if c.Source == "" {
		return errors.New("no source database: pass --source DSN, set source: in the config file (-c), or set PGSHIFT_SOURCE")
	}
	return nil
}

// RequireTarget is RequireSource for the target.
func (c Config) RequireTarget() error {
	if c.Target == "" {
		return errors.New("no target database: pass --target DSN, set target: in the config file (-c), or set PGSHIFT_TARGET")
	}
	return nil
}

// TableFilter decides which tables a command works on.
type TableFilter struct {
	Include []string
	Exclude []string
}

// Filter returns the table filter of this configuration.
func (c Config) Filter() TableFilter { return TableFilter{Include: c.Include, Exclude: c.Exclude} }

// Match reports whether the table schema.name passes the filter. Patterns without a dot
// match the table name in any schema.
func (f TableFilter) Match(schema, name string) bool {
	if len(f.Include) > 0 && !matchAny(f.Include, schema, name) {
		return false
	}
	return !matchAny(f.Exclude, schema, name)
}

func matchAny(patterns []string, schema, name string) bool {
	for _, p := range patterns {
		subject := schema + "." + name
		if !strings.Contains(p, ".") {
			subject = name
		}
		if ok, _ := path.Match(p, subject); ok {
			return true
		}
	}
	return false
}

// SQLPattern is one include or exclude pattern as a POSIX regular expression for the server
// to match (pgshift's event trigger decides on the source whether a table created while
// following is part of the migration): Regexp matches exactly the subjects path.Match matches
// for the pattern, the table's "schema.name" when Qualified, its bare name otherwise.
type SQLPattern struct {
	Regexp    string
	Qualified bool
}

// SQLPatterns returns the filter's patterns as regular expressions, in the same order. A
// malformed pattern (which Validate refuses) becomes one that matches nothing, as path.Match
// matches nothing with it.
func (f TableFilter) SQLPatterns() (include, exclude []SQLPattern) {
	conv := func(ps []string) []SQLPattern {
		out := make([]SQLPattern, 0, len(ps))
		for _, p := range ps {
			re, err := globRegexp(p)
			if err != nil {
				re = `^$x` // matches nothing
			}
			out = append(out, SQLPattern{Regexp: re, Qualified: strings.Contains(p, ".")})
		}
		return out
	}
	return conv(f.Include), conv(f.Exclude)
}

// globRegexp translates a path.Match pattern into an anchored regular expression of
// PostgreSQL's (advanced) syntax: * and ? never match a slash, as in path.Match; every other
// character that is not a letter or digit is escaped, so it stands for itself.
func globRegexp(p string) (string, error) {
	if _, err := path.Match(p, ""); err != nil {
		return "", err
	}
	lit := func(b *strings.Builder, r rune) {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r > 127) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	var b strings.Builder
	b.WriteByte('^')
	rs := []rune(p)
	for i := 0; i < len(rs); i++ {
		switch r := rs[i]; r {
		case '*':
			b.WriteString(`[^/]*`)
		case '?':
			b.WriteString(`[^/]`)
		case '\\':
			i++
			if i < len(rs) {
				lit(&b, rs[i])
			}
		case '[':
			b.WriteByte('[')
			i++
			if i < len(rs) && rs[i] == '^' {
				b.WriteByte('^')
				i++
			}
			for ; i < len(rs) && rs[i] != ']'; i++ {
				c := rs[i]
				if c == '\\' {
					i++
					c = rs[i]
				}
				if c == '-' {
					b.WriteByte('-')
					continue
				}
				// Inside a bracket expression a backslash escapes in PostgreSQL's syntax.
				if c == ']' || c == '\\' || c == '^' || c == '[' {
					b.WriteByte('\\')
				}
				b.WriteRune(c)
			}
			b.WriteByte(']')
		default:
			lit(&b, r)
		}
	}
	b.WriteByte('$')
	return b.String(), nil
}
