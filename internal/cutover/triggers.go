package cutover

// Deferred triggers and rules across switches (pgshift.deferred_ddl): a trigger or rule set
// ENABLE ALWAYS or ENABLE REPLICA fires in an apply session too, so it may be on only on the
// side traffic is on, and must be off where replication applies (it would repeat there what
// the other side's own trigger did, the rows of which replication brings). copy keeps them off
// on the target and records the source's statements. At a cutover, in the pause (forward
// replication stopped, reverse not started), the target runs the source's statements and the
// source their apply-safe forms; a rollback, after reverse replication stopped, does the
// opposite; finish gives the source its own statements back. Every step is idempotent: an
// aborted operation and a restarted agent run it again for the side that is live.

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/schema"
	"github.com/pgshift/pgshift/internal/state"
)

// triggersLive turns the deferred triggers and rules on on the live side and off on the other;
// conn is the target, src a writable source session (nil: one is opened, only when there is
// something to do; the pause passes its own). It returns the step's detail ("" when there are
// none).
func (e *Engine) triggersLive(ctx context.Context, conn, src *pgx.Conn, live string) (string, error) {
	ds, err := state.LoadDeferred(ctx, conn)
	if err != nil || len(ds) == 0 {
		return "", e.target().Describe(err)
	}
	if src == nil {
		if src, err = e.writableSource().Connect(ctx); err != nil {
			return "", err
		}
		defer src.Close(context.WithoutCancel(ctx))
	}
	stmts := make([]string, len(ds))
	for i, d := range ds {
		stmts[i] = d.Statement
		if live == state.LiveTarget {
			stmts[i] = schema.ApplySafe(d.Statement)
		}
	}
	if live == state.LiveTarget {
		if err := runStatements(ctx, src, stmts); err != nil {
			return "", e.source().Describe(fmt.Errorf("turn the deferred triggers and rules off on the source: %w", err))
		}
		n, err := state.ApplyDeferred(ctx, conn)
		if err != nil {
			return "", e.target().Describe(err)
		}
		return fmt.Sprintf("; %d trigger and rule statements kept back by the copy run on the target (%d now), their triggers and rules off on the source", len(ds), n), nil
	}
	n, err := state.UnapplyDeferred(ctx, conn, schema.ApplySafe)
	if err != nil {
		return "", e.target().Describe(err)
	}
	if err := runStatements(ctx, src, stmts); err != nil {
		return "", e.source().Describe(fmt.Errorf("turn the deferred triggers and rules on again on the source: %w", err))
	}
	return fmt.Sprintf("; %d deferred triggers and rules on again on the source, off on the target (%d now)", len(ds), n), nil
}

// runStatements runs pg_dump's schema-qualified statements in one transaction with an empty
// search_path, unseen by ddl: follow's capture on the source (they are pgshift's, made on each
// side for that side).
func runStatements(ctx context.Context, conn *pgx.Conn, stmts []string) error {
	return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config('search_path', '', true)`); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, state.CaptureOff); err != nil {
			return err
		}
		for _, s := range stmts {
			if _, err := tx.Exec(ctx, s); err != nil {
				return fmt.Errorf("%w\n  statement: %s", err, s)
			}
		}
		return nil
	})
}
