// Package cutover is phases 6 and 7 of a migration: the cutover that moves the application's
// traffic from the source to the target through the agent's proxy, the reverse replication
// that keeps the source a live copy of the target afterwards, and the rollback that moves
// traffic back without losing a write. It also owns which direction the agent replicates in
// (Engine.Run: forward with internal/follow while traffic is on the source, reverse while it
// is on the target) and `finish`, which removes what the migration left on both servers.
//
// Durable state: the target's pgshift.cutover_state (state.CutoverState) says which side is
// live and which operation is in progress; pgshift.cutover_steps records each step of each
// attempt (pending → running → done | failed | skipped) and the audit log every operation.
// The one commit point of an operation is its switch transaction, which writes the new live
// side together with the phase (and, for a rollback, the forward position). An agent that
// starts finds any operation in progress and completes it when the switch was committed, or
// rolls it back when it was not; the proxy starts in the mode of the live side, so after a
// kill at any point clients reach exactly one side.
//
// Why nothing is lost across the switch: traffic is paused at transaction boundaries first,
// then the side traffic leaves is drained into the other (the wait for a logical message
// written after the pause), and only then does the other side take writes. The reverse slot
// is created on the target after the forward stream has stopped, so it holds no change that
// came from the source. At rollback, everything the source's WAL holds after the cutover's
// final forward position is reverse replication's own writes (the proxy sent all traffic to
// the target), so the forward position is moved to the source's position at the pause and
// nothing of the target's is sent back to it. The reverse applier also marks its sessions
// with the replication origin cdc.PgshiftOrigin and the forward stream drops transactions of
// that origin, so an echo is dropped even where the position would not exclude it. Reverse
// replication sends back only what was written on the target itself (cdc.Options.OriginNone:
// pgoutput's origin = none from 16, the stream's own filter before).
//
// Writers that bypass the proxy: with cutover.fence_source the source is made read-only for
// new sessions at the switch and its other sessions are ended, and with cutover.fence_roles the
// roles named lose LOGIN there and their sessions are ended (fence.go); whether fenced or
// not, a rollback first proves from the forward slot that every change on the source since
// the cutover came from reverse replication, and refuses, naming the table and position, when
// one did not (foreign.go). Pre hooks and smoke/health checks gate a cutover, post-switch hooks
// and the checks run after each switch, and a watch window can roll back by itself
// (hooks.go, watch.go). cutover.matviews moves a materialized view's refresh out of the pause
// (after the switch, CONCURRENTLY where it can) or skips it.
//
// Triggers and rules set ENABLE ALWAYS or ENABLE REPLICA (which fire in apply sessions) are on
// only on the live side and off where replication applies (triggers.go).
//
// cutover.fence_tables also locks the migrated tables in the pause, which waits out writers
// that bypass the proxy and are inside a transaction (fence.go).
//
// A rollback while the target is unreachable goes ahead only when nothing can exist only on
// the target (no client request reached it through the proxy since the switch); it records
// itself on the source, and the target's state is settled from that record when it is back
// (targetlost.go).
package cutover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/apply"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/follow"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/proxy"
	"github.com/pgshift/pgshift/internal/state"
)

// Outcomes of an operation (Result.Outcome).
const (
	OutcomeDone    = "done"    // traffic moved; exit 0
	OutcomeAborted = "aborted" // stopped before the switch, traffic resumed where it was; exit 1
	OutcomePlanned = "planned" // a dry run: the pre-checks ran, nothing changed
)

// ErrCannotRun is wrapped by refusals that change nothing because the operation cannot run at
// all here (no proxy, another operation in progress, traffic already on that side).
var ErrCannotRun = errors.New("cannot run")

// Deps are what the engine works with; the agent (internal/app) provides them.
type Deps struct {
	Config  config.Config
	Follow  follow.RunOptions
	Lease   *state.Lease
	Proxy   *proxy.Proxy // nil without --proxy: cutover and rollback then refuse
	Metrics *follow.Metrics
	Log     *slog.Logger
	// Audit records an entry of the audit log (the agent's observer); nil: written directly.
	Audit func(actor, action, outcome string, detail map[string]any)
	// Fault, for tests, runs before each step of an operation: a non-nil error is the process
	// dying there — the operation returns it at once and nothing of it is cleaned up, as after
	// a SIGKILL; the engine's Run then ends with it too.
	Fault func(op string, step int) error
	// ReverseRetry is how long reverse replication waits after a stop that retrying at once
	// cannot fix (a schema change on the target, say) before it tries again (default 30s).
	ReverseRetry time.Duration
}

