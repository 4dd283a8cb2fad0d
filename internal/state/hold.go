package state

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/db"
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
	lease, err := acquireThroughRestart(ctx, connect, command, LeaseOptions{Interval: interval, Log: log})
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

// leaseRestartWait bounds how long taking the lease waits out a target that is shutting down
// or restarting.
const leaseRestartWait = 2 * time.Minute

// acquireThroughRestart is AcquireLease, tried again when the session was lost after it
// connected (a fast shutdown or restart of the target terminates the session that has just
// connected, before the lease is taken: SQLSTATE class 57, or the connection closed). The next
// connect then waits for the server to accept connections again (connect is
// db.Endpoint.WhenUp). Any other error, a server that is down (no connection at all) or one
// that refuses the lease included, is returned at once.
func acquireThroughRestart(ctx context.Context, connect func(context.Context) (*pgx.Conn, error), command string, opts LeaseOptions) (*Lease, error) {
	deadline := time.Now().Add(leaseRestartWait)
	delay := 200 * time.Millisecond
	for {
		lease, err := AcquireLease(ctx, connect, command, opts)
		var connErr *pgconn.ConnectError
		if err == nil || !db.Transient(err) || errors.As(err, &connErr) || time.Now().Add(delay).After(deadline) {
			return lease, err
		}
		opts.Log.Warn("the target ended the session taking the migration's lease (shutting down or restarting); trying again", "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}
