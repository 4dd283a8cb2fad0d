// Package schema moves the database schema with pg_dump: the pre-data section (types,
// functions, tables, sequences — everything COPY needs) before the data, the post-data section
// (indexes, constraints, triggers, rules, policies) after it, split so independent indexes and
// constraints build in parallel. It finds a pg_dump at least as new as the source server, runs
// its plain-format scripts through the driver (never psql) with the \restrict safeguard of
// CVE-2025-8714 kept, and never touches pgshift's own state schema.
package schema

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// PgDump is a pg_dump binary and its version.
type PgDump struct {
	Path  string
	Major int // e.g. 15
	Minor int // e.g. 18
}

// ErrPgDumpMissing means no usable pg_dump was found; the error text says how to get one.
var ErrPgDumpMissing = errors.New("pg_dump not found")

// ErrPgDumpTooOld means every pg_dump found is older than the source server.
var ErrPgDumpTooOld = errors.New("pg_dump too old for the source server")

var versionRE = regexp.MustCompile(`\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?`)

// ParseVersion reads the output of `pg_dump --version`, e.g. "pg_dump (PostgreSQL) 15.18 (Debian ...)".
func ParseVersion(out string) (major, minor int, err error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("unrecognised pg_dump --version output %q", strings.TrimSpace(out))
	}
	major, _ = strconv.Atoi(m[1])
	if m[2] != "" {
		minor, _ = strconv.Atoi(m[2])
	}
	return major, minor, nil
}

// FindPgDump returns a pg_dump that can dump a server of version serverVersionNum
// (server_version_num, e.g. 150004): its major version must be at least the server's, because
// an older pg_dump cannot read a newer server's catalogs. explicit, when set, is the only
// candidate. Otherwise it looks, in order, next to the server's major version
// (/usr/lib/postgresql/N/bin, /usr/pgsql-N/bin), on PATH, then in every other
// /usr/lib/postgresql/*/bin, and takes the first new enough.
func FindPgDump(ctx context.Context, explicit string, serverVersionNum int) (PgDump, error) {
	serverMajor := serverVersionNum / 10000
	var candidates []string
	if explicit != "" {
		candidates = []string{explicit}
	} else {
		candidates = append(candidates,
			fmt.Sprintf("/usr/lib/postgresql/%d/bin/pg_dump", serverMajor),
			fmt.Sprintf("/usr/pgsql-%d/bin/pg_dump", serverMajor))
		if p, err := exec.LookPath("pg_dump"); err == nil {
			candidates = append(candidates, p)
		}
		others, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_dump")
		sort.Sort(sort.Reverse(sort.StringSlice(others)))
		candidates = append(candidates, others...)
	}
	var tooOld []string
	seen := map[string]bool{}
	for _, c := range candidates {
		if seen[c] {
			continue
		}
		seen[c] = true
		if _, err := os.Stat(c); err != nil {
			if explicit != "" {
				return PgDump{}, fmt.Errorf("%w at %s (--pg-dump): %v — give the path of an installed pg_dump of version %d or newer",
					ErrPgDumpMissing, c, err, serverMajor)
			}
			continue
		}
		out, err := exec.CommandContext(ctx, c, "--version").Output()
		if err != nil {
			if explicit != "" {
				return PgDump{}, fmt.Errorf("%w: %s --version failed (%v) — fix --pg-dump to point at a working pg_dump of version %d or newer",
					ErrPgDumpMissing, c, err, serverMajor)
			}
			continue
		}
		major, minor, err := ParseVersion(string(out))
		if err != nil {
			continue
		}
		if major < serverMajor {
			tooOld = append(tooOld, fmt.Sprintf("%s is %d.%d", c, major, minor))
			continue
		}
		return PgDump{Path: c, Major: major, Minor: minor}, nil
	}
	fix := fmt.Sprintf("install the PostgreSQL %d client tools (e.g. apt-get install postgresql-client-%d) or pass --pg-dump PATH to a pg_dump of version %d or newer",
		serverMajor, serverMajor, serverMajor)
	if len(tooOld) > 0 {
		return PgDump{}, fmt.Errorf("%w: the source server is version %d but %s — %s",
			ErrPgDumpTooOld, serverMajor, strings.Join(tooOld, ", "), fix)
	}
	return PgDump{}, fmt.Errorf("%w (looked next to PostgreSQL %d, on PATH and in /usr/lib/postgresql/*/bin) — %s", ErrPgDumpMissing, serverMajor, fix)
}

// Section is a pg_dump --section value.
type Section string

const (
	PreData  Section = "pre-data"
	PostData Section = "post-data"
)

// DumpOptions shape a schema dump.
type DumpOptions struct {
	// Snapshot, when set, makes pg_dump read the catalogs in that exported snapshot, so the
	// schema is exactly the one the data copy sees.
	Snapshot string
	// ExcludeTables are tables left out entirely (definition and everything attached to it).
	ExcludeTables []pgtypes.TableID
	// Clean adds DROP ... IF EXISTS for every object before creating it (pg_dump --clean
	// --if-exists): used to start a migration over on a target that already has the objects.
	Clean bool
	// NoOwner leaves out ALTER ... OWNER TO (pg_dump --no-owner): every object then belongs to
	// the user that applies the script. NoPrivileges leaves out GRANT and REVOKE, default
	// privileges included (--no-privileges).
	NoOwner, NoPrivileges bool
}

