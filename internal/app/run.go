package app

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/copy"
	"github.com/pgshift/pgshift/internal/cutover"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/follow"
	"github.com/pgshift/pgshift/internal/state"
)

// RunOptions tune the follow phase (see follow.RunOptions).
type RunOptions = follow.RunOptions

// FatalError is a follow condition that retrying cannot fix (see follow.FatalError).
type FatalError = follow.FatalError

// Run is the migration agent: it completes the copy if it is not done, then follows the slot
// until ctx is cancelled (a clean stop, nil error) or a fatal error occurs. Running it again
// resumes from the position stored on the target. After a cutover it replicates the other way
// (internal/cutover: reverse replication keeps the source current while traffic is on the
// target). It holds the migration's lease from start to
// end, copy and follow alike, and refuses to start while another agent holds it (a
// *state.HeldError naming that agent). The observer (status, metrics, alerts, audit, HTTP API,
// proxy) runs beside it for its whole life.
func Run(ctx context.Context, cfg config.Config, opts RunOptions, log *slog.Logger) error {
	if err := cfg.RequireSource(); err != nil {
		return err
	}
	if err := cfg.RequireTarget(); err != nil {
		return err
	}
	prev := previousAgent(ctx, cfg)
	return withLease(ctx, cfg, "run", opts, log, func(ctx context.Context, lease *state.Lease) error {
		return withObserver(ctx, cfg, opts, lease, prev, log, func(ctx context.Context, eng *cutover.Engine) error {
			if err := follow.EnsureCopied(ctx, cfg, lease, log); err != nil {
				if errors.Is(err, copy.ErrInterrupted) && ctx.Err() != nil {
					// A clean stop: the copy resumes where it stopped when run starts again.
					log.Info("stopped during the copy; run pgshift run again to resume", "detail", err.Error())
					return nil
				}
				return err
			}
			return eng.Run(ctx)
		})
	})
}

// Follow streams the slot and applies changes until ctx is cancelled. Connection failures
// (replication connection cut, source or target restarted) are retried with backoff, each time
// resuming from the durable position on the target; fatal conditions end it with an explanation.
// Like Run, it holds the migration's lease while it runs, with the observer beside it.
func Follow(ctx context.Context, cfg config.Config, opts RunOptions, log *slog.Logger) error {
	if err := cfg.RequireTarget(); err != nil {
		return err
	}
	prev := previousAgent(ctx, cfg)
	return withLease(ctx, cfg, "run", opts, log, func(ctx context.Context, lease *state.Lease) error {
		return withObserver(ctx, cfg, opts, lease, prev, log, func(ctx context.Context, eng *cutover.Engine) error {
			return eng.Run(ctx)
		})
	})
}

func withLease(ctx context.Context, cfg config.Config, command string, opts RunOptions, log *slog.Logger,
	fn func(ctx context.Context, lease *state.Lease) error) error {
	target := db.Endpoint{Role: db.Target, DSN: cfg.Target}
	return state.WithLease(ctx, target.WhenUp(2*time.Minute, log), command, opts.LeaseInterval, log, fn)
}