// Engine drives the replication direction, cutover and rollback of one agent. Its methods are
// safe for concurrent use; one operation runs at a time.
type Engine struct {
	d  Deps
	cs config.CutoverSettings

	ops sync.Mutex // one cutover or rollback at a time

	mu      sync.Mutex
	stop    context.CancelFunc // cancels the running replication session
	stopped chan struct{}      // closed when it has returned
	gate    chan struct{}      // while non-nil, Run starts no session until it is closed
	dead    error              // a Fault fired: Run ends with it

	live     string // the side the running session replicates from ("" before the first)
	runCtx   context.Context
	watches  sync.WaitGroup
	rstats   apply.Stats // reverse replication's applier (its durable position on the source)
	revErr   error       // the reverse session's last failure, nil while it streams
	revSince time.Time   // when the reverse session last started streaming

	// forwardSince is when the last operation ended (release): a lag measurement older than it
	// is of the forward session before a cutover and rollback, not of the one running now.
	forwardSince time.Time

	seen seen // the target's state as last read while traffic was live there (targetlost.go)
	lost bool // a rollback was made without the target and is not settled on it yet
}

// New returns the engine of an agent.
func New(d Deps) *Engine {
	cs := d.Config.Cutover
	if cs.MaxLag <= 0 {
		cs.MaxLag = 10 * time.Second
	}
	if cs.CatchUpTimeout <= 0 {
		cs.CatchUpTimeout = 10 * time.Second
	}
	if cs.FenceLockTimeout <= 0 {
		cs.FenceLockTimeout = 2 * time.Second
	}
	if cs.WatchInterval <= 0 {
		cs.WatchInterval = 5 * time.Second
	}
	if cs.HookTimeout <= 0 {
		cs.HookTimeout = time.Minute
	}
	if cs.VerifyMaxAge <= 0 {
		cs.VerifyMaxAge = 24 * time.Hour
	}
	if d.Log == nil {
		d.Log = slog.New(slog.DiscardHandler)
	}
	if d.ReverseRetry <= 0 {
		d.ReverseRetry = 30 * time.Second
	}
	return &Engine{d: d, cs: cs}
}