// Dump runs pg_dump for one section of the source database and returns the plain-format
// script. Owners, privileges (GRANT/REVOKE, default privileges), comments and security labels
// are kept unless opts leave them out; the roles they name must exist on the target first (see
// PlanGlobals). Tablespaces, publications and subscriptions are left out: tablespaces are
// cluster-wide places on the source's disks, and the publication is pgshift's own. Large
// objects are left out too: snapshot.SyncLargeObjects copies them in batches (one pre-data
// transaction holding a lock per large object exhausts the lock table). pgshift's own schema
// is never dumped. The password travels in PGPASSWORD, never on the command line where `ps`
// would show it.
func (d PgDump) Dump(ctx context.Context, sourceDSN string, section Section, opts DumpOptions) (string, error) {
	args := []string{"--section=" + string(section)}
	if opts.Snapshot != "" {
		args = append(args, "--snapshot="+opts.Snapshot)
	}
	if opts.Clean {
		args = append(args, "--clean", "--if-exists")
	}
	for _, t := range opts.ExcludeTables {
		args = append(args, "--exclude-table="+dumpPattern(t))
	}
	return d.run(ctx, sourceDSN, "--section="+string(section), opts, args)
}

// DumpDatabase runs `pg_dump --create` for nothing but the database itself: its owner,
// settings (ALTER DATABASE ... SET, ALTER ROLE ... IN DATABASE ... SET), comment, security
// label and privileges, which pg_dump writes only with --create. Every schema is excluded, so
// no object of the database is in it.
func (d PgDump) DumpDatabase(ctx context.Context, sourceDSN string, opts DumpOptions) (string, error) {
	return d.run(ctx, sourceDSN, "--create", opts, []string{"--create", "--section=pre-data", "--exclude-schema=*"})
}

// run runs pg_dump with pgshift's fixed options, opts' opt-outs and args.
func (d PgDump) run(ctx context.Context, sourceDSN, what string, opts DumpOptions, args []string) (string, error) {
	args = append([]string{"--format=plain", "--no-tablespaces", "--no-publications", "--no-subscriptions", "--no-blobs",
		"--exclude-schema=" + catalog.StateSchema}, args...)
	if opts.NoOwner {
		args = append(args, "--no-owner")
	}
	if opts.NoPrivileges {
		args = append(args, "--no-privileges")
	}
	return d.exec(ctx, d.Path, sourceDSN, "pg_dump "+what, args)
}

// exec runs bin (pg_dump or pg_dumpall) with args against the source and returns its output.
func (d PgDump) exec(ctx context.Context, bin, sourceDSN, what string, args []string) (string, error) {
	dsn, password, err := splitPassword(sourceDSN)
	if err != nil {
		return "", err
	}
	args = append(args, "--dbname="+dsn)
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "PGAPPNAME=pgshift")
	if password != "" {
		cmd.Env = append(cmd.Env, "PGPASSWORD="+password)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := config.Scrub(strings.TrimSpace(stderr.String()), config.Secrets(sourceDSN))
		return "", &DumpError{What: what, Err: err, Stderr: msg}
	}
	return stdout.String(), nil
}

// DumpError is a pg_dump or pg_dumpall run that failed; Stderr is its message, secrets
// scrubbed. pg_dump tells why only in words: a lost server, a privilege, or a schema changed
// on the source while it read the catalogs ("cache lookup failed", "does not exist").
type DumpError struct {
	What   string // e.g. "pg_dump --section=pre-data"
	Err    error  // the process's exit
	Stderr string
}

func (e *DumpError) Error() string {
	return fmt.Sprintf("%s of the source failed (%v): %s", e.What, e.Err, e.Stderr)
}

func (e *DumpError) Unwrap() error { return e.Err }

// dumpPattern quotes a table name as a pg_dump pattern that matches exactly that table:
// inside double quotes, wildcards and dots are literal.
func dumpPattern(t pgtypes.TableID) string {
	return pgtypes.QuoteIdent(t.Schema) + "." + pgtypes.QuoteIdent(t.Name)
}

var kvPassword = regexp.MustCompile(`(?i)(^|\s)password\s*=\s*('(?:[^'\\]|\\.)*'|[^\s]*)`)

// splitPassword returns the DSN without its password, and the password.
func splitPassword(dsn string) (string, string, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return "", "", fmt.Errorf("source DSN: %s", config.RedactDSN(dsn))
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return "", "", fmt.Errorf("source DSN %s: %w", config.RedactDSN(dsn), err)
		}
		if u.User != nil {
			u.User = url.User(u.User.Username())
		}
		q := u.Query()
		q.Del("password")
		u.RawQuery = q.Encode()
		return u.String(), cfg.Password, nil
	}
	return strings.TrimSpace(kvPassword.ReplaceAllString(dsn, "$1")), cfg.Password, nil
}
