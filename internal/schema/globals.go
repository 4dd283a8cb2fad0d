package schema

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// Globals are the steps of a copy that reach outside the database's own objects: the roles
// step (before pre-data, in its transaction) and the database step (at the end).
type Globals struct {
	Roles    RolesPlan
	Database DatabasePlan
}

// DatabaseDump is `pg_dump --create`'s script of the database itself (see DumpDatabase), run
// in the background from StartDatabaseDump so that the process's start and its catalog reads
// overlap the caller's own preflight reads; PlanGlobals waits for it.
type DatabaseDump struct {
	done chan struct{}
	text string
	err  error
}

// StartDatabaseDump starts DumpDatabase with opts' opt-outs. The pg_dump process ends with ctx.
func (d PgDump) StartDatabaseDump(ctx context.Context, sourceDSN string, opts GlobalsOptions) *DatabaseDump {
	dd := &DatabaseDump{done: make(chan struct{})}
	go func() {
		defer close(dd.done)
		dd.text, dd.err = d.DumpDatabase(ctx, sourceDSN, DumpOptions{NoOwner: opts.NoOwner, NoPrivileges: opts.NoPrivileges})
	}()
	return dd
}

// Wait returns the dump's script once pg_dump has ended.
func (dd *DatabaseDump) Wait(ctx context.Context) (string, error) {
	select {
	case <-dd.done:
		return dd.text, dd.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// PlanGlobals plans both steps and checks that the target user can run them, so a copy that
// could not give its objects their owners and privileges stops before anything is created.
// database is the database step's dump, started with StartDatabaseDump (the same opts).
func (d PgDump) PlanGlobals(ctx context.Context, src, dst *pgx.Conn, sourceDSN string, database *DatabaseDump, sourceDB, targetDB string, opts GlobalsOptions) (Globals, error) {
	var g Globals
	var err error
	g.Roles, err = PlanRoles(ctx, src, dst, func(ctx context.Context, withPasswords bool) (string, error) {
		return d.DumpRoles(ctx, sourceDSN, withPasswords)
	}, opts)
	if err != nil {
		return g, err
	}
	text, err := database.Wait(ctx)
	if err != nil {
		return g, err
	}
	s, err := ParseDatabase(text)
	if err != nil {
		return g, fmt.Errorf("pg_dump --create output: %w", err)
	}
	existing := map[string]bool{}
	for _, n := range append(append([]string{}, g.Roles.Existing...), g.Roles.Created...) {
		existing[n] = true
	}
	roleExists := func(n string) bool {
		if existing[n] {
			return true
		}
		var ok bool
		_ = dst.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)`, n).Scan(&ok)
		return ok
	}
	if g.Database, err = PlanDatabase(s, sourceDB, targetDB, roleExists); err != nil {
		return g, err
	}
	var owner string
	if err := dst.QueryRow(ctx, `SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()`).Scan(&owner); err != nil {
		return g, fmt.Errorf("read the target database's owner: %w", err)
	}
	g.Database.dropOwnerChangeTo(owner)
	user, err := ReadTargetUser(ctx, dst)
	if err != nil {
		return g, err
	}
	return g, CheckDatabase(ctx, dst, user, g.Database)
}

// WithRoles puts the roles step in front of a pre-data script, so that ApplyPreData creates the
// roles and their objects in one transaction: a copy killed before it commits has created
// nothing, and a resumed one finds the roles absent again.
func (g Globals) WithRoles(pre Script) Script {
	if len(g.Roles.Statements) == 0 {
		return pre
	}
	var items []Item
	if len(pre.Items) > 0 && pre.Items[0].Type == "" {
		items = append(items, pre.Items[0]) // the preamble: session settings
	}
	items = append(items, Item{Name: "roles", Type: "ROLES", Schema: "-", Statements: g.Roles.Statements})
	return Script{RestrictKey: pre.RestrictKey, Items: append(items, pre.Objects()...)}
}

// Notes are what the user should know about the roles and database steps, for the summary.
func (g Globals) Notes() []string {
	var out []string
	q := func(names []string) string {
		s := make([]string, len(names))
		for i, n := range names {
			s[i] = pgtypes.QuoteIdent(n)
		}
		return strings.Join(s, ", ")
	}
	if len(g.Roles.NoPassword) > 0 {
		out = append(out, fmt.Sprintf("the source did not let pgshift read password verifiers (pg_authid), so these login roles were created WITHOUT a password: %s — set each on the target (ALTER ROLE ... PASSWORD '...'); pgshift proxy's SCRAM pass-through needs the same verifier as the source",
			q(g.Roles.NoPassword)))
	}
	if len(g.Roles.SelfGranted) > 0 {
		out = append(out, fmt.Sprintf("the target user is not a superuser: it was granted the roles it created and gave objects to (%s); revoke them after the migration if it should not keep them",
			q(g.Roles.SelfGranted)))
	}
	return out
}
