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
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// ErrWaitTimeout is returned by Wait when the target did not catch up in time.
var ErrWaitTimeout = errors.New("timed out waiting for the target to catch up")

// WaitResult says what Wait waited for.
type WaitResult struct {
	SourceLSN  pgtypes.LSN // the source's position when Wait began
	AppliedLSN pgtypes.LSN // the target's applied position when Wait returned
	Waited     time.Duration
}

// Wait blocks until the target has applied everything the source had committed when Wait
// began: it reads the source's current WAL position W, then writes a heartbeat message, whose
// transaction ends after W, and waits until the target's applied position reaches W. The
// heartbeat is what makes this finish on an idle source, or when the last writes before W
// touched only tables that are not migrated: the agent applies the heartbeat like any
// transaction. timeout <= 0 waits indefinitely; a running `pgshift run` is needed.
func Wait(ctx context.Context, cfg config.Config, timeout time.Duration, log *slog.Logger) (WaitResult, error) {
	var res WaitResult
	if err := cfg.RequireSource(); err != nil {
		return res, err
	}
	if err := cfg.RequireTarget(); err != nil {
		return res, err
	}
	began := time.Now()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	source := db.Endpoint{Role: db.Source, DSN: cfg.Source}
	target := db.Endpoint{Role: db.Target, DSN: cfg.Target}
	src, err := source.Connect(ctx)
	if err != nil {
		return res, waitErr(ctx, err)
	}
	defer src.Close(context.Background())
	dst, err := target.Connect(ctx)
	if err != nil {
		return res, waitErr(ctx, err)
	}
	defer dst.Close(context.Background())
	if _, err := state.Load(ctx, dst); err != nil {
		return res, target.Describe(err)
	}
	var cur string
	if err := src.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&cur); err != nil {
		return res, waitErr(ctx, source.Describe(err))
	}
	if res.SourceLSN, err = pgtypes.ParseLSN(cur); err != nil {
		return res, err
	}
	if err := EmitHeartbeat(ctx, src); err != nil {
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			return res, waitErr(ctx, source.Describe(fmt.Errorf("write heartbeat: %w", err)))
		}
		log.Warn("cannot write a heartbeat on the source; waiting for the agent's own heartbeat or the next published change", "err", err)
	}
	log.Info("waiting for the target to apply the source's position", "source_lsn", res.SourceLSN.String())
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		pos, err := state.LoadPosition(ctx, dst)
		if err != nil {
			return res, waitErr(ctx, target.Describe(err))
		}
		res.AppliedLSN, res.Waited = pos.AppliedLSN, time.Since(began)
		if pos.AppliedLSN >= res.SourceLSN {
			return res, nil
		}
		select {
		case <-ctx.Done():
			return res, waitErr(ctx, ctx.Err())
		case <-tick.C:
		}
	}
}

// waitErr turns the deadline of --timeout into ErrWaitTimeout.
func waitErr(ctx context.Context, err error) error {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrWaitTimeout, err)
	}
	return err
}
