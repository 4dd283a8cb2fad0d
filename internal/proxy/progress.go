package proxy

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// Progress reports how far the target has applied the source's changes.
type Progress interface {
	// Progress returns the source LSN up to which the target has applied everything, and the
	// replication lag; ok is false when nothing is known (no agent has recorded anything).
	Progress(ctx context.Context) (applied pgtypes.LSN, lag time.Duration, ok bool, err error)
}

// ProgressFunc adapts a function to Progress (the agent passes its own live figures).
type ProgressFunc func(ctx context.Context) (pgtypes.LSN, time.Duration, bool, error)

// Progress calls f.
func (f ProgressFunc) Progress(ctx context.Context) (pgtypes.LSN, time.Duration, bool, error) {
	return f(ctx)
}

// StateProgress reads the applied position and lag a running agent records in the target's
// pgshift schema (internal/state). The lag is the agent's last measurement plus however long
// that measurement is overdue, so a stopped agent makes the target count as lagging.
type StateProgress struct {
	DSN string

	mu   sync.Mutex
	conn *pgx.Conn
}

// agentCadence is how stale the agent's measurement may be before its age counts as lag (the
// agent measures every few seconds).
const agentCadence = 10 * time.Second

// Progress implements Progress.
func (sp *StateProgress) Progress(ctx context.Context) (pgtypes.LSN, time.Duration, bool, error) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.conn == nil || sp.conn.IsClosed() {
		c, err := pgx.Connect(ctx, sp.DSN)
		if err != nil {
			return 0, 0, false, fmt.Errorf("connect to the target: %w", err)
		}
		sp.conn = c
	}
	var exists bool
	if err := sp.conn.QueryRow(ctx, `SELECT to_regclass('pgshift.position') IS NOT NULL`).Scan(&exists); err != nil {
		sp.conn.Close(ctx)
		return 0, 0, false, err
	}
	if !exists {
		return 0, 0, false, nil
	}
	pos, err := state.LoadPosition(ctx, sp.conn)
	if err != nil {
		sp.conn.Close(ctx)
		return 0, 0, false, err
	}
	st, ok, err := state.LoadFollowStatus(ctx, sp.conn)
	if err != nil {
		sp.conn.Close(ctx)
		return 0, 0, false, err
	}
	if !ok {
		return pos.AppliedLSN, 0, false, nil
	}
	lag := time.Duration(st.LagSeconds * float64(time.Second))
	if age := time.Since(st.MeasuredAt); age > agentCadence {
		lag += age - agentCadence
	}
	return pos.AppliedLSN, lag, true, nil
}

// Close closes its connection.
func (sp *StateProgress) Close() {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.conn != nil {
		sp.conn.Close(context.Background())
	}
}

type lagSnapshot struct {
	lag     time.Duration
	known   bool
	updated time.Time
}

type lsnSample struct {
	at      time.Time
	lsn     pgtypes.LSN // the source's WAL insert position
	applied pgtypes.LSN // the target's applied position then
}

// progressTracker holds, for split mode, recent samples of the source's WAL insert position
// and the target's applied position and lag.
type progressTracker struct {
	interval time.Duration
	snap     atomic.Pointer[lagSnapshot]

	mu       sync.Mutex
	samples  []lsnSample // ascending time; bounded
	appliedL pgtypes.LSN
	lagV     time.Duration
	lagKnown bool
	updated  time.Time
}

func newProgressTracker(interval time.Duration) *progressTracker {
	return &progressTracker{interval: interval}
}

const maxSamples = 600

