package state

// The agent lease: one agent per migration.
//
// Contract. A command that writes the migration (copy, run) first takes the lease and keeps it
// for its whole life; commands that only read (status, wait, verify) never take it. The lease
// is a session-level advisory lock, leaseLock, held by a DEDICATED target session, the lease
// session, which does nothing else. It is not the copy or apply session: those reconnect after
// failures while the lease session stays. Advisory locks belong to one database, and a target
// database holds one migration, so the lock names the migration. PostgreSQL releases it when
// the lease session ends for any reason — a clean stop, SIGKILL, a lost connection — so a dead
// agent never blocks the next one, and a live one always does.
//
// The holder's identity (host, pid, command, start time) is written to pgshift.agent by the
// lease session and refreshed every heartbeat; a refused agent names the holder from it (or,
// before the holder has written it, from pg_stat_activity). The lock, not the heartbeat,
// decides whether the holder is alive: see LeaseHolder.
//
// Fencing. A lease session can be lost while its agent still runs (the target restarted, an
// administrator terminated the session, the network broke). Another agent could then take the
// lock while the first agent's copy or apply sessions are still writing. To exclude that, every
// target session an agent writes through is fenced (Lease.Fence) when it connects: it takes the
// second advisory lock, fenceLock, in SHARED mode for its whole life, and only then checks that
// its agent's lease session holds leaseLock. An agent that takes the lease takes fenceLock
// EXCLUSIVELY once, right after leaseLock, before it writes anything: that waits until every
// session of an earlier holder has ended. So:
//
//   - a session fenced before the lease was lost keeps the next holder waiting until that
//     session is closed, and the old agent closes its sessions as soon as its heartbeat sees the
//     lease session gone (Keep cancels every context bound with Bind);
//   - a session connecting after the lease was lost fails its check (the lock is held by another
//     session, or by none) and is closed before it writes anything.
//
// No two agents ever write the target at the same time, whatever the timing. An agent whose
// lease session is lost stops copying and applying, then tries to take the lease again: it
// continues if nobody else took it, and stops with a HeldError otherwise.
//
// Every phase and table-state transition is also a compare-and-set on the state row (Advance,
// StartTable, FinishTable, ...), so even a process that somehow wrote without the lease could
// not move the state backwards.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/catalog"
)

// The advisory locks are taken in the two-int4 form (1885827944, 1), the lease, and
// (1885827944, 2), the fence; 1885827944 is "pgsh" in ASCII. pg_locks shows them as locktype
// 'advisory', classid 1885827944, objid 1 or 2, objsubid 2, in the target database. lockWhere
// selects them there.
const lockWhere = `locktype = 'advisory' AND classid = 1885827944::oid AND objsubid = 2
		AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`

