package state

// Deferred target DDL: statements of the source's schema that must not take effect on the
// target while pgshift applies changes, recorded in pgshift.deferred_ddl and run in order by
// ApplyDeferred at cutover.
//
// The case that needs it: the apply sessions run with session_replication_role = replica, in
// which ordinary triggers and rules do not fire but those set ENABLE ALWAYS or ENABLE REPLICA
// do. pg_dump recreates those states in post-data (ALTER TABLE … ENABLE ALWAYS TRIGGER …); run
// as is, an audit trigger would fire on the target for every applied row while the source's
// own audit rows arrive through replication too — twice the rows. So copy keeps such triggers
// and rules DISABLED on the target and records the statement here instead.

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// deferredDDL adds the deferred-statement table; Ensure runs it with the rest of the state schema.
var deferredDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgshift.deferred_ddl (
		id          bigserial PRIMARY KEY,
		object_kind text NOT NULL,
		schema_name text NOT NULL,
		table_name  text NOT NULL,
		object_name text NOT NULL,
		object      text NOT NULL,
		statement   text NOT NULL,
		reason      text NOT NULL,
		recorded_at timestamptz NOT NULL DEFAULT now(),
		applied_at  timestamptz
	)`,
}

// DeferredStatement is one row of pgshift.deferred_ddl.
type DeferredStatement struct {
	ID        int64
	Kind      string          // "trigger" or "rule"
	Table     pgtypes.TableID // the table the trigger or rule belongs to
	Name      string          // the trigger's or rule's name
	Object    string          // for people: `trigger "audit" on public.orders`
	Statement string          // the statement to run at cutover, as pg_dump wrote it
	Reason    string
	// RecordedAt is when copy recorded it; AppliedAt when ApplyDeferred ran it (zero until then).
	RecordedAt time.Time
	AppliedAt  time.Time
}

// RecordDeferred records a statement kept back until cutover. Call it in the transaction that
// applies the rest of the object's definition, so the object and its record commit together.
// Statements are applied in the order they were recorded.
func RecordDeferred(ctx context.Context, tx pgx.Tx, d DeferredStatement) error {
	_, err := tx.Exec(ctx, `INSERT INTO pgshift.deferred_ddl (object_kind, schema_name, table_name, object_name, object, statement, reason)
		VALUES ($1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text)`,
		d.Kind, d.Table.Schema, d.Table.Name, d.Name, d.Object, d.Statement, d.Reason)
	if err != nil {
		return fmt.Errorf("record deferred statement for %s: %w", d.Object, err)
	}
	return nil
}

// LoadDeferred reads every deferred statement in the order they apply; none (and no error)
// when the table does not exist.
func LoadDeferred(ctx context.Context, q catalog.Querier) ([]DeferredStatement, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('pgshift.deferred_ddl') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("read deferred statements: %w", err)
	}
	if !exists {
		return nil, nil
	}
	rows, err := q.Query(ctx, `SELECT id, object_kind, schema_name, table_name, object_name, object, statement, reason, recorded_at, applied_at
		FROM pgshift.deferred_ddl ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read deferred statements: %w", err)
	}
	defer rows.Close()
	var out []DeferredStatement
	for rows.Next() {
		var d DeferredStatement
		var applied *time.Time
		if err := rows.Scan(&d.ID, &d.Kind, &d.Table.Schema, &d.Table.Name, &d.Name, &d.Object, &d.Statement, &d.Reason,
			&d.RecordedAt, &applied); err != nil {
			return nil, fmt.Errorf("read deferred statements: %w", err)
		}
		if applied != nil {
			d.AppliedAt = *applied
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read deferred statements: %w", err)
	}
	return out, nil
}

// ApplyDeferred runs the deferred statements not applied yet, in the order they were recorded,
// in ONE target transaction that also marks them applied: all take effect or none, and running
// it again does nothing more. It returns how many it ran.
//
// Contract for the caller (cutover): run it only once apply has stopped for good — the source
// fenced and its final position applied — and before the application writes to the target.
// From then on the target's triggers and rules fire as the source's did; while pgshift still
// applied changes, an ENABLE ALWAYS trigger would fire on rows the source's trigger already
// produced.
func ApplyDeferred(ctx context.Context, conn *pgx.Conn) (int, error) {
	return runDeferred(ctx, conn, false, func(sql string) string { return sql }, "apply the deferred statement for %s on the target")
}

// UnapplyDeferred undoes ApplyDeferred (a rollback): for every applied statement, in recorded
// order, it runs form(statement) (the form that fires in no apply session) and marks it not
// applied, in ONE target transaction. Running it again does nothing more. It returns how many.
func UnapplyDeferred(ctx context.Context, conn *pgx.Conn, form func(string) string) (int, error) {
	return runDeferred(ctx, conn, true, form, "turn %s off again on the target")
}

// runDeferred runs form(statement) for every deferred statement whose applied state is
// applied, in recorded order, and flips that state, in ONE target transaction with the empty
// search_path pg_dump's statements are qualified for. what describes a failure (%s: the object).
func runDeferred(ctx context.Context, conn *pgx.Conn, applied bool, form func(string) string, what string) (int, error) {
	where, mark := "applied_at IS NULL", "now()"
	if applied {
		where, mark = "applied_at IS NOT NULL", "NULL"
	}
	n := 0
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config('search_path', '', true)`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, `SELECT id, object, statement FROM pgshift.deferred_ddl WHERE `+where+` ORDER BY id FOR UPDATE`)
		if err != nil {
			return fmt.Errorf("read deferred statements: %w", err)
		}
		type stmt struct {
			id          int64
			object, sql string
		}
		var todo []stmt
		for rows.Next() {
			var s stmt
			if err := rows.Scan(&s.id, &s.object, &s.sql); err != nil {
				rows.Close()
				return fmt.Errorf("read deferred statements: %w", err)
			}
			todo = append(todo, s)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("read deferred statements: %w", err)
		}
		for _, s := range todo {
			sql := form(s.sql)
			if _, err := tx.Exec(ctx, sql); err != nil {
				return fmt.Errorf(what+": %w\n  statement: %s", s.object, err, sql)
			}
			if _, err := tx.Exec(ctx, `UPDATE pgshift.deferred_ddl SET applied_at = `+mark+` WHERE id = $1::int8`, s.id); err != nil {
				return fmt.Errorf("record the deferred statement for %s: %w", s.object, err)
			}
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, nil
}
