package schema

// The database itself: its owner, its settings (ALTER DATABASE ... SET and ALTER ROLE ... IN
// DATABASE ... SET, such as a search_path the application relies on), comment, security label
// and privileges (who may CONNECT). pg_dump writes them only with --create, naming the source
// database; pgshift takes those items from DumpDatabase, drops CREATE DATABASE, and names the
// target database instead.

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// DatabasePlan is what the database step runs on the target, in one transaction.
type DatabasePlan struct {
	Preamble   []string
	Statements []string
	Dropped    []string // left out, with why
	// Settings counts the ALTER DATABASE/ROLE ... SET statements among Statements.
	Settings int
}

// PlanDatabase picks from a `pg_dump --create` script (see DumpDatabase) the statements about
// the database itself and rewrites them for the target database targetDB. roleExists says
// whether a role will exist on the target: a role setting of a role the target will not have
// is left out (and listed in Dropped). A statement of another form is an error: pgshift does
// not run what it does not understand.
func PlanDatabase(s Script, sourceDB, targetDB string, roleExists func(string) bool) (DatabasePlan, error) {
	p := DatabasePlan{Preamble: s.Preamble()}
	for _, it := range s.Objects() {
		switch {
		case it.Type == "DATABASE", it.Type == "DATABASE PROPERTIES":
		case (it.Type == "COMMENT" || it.Type == "ACL" || it.Type == "SECURITY LABEL") && strings.HasPrefix(it.Name, "DATABASE "):
		default:
			continue // objects in no schema (extensions, casts, ...) come with pre-data
		}
		for _, st := range it.Statements {
			out, why, err := databaseStatement(st, sourceDB, targetDB, roleExists)
			if err != nil {
				return p, fmt.Errorf("%s: %w", it.Describe(), err)
			}
			if out == "" {
				if why != "" {
					p.Dropped = append(p.Dropped, why)
				}
				continue
			}
			if isSetting(out) {
				p.Settings++
			}
			p.Statements = append(p.Statements, out)
		}
	}
	return p, nil
}

func isSetting(st string) bool {
	w := words(st)
	for i := 0; i+1 < len(w); i++ {
		if strings.EqualFold(w[i].text, "SET") || strings.EqualFold(w[i].text, "RESET") {
			return i > 0
		}
	}
	return false
}

// databaseStatement rewrites one statement for the target database; "" drops it.
func databaseStatement(st, sourceDB, targetDB string, roleExists func(string) bool) (string, string, error) {
	w := words(st)
	up := func(i int) string {
		if i < len(w) {
			return strings.ToUpper(w[i].text)
		}
		return ""
	}
	// rename replaces word i, which must name the source database, with the target's name.
	rename := func(i int) (string, string, error) {
		if i >= len(w) {
			return "", "", fmt.Errorf("statement without a database name: %q", truncate(oneLine(st), 120))
		}
		text := w[i].text
		semi := ""
		if i == len(w)-1 {
			semi = ";"
		}
		parts, ok := parseNameParts(text)
		if !ok || len(parts) != 1 || parts[0] != sourceDB {
			return "", "", fmt.Errorf("statement names database %s, not the source's %s: %q", text, pgtypes.QuoteIdent(sourceDB), truncate(oneLine(st), 120))
		}
		end := w[i].start + len(text)
		return st[:w[i].start] + pgtypes.QuoteIdent(targetDB) + strings.TrimPrefix(st[end:], semi) + semi, "", nil
	}
	onDatabase := func() (string, string, error) {
		for i := 0; i+2 < len(w); i++ {
			if up(i) == "ON" && up(i+1) == "DATABASE" {
				return rename(i + 2)
			}
		}
		return "", "", fmt.Errorf("unknown statement about the database: %q", truncate(oneLine(st), 120))
	}
	switch {
	case up(0) == "CREATE" && up(1) == "DATABASE":
		return "", "", nil // the target database exists: it is where pgshift copies to
	case up(0) == "SET" || up(0) == "RESET", strings.HasPrefix(st, "SELECT pg_catalog.set_config('search_path', '', false);"):
		// Session settings (repeated after each \connect); SET SESSION AUTHORIZATION of a
		// grantor among them.
		return st, "", nil
	case up(0) == "ALTER" && up(1) == "DATABASE":
		return rename(2)
	case up(0) == "ALTER" && up(1) == "ROLE" && up(3) == "IN" && up(4) == "DATABASE":
		parts, ok := parseNameParts(w[2].text)
		if !ok || len(parts) != 1 {
			return "", "", fmt.Errorf("unknown role in %q", truncate(oneLine(st), 120))
		}
		if !roleExists(parts[0]) {
			return "", fmt.Sprintf("setting of role %s in the database not replayed: the target has no such role", pgtypes.QuoteIdent(parts[0])), nil
		}
		return rename(5)
	case up(0) == "COMMENT" && up(1) == "ON" && up(2) == "DATABASE":
		return rename(3)
	case up(0) == "SECURITY" && up(1) == "LABEL", up(0) == "GRANT", up(0) == "REVOKE":
		return onDatabase()
	}
	return "", "", fmt.Errorf("unknown statement about the database: %q — pgshift runs only its owner, settings, comment, security label and privileges", truncate(oneLine(st), 120))
}

