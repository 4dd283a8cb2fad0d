package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/follow"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// ErrWaitTimeout is returned by Wait when the target did not catch up in time.
var ErrWaitTimeout = errors.New("timed out waiting for the target to catch up")

// ErrNoAgent is returned by Wait when no agent holds the migration's lease for longer than the
// grace period: nothing would ever apply the source's changes.
var ErrNoAgent = errors.New("no agent is running: start pgshift run")

// ErrWaitInterrupted is returned by Wait when it was stopped (Ctrl-C, SIGTERM) before the target
// caught up.
var ErrWaitInterrupted = errors.New("wait interrupted")

// DefaultAgentGrace is how long Wait waits for an agent to appear (wait is often started a
// moment after run) or to come back (a supervisor restarting it) before giving up.
const DefaultAgentGrace = 30 * time.Second

// WaitOptions tune Wait.
type WaitOptions struct {
	// Timeout gives up with ErrWaitTimeout; 0 waits indefinitely; negative is refused.
	Timeout time.Duration
	// AgentGrace is how long no agent may hold the migration's lease before Wait gives up with
	// ErrNoAgent (default DefaultAgentGrace).
	AgentGrace time.Duration
}

// WaitResult says what Wait waited for.
type WaitResult struct {
	SourceLSN  pgtypes.LSN // the barrier: the source's WAL insert position when Wait began
	AppliedLSN pgtypes.LSN // the target's applied position when Wait returned
	Waited     time.Duration
}

// Wait blocks until the target has applied everything the source had committed when Wait
// began; timeout 0 waits indefinitely. See WaitWith.
func Wait(ctx context.Context, cfg config.Config, timeout time.Duration, log *slog.Logger) (WaitResult, error) {
	return WaitWith(ctx, cfg, WaitOptions{Timeout: timeout}, log)
}