// run polls while the proxy is in split mode, until ctx ends.
func (t *progressTracker) run(ctx context.Context, p *Proxy) {
	src := p.source
	if src == nil && p.cfg.Target != "" {
		sp := &StateProgress{DSN: p.cfg.Target}
		defer sp.Close()
		src = sp
	}
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	warned := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if p.Mode() != ModeSplit || src == nil {
			continue
		}
		err := func() error {
			qctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
			defer cancel()
			if conn == nil || conn.IsClosed() {
				c, err := pgx.Connect(qctx, p.cfg.Source)
				if err != nil {
					return fmt.Errorf("connect to the source: %w", err)
				}
				conn = c
			}
			// The insert position, not the write position: a commit made with
			// synchronous_commit = off is visible before its WAL is written.
			var lsnText string
			at := time.Now()
			if err := conn.QueryRow(qctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsnText); err != nil {
				conn.Close(context.Background())
				return fmt.Errorf("read the source's WAL position: %w", err)
			}
			lsn, err := pgtypes.ParseLSN(lsnText)
			if err != nil {
				return err
			}
			applied, lag, ok, err := src.Progress(qctx)
			if err != nil {
				return fmt.Errorf("read the target's applied position: %w", err)
			}
			t.record(at, lsn, applied, lag, ok)
			return nil
		}()
		if err != nil && ctx.Err() == nil {
			t.mu.Lock()
			t.lagKnown = false
			t.snap.Store(&lagSnapshot{updated: t.updated})
			t.mu.Unlock()
			if time.Since(warned) > time.Minute {
				warned = time.Now()
				p.log.Warn("lag guard cannot read positions; reads stay on the source", "err", err)
			}
		}
	}
}

func (t *progressTracker) record(at time.Time, lsn, applied pgtypes.LSN, lag time.Duration, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.samples = append(t.samples, lsnSample{at: at, lsn: lsn, applied: applied})
	if len(t.samples) > maxSamples {
		t.samples = append(t.samples[:0], t.samples[len(t.samples)-maxSamples/2:]...)
	}
	t.appliedL, t.lagV, t.lagKnown, t.updated = applied, lag, ok, time.Now()
	t.snap.Store(&lagSnapshot{lag: lag, known: ok, updated: t.updated})
}

// set is for tests and for callers that measure themselves.
func (t *progressTracker) set(applied pgtypes.LSN, lag time.Duration) {
	t.record(time.Now(), applied, applied, lag, true)
}

func (t *progressTracker) fresh() bool {
	return time.Since(t.updated) < max(time.Second, 10*t.interval)
}

// lagOK reports whether the last measured lag is known, recent and under limit. It runs for
// every routed read, so it reads an atomic snapshot instead of taking the lock.
func (t *progressTracker) lagOK(limit time.Duration) bool {
	snap := t.snap.Load()
	return snap != nil && snap.known && time.Since(snap.updated) < max(time.Second, 10*t.interval) && snap.lag < limit
}

func (t *progressTracker) lag() (time.Duration, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lagV, t.lagKnown && t.fresh()
}

// applied reports whether the target has applied everything the source had committed at
// lastWrite: the first source position sampled after lastWrite is at or beyond that commit,
// so once the applied position reaches it, the write is on the target.
func (t *progressTracker) applied(lastWrite time.Time) bool {
	t.mu.Lock()
	applied := t.appliedL
	t.mu.Unlock()
	return t.appliedAt(lastWrite, applied)
}

// appliedAt is applied for a server that has applied the source up to applied (a replica).
func (t *progressTracker) appliedAt(lastWrite time.Time, applied pgtypes.LSN) bool {
	if lastWrite.IsZero() {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.samples {
		if s.at.After(lastWrite) {
			return applied >= s.lsn
		}
	}
	return false
}

// replicaLagOK is lagOK for a replica that has applied the source up to applied: the
// migration's lag plus how long the target has been ahead of the replica (since the first
// sample whose applied position passed it; the whole sampled window when none is that old).
func (t *progressTracker) replicaLagOK(limit time.Duration, applied pgtypes.LSN) bool {
	if !t.lagOK(limit) {
		return false
	}
	snap := t.snap.Load()
	t.mu.Lock()
	defer t.mu.Unlock()
	behind := time.Duration(0)
	if applied < t.appliedL {
		behind = limit // older than every sample: at least the window
		for _, s := range t.samples {
			if s.applied > applied {
				behind = time.Since(s.at)
				break
			}
		}
	}
	return snap.lag+behind < limit
}
