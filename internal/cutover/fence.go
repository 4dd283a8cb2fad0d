package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

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
func endSourceSessions(ctx context.Context, src *pgx.Conn, keep ...uint32) (int, error) {
	var n int
	pids := make([]int32, len(keep))
	for i, k := range keep {
		pids[i] = int32(k)
	}
	err := src.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid)) FROM pg_catalog.pg_stat_activity
		WHERE datname = current_database() AND pid <> pg_catalog.pg_backend_pid() AND pid <> ALL ($1::int4[]) AND backend_type = 'client backend'`,
		pids).Scan(&n)
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
func (e *Engine) endBypassers(ctx context.Context, src *pgx.Conn, keep ...uint32) (int, error) {
	if e.cs.FenceSource {
		return endSourceSessions(ctx, src, keep...)
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

// The table fence (cutover.fence_tables): writers that bypass the proxy may be inside a
// transaction when the pause begins, and the proxy cannot hold them. In the pause, before the
// catch-up's mark, pgshift takes LOCK TABLE … IN EXCLUSIVE MODE on every table of the side
// traffic leaves that its publication replicates, in one transaction of a session of its own,
// with lock_timeout = cutover.fence_lock_timeout: the lock waits until those writers have
// committed (their rows are then before the mark, so the catch-up carries them), and no other
// write to those tables can commit until it is released. Readers are not blocked. A lock not
// had in time aborts the operation (traffic resumes where it was; nothing changed). At the
// switch, after the other fences are up, the sessions queued behind the lock are ended (their
// transactions never committed; their clients get PostgreSQL's "terminating connection due
// to administrator command") and the lock is released. Writers that start after the switch
// are the other fences' business (fence_source, fence_roles).

// tableLock is the table fence's open transaction.
type tableLock struct {
	conn   *pgx.Conn
	pid    uint32
	tables []string // quoted, qualified
}

// lockTables takes the table fence on conn's database for publication pub's tables. conn
// becomes the lock's: it is closed by release.
func lockTables(ctx context.Context, conn *pgx.Conn, pub string, timeout time.Duration) (*tableLock, error) {
	var tables []string
	// pg_publication_tables lists a partitioned table's root when the publication publishes
	// through it, and LOCK TABLE locks the partitions with it.
	err := conn.QueryRow(ctx, `SELECT coalesce(array_agg(format('%I.%I', schemaname, tablename) ORDER BY schemaname, tablename), '{}')
		FROM pg_catalog.pg_publication_tables WHERE pubname = $1::text`, pub).Scan(&tables)
	if err != nil {
		return nil, fmt.Errorf("table fence: list the tables of publication %s: %w", pub, err)
	}
	l := &tableLock{conn: conn, pid: conn.PgConn().PID(), tables: tables}
	if len(tables) == 0 {
		return l, nil
	}
	if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
		return nil, fmt.Errorf("table fence: %w", err)
	}
	ms := max(1, timeout.Milliseconds())
	if _, err := conn.Exec(ctx, fmt.Sprintf("SET LOCAL lock_timeout = %d", ms)); err != nil {
		return nil, fmt.Errorf("table fence: %w", err)
	}
	if _, err := conn.Exec(ctx, "LOCK TABLE "+strings.Join(tables, ", ")+" IN EXCLUSIVE MODE"); err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
			return nil, fmt.Errorf("table fence: a transaction writing to the migrated tables outside the proxy did not end within cutover.fence_lock_timeout %s (find it in pg_stat_activity, end it or raise the timeout): %w", timeout, err)
		}
		return nil, fmt.Errorf("table fence: lock %d tables in EXCLUSIVE mode: %w", len(tables), err)
	}
	return l, nil
}

// pidOrZero is the lock session's backend, 0 without a fence up (nil-safe).
func (l *tableLock) pidOrZero() uint32 {
	if l == nil || l.conn == nil {
		return 0
	}
	return l.pid
}

// release ends the sessions queued behind the lock (when endWaiters) and releases it,
// returning how many were ended. Nil-safe.
func (l *tableLock) release(ctx context.Context, endWaiters bool) (int, error) {
	if l == nil || l.conn == nil {
		return 0, nil
	}
	conn := l.conn
	l.conn = nil
	defer conn.Close(context.WithoutCancel(ctx))
	n := 0
	var err error
	if endWaiters && len(l.tables) > 0 {
		// Every session waiting for a lock that conflicts with the fence's: PostgreSQL lists
		// the fence among its blockers (the holder of a conflicting lock), whether it queued
		// first or behind another waiter.
		err = conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(a.pid))
			FROM pg_catalog.pg_stat_activity a
			WHERE a.datname = current_database() AND a.pid <> pg_catalog.pg_backend_pid()
			  AND $1::int4 = ANY (pg_catalog.pg_blocking_pids(a.pid))`, int32(l.pid)).Scan(&n)
		if err != nil {
			err = fmt.Errorf("table fence: end the sessions queued behind it: %w", err)
		}
	}
	if _, rerr := conn.Exec(ctx, "ROLLBACK"); rerr != nil {
		err = errors.Join(err, fmt.Errorf("table fence: release: %w", rerr))
	}
	return n, err
}

// tableFenceCheck is the pre-check of the table fence: the trigger and rule statements the
// copy kept back are run on both sides in the pause (ALTER TABLE), which would wait for the
// lock for ever.
func tableFenceCheck(deferred int) Check {
	c := Check{Name: "table fence possible", OK: deferred == 0, Detail: "cutover.fence_tables: LOCK TABLE … IN EXCLUSIVE MODE on the migrated tables in the pause"}
	if deferred > 0 {
		c.Detail = fmt.Sprintf("cutover.fence_tables cannot be used with the %d trigger and rule statements the copy kept back (they are switched in the pause with ALTER TABLE, which the lock blocks): use cutover.fence_source or cutover.fence_roles instead", deferred)
	}
	return c
}