// WaitWith blocks until the target has applied everything the source had committed when it
// began.
//
// The barrier is the source's WAL insert position W, pg_current_wal_insert_lsn(). Every commit
// visible on the source when Wait starts has its commit record inserted before W: a backend
// inserts its commit record before it makes the transaction visible. pg_current_wal_lsn(), the
// write position, does not have that property — a transaction committed with
// synchronous_commit = off is visible while its commit record may still sit in the WAL buffers
// beyond it.
//
// The applied position only moves at transaction ends, so right after taking W Wait writes a
// heartbeat message in a transaction of its own (with synchronous_commit = on, which also
// flushes every earlier record for the walsender to send): its end is after W, so the agent
// reaches W even when the source stays idle, or when the last writes before W touched only
// tables that are not migrated.
//
// A running agent is needed. When no agent holds the migration's lease for longer than
// opts.AgentGrace, Wait ends with ErrNoAgent instead of waiting for ever.
func WaitWith(ctx context.Context, cfg config.Config, opts WaitOptions, log *slog.Logger) (WaitResult, error) {
	var res WaitResult
	if err := cfg.RequireSource(); err != nil {
		return res, err
	}
	if err := cfg.RequireTarget(); err != nil {
		return res, err
	}
	if opts.Timeout < 0 {
		return res, fmt.Errorf("wait timeout %s is negative: give a positive duration, or 0 to wait indefinitely", opts.Timeout)
	}
	if opts.AgentGrace <= 0 {
		opts.AgentGrace = DefaultAgentGrace
	}
	began := time.Now()
	if opts.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.Timeout)
		defer cancel()
	}
	w := waiter{res: &res, began: began, timeout: opts.Timeout}
	source := db.Endpoint{Role: db.Source, DSN: cfg.Source}
	target := db.Endpoint{Role: db.Target, DSN: cfg.Target}
	src, err := source.Connect(ctx)
	if err != nil {
		return res, w.stopped(ctx, err)
	}
	defer src.Close(context.Background())
	dst, err := target.Connect(ctx)
	if err != nil {
		return res, w.stopped(ctx, err)
	}
	defer dst.Close(context.Background())
	if _, err := src.Exec(ctx, `SET synchronous_commit = on`); err != nil {
		return res, w.stopped(ctx, source.Describe(err))
	}
	var cur string
	if err := src.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&cur); err != nil {
		return res, w.stopped(ctx, source.Describe(err))
	}
	if res.SourceLSN, err = pgtypes.ParseLSN(cur); err != nil {
		return res, err
	}
	w.barrier = true
	if err := follow.EmitHeartbeat(ctx, src); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			return res, w.stopped(ctx, source.Describe(fmt.Errorf("write heartbeat: %w", err)))
		}
		log.Warn("cannot write a heartbeat on the source; waiting for the agent's own heartbeat or the next published change", "err", err)
	}
	log.Info("waiting for the target to apply the source's position", "source_lsn", res.SourceLSN.String())
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	agentSeen := began // the grace period runs from the last moment an agent held the lease
	var agentChecked time.Time
	warned, haveState := false, false
	for {
		// The state appears once an agent has begun the copy: wait is often started a moment
		// after run, before that.
		if !haveState {
			switch _, err := state.Load(ctx, dst); {
			case err == nil:
				haveState = true
			case !errors.Is(err, state.ErrNoMigration):
				return res, w.stopped(ctx, target.Describe(err))
			}
		}
		if haveState {
			pos, err := state.LoadPosition(ctx, dst)
			if err != nil {
				return res, w.stopped(ctx, target.Describe(err))
			}
			res.AppliedLSN, res.Waited = pos.AppliedLSN, time.Since(began)
			if pos.AppliedLSN >= res.SourceLSN {
				return res, nil
			}
		}
		if time.Since(agentChecked) >= time.Second {
			agentChecked = time.Now()
			running, err := state.AgentRunning(ctx, dst)
			if err != nil {
				return res, w.stopped(ctx, target.Describe(err))
			}
			switch {
			case running:
				agentSeen, warned = agentChecked, false
			case time.Since(agentSeen) >= opts.AgentGrace && !haveState:
				return res, fmt.Errorf("%w (none held the migration's lease for %s, and the target holds no migration state yet)",
					ErrNoAgent, opts.AgentGrace.Round(time.Second))
			case time.Since(agentSeen) >= opts.AgentGrace:
				return res, fmt.Errorf("%w (none held the migration's lease for %s; the target has applied %s, the source was at %s)",
					ErrNoAgent, opts.AgentGrace.Round(time.Second), res.AppliedLSN, res.SourceLSN)
			case !warned:
				warned = true
				log.Warn("no pgshift agent is running for this migration; waiting for one to start", "gives_up_in", (opts.AgentGrace - time.Since(agentSeen)).Round(time.Second).String())
			}
		}
		select {
		case <-ctx.Done():
			return res, w.stopped(ctx, ctx.Err())
		case <-tick.C:
		}
	}
}

// waiter words how a wait ended early.
type waiter struct {
	res     *WaitResult
	began   time.Time
	timeout time.Duration
	barrier bool // the source's position was read
}

// stopped turns err into ErrWaitTimeout when --timeout passed, or ErrWaitInterrupted when the
// wait was stopped, each saying how far the target got; any other err is returned as it is.
func (w waiter) stopped(ctx context.Context, err error) error {
	var what error
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		what = fmt.Errorf("%w after %s", ErrWaitTimeout, w.timeout)
	case ctx.Err() != nil:
		what = fmt.Errorf("%w after %s, before the target caught up", ErrWaitInterrupted, time.Since(w.began).Round(100*time.Millisecond))
	default:
		return err
	}
	if !w.barrier {
		return fmt.Errorf("%w: it had not read the source's position yet", what)
	}
	return fmt.Errorf("%w: the target has applied %s, the source was at %s when wait began", what, w.res.AppliedLSN, w.res.SourceLSN)
}
