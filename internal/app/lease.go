package app

import (
	"context"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/state"
)

// withLease runs fn while holding the migration's lease (see state.Lease for the contract):
// it takes the lease on a dedicated target session, or returns the *state.HeldError naming the
// agent that holds it; keeps it with heartbeats while fn runs; and releases it when fn returns.
// fn must fence every target session it writes through with lease.Fence and stop writing when
// a context bound with lease.Bind ends. When the lease cannot be kept (another agent took it
// after the lease session was lost), ctx of fn is cancelled and withLease returns that error.
func withLease(ctx context.Context, cfg config.Config, command string, interval time.Duration, log *slog.Logger,
	fn func(ctx context.Context, lease *state.Lease) error) error {
	target := db.Endpoint{Role: db.Target, DSN: cfg.Target}
	lease, err := state.AcquireLease(ctx, target.Connect, command, state.LeaseOptions{Interval: interval, Log: log})
	if err != nil {
		return err
	}
	defer lease.Release()
	h := lease.Holder()
	log.Debug("took the migration's lease on the target", "command", command, "lease_backend_pid", h.LeasePID)
	g, gctx := errgroup.WithContext(ctx)
	keepCtx, stopKeep := context.WithCancel(gctx)
	g.Go(func() error { return lease.Keep(keepCtx) })
	g.Go(func() error {
		defer stopKeep()
		return fn(gctx, lease)
	})
	return g.Wait()
}
