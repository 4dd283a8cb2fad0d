// Package state keeps pgshift's durable migration state in the `pgshift` schema of the target
// database: which slot and publication the migration streams from, the phase it has reached,
// per-table and per-chunk copy progress, the last applied source position, and verify results.
//
// Everything a restarted agent needs to resume is here and nowhere else, so an agent that is
// killed at any point re-derives what to do next from these tables. Writers that must be atomic
// with user data (copy chunks, applied position) take a pgx.Tx so they commit in the same
// transaction as the rows they describe.
//
// Tables: pgshift.migration (the singleton row: slot, publication, phase, consistent LSN),
// pgshift.tables and pgshift.chunks (copy progress), pgshift.post_data (finished post-data
// steps), pgshift.position (applied source position), pgshift.follow_status (the agent's latest
// lag measurement), pgshift.verify_runs (saved verify results), pgshift.agent (the identity and
// heartbeat of the agent holding the migration's lease) and pgshift.deferred_ddl (target DDL
// kept back until cutover, such as ENABLE ALWAYS triggers that would fire during apply).
//
// One agent per migration: lease.go states the lease contract — a session-level advisory lock
// on a dedicated target session, with every agent session fenced — and every phase and
// table-state transition here is a compare-and-set on the state row.
package state

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// ddl creates the state schema; every statement is idempotent so Ensure can run on every start.
var ddl = []string{
	`CREATE SCHEMA IF NOT EXISTS pgshift`,
	`COMMENT ON SCHEMA pgshift IS 'pgshift migration state; removed by pgshift finish'`,
	`CREATE TABLE IF NOT EXISTS pgshift.migration (
		id               int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
		source_system_id text NOT NULL,
		source_database  text NOT NULL,
		slot_name        text NOT NULL,
		publication_name text NOT NULL,
		consistent_lsn   pg_lsn,
		phase            text NOT NULL,
		created_at       timestamptz NOT NULL DEFAULT now(),
		updated_at       timestamptz NOT NULL DEFAULT now()
	)`,
	`CREATE TABLE IF NOT EXISTS pgshift.tables (
		schema_name  text NOT NULL,
		table_name   text NOT NULL,
		root_schema  text NOT NULL DEFAULT '',
		root_name    text NOT NULL DEFAULT '',
		kind         text NOT NULL DEFAULT 'table',
		chunks       int NOT NULL DEFAULT 0,
		state        text NOT NULL DEFAULT 'pending',
		snapshot_lsn pg_lsn,
		rows_copied  bigint NOT NULL DEFAULT 0,
		bytes_copied bigint NOT NULL DEFAULT 0,
		started_at   timestamptz,
		finished_at  timestamptz,
		PRIMARY KEY (schema_name, table_name)
	)`,
	`CREATE TABLE IF NOT EXISTS pgshift.chunks (
		schema_name text NOT NULL,
		table_name  text NOT NULL,
		chunk_no    int NOT NULL,
		rows_copied bigint NOT NULL,
		bytes_copied bigint NOT NULL,
		finished_at timestamptz NOT NULL DEFAULT now(),
		PRIMARY KEY (schema_name, table_name, chunk_no)
	)`,
	`CREATE TABLE IF NOT EXISTS pgshift.position (
		id           int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
		applied_lsn  pg_lsn NOT NULL,
		commit_time  timestamptz,
		updated_at   timestamptz NOT NULL DEFAULT now()
	)`,
	`CREATE TABLE IF NOT EXISTS pgshift.verify_runs (
		id          bigserial PRIMARY KEY,
		started_at  timestamptz NOT NULL,
		finished_at timestamptz NOT NULL DEFAULT now(),
		mode        text NOT NULL,
		differences bigint NOT NULL,
		result      jsonb NOT NULL
	)`,
}

// Ensure creates the state schema and all its tables on the target if they are missing: the
// core tables above, and those each part declares beside its code (copyDDL, followDDL,
// leaseDDL, deferredDDL, observeDDL). It is cheap and idempotent, so every command that writes state calls
// it first.
func Ensure(ctx context.Context, q catalog.Querier) error {
	for _, stmt := range schemaDDL() {
		if _, err := q.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create pgshift state schema on target: %w", err)
		}
	}
	return nil
}

func schemaDDL() []string {
	return slices.Concat(ddl, copyDDL, followDDL, columnsDDL, leaseDDL, deferredDDL, observeDDL, cutoverDDL)
}

// SchemaSQL is the script Ensure runs, for tests that set up a target with plain SQL.
func SchemaSQL() string {
	return strings.Join(schemaDDL(), ";\n") + ";\n"
}

// ErrNoMigration means the target holds no migration state yet.
var ErrNoMigration = errors.New("no migration state on the target (run `pgshift copy` or `pgshift run` first)")

