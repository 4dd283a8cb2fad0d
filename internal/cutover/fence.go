package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// The source fence (cutover.fence_source): while traffic is on the target, writers that
// bypass the proxy must not write to the source, where their rows would never reach the
// target. At the switch the source database gets default_transaction_read_only = on, which
// every new session starts with, and its other client sessions are ended; pgshift's own
// source sessions (the reverse applier, the rollback's) turn it off for themselves. A
// rollback resets the setting before traffic returns. The pre-check refuses a database that
// has a default_transaction_read_only setting of its own, so the reset never removes the
// user's.

// fenceSource sets default_transaction_read_only = on for new sessions of the source database.
func fenceSource(ctx context.Context, src *pgx.Conn) error {
	db, err := currentDatabase(ctx, src)
	if err != nil {
		return err
	}
	if _, err := src.Exec(ctx, "ALTER DATABASE "+pgtypes.QuoteIdent(db)+" SET default_transaction_read_only = on"); err != nil {
		return fmt.Errorf("fence the source: make database %s read-only for new sessions: %w", db, err)
	}
	return nil
}

// unfenceSource removes the fence.
func unfenceSource(ctx context.Context, src *pgx.Conn) error {
	db, err := currentDatabase(ctx, src)
	if err != nil {
		return err
	}
	if _, err := src.Exec(ctx, "ALTER DATABASE "+pgtypes.QuoteIdent(db)+" RESET default_transaction_read_only"); err != nil {
		return fmt.Errorf("lift the source fence on database %s: %w", db, err)
	}
	return nil
}

// endSourceSessions ends every other client session of the source database (those that
// started before the fence can still write) except keep (the proxy's catalog session, which
// reads and which its next switch needs), and returns how many.
func endSourceSessions(ctx context.Context, src *pgx.Conn, keep uint32) (int, error) {
	var n int
	err := src.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_catalog.pg_backend_pid() AND pid <> $1::int4 AND backend_type = 'client backend'`,
		int32(keep)).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("fence the source: end the sessions that bypass the proxy: %w", err)
	}
	return n, nil
}

// writable makes src's own session writable under the fence.
func writable(ctx context.Context, src *pgx.Conn) error {
	if _, err := src.Exec(ctx, `SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false)`); err != nil {
		return fmt.Errorf("make pgshift's source session writable: %w", err)
	}
	return nil
}

// fenceCheck is the pre-check of the fence: the rights it needs, and no setting of the
// user's that the rollback's reset would remove.
func fenceCheck(ctx context.Context, src *pgx.Conn) Check {
	c := Check{Name: "source fence possible"}
	var owner, signal, own bool
	err := src.QueryRow(ctx, `SELECT
		pg_catalog.pg_has_role(current_user, d.datdba, 'USAGE') OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),
		pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'USAGE') OR (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user),
		EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s, unnest(s.setconfig) c
			WHERE s.setdatabase = d.oid AND s.setrole = 0 AND c LIKE 'default\_transaction\_read\_only=%')
		FROM pg_catalog.pg_database d WHERE d.datname = current_database()`).Scan(&owner, &signal, &own)
	switch {
	case err != nil:
		c.Detail = fmt.Sprintf("read the source's rights: %v", err)
	case !owner:
		c.Detail = "the source user does not own the database (ALTER DATABASE ... SET default_transaction_read_only needs it): connect as its owner, or set cutover.fence_source: false"
	case !signal:
		c.Detail = "the source user may not end other sessions: GRANT pg_signal_backend TO it, or set cutover.fence_source: false"
	case own:
		c.Detail = "the source database has a default_transaction_read_only setting of its own, which the rollback's reset would remove: remove it (ALTER DATABASE ... RESET default_transaction_read_only) or set cutover.fence_source: false"
	default:
		c.OK, c.Detail = true, "writers outside the proxy are fenced at the switch"
	}
	return c
}

func currentDatabase(ctx context.Context, q *pgx.Conn) (string, error) {
	var db string
	if err := q.QueryRow(ctx, `SELECT current_database()`).Scan(&db); err != nil {
		return "", fmt.Errorf("read the current database: %w", err)
	}
	return db, nil
}

// The role fence (cutover.fence_roles): the named roles cannot log into the source while
// traffic is on the target, and their sessions in the source database are ended at the switch.
// The pre-check refuses a role that cannot log in already (the rollback would give it LOGIN),
// the migration's own source user, and a missing role.

// fenceRoles takes LOGIN from the roles (on) or gives it back.
func fenceRoles(ctx context.Context, src *pgx.Conn, roles []string, on bool) error {
	attr, what := "LOGIN", "give LOGIN back to"
	if on {
		attr, what = "NOLOGIN", "take LOGIN from"
	}
	for _, r := range roles {
		if _, err := src.Exec(ctx, "ALTER ROLE "+pgtypes.QuoteIdent(r)+" "+attr); err != nil {
			return fmt.Errorf("fence the source: %s role %s: %w", what, r, err)
		}
	}
	return nil
}

// endRoleSessions ends the roles' sessions in the source database and returns how many.
func endRoleSessions(ctx context.Context, src *pgx.Conn, roles []string) (int, error) {
	var n int
	err := src.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity
		WHERE datname = current_database() AND usename = ANY($1::text[]) AND pid <> pg_catalog.pg_backend_pid() AND backend_type = 'client backend'`,
		roles).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("fence the source: end the sessions of roles %v: %w", roles, err)
	}
	return n, nil
}

