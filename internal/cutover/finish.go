package cutover

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// FinishOptions tune Finish.
type FinishOptions struct {
	// Yes confirms: without it Finish refuses, changing nothing.
	Yes bool
	// BeforeDrop runs once every check passed, before anything is removed: the caller saves the
	// migration report from the state that is about to go.
	BeforeDrop func(ctx context.Context) error
}

// FinishResult says what Finish removed.
type FinishResult struct {
	Removed []string `json:"removed"`
	// IdentitiesLeft are tables whose replica identity pgshift did not restore (changed since).
	IdentitiesLeft []string `json:"identities_left,omitempty"`
}

// ErrFinishRefused is wrapped by Finish's refusals; nothing was changed.
var ErrFinishRefused = errors.New("finish refused")

// Finish removes everything the migration left: the reverse slot and publication on the
// target, the forward slot and publication and the replication origin on the source, the
// replica identities pgshift set (restored on both sides), the source's ENABLE ALWAYS/REPLICA
// triggers and rules turned off while reverse replication applied (on again), the source
// fences (cutover.fence_source, cutover.fence_roles), and the pgshift schema on both sides. It refuses while an agent runs, while traffic is not on the target (finish after a
// cutover), and while reverse replication still has changes the source has not applied. Every
// step is idempotent: a finish interrupted at any point is run again.
func Finish(ctx context.Context, cfg config.Config, opts FinishOptions, log *slog.Logger) (FinishResult, error) {
	var res FinishResult
	tgt := db.Endpoint{Role: db.Target, DSN: cfg.Target}
	srcEP := db.Endpoint{Role: db.Source, DSN: cfg.Source}
	dst, err := tgt.Connect(ctx)
	if err != nil {
		return res, err
	}
	defer dst.Close(context.WithoutCancel(ctx))
	src, err := srcEP.Connect(ctx)
	if err != nil {
		return res, err
	}
	defer src.Close(context.WithoutCancel(ctx))
	if err := writable(ctx, src); err != nil { // a fenced source starts its sessions read-only
		return res, srcEP.Describe(err)
	}
	m, err := state.Load(ctx, dst)
	if err != nil {
		return res, fmt.Errorf("%w: %w", ErrFinishRefused, tgt.Describe(err))
	}
	if running, err := state.AgentRunning(ctx, dst); err != nil {
		return res, tgt.Describe(err)
	} else if running {
		return res, fmt.Errorf("%w: an agent (pgshift run) is running for this migration; stop it first", ErrFinishRefused)
	}
	st, err := state.LoadCutoverState(ctx, dst)
	if err != nil {
		return res, tgt.Describe(err)
	}
	switch {
	case st.Op != state.OpNone:
		return res, fmt.Errorf("%w: a %s is in progress (attempt %d); start the agent once so it settles it", ErrFinishRefused, st.Op, st.Attempt)
	case st.Live != state.LiveTarget:
		return res, fmt.Errorf("%w: traffic is on the source (no cutover is in effect): finish removes the migration's replication, so run pgshift cutover first", ErrFinishRefused)
	}
	// A rollback made while the target was unreachable is recorded on the source only, until an
	// agent settles it on the target: traffic is on the source then, whatever the target says.
	if r, ok, err := state.LoadTargetLostRollback(ctx, src); err != nil {
		return res, srcEP.Describe(err)
	} else if state.LiveSide(st, r, ok) != state.LiveTarget {
		return res, fmt.Errorf("%w: traffic is on the source: a rollback was made while the target was unreachable (%s); start the agent (pgshift run) so it settles the target's state and follows again, and cut over again before finishing", ErrFinishRefused, r.At.Format(time.RFC3339))
	}
	if st.ReverseSlot != "" {
		applied, err := reverseApplied(ctx, src)
		if err != nil {
			return res, srcEP.Describe(err)
		}
		n, err := pendingChanges(ctx, dst, st.ReverseSlot, st.ReversePublication, applied)
		if err != nil {
			return res, tgt.Describe(err)
		}
		if n > 0 {
			return res, fmt.Errorf("%w: reverse replication has %d row changes on the target that the source has not applied yet (slot %s); run the agent until it has applied them (pgshift run), then finish",
				ErrFinishRefused, n, st.ReverseSlot)
		}
	}
	if !opts.Yes {
		return res, fmt.Errorf("%w: finish drops slots %s (source) and %s (target), their publications, replication origin %s and the pgshift schema on both sides; run it again with --yes",
			ErrFinishRefused, m.Slot, st.ReverseSlot, cdc.PgshiftOrigin)
	}
	if opts.BeforeDrop != nil {
		if err := opts.BeforeDrop(ctx); err != nil {
			return res, err
		}
	}
	if err := dropReverse(ctx, dst, st.ReverseSlot, st.ReversePublication); err != nil {
		return res, tgt.Describe(err)
	}
	res.Removed = append(res.Removed, "target: slot and publication "+st.ReverseSlot)
	if _, err := src.Exec(ctx, `SELECT pg_catalog.pg_drop_replication_slot(slot_name) FROM pg_catalog.pg_replication_slots
		WHERE slot_name = $1::name AND database = current_database()`, m.Slot); err != nil {
		return res, srcEP.Describe(fmt.Errorf("drop replication slot %s on the source: %w", m.Slot, err))
	}
	if _, err := src.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgtypes.QuoteIdent(m.Publication)); err != nil {
		return res, srcEP.Describe(fmt.Errorf("drop publication %s on the source: %w", m.Publication, err))
	}
	res.Removed = append(res.Removed, fmt.Sprintf("source: slot %s and publication %s", m.Slot, m.Publication))
	if _, err := src.Exec(ctx, `SELECT pg_catalog.pg_replication_origin_drop(roname) FROM pg_catalog.pg_replication_origin WHERE roname = $1::text`, cdc.PgshiftOrigin); err != nil {
		return res, srcEP.Describe(fmt.Errorf("drop replication origin %s on the source: %w", cdc.PgshiftOrigin, err))
	}
	res.Removed = append(res.Removed, "source: replication origin "+cdc.PgshiftOrigin)
	restored, err := state.RestoreReplicaIdentities(ctx, src, dst)
	if err != nil {
		return res, err
	}
	for _, t := range restored.Restored {
		res.Removed = append(res.Removed, "replica identity FULL set by pgshift on "+t.String())
	}
	res.IdentitiesLeft = restored.Left
	// The source's own trigger and rule states, turned off while reverse replication applied.
	if ds, err := state.LoadDeferred(ctx, dst); err != nil {
		return res, tgt.Describe(err)
	} else if len(ds) > 0 {
		stmts := make([]string, len(ds))
		for i, d := range ds {
			stmts[i] = d.Statement
		}
		if err := runStatements(ctx, src, stmts); err != nil {
			return res, srcEP.Describe(fmt.Errorf("give the source its triggers and rules back: %w", err))
		}
		res.Removed = append(res.Removed, fmt.Sprintf("source: %d triggers and rules turned off during reverse replication turned on again", len(ds)))
	}
	// The fences pgshift put up at the cutover (cutover.fence_source, cutover.fence_roles).
	if cfg.Cutover.FenceSource {
		if err := unfenceSource(ctx, src); err != nil {
			return res, srcEP.Describe(err)
		}
		res.Removed = append(res.Removed, "source: the read-only fence (default_transaction_read_only)")
	}
	if len(cfg.Cutover.FenceRoles) > 0 {
		if err := fenceRoles(ctx, src, cfg.Cutover.FenceRoles, false); err != nil {
			return res, srcEP.Describe(err)
		}
		res.Removed = append(res.Removed, "source: the NOLOGIN fence of "+strings.Join(cfg.Cutover.FenceRoles, ", "))
	}
	// The DDL capture (ddl: follow) first, so that nothing below is recorded by it.
	if err := state.RemoveDDLCapture(ctx, src); err != nil {
		return res, srcEP.Describe(err)
	}
	// A PostgreSQL 10 source's TRUNCATE capture (one trigger per published table).
	if err := state.RemoveTruncateCapture(ctx, src); err != nil {
		return res, srcEP.Describe(err)
	}
	for _, side := range []struct {
		conn *pgx.Conn
		ep   db.Endpoint
	}{{dst, tgt}, {src, srcEP}} {
		if err := state.Drop(ctx, side.conn); err != nil {
			return res, side.ep.Describe(err)
		}
		res.Removed = append(res.Removed, fmt.Sprint(side.ep.Role)+": schema pgshift")
	}
	log.Info("migration finished", "removed", len(res.Removed))
	return res, nil
}

