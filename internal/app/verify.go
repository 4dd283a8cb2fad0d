package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/follow"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/progress"
	"github.com/pgshift/pgshift/internal/state"
	"github.com/pgshift/pgshift/internal/verify"
)

// VerifyOptions are verify's settings beyond config.Config.
type VerifyOptions struct {
	Mode            verify.Mode
	ChunkRows       int64
	LeafRows        int64
	MaxRowsPerTable int
	NoSchema        bool
	NoSequences     bool
	Repair          bool

	// NoSave leaves the target untouched: the result is not written to pgshift.verify_runs.
	// Without it, the result is saved when the target holds a pgshift migration; a target
	// without one is only read, never written (no pgshift schema is created).
	NoSave bool

	// Live is "auto" (re-check differing rows when the target is being followed: pgshift's
	// migration is in the following phase, or FollowSlot names a native logical replication
	// slot) or "off" (one pass).
	Live string
	// FollowSlot is the source replication slot of a follower that is not pgshift (native
	// logical replication: the subscription's slot). Its confirmed_flush_lsn is the applied position.
	FollowSlot     string
	RecheckRounds  int
	RecheckTimeout time.Duration

	// Progress receives progress bars (ProgressTTY) or, when nil, nothing; log lines go to the logger.
	Progress         io.Writer
	ProgressTTY      bool
	ProgressInterval time.Duration
}

// Verify compares the source and target and returns the report; the report's ExitCode is the
// command's. An error means verify could not run.
func Verify(ctx context.Context, cfg config.Config, opts VerifyOptions, log *slog.Logger) (*verify.Report, error) {
	if err := cfg.RequireSource(); err != nil {
		return nil, err
	}
	if err := cfg.RequireTarget(); err != nil {
		return nil, err
	}
	source := db.Endpoint{Role: db.Source, DSN: cfg.Source}
	target := db.Endpoint{Role: db.Target, DSN: cfg.Target}
	// Workers, the snapshot holder, and one spare for the re-check and small reads.
	src, err := source.Pool(ctx, cfg.Jobs+2)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	dst, err := target.Pool(ctx, cfg.Jobs+2)
	if err != nil {
		return nil, err
	}
	defer dst.Close()

	vo := verify.Options{
		Mode: opts.Mode, Jobs: cfg.Jobs, Filter: cfg.Filter(),
		ChunkRows: opts.ChunkRows, LeafRows: opts.LeafRows, MaxRowsPerTable: opts.MaxRowsPerTable,
		Schema: !opts.NoSchema, Sequences: !opts.NoSequences, Repair: opts.Repair,
		RecheckRounds: opts.RecheckRounds, RecheckTimeout: opts.RecheckTimeout,
	}
	var notes []string
	if opts.Live != "off" {
		n, err := liveMode(ctx, &vo, src, dst, source, target, opts.FollowSlot, log)
		if err != nil {
			return nil, err
		}
		notes = append(notes, n...)
	}

	var rep *verify.Report
	tracker := progress.New(progress.Options{Out: opts.Progress, TTY: opts.ProgressTTY && opts.Progress != nil,
		Interval: opts.ProgressInterval, Log: log, Title: "verify"})
	vo.Progress = tracker
	pctx, stopProgress := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(pctx)
	g.Go(func() error { return tracker.Run(gctx) })
	g.Go(func() error {
		defer stopProgress()
		var err error
		rep, err = verify.Run(gctx, verify.Side{Endpoint: source, Pool: src}, verify.Side{Endpoint: target, Pool: dst}, vo, log)
		return err
	})
	err = g.Wait()
	tracker.Stop()
	if err != nil {
		return nil, err
	}
	rep.Notes = append(notes, rep.Notes...)
	if !opts.NoSave {
		if id, err := saveVerify(ctx, dst, rep); errors.Is(err, state.ErrNoMigration) {
			// verify only reads a target that holds no migration: it is not pgshift's to write.
			rep.Notes = append(rep.Notes, "the result was not saved: the target holds no pgshift migration, and verify writes nothing to a target it only reads")
		} else if err != nil {
			log.Warn("could not save the verify result on the target (pass --no-save to skip saving)", "err", target.Describe(err))
			rep.Notes = append(rep.Notes, "the result was not saved on the target: "+target.Describe(err).Error())
		} else {
			log.Info("verify result saved", "table", "pgshift.verify_runs", "id", id)
		}
	}
	return rep, nil
}