// roleFenceCheck is the pre-check of the role fence.
func roleFenceCheck(ctx context.Context, src *pgx.Conn, roles []string) Check {
	c := Check{Name: "role fence possible"}
	rows, err := src.Query(ctx, `SELECT r.rolname, r.rolcanlogin, r.rolname = current_user FROM pg_catalog.pg_roles r WHERE r.rolname = ANY($1::text[])`, roles)
	if err != nil {
		c.Detail = fmt.Sprintf("read the roles: %v", err)
		return c
	}
	found := map[string]bool{}
	var problems []string
	for rows.Next() {
		var name string
		var canLogin, self bool
		if err := rows.Scan(&name, &canLogin, &self); err != nil {
			rows.Close()
			c.Detail = err.Error()
			return c
		}
		found[name] = true
		switch {
		case self:
			problems = append(problems, name+" is pgshift's own source user")
		case !canLogin:
			problems = append(problems, name+" cannot log in already (the rollback would give it LOGIN)")
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		c.Detail = err.Error()
		return c
	}
	for _, r := range roles {
		if !found[r] {
			problems = append(problems, r+" does not exist on the source")
		}
	}
	var super, createRole, signal bool
	if err := src.QueryRow(ctx, `SELECT rolsuper, rolcreaterole, rolsuper OR pg_catalog.pg_has_role(current_user, 'pg_signal_backend', 'USAGE')
		FROM pg_catalog.pg_roles WHERE rolname = current_user`).Scan(&super, &createRole, &signal); err != nil {
		c.Detail = fmt.Sprintf("read the source user's rights: %v", err)
		return c
	}
	if !super && !createRole {
		problems = append(problems, "the source user has no CREATEROLE (ALTER ROLE ... NOLOGIN needs it)")
	}
	if !signal {
		problems = append(problems, "the source user may not end other sessions: GRANT pg_signal_backend TO it")
	}
	if len(problems) > 0 {
		c.Detail = strings.Join(problems, "; ") + " (cutover.fence_roles)"
		return c
	}
	c.OK, c.Detail = true, fmt.Sprintf("roles %s lose LOGIN on the source at the switch", strings.Join(roles, ", "))
	return c
}

// fencing says whether any fence is configured.
func (e *Engine) fencing() bool { return e.cs.FenceSource || len(e.cs.FenceRoles) > 0 }

// fence puts up the configured fences (the database's read-only default, the roles' NOLOGIN).
func (e *Engine) fence(ctx context.Context, src *pgx.Conn) error {
	if e.cs.FenceSource {
		if err := fenceSource(ctx, src); err != nil {
			return err
		}
	}
	if len(e.cs.FenceRoles) > 0 {
		return fenceRoles(ctx, src, e.cs.FenceRoles, true)
	}
	return nil
}

// unfence lifts them.
func (e *Engine) unfence(ctx context.Context, src *pgx.Conn) error {
	var err error
	if e.cs.FenceSource {
		err = unfenceSource(ctx, src)
	}
	if len(e.cs.FenceRoles) > 0 {
		err = errors.Join(err, fenceRoles(ctx, src, e.cs.FenceRoles, false))
	}
	return err
}

// endBypassers ends the sessions the fences are about: every other client session of the
// source database with fence_source (but keep, the proxy's catalog session), else those of the
// fenced roles.
func (e *Engine) endBypassers(ctx context.Context, src *pgx.Conn, keep uint32) (int, error) {
	if e.cs.FenceSource {
		return endSourceSessions(ctx, src, keep)
	}
	return endRoleSessions(ctx, src, e.cs.FenceRoles)
}

// fenceWhat names the fences up, for the step's detail.
func (e *Engine) fenceWhat() string {
	var parts []string
	if e.cs.FenceSource {
		parts = append(parts, "read-only")
	}
	if len(e.cs.FenceRoles) > 0 {
		parts = append(parts, "NOLOGIN for "+strings.Join(e.cs.FenceRoles, ", "))
	}
	return strings.Join(parts, "; ")
}