// dropOwnerChangeTo leaves out ALTER DATABASE ... OWNER TO owner: the target database already
// belongs to that role, and the statement would only need rights for nothing.
func (p *DatabasePlan) dropOwnerChangeTo(owner string) {
	kept := p.Statements[:0]
	for _, st := range p.Statements {
		w := words(st)
		if len(w) == 6 && strings.EqualFold(w[0].text, "ALTER") && strings.EqualFold(w[1].text, "DATABASE") &&
			strings.EqualFold(w[3].text, "OWNER") && strings.EqualFold(w[4].text, "TO") {
			if parts, ok := parseNameParts(w[5].text); ok && len(parts) == 1 && parts[0] == owner {
				continue
			}
		}
		kept = append(kept, st)
	}
	p.Statements = kept
}

// CheckDatabase says what the target user lacks to run the database step, before anything is
// created (nil when nothing): a superuser may do all of it; otherwise the database's settings,
// comment and privileges need its ownership, a role's settings in it CREATEROLE, and a new
// owner CREATEDB and membership in that owner.
func CheckDatabase(ctx context.Context, dst catalog.Querier, user TargetUser, p DatabasePlan) error {
	if user.Super || len(p.Statements) == 0 {
		return nil
	}
	var owner bool
	var db string
	if err := dst.QueryRow(ctx, `SELECT current_database(), pg_has_role(current_user, datdba, 'USAGE') FROM pg_database WHERE datname = current_database()`).Scan(&db, &owner); err != nil {
		return fmt.Errorf("check the target user's rights on the target database: %w", err)
	}
	var problems []string
	needOwner, needCreateRole := false, false
	for _, st := range p.Statements {
		w := words(st)
		up := func(i int) string {
			if i < len(w) {
				return strings.ToUpper(w[i].text)
			}
			return ""
		}
		switch {
		case up(0) == "SET" || up(0) == "RESET" || up(0) == "SELECT":
		case up(0) == "ALTER" && up(1) == "ROLE":
			needCreateRole = true
		case up(0) == "ALTER" && up(1) == "DATABASE" && up(3) == "OWNER" && up(4) == "TO":
			needOwner = true
			if len(w) < 6 {
				continue
			}
			parts, ok := parseNameParts(w[5].text)
			if !ok || len(parts) != 1 {
				continue
			}
			var member bool
			if err := dst.QueryRow(ctx, `SELECT coalesce((SELECT pg_has_role(current_user, oid, $2::text) FROM pg_roles WHERE rolname = $1), false)`,
				parts[0], user.memberCheck()).Scan(&member); err != nil {
				return fmt.Errorf("check the target user's rights on the target database: %w", err)
			}
			if !user.CreateDB || !member {
				problems = append(problems, fmt.Sprintf("CREATEDB and membership in %[1]s, to make %[1]s the owner of database %[2]s as on the source: ALTER ROLE %[3]s CREATEDB; GRANT %[1]s TO %[3]s",
					pgtypes.QuoteIdent(parts[0]), pgtypes.QuoteIdent(db), pgtypes.QuoteIdent(user.Name)))
			}
		default:
			needOwner = true
		}
	}
	if needOwner && !owner {
		problems = append(problems, fmt.Sprintf("ownership of database %s, to give it the source's settings, comment and privileges: ALTER DATABASE %s OWNER TO %s (as a superuser)",
			pgtypes.QuoteIdent(db), pgtypes.QuoteIdent(db), pgtypes.QuoteIdent(user.Name)))
	}
	if needCreateRole && !user.CreateRole {
		problems = append(problems, fmt.Sprintf("CREATEROLE, to give roles their settings in database %s (ALTER ROLE ... IN DATABASE ... SET): ALTER ROLE %s CREATEROLE",
			pgtypes.QuoteIdent(db), pgtypes.QuoteIdent(user.Name)))
	}
	if len(problems) > 0 {
		return fmt.Errorf("the target user %s cannot give the target database the source's owner, settings and privileges (nothing was created):\n  - %s\n  (or opt out: --no-owner, --no-privileges)",
			user.Name, strings.Join(problems, "\n  - "))
	}
	return nil
}

// ApplyDatabase runs the database step in one transaction. It is idempotent (every statement
// sets a state), so a resumed copy runs it again. The transaction is kept only if the target
// user can still connect afterwards: the source's privileges may grant CONNECT to application
// roles only, which would lock pgshift out of the target for the rest of the migration.
func ApplyDatabase(ctx context.Context, conn *pgx.Conn, p DatabasePlan) error {
	if len(p.Statements) == 0 {
		return nil
	}
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if err := execAll(ctx, tx, p.Preamble, "session setup"); err != nil {
			return err
		}
		if err := execAll(ctx, tx, p.Statements, "the database's owner, settings and privileges"); err != nil {
			return err
		}
		var canConnect bool
		var user, db string
		if err := tx.QueryRow(ctx, `SELECT current_user, current_database(), has_database_privilege(current_database(), 'CONNECT')`).Scan(&user, &db, &canConnect); err != nil {
			return err
		}
		if !canConnect {
			return fmt.Errorf("the source's privileges on its database would leave %s unable to connect to the target database %s (rolled back): GRANT CONNECT ON DATABASE %s TO %s on the target, or pass --no-privileges",
				user, db, pgtypes.QuoteIdent(db), pgtypes.QuoteIdent(user))
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The preamble changed session settings; put the session back.
	if _, err := conn.Exec(ctx, "RESET ALL"); err != nil {
		return fmt.Errorf("apply the database's settings: reset session: %w", err)
	}
	return nil
}