// Migration is the singleton row describing the migration this target belongs to.
type Migration struct {
	SourceSystemID string // the source cluster's system identifier: guards against following a different server
	SourceDatabase string
	Slot           string
	Publication    string
	ConsistentLSN  pgtypes.LSN // the slot's consistent point: the copy snapshot's position
	Phase          pgtypes.Phase
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// Load reads the migration row. It returns ErrNoMigration when the schema or row is absent.
func Load(ctx context.Context, q catalog.Querier) (Migration, error) {
	var m Migration
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('pgshift.migration') IS NOT NULL`).Scan(&exists); err != nil {
		return m, fmt.Errorf("read migration state: %w", err)
	}
	if !exists {
		return m, ErrNoMigration
	}
	var lsn *string
	var phase string
	err := q.QueryRow(ctx, `SELECT source_system_id, source_database, slot_name, publication_name,
		consistent_lsn::text, phase, created_at, updated_at FROM pgshift.migration WHERE id = 1`).
		Scan(&m.SourceSystemID, &m.SourceDatabase, &m.Slot, &m.Publication, &lsn, &phase, &m.CreatedAt, &m.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return m, ErrNoMigration
	}
	if err != nil {
		return m, fmt.Errorf("read migration state: %w", err)
	}
	if lsn != nil {
		if m.ConsistentLSN, err = pgtypes.ParseLSN(*lsn); err != nil {
			return m, fmt.Errorf("read migration state: %w", err)
		}
	}
	m.Phase = pgtypes.Phase(phase)
	if !m.Phase.Valid() {
		return m, fmt.Errorf("read migration state: unknown phase %q", phase)
	}
	return m, nil
}

// Create inserts the migration row; it fails if one exists (a target holds one migration).
func Create(ctx context.Context, q catalog.Querier, m Migration) error {
	var lsn any
	if m.ConsistentLSN != 0 {
		lsn = m.ConsistentLSN.String()
	}
	_, err := q.Exec(ctx, `INSERT INTO pgshift.migration
		(source_system_id, source_database, slot_name, publication_name, consistent_lsn, phase)
		VALUES ($1, $2, $3, $4, $5::pg_lsn, $6)`,
		m.SourceSystemID, m.SourceDatabase, m.Slot, m.Publication, lsn, string(m.Phase))
	if err != nil {
		return fmt.Errorf("record migration state: %w", err)
	}
	return nil
}

// SetConsistentLSN records the slot's consistent point once the slot exists.
func SetConsistentLSN(ctx context.Context, q catalog.Querier, lsn pgtypes.LSN) error {
	_, err := q.Exec(ctx, `UPDATE pgshift.migration SET consistent_lsn = $1::pg_lsn, updated_at = now() WHERE id = 1`, lsn.String())
	if err != nil {
		return fmt.Errorf("record consistent LSN %s: %w", lsn, err)
	}
	return nil
}

// ErrStateConflict is wrapped by the errors of compare-and-set transitions that found the state
// row not as expected: something else (another agent, or a person) changed the migration.
var ErrStateConflict = errors.New("the migration state changed under this agent")

// Advance moves the migration from phase from to phase to, as a compare-and-set on the state
// row: it fails, changing nothing, when the stored phase is not from. Phases never move
// backwards; from == to is allowed (a resumed step re-entering its own phase).
func Advance(ctx context.Context, q catalog.Querier, from, to pgtypes.Phase) error {
	if !to.AtLeast(from) {
		return fmt.Errorf("migration phase cannot go back from %s to %s", from, to)
	}
	tag, err := q.Exec(ctx, `UPDATE pgshift.migration SET phase = $2::text, updated_at = now() WHERE id = 1 AND phase = $1::text`,
		string(from), string(to))
	if err != nil {
		return fmt.Errorf("set migration phase %s: %w", to, err)
	}
	if tag.RowsAffected() == 0 {
		var cur string
		if err := q.QueryRow(ctx, `SELECT phase FROM pgshift.migration WHERE id = 1`).Scan(&cur); err != nil {
			cur = "(no migration row)"
		}
		return fmt.Errorf("%w: moving it from phase %s to %s, found phase %s; another pgshift agent may be running (pgshift status shows it) — stop it, then run this command again",
			ErrStateConflict, from, to, cur)
	}
	return nil
}

// SetPhase moves the migration from its stored phase to p (a compare-and-set against the phase
// it reads first, see Advance). Phases never move backwards; an attempt is an error.
func SetPhase(ctx context.Context, q catalog.Querier, p pgtypes.Phase) error {
	m, err := Load(ctx, q)
	if err != nil {
		return err
	}
	return Advance(ctx, q, m.Phase, p)
}

// Drop removes all pgshift state from a database (used by finish, and by copy --force).
func Drop(ctx context.Context, q catalog.Querier) error {
	if _, err := q.Exec(ctx, `DROP SCHEMA IF EXISTS pgshift CASCADE`); err != nil {
		return fmt.Errorf("drop pgshift state schema: %w", err)
	}
	return nil
}