// Run replicates in the direction the durable state says until ctx ends (nil) or replication
// fails for good: forward (follow.Run) while traffic is live on the source, reverse while it
// is live on the target. First it settles an operation a killed agent left in progress. A
// cutover or rollback stops the session it runs and starts the other direction's when done.
func (e *Engine) Run(ctx context.Context) error {
	wctx, stopWatches := context.WithCancel(ctx) // watch windows end with Run
	e.mu.Lock()
	e.runCtx = wctx
	e.mu.Unlock()
	defer e.watches.Wait()
	defer stopWatches()
	for {
		err := e.recover(ctx)
		if err == nil {
			break
		}
		if retry, ferr := e.retryable(ctx, err); !retry {
			if ctx.Err() != nil {
				return nil
			}
			return ferr
		}
	}
	var waitWarned time.Time
	for {
		e.mu.Lock()
		g, dead := e.gate, e.dead
		e.mu.Unlock()
		if dead != nil {
			return dead
		}
		if g != nil {
			select {
			case <-g:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		st, err := e.loadState(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if e.waitingForTarget() {
				// Rolled back without the target: wait for it, then settle its state.
				if time.Since(waitWarned) > 30*time.Second {
					e.d.Log.Warn("traffic is on the source after a rollback made without the target; waiting for the target to settle its state and follow again", "err", err)
					waitWarned = time.Now()
				}
				select {
				case <-ctx.Done():
					return nil
				case <-time.After(2 * time.Second):
				}
				continue
			}
			if retry, ferr := e.retryable(ctx, err); retry {
				continue
			} else if ctx.Err() != nil {
				return nil
			} else {
				return ferr
			}
		}
		sctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		e.mu.Lock()
		if e.gate != nil {
			e.mu.Unlock()
			cancel()
			continue
		}
		e.stop, e.stopped, e.live = cancel, done, st.Live
		e.mu.Unlock()
		if st.Live == state.LiveTarget {
			err = e.reverseLoop(sctx, st)
		} else {
			err = follow.Run(sctx, e.d.Config, e.d.Follow, e.d.Metrics, e.d.Lease, e.d.Log)
		}
		cancel()
		close(done)
		e.mu.Lock()
		byOp := e.gate != nil
		e.stop, e.stopped = nil, nil
		e.mu.Unlock()
		switch {
		case ctx.Err() != nil && (err == nil || errors.Is(err, context.Canceled)):
			return nil
		case ctx.Err() != nil:
			// Stopped, but with something to say: follow.Run's cause for a source it never
			// reached, which a Ctrl-C must not turn into a clean stop.
			return err
		case byOp:
			continue // an operation stopped it; the loop waits for the operation to end
		}
		return err
	}
}

// retryable decides about a failure of the engine's own reads and writes of the durable state
// on the target (recovery, the state read before each replication session): with the lease
// lost (the target restarted, the lease session was ended) it waits until the lease is held
// again, and after a connection failure a second, and then says to retry; any other error,
// or the lease taken by another agent, is returned to end Run. Without this, an agent whose
// lease session was ended just as it started stopped for good instead of taking it back.
func (e *Engine) retryable(ctx context.Context, err error) (bool, error) {
	switch {
	case ctx.Err() != nil:
		return false, err
	case errors.Is(err, state.ErrLeaseLost) && e.d.Lease != nil:
		e.d.Log.Info("the lease was lost while reading the cutover state; waiting to hold it again", "err", err)
		if werr := e.d.Lease.WaitHeld(ctx); werr != nil {
			return false, werr
		}
		return true, nil
	case db.Transient(err):
		e.d.Log.Warn("could not read the cutover state on the target; retrying", "err", err)
		select {
		case <-ctx.Done():
			return false, err
		case <-time.After(time.Second):
		}
		return true, nil
	}
	return false, err
}

// Reverse reports, while traffic is live on the target, whether reverse replication streams
// (and why not); on reports false while traffic is on the source (or before Run started).
func (e *Engine) Reverse() (on, streaming bool, why string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.live != state.LiveTarget {
		return false, false, ""
	}
	switch {
	case e.revErr != nil:
		return true, false, "reverse replication failing: " + e.revErr.Error()
	case e.revSince.IsZero():
		return true, false, "reverse replication not streaming yet"
	}
	return true, true, ""
}

// hold stops the running replication session and keeps Run from starting another until
// release: the operation then owns both servers' replication.
func (e *Engine) hold() {
	e.mu.Lock()
	if e.gate == nil {
		e.gate = make(chan struct{})
	}
	stop, stopped := e.stop, e.stopped
	e.mu.Unlock()
	if stop != nil {
		stop()
		<-stopped
	}
}

// release lets Run start the session of the live side again.
func (e *Engine) release() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gate != nil {
		close(e.gate)
		e.gate = nil
		e.forwardSince = time.Now() // a session was stopped: the next one measures anew
	}
}

// die records a fault: Run ends with err (the test's stand-in for a killed process).
func (e *Engine) die(err error) {
	e.mu.Lock()
	if e.dead == nil {
		e.dead = err
	}
	g := e.gate
	stop := e.stop
	e.gate = nil
	e.mu.Unlock()
	if g != nil {
		close(g)
	}
	if stop != nil {
		stop()
	}
}

func (e *Engine) target() db.Endpoint {
	ep := db.Endpoint{Role: db.Target, DSN: e.d.Config.Target}
	if e.d.Lease != nil {
		ep.Session = e.d.Lease.Fence
	}
	return ep
}

func (e *Engine) source() db.Endpoint { return db.Endpoint{Role: db.Source, DSN: e.d.Config.Source} }

// loadState reads the durable cutover state from the target for Run: first settling there a
// rollback made without the target (targetlost.go), then remembering what a rollback without
// the target would need.
func (e *Engine) loadState(ctx context.Context) (state.CutoverState, error) {
	conn, err := e.target().Connect(ctx)
	if err != nil {
		return state.CutoverState{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st, err := state.LoadCutoverState(ctx, conn)
	if err != nil {
		return st, e.target().Describe(err)
	}
	if settled, err := e.settleTargetLost(ctx, conn, st); err != nil {
		return st, err
	} else if settled {
		if st, err = state.LoadCutoverState(ctx, conn); err != nil {
			return st, e.target().Describe(err)
		}
	}
	e.remember(ctx, conn, st)
	return st, nil
}

// Live reads which side traffic is live on, from the target's durable state and, when that
// says the target, the source's record of a rollback made without the target, which then
// overrides it: the proxy of an agent that starts takes its mode from it. With the target live
// and the source unreachable it fails: a rollback made without the target may be recorded
// there, and clients must not reach the target then.
func Live(ctx context.Context, target, source db.Endpoint) (string, error) {
	conn, err := target.Connect(ctx)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st, err := state.LoadCutoverState(ctx, conn)
	if err != nil {
		return "", target.Describe(err)
	}
	if st.Live != state.LiveTarget || st.Op != state.OpNone {
		return st.Live, nil
	}
	live, _, err := liveSide(ctx, source, st)
	if err != nil {
		return "", fmt.Errorf("traffic is live on the target, but the source, which would record a rollback made while the target was unreachable, cannot be read: %w", err)
	}
	return live, nil
}

// Check is one pre-check's result.
type Check struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail,omitempty"`
}

// StepResult is one step as it ended.
type StepResult struct {
	No      int     `json:"step"`
	Name    string  `json:"name"`
	State   string  `json:"state"`
	Seconds float64 `json:"seconds"`
	Detail  string  `json:"detail,omitempty"`
}

// Result is what a cutover or rollback did.
type Result struct {
	Op      string       `json:"op"`
	Attempt int          `json:"attempt,omitempty"`
	Outcome string       `json:"outcome"`
	Error   string       `json:"error,omitempty"`
	Live    string       `json:"live"`
	Checks  []Check      `json:"checks"`
	Steps   []StepResult `json:"steps"`
	// PauseSeconds is how long client sessions were held, from the start of the pause to the
	// resume: the write pause clients saw.
	PauseSeconds float64 `json:"pause_seconds"`
	// Plan lists the steps a dry run would take.
	Plan []string `json:"plan,omitempty"`
}

// attempt runs the steps of one operation and records them.
type attempt struct {
	e     *Engine
	op    string
	no    int
	conn  *pgx.Conn // target, fenced by the lease
	names []string
	res   *Result
	cur   int
	start time.Time
	// held is the last step's outcome, not yet recorded: it is written with the next step's
	// start (or by flush), one target commit instead of two, which inside the pause is write
	// pause saved. Settling a killed operation reads the cutover state, never these records,
	// so a step recorded as running when it had finished misleads no one but the status page,
	// which recovery then corrects.
	held []state.CutoverStep
	// lock is the table fence while it is up (cutover.fence_tables).
	lock *tableLock
}

func (a *attempt) begin(ctx context.Context) error {
	steps := make([]state.CutoverStep, len(a.names))
	for i, n := range a.names {
		steps[i] = state.CutoverStep{Attempt: a.no, No: i + 1, Name: n, State: state.StepPending}
	}
	return state.SaveCutoverSteps(ctx, a.conn, steps...)
}

// step runs step no (1-based) with fn, recording it running (with the previous step's
// outcome), then holding its own outcome for the next record; a failure is recorded at once.
func (a *attempt) step(ctx context.Context, no int, fn func() (string, error)) error {
	return a.run(ctx, no, true, fn)
}

// quickStep is a step whose work is recorded only after it ran (the resume: the pause ends
// first, its records after).
func (a *attempt) quickStep(ctx context.Context, no int, fn func() (string, error)) error {
	return a.run(ctx, no, false, fn)
}

func (a *attempt) run(ctx context.Context, no int, recordStart bool, fn func() (string, error)) error {
	if f := a.e.d.Fault; f != nil {
		if err := f(a.op, no); err != nil {
			a.e.die(err)
			return &faultError{err}
		}
	}
	a.cur = no
	started := time.Now()
	name := a.names[no-1]
	a.e.d.Log.Info(a.op+" step", "step", no, "name", name)
	if recordStart {
		running := state.CutoverStep{Attempt: a.no, No: no, Name: name, State: state.StepRunning, StartedAt: started}
		if err := state.SaveCutoverSteps(ctx, a.conn, append(a.held, running)...); err != nil {
			return err
		}
		a.held = nil
	}
	detail, err := fn()
	finished := time.Now()
	st := state.StepDone
	if err != nil {
		st, detail = state.StepFailed, err.Error()
	}
	a.res.Steps = append(a.res.Steps, StepResult{No: no, Name: name, State: st, Seconds: finished.Sub(started).Seconds(), Detail: detail})
	a.held = append(a.held, state.CutoverStep{Attempt: a.no, No: no, Name: name, State: st, StartedAt: started, FinishedAt: finished, Detail: detail})
	a.e.d.Log.Info(a.op+" step "+st, "step", no, "name", name, "took", finished.Sub(started).Round(time.Millisecond).String(), "detail", detail)
	if err != nil || !recordStart {
		if serr := a.flush(ctx); serr != nil && err == nil {
			return serr
		}
	}
	return err
}

// flush records the held outcome; every operation ends with it.
func (a *attempt) flush(ctx context.Context) error {
	if len(a.held) == 0 {
		return nil
	}
	err := state.SaveCutoverSteps(context.WithoutCancel(ctx), a.conn, a.held...)
	a.held = nil
	return err
}

// skipRest marks the steps after the current one skipped.
func (a *attempt) skipRest(ctx context.Context, why string) {
	steps := a.held
	a.held = nil
	for i := a.cur + 1; i <= len(a.names); i++ {
		steps = append(steps, state.CutoverStep{Attempt: a.no, No: i, Name: a.names[i-1], State: state.StepSkipped, Detail: why})
		a.res.Steps = append(a.res.Steps, StepResult{No: i, Name: a.names[i-1], State: state.StepSkipped, Detail: why})
	}
	_ = state.SaveCutoverSteps(context.WithoutCancel(ctx), a.conn, steps...)
}

// faultError is a Fault that fired: the caller must return it without cleaning up.
type faultError struct{ err error }

func (f *faultError) Error() string { return "fault: " + f.err.Error() }
func (f *faultError) Unwrap() error { return f.err }

func isFault(err error) bool {
	var f *faultError
	return errors.As(err, &f)
}

// audit records an audit entry through the agent, or directly on conn.
func (e *Engine) audit(ctx context.Context, conn *pgx.Conn, action, outcome string, detail map[string]any) {
	if e.d.Audit != nil {
		e.d.Audit("cutover", action, outcome, detail)
		return
	}
	raw, err := json.Marshal(detail)
	if err != nil {
		raw = []byte("{}")
	}
	if _, err := state.RecordAudit(context.WithoutCancel(ctx), conn, state.AuditEntry{Actor: "cutover", Action: action, Outcome: outcome, Detail: raw}); err != nil {
		e.d.Log.Warn("could not record audit entry", "action", action, "err", err)
	}
}

// waitFor polls cond every 5 ms until it holds, timeout passes (an error naming what) or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not reached within %s (cutover.catch_up_timeout)", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// emitMark writes a transactional logical message on q's server and returns its position:
// every transaction committed there before it has a commit position below it, so a stream
// that has applied past it has applied them all. The message's own transaction ends after it.
func emitMark(ctx context.Context, q interface {
	QueryRow(context.Context, string, ...any) pgx.Row
}, what string) (pgtypes.LSN, error) {
	var s string
	if err := q.QueryRow(ctx, `SELECT pg_catalog.pg_logical_emit_message(true, $1::text, $2::text)::text`, "pgshift", what).Scan(&s); err != nil {
		return 0, fmt.Errorf("write the %s mark: %w", what, err)
	}
	return pgtypes.ParseLSN(s)
}