// reverseApplied is the target position reverse replication has applied to the source (0 when
// it never applied anything).
func reverseApplied(ctx context.Context, src *pgx.Conn) (pgtypes.LSN, error) {
	var ok bool
	if err := src.QueryRow(ctx, `SELECT to_regclass('pgshift.position') IS NOT NULL`).Scan(&ok); err != nil || !ok {
		return 0, err
	}
	p, err := state.LoadPosition(ctx, src)
	return p.AppliedLSN, err
}

// pendingChanges counts the row changes the slot still holds in transactions the source has
// not applied (committed at or after applied), decoded without consuming them (protocol 1, so
// a large transaction arrives whole).
func pendingChanges(ctx context.Context, conn *pgx.Conn, slot, pub string, applied pgtypes.LSN) (int, error) {
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = $1::name)`, slot).Scan(&exists); err != nil {
		return 0, fmt.Errorf("look up slot %s: %w", slot, err)
	}
	if !exists {
		return 0, nil
	}
	rows, err := conn.Query(ctx, `SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes($1::name, NULL, NULL,
		'proto_version', '1', 'publication_names', $2::text)`, slot, pub)
	if err != nil {
		return 0, fmt.Errorf("read the pending changes of slot %s: %w", slot, err)
	}
	defer rows.Close()
	n := 0
	var commit pgtypes.LSN
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return 0, err
		}
		msg, err := cdc.Decode(data, false)
		if err != nil {
			return 0, fmt.Errorf("decode a pending change of slot %s: %w", slot, err)
		}
		switch m := msg.(type) {
		case *cdc.BeginMsg:
			commit = m.FinalLSN
		case *cdc.InsertMsg, *cdc.UpdateMsg, *cdc.DeleteMsg, *cdc.TruncateMsg:
			if commit >= applied {
				n++
			}
		}
	}
	return n, rows.Err()
}
