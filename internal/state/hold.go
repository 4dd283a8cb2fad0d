package state

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// WithLease runs fn while holding the migration's lease (see Lease for the contract): it takes
// the lease on a dedicated target session opened with connect, or returns the *HeldError naming
// the agent that holds it; keeps it with heartbeats while fn runs; and releases it when fn
// returns. fn must fence every target session it writes through with lease.Fence and stop
// writing when a context bound with lease.Bind ends. When the lease cannot be kept (another
// agent took it after the lease session was lost), ctx of fn is cancelled and WithLease returns
// that error.
func WithLease(ctx context.Context, connect func(context.Context) (*pgx.Conn, error), command string, interval time.Duration,
	log *slog.Logger, fn func(ctx context.Context, lease *Lease) error) error {
	lease, err := AcquireLease(ctx, connect, command, LeaseOptions{Interval: interval, Log: log})
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
