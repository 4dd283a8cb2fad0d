package cutover

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/apply"
	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// ReverseSlot and ReversePublication name the reverse replication's objects on the target
// (one migration per target database).
const (
	ReverseSlot        = "pgshift_reverse"
	ReversePublication = "pgshift_reverse"
)

// armReverse creates the reverse publication (FOR TABLE every migrated table) and slot on the
// target and the reverse state on the source, and returns the slot's consistent point. The
// forward session has stopped and traffic is paused, so nothing writes the migrated tables on
// the target: the slot holds no change that came from the source. Objects a killed earlier
// attempt left behind are dropped first.
func (e *Engine) armReverse(ctx context.Context, conn, src *pgx.Conn, rev state.CutoverState) (pgtypes.LSN, error) {
	if err := dropReverse(ctx, conn, rev.ReverseSlot, rev.ReversePublication); err != nil {
		return 0, err
	}
	if err := state.EnsureReverse(ctx, src); err != nil {
		return 0, e.source().Describe(err)
	}
	migrated, err := migratedTables(ctx, conn)
	if err != nil {
		return 0, e.target().Describe(err)
	}
	// Unlogged tables cannot be published (their changes are not in the WAL); cutover and
	// rollback copy them whole during the pause instead, with recopy_unlogged.
	unlogged, err := unloggedTables(ctx, conn)
	if err != nil {
		return 0, e.target().Describe(err)
	}
	names := make([]string, 0, len(migrated))
	for id := range migrated {
		if !unlogged[id] {
			names = append(names, id.Sanitize())
		}
	}
	slices.Sort(names)
	sql := "CREATE PUBLICATION " + pgtypes.QuoteIdent(rev.ReversePublication)
	if len(names) > 0 {
		sql += " FOR TABLE " + strings.Join(names, ", ")
	}
	if _, err := conn.Exec(ctx, sql); err != nil {
		return 0, e.target().Describe(fmt.Errorf("create publication %s on the target: %w", rev.ReversePublication, err))
	}
	var s string
	if err := conn.QueryRow(ctx, `SELECT lsn::text FROM pg_catalog.pg_create_logical_replication_slot($1::name, 'pgoutput')`, rev.ReverseSlot).Scan(&s); err != nil {
		return 0, e.target().Describe(fmt.Errorf("create replication slot %s on the target: %w", rev.ReverseSlot, err))
	}
	return pgtypes.ParseLSN(s)
}

// unloggedTables are the target's unlogged tables.
func unloggedTables(ctx context.Context, conn *pgx.Conn) (map[pgtypes.TableID]bool, error) {
	rows, err := conn.Query(ctx, `SELECT n.nspname::text, c.relname::text FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'p')`)
	if err != nil {
		return nil, fmt.Errorf("list unlogged tables on the target: %w", err)
	}
	out := map[pgtypes.TableID]bool{}
	var id pgtypes.TableID
	_, err = pgx.ForEachRow(rows, []any{&id.Schema, &id.Name}, func() error {
		out[id] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list unlogged tables on the target: %w", err)
	}
	return out, nil
}

// dropReverse drops the reverse slot and publication on the target where they exist.
func dropReverse(ctx context.Context, conn *pgx.Conn, slot, pub string) error {
	if slot != "" {
		if _, err := conn.Exec(ctx, `SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots
			WHERE slot_name = $1::name AND database = current_database()`, slot); err != nil {
			return fmt.Errorf("drop the reverse replication slot %s on the target: %w", slot, err)
		}
	}
	if pub != "" {
		if _, err := conn.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgtypes.QuoteIdent(pub)); err != nil {
			return fmt.Errorf("drop the reverse publication %s on the target: %w", pub, err)
		}
	}
	return nil
}