// liveMode decides whether the target is a live follower and, if so, how to read its applied
// position. With pgshift's migration in the following phase, the applied position is the
// larger of pgshift.position and the slot's confirmed_flush_lsn (which the agent confirms
// only after the target committed), and a heartbeat makes an idle source's position reachable.
// With --slot and no pgshift migration, the follower is native logical replication and the
// slot's confirmed_flush_lsn is its applied position.
func liveMode(ctx context.Context, vo *verify.Options, src, dst *pgxpool.Pool, source, target db.Endpoint,
	followSlot string, log *slog.Logger) ([]string, error) {
	m, err := state.Load(ctx, dst)
	switch {
	case errors.Is(err, state.ErrNoMigration):
		if followSlot == "" {
			return nil, nil
		}
		if _, err := slotConfirmed(ctx, src, followSlot); err != nil {
			return nil, source.Describe(err)
		}
		vo.Following = true
		vo.Applied = func(ctx context.Context) (pgtypes.LSN, error) { return slotConfirmed(ctx, src, followSlot) }
		log.Info("live verify: the target follows the source through a replication slot; differing rows are re-checked", "slot", followSlot)
		return []string{"live mode: the target follows slot " + followSlot + "; differences were re-checked after it caught up"}, nil
	case err != nil:
		return nil, target.Describe(err)
	}
	switch {
	case m.Phase == pgtypes.PhaseFollowing:
	case m.Phase.AtLeast(pgtypes.PhaseCutover):
		return []string{fmt.Sprintf("the migration is in phase %s: the target takes the writes now, so verify compares one pass without re-checking", m.Phase)}, nil
	default:
		return []string{fmt.Sprintf("the migration is in phase %s (the copy is not complete): expect differences until pgshift run follows the source", m.Phase)}, nil
	}
	slot := m.Slot
	if followSlot != "" {
		slot = followSlot
	}
	vo.Following = true
	vo.Applied = func(ctx context.Context) (pgtypes.LSN, error) {
		pos, err := state.LoadPosition(ctx, dst)
		if err != nil {
			return 0, target.Describe(err)
		}
		conf, err := slotConfirmed(ctx, src, slot)
		if err != nil {
			return 0, source.Describe(err)
		}
		return max(pos.AppliedLSN, conf), nil
	}
	vo.Heartbeat = func(ctx context.Context) error { return follow.EmitHeartbeat(ctx, src) }
	log.Info("live verify: pgshift run follows the source; differing rows are re-checked after the target catches up", "slot", slot)
	return []string{"live mode: pgshift run follows the source; differences were re-checked after the target caught up"}, nil
}

// slotConfirmed reads a replication slot's confirmed_flush_lsn on the source.
func slotConfirmed(ctx context.Context, q *pgxpool.Pool, slot string) (pgtypes.LSN, error) {
	st, err := catalog.Slot(ctx, q, slot)
	if err != nil {
		return 0, err
	}
	if !st.Exists {
		return 0, fmt.Errorf("replication slot %q does not exist on the source: pass the follower's slot with --slot", slot)
	}
	return st.ConfirmedFlush, nil
}

// saveVerify writes the report into pgshift.verify_runs of the target's migration; it returns
// state.ErrNoMigration, and writes nothing, when the target holds none.
func saveVerify(ctx context.Context, dst *pgxpool.Pool, rep *verify.Report) (int64, error) {
	if _, err := state.Load(ctx, dst); err != nil {
		return 0, err
	}
	if err := state.Ensure(ctx, dst); err != nil { // a migration made by an older pgshift may lack verify_runs
		return 0, err
	}
	body, err := json.Marshal(rep)
	if err != nil {
		return 0, fmt.Errorf("encode verify result: %w", err)
	}
	return state.SaveVerifyRun(ctx, dst, state.VerifyRun{StartedAt: rep.StartedAt, Mode: string(rep.Mode),
		Differences: rep.Summary.Differences, Result: body})
}