// leaseDDL adds the holder's identity table; Ensure runs it with the rest of the state schema.
var leaseDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgshift.agent (
		id           int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
		host         text NOT NULL,
		pid          int NOT NULL,
		command      text NOT NULL,
		started_at   timestamptz NOT NULL,
		lease_pid    int NOT NULL,
		heartbeat_at timestamptz NOT NULL
	)`,
}

// ErrLeaseLost is the cause of contexts cancelled because the agent's lease session was lost,
// and the error of fencing a session for a lease that is not held.
var ErrLeaseLost = errors.New("this agent lost its lease on the target (its lease session ended)")

// Holder identifies the agent holding (or that last held) a migration's lease.
type Holder struct {
	Host      string    `json:"host"`
	PID       int       `json:"pid"`
	Command   string    `json:"command"`
	StartedAt time.Time `json:"started_at"`
	// LeasePID is the target backend pid of the holder's lease session.
	LeasePID  int       `json:"lease_pid"`
	Heartbeat time.Time `json:"heartbeat_at"`
}

// HeldError is the refusal of a lease that another agent holds.
type HeldError struct {
	// Holder is the recorded identity; Known is false when the lock holder has not written it
	// (yet), and Session then describes the lock-holding target session instead.
	Holder  Holder
	Known   bool
	Session string
	// Reconnecting: the lock was free, but the recorded holder still runs on this host: its
	// lease session was lost (a target restart, a broken connection) and it is taking it back.
	Reconnecting bool
}

func (e *HeldError) Error() string {
	if !e.Known {
		return fmt.Sprintf("another pgshift agent holds this migration: target session %s holds its lease; stop it first", e.Session)
	}
	if e.Reconnecting {
		return fmt.Sprintf("another pgshift agent runs this migration: host %s pid %d running `%s` since %s is still alive; it lost its lease session on the target (a restart or a broken connection) and is taking it back; stop it first",
			e.Holder.Host, e.Holder.PID, e.Holder.Command, e.Holder.StartedAt.UTC().Format(time.RFC3339))
	}
	return fmt.Sprintf("another pgshift agent holds this migration: host %s pid %d running `%s` since %s; stop it first",
		e.Holder.Host, e.Holder.PID, e.Holder.Command, e.Holder.StartedAt.UTC().Format(time.RFC3339))
}

// LeaseOptions tune a lease. Zero values take the defaults.
type LeaseOptions struct {
	// Interval between heartbeats (default 5 s). A lost lease session is noticed within about
	// one interval; the holder row's heartbeat_at moves at this pace.
	Interval time.Duration
	// FenceTimeout bounds the wait for an earlier holder's sessions to end (default 2 min).
	FenceTimeout time.Duration
	Log          *slog.Logger
}

// Lease is a held (or lost and being retaken) migration lease. Keep must run while it is held;
// Release ends it.
type Lease struct {
	connect func(context.Context) (*pgx.Conn, error)
	holder  Holder
	opts    LeaseOptions
	touch   chan struct{}

	connMu sync.Mutex // serialises use of conn
	conn   *pgx.Conn

	mu      sync.Mutex
	nextID  uint64      // numbers bound contexts
	gen     *generation // nil while the lease is not held
	changed chan struct{}
	fatal   error // set when the lease cannot be retaken: another agent has it
}

// generation is one continuous holding of the lease by one lease session.
type generation struct {
	pid     uint32                             // target backend pid of the lease session
	cancels map[uint64]context.CancelCauseFunc // contexts bound to this generation, until released
	fenced  map[uint32]bool                    // target backend pids of the sessions fenced in this generation
}

// AcquireLease takes the migration's lease through a new session opened with connect, or
// returns a *HeldError naming the agent that holds it. command names what the caller runs
// ("copy", "run"). A lock that is held is retried for half a second first: the session of an
// agent killed a moment ago may still be ending on the server.
func AcquireLease(ctx context.Context, connect func(context.Context) (*pgx.Conn, error), command string, opts LeaseOptions) (*Lease, error) {
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.FenceTimeout <= 0 {
		opts.FenceTimeout = 2 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	host, err := os.Hostname()
	if err != nil {
		host = "unknown"
	}
	l := &Lease{connect: connect, opts: opts, touch: make(chan struct{}, 1), changed: make(chan struct{}),
		holder: Holder{Host: host, PID: os.Getpid(), Command: command, StartedAt: time.Now()}}
	if err := l.take(ctx, nil); err != nil {
		return nil, err
	}
	return l, nil
}

// take opens a lease session and takes leaseLock and then, briefly, fenceLock exclusively.
// stale is this agent's own previous generation (nil if none): when its lease session still
// holds the lock, or its fenced sessions still hold the fence, on the server (their
// connections broke on this side only, and the server has not noticed yet), they are
// terminated — this agent has already stopped using them.
func (l *Lease) take(ctx context.Context, stale *generation) error {
	conn, err := l.connect(ctx)
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	name := fmt.Sprintf("pgshift lease: %s pid %d on %s", l.holder.Command, l.holder.PID, l.holder.Host)
	if len(name) > 63 {
		name = name[:63]
	}
	if _, err := conn.Exec(ctx, `SELECT pg_catalog.set_config('application_name', $1::text, false)`, name); err != nil {
		return fmt.Errorf("open the lease session on the target: %w", err)
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(1885827944, 1)`).Scan(&got); err != nil {
			return fmt.Errorf("take the migration lease on the target: %w", err)
		}
		if got {
			break
		}
		var holderPID uint32
		_ = conn.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE `+lockWhere+` AND objid = 1::oid AND granted`).Scan(&holderPID)
		if stale != nil && holderPID == stale.pid {
			// Our own previous lease session, still alive on the server: end it.
			l.opts.Log.Warn("the previous lease session of this agent still holds the lease on the target; terminating it", "backend_pid", stale.pid)
			_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend($1::int4)`, int32(stale.pid))
			deadline = time.Now().Add(5 * time.Second)
		} else if time.Now().After(deadline) {
			return heldError(ctx, conn)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if stale == nil {
		// A new agent: the lock is free, but is the last holder gone? One on this host that
		// still runs lost only its lease session and is taking it back; it keeps the migration.
		// (On another host, the lock alone decides.)
		if h, known, err := loadHolder(ctx, conn); err == nil && known && h.Host == l.holder.Host && h.PID != l.holder.PID && agentProcessAlive(h.PID) {
			return &HeldError{Holder: h, Known: true, Reconnecting: true}
		}
	}
	// Wait for every fenced session of an earlier holder to end before this agent writes.
	fenceDeadline := time.Now().Add(l.opts.FenceTimeout)
	lastLog := time.Time{}
	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(1885827944, 2)`).Scan(&got); err != nil {
			return fmt.Errorf("take the migration lease on the target: %w", err)
		}
		if got {
			break
		}
		var holders []int32
		if rows, err := conn.Query(ctx, `SELECT pid FROM pg_locks WHERE `+lockWhere+` AND objid = 2::oid AND granted ORDER BY pid`); err == nil {
			holders, _ = pgx.CollectRows(rows, pgx.RowTo[int32])
		}
		pids := fmt.Sprint(holders)
		for _, pid := range holders {
			if stale != nil && stale.fenced[uint32(pid)] {
				l.opts.Log.Warn("a session this agent stopped using still holds the fence on the target; terminating it", "backend_pid", pid)
				_, _ = conn.Exec(ctx, `SELECT pg_terminate_backend($1::int4)`, pid)
			}
		}
		if time.Now().After(fenceDeadline) {
			return fmt.Errorf("the target sessions %s of an earlier pgshift agent still hold the migration's fence after %s: is that agent still running? Stop it, or end those sessions with SELECT pg_terminate_backend(pid) on the target, then start again",
				pids, l.opts.FenceTimeout)
		}
		if time.Since(lastLog) > 10*time.Second {
			lastLog = time.Now()
			l.opts.Log.Info("waiting for the target sessions of the previous agent to end before writing", "backend_pids", pids)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	if _, err := conn.Exec(ctx, `SELECT pg_advisory_unlock(1885827944, 2)`); err != nil {
		return fmt.Errorf("take the migration lease on the target: %w", err)
	}
	pid := conn.PgConn().PID()
	ok = true
	l.connMu.Lock()
	l.conn = conn
	l.connMu.Unlock()
	l.mu.Lock()
	l.gen = &generation{pid: pid, cancels: map[uint64]context.CancelCauseFunc{}, fenced: map[uint32]bool{}}
	l.holder.LeasePID = int(pid)
	l.signal()
	l.mu.Unlock()
	l.beat(ctx) // record the holder now if the state schema exists
	return nil
}

// signal wakes WaitHeld callers; l.mu must be held.
func (l *Lease) signal() {
	close(l.changed)
	l.changed = make(chan struct{})
}

// heldError describes the agent holding the lease, as seen from conn.
func heldError(ctx context.Context, conn *pgx.Conn) error {
	var lockPID int
	var app, addr string
	var since *time.Time
	err := conn.QueryRow(ctx, `SELECT l.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'), a.backend_start
		FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.`+lockWhere+` AND l.objid = 1::oid AND l.granted`).Scan(&lockPID, &app, &addr, &since)
	if errors.Is(err, pgx.ErrNoRows) {
		return &HeldError{Session: "(it ended just now: try again)"}
	}
	if err != nil {
		return &HeldError{Session: fmt.Sprintf("(unknown: %v)", err)}
	}
	if h, ok, err := loadHolder(ctx, conn); err == nil && ok && h.LeasePID == lockPID {
		return &HeldError{Holder: h, Known: true}
	}
	sess := fmt.Sprintf("pid %d (application_name %q, from %s", lockPID, app, addr)
	if since != nil {
		sess += ", connected since " + since.UTC().Format(time.RFC3339)
	}
	return &HeldError{Session: sess + ")"}
}

// Holder returns this agent's identity.
func (l *Lease) Holder() Holder {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holder
}

// Touch asks Keep to write the holder row now (call it once the state schema exists).
func (l *Lease) Touch() {
	select {
	case l.touch <- struct{}{}:
	default:
	}
}

// Fence admits a new target session of this agent (see the contract above): it takes fenceLock
// shared for the session's life and checks that this agent's lease session holds the lease.
// Use it as the session hook of every target connection the agent writes through; an error
// means the session must not be used.
func (l *Lease) Fence(ctx context.Context, conn *pgx.Conn) error {
	l.mu.Lock()
	gen := l.gen
	l.mu.Unlock()
	if gen == nil {
		return ErrLeaseLost
	}
	var got bool
	if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock_shared(1885827944, 2)`).Scan(&got); err != nil {
		return fmt.Errorf("fence a target session: %w", err)
	}
	if !got {
		return fmt.Errorf("%w: another agent is taking the migration over", ErrLeaseLost)
	}
	var ours bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE `+lockWhere+` AND objid = 1::oid AND granted AND pid = $1::int4)`,
		int32(gen.pid)).Scan(&ours); err != nil {
		return fmt.Errorf("fence a target session: %w", err)
	}
	if !ours {
		// The lease session is gone (the target restarted, say) before the keeper noticed:
		// have it beat now and see, or the caller's wait for the lease returns at once and
		// it retries in a tight loop until the next heartbeat.
		l.Touch()
		return ErrLeaseLost
	}
	l.mu.Lock()
	gen.fenced[conn.PgConn().PID()] = true
	l.mu.Unlock()
	return nil
}

// Bind returns a context that is cancelled, with cause ErrLeaseLost, as soon as the current
// holding of the lease is lost; it is cancelled at once when the lease is not held now.
func (l *Lease) Bind(ctx context.Context) (context.Context, context.CancelFunc) {
	c, cancel := context.WithCancelCause(ctx)
	l.mu.Lock()
	defer l.mu.Unlock()
	gen := l.gen
	if gen == nil {
		cancel(ErrLeaseLost)
		return c, func() {}
	}
	l.nextID++
	id := l.nextID
	gen.cancels[id] = cancel
	return c, func() {
		cancel(context.Canceled)
		l.mu.Lock()
		delete(gen.cancels, id)
		l.mu.Unlock()
	}
}

// WaitHeld blocks until the lease is held again after a loss, and returns the error that ends
// the agent when it cannot be: another agent took it (a *HeldError).
func (l *Lease) WaitHeld(ctx context.Context) error {
	for {
		l.mu.Lock()
		gen, fatal, changed := l.gen, l.fatal, l.changed
		l.mu.Unlock()
		switch {
		case fatal != nil:
			return fatal
		case gen != nil:
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
		}
	}
}

// Keep heartbeats the lease until ctx ends. When the lease session is lost it cancels every
// bound context, then takes the lease again (retrying while the target is unreachable); it
// returns a *HeldError when another agent took the lease meanwhile, and nil when ctx ends.
func (l *Lease) Keep(ctx context.Context) error {
	t := time.NewTicker(l.opts.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-l.touch:
		}
		err := l.beat(ctx)
		if err == nil || ctx.Err() != nil {
			continue
		}
		l.connMu.Lock()
		lost := l.conn.IsClosed()
		l.connMu.Unlock()
		if !lost {
			l.opts.Log.Warn("could not record the agent's heartbeat on the target", "err", err)
			continue
		}
		stale := l.lose(err)
		if err := l.retake(ctx, stale); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			l.mu.Lock()
			l.fatal = err
			l.signal()
			l.mu.Unlock()
			return err
		}
		l.opts.Log.Info("lease taken again on the target; resuming")
	}
}

// lose records that the current lease session is gone and cancels everything bound to it. It
// returns the generation that ended.
func (l *Lease) lose(cause error) *generation {
	l.opts.Log.Warn("the agent's lease session on the target was lost; stopping all writes before taking the lease again", "err", cause)
	l.connMu.Lock()
	l.conn.Close(context.Background())
	l.connMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	gen := l.gen
	l.gen = nil
	l.signal()
	if gen == nil {
		return nil
	}
	for _, cancel := range gen.cancels {
		cancel(ErrLeaseLost)
	}
	return gen
}

// retake takes the lease again after a loss, retrying with backoff while the target cannot be
// reached; it gives up only when another agent holds it.
func (l *Lease) retake(ctx context.Context, stale *generation) error {
	delay := 200 * time.Millisecond
	for {
		err := l.take(ctx, stale)
		var held *HeldError
		if err == nil || errors.As(err, &held) || ctx.Err() != nil {
			return err
		}
		l.opts.Log.Warn("cannot take the lease again yet; retrying", "err", err, "retry_in", delay.String())
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 10*time.Second)
	}
}

// beat writes the holder row with a fresh heartbeat through the lease session. A state schema
// that does not exist (yet, or any more: copy --force drops it) is not an error: the row is
// written at the first beat after Ensure.
func (l *Lease) beat(ctx context.Context) error {
	h := l.Holder()
	l.connMu.Lock()
	defer l.connMu.Unlock()
	if l.conn == nil || l.conn.IsClosed() {
		return errors.New("lease session closed")
	}
	bctx, cancel := context.WithTimeout(ctx, max(3*l.opts.Interval, 10*time.Second))
	defer cancel()
	_, err := l.conn.Exec(bctx, `INSERT INTO pgshift.agent (id, host, pid, command, started_at, lease_pid, heartbeat_at)
		VALUES (1, $1::text, $2::int4, $3::text, $4::timestamptz, pg_backend_pid(), now())
		ON CONFLICT (id) DO UPDATE SET host = excluded.host, pid = excluded.pid, command = excluded.command,
			started_at = excluded.started_at, lease_pid = excluded.lease_pid, heartbeat_at = excluded.heartbeat_at`,
		h.Host, int32(h.PID), h.Command, h.StartedAt)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && (pgErr.Code == "42P01" || pgErr.Code == "3F000") { // undefined table / schema
		return nil
	}
	if err != nil {
		return fmt.Errorf("record the agent's heartbeat: %w", err)
	}
	return nil
}

// Release gives the lease up: the lock is released explicitly (so the next agent does not race
// the server ending this session) and the lease session closed. Call it after Keep returned.
// The holder row stays as the record of the last agent.
func (l *Lease) Release() {
	l.connMu.Lock()
	defer l.connMu.Unlock()
	if l.conn == nil || l.conn.IsClosed() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _ = l.conn.Exec(ctx, `SELECT pg_advisory_unlock(1885827944, 1)`)
	l.conn.Close(ctx)
	l.mu.Lock()
	l.gen = nil
	l.signal()
	l.mu.Unlock()
}

// LeaseStatus is what a reader sees of the lease: the recorded holder and whether an agent
// holds the lease now.
type LeaseStatus struct {
	Holder   Holder // the recorded holder (the last one when nobody holds it)
	Recorded bool   // a holder row exists
	Alive    bool   // the lease lock is held now: an agent is running
	LockPID  int    // the target backend pid holding the lock, when Alive
}

// ReadLease reads the lease's state without taking it. The lock decides liveness: a holder row
// whose lease_pid is not the lock holder's describes an agent that is gone.
func ReadLease(ctx context.Context, q catalog.Querier) (LeaseStatus, error) {
	var s LeaseStatus
	err := q.QueryRow(ctx, `SELECT pid FROM pg_locks WHERE `+lockWhere+` AND objid = 1::oid AND granted`).Scan(&s.LockPID)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
	case err != nil:
		return s, fmt.Errorf("read the migration lease: %w", err)
	default:
		s.Alive = true
	}
	if s.Holder, s.Recorded, err = loadHolder(ctx, q); err != nil {
		return s, err
	}
	return s, nil
}

// AgentRunning reports whether an agent holds the migration's lease now.
func AgentRunning(ctx context.Context, q catalog.Querier) (bool, error) {
	var held bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_locks WHERE `+lockWhere+` AND objid = 1::oid AND granted)`).Scan(&held); err != nil {
		return false, fmt.Errorf("read the migration lease: %w", err)
	}
	return held, nil
}

func loadHolder(ctx context.Context, q catalog.Querier) (Holder, bool, error) {
	var h Holder
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('pgshift.agent') IS NOT NULL`).Scan(&exists); err != nil {
		return h, false, fmt.Errorf("read the agent record: %w", err)
	}
	if !exists {
		return h, false, nil
	}
	err := q.QueryRow(ctx, `SELECT host, pid, command, started_at, lease_pid, heartbeat_at FROM pgshift.agent WHERE id = 1`).
		Scan(&h.Host, &h.PID, &h.Command, &h.StartedAt, &h.LeasePID, &h.Heartbeat)
	if errors.Is(err, pgx.ErrNoRows) {
		return h, false, nil
	}
	if err != nil {
		return h, false, fmt.Errorf("read the agent record: %w", err)
	}
	return h, true, nil
}