// reverseLoop runs reverse replication until ctx ends, retrying connection failures from the
// source's durable position like the forward session does.
func (e *Engine) reverseLoop(ctx context.Context, st state.CutoverState) error {
	delay := time.Second
	for {
		actx, cancel := e.d.Lease.Bind(ctx)
		err := e.reverseOnce(actx, st)
		if err != nil {
			// The applier's and decoder's messages speak of the stream's source and target.
			err = fmt.Errorf("reverse replication (the target's changes applied to the source: below, \"source\" is the target and \"target\" the source; it resumes by itself once fixed): %w", err)
		}
		lost := errors.Is(context.Cause(actx), state.ErrLeaseLost) || errors.Is(err, state.ErrLeaseLost)
		cancel()
		e.mu.Lock()
		e.revErr, e.revSince = err, time.Time{}
		e.mu.Unlock()
		if ctx.Err() != nil {
			return nil
		}
		if lost {
			e.d.Log.Warn("reverse replication stopped: the agent's lease was lost; resuming once it is taken again", "err", err)
			if err := e.d.Lease.WaitHeld(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			continue
		}
		if err != nil && !(db.Transient(err) || errors.Is(err, cdc.ErrStreamEnded)) {
			// Traffic is on the target through this agent's proxy: a stop of reverse
			// replication must not take the proxy down with the agent. It is reported (and
			// rollback refuses) until the cause is fixed; then it resumes from the durable
			// position.
			e.d.Log.Error("reverse replication stopped; traffic stays on the target, rollback is refused until it runs again (fix the cause: it retries every "+
				e.d.ReverseRetry.String()+")", "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(e.d.ReverseRetry):
			}
			continue
		}
		e.d.Log.Warn("reverse replication interrupted; resuming from the source's applied position", "err", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(delay*2, 30*time.Second)
	}
}

// reverseOnce is one reverse session: the target's reverse slot streamed (cdc) into an applier
// on the source (apply), whose session carries the replication origin cdc.PgshiftOrigin and
// stores its position in the source's pgshift.position in the same transaction as the rows.
func (e *Engine) reverseOnce(ctx context.Context, st state.CutoverState) error {
	tgt, src := e.target(), e.source()
	pool, err := tgt.Pool(ctx, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	migrated, err := migratedTables(ctx, pool)
	if err != nil {
		return tgt.Describe(err)
	}
	srv, err := catalog.Server(ctx, pool)
	if err != nil {
		return tgt.Describe(err)
	}
	slot, err := catalog.Slot(ctx, pool, st.ReverseSlot)
	if err != nil {
		return tgt.Describe(err)
	}
	if !slot.Exists {
		return fmt.Errorf("reverse replication slot %q is missing on the target: the source can no longer be kept current, so rollback would lose writes; "+
			"run pgshift finish if the migration is done", st.ReverseSlot)
	}
	applyConn, err := src.Connect(ctx)
	if err != nil {
		return err
	}
	defer applyConn.Close(context.WithoutCancel(ctx))
	if err := writable(ctx, applyConn); err != nil { // the source may be fenced (fence_source)
		return src.Describe(err)
	}
	if err := state.EnsureReverse(ctx, applyConn); err != nil {
		return src.Describe(err)
	}
	pos, err := state.LoadPosition(ctx, applyConn)
	if err != nil {
		return src.Describe(err)
	}
	start := max(pos.AppliedLSN, st.ReverseStart)
	if slot.ConfirmedFlush > start {
		return fmt.Errorf("reverse replication slot %q on the target has confirmed %s, beyond the source's applied position %s: something else consumed it, so changes in between are lost",
			st.ReverseSlot, slot.ConfirmedFlush, start)
	}
	applier, err := apply.New(ctx, applyConn, pool, apply.Options{SkipBelow: start, Origin: cdc.PgshiftOrigin}, &e.rstats, e.d.Log.With("direction", "reverse"))
	if err != nil {
		return src.Describe(err)
	}
	repl, err := db.Endpoint{Role: db.Target, DSN: e.d.Config.Target}.ReplicationWithParams(ctx, cdc.SessionParams())
	if err != nil {
		return err
	}
	defer repl.Close(context.WithoutCancel(ctx))
	q := cdc.NewQueue(256, 64<<20)
	stream := cdc.NewStream(repl, cdc.Options{Slot: st.ReverseSlot, Publication: st.ReversePublication, StartLSN: start, SkipBelow: start,
		ServerVersion: srv.VersionNum, StatusInterval: time.Second, Tables: migrated, OriginNone: true},
		q, applier.Durable, nil, e.d.Log.With("direction", "reverse"))
	e.mu.Lock()
	e.revErr, e.revSince = nil, time.Now()
	e.mu.Unlock()
	e.d.Log.Info("reverse replication streaming", "slot", st.ReverseSlot, "from", start.String())
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return stream.Run(gctx) })
	g.Go(func() error { return applier.Run(gctx, q) })
	return g.Wait()
}

// ReverseApplied is the target position reverse replication has applied to the source.
func (e *Engine) ReverseApplied() pgtypes.LSN { return pgtypes.LSN(e.rstats.AppliedLSN.Load()) }
