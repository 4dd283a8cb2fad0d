package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/proxy"
	"github.com/pgshift/pgshift/internal/state"
)

// CutoverSteps are the steps of a cutover, in order: state.PlannedCutover, which status and
// the report show before any attempt.
func CutoverSteps() []string { return state.PlannedCutover() }

// RollbackSteps are the steps of a rollback, in order.
func RollbackSteps() []string {
	return []string{
		"pre-checks (traffic on the target, reverse replication streaming)",
		"pause traffic at transaction boundaries",
		"wait until the source applied the target's position at the pause",
		"sync sequences, large objects and unlogged tables (recopy_unlogged) back to the source",
		"switch the proxy to the source",
		"resume traffic",
		"drop reverse replication; forward replication re-armed",
		"post-switch hooks and checks",
	}
}

// Cutover moves traffic from the source to the target (see the package comment). A dry run
// only runs the pre-checks and returns the plan. The result's outcome is done, aborted
// (traffic resumed on the source, nothing changed that matters) or planned; an error wrapping
// ErrCannotRun means nothing was started.
func (e *Engine) Cutover(ctx context.Context, dryRun bool) (*Result, error) {
	if !e.ops.TryLock() {
		return nil, fmt.Errorf("%w: a cutover or rollback is already running in this agent", ErrCannotRun)
	}
	defer e.ops.Unlock()
	res := &Result{Op: state.OpCutover, Live: state.LiveSource}
	conn, st, err := e.openOp(ctx, " so cutover can pause and switch its clients")
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	switch {
	case st.Live == state.LiveTarget:
		return nil, fmt.Errorf("%w: traffic is on the target already (cut over at %s); pgshift rollback moves it back", ErrCannotRun, st.SwitchedAt.Format(time.RFC3339))
	}
	res.Checks = e.precheckCutover(ctx, conn)
	failed := failedChecks(res.Checks)
	if dryRun {
		res.Outcome = OutcomePlanned
		res.Plan = e.plan(CutoverSteps())
		if failed != "" {
			res.Error = "pre-checks failed: " + failed
		}
		return res, nil
	}
	no, err := state.NextCutoverAttempt(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCannotRun, err)
	}
	res.Attempt = no
	a := &attempt{e: e, op: state.OpCutover, no: no, conn: conn, names: CutoverSteps(), res: res, start: time.Now()}
	defer func() { _ = a.flush(ctx) }() // the last outcome held
	if err := a.begin(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCannotRun, err)
	}
	e.audit(ctx, conn, "cutover.start", "ok", map[string]any{"attempt": no})
	err = a.step(ctx, 1, func() (string, error) {
		if failed != "" {
			return "", errors.New(failed)
		}
		return fmt.Sprintf("%d checks passed", len(res.Checks)), nil
	})
	if err != nil {
		if isFault(err) {
			return nil, err
		}
		a.skipRest(ctx, "pre-checks failed: nothing was changed")
		return e.aborted(ctx, conn, res, err), nil
	}
	rev := state.CutoverState{Live: state.LiveSource, Op: state.OpCutover, Attempt: no, StepNo: 2,
		ReverseSlot: ReverseSlot, ReversePublication: ReversePublication}
	if err := state.SaveCutoverState(ctx, conn, state.LiveSource, state.OpNone, rev); err != nil {
		a.skipRest(ctx, "not started")
		return nil, fmt.Errorf("%w: %w", ErrCannotRun, err)
	}
	return e.runCutover(ctx, a, conn, rev)
}

// runCutover runs steps 2–8 of a recorded cutover attempt.
func (e *Engine) runCutover(ctx context.Context, a *attempt, conn *pgx.Conn, rev state.CutoverState) (*Result, error) {
	res := a.res
	p := e.d.Proxy
	paused, held := false, false
	src, err := e.source().Connect(ctx)
	if err == nil {
		err = writable(ctx, src)
	}
	if err != nil {
		return e.abortCutoverResult(ctx, a, conn, rev, paused, held, err)
	}
	defer src.Close(context.WithoutCancel(ctx))
	var pub string
	if e.cs.FenceTables {
		m, err := state.Load(ctx, conn)
		if err != nil {
			return e.abortCutoverResult(ctx, a, conn, rev, paused, held, e.target().Describe(err))
		}
		pub = m.Publication
	}
	// Before the switch any failure resumes traffic on the source and undoes the reverse
	// replication objects; the forward position and data are untouched.
	err = a.step(ctx, 2, func() (string, error) {
		took, err := p.Pause(ctx, e.d.Config.ProxySettings.PauseTimeout)
		if err != nil {
			return "", err
		}
		paused = true
		return fmt.Sprintf("all sessions held after %s", took.Round(time.Millisecond)), nil
	})
	if err != nil {
		return e.abortCutoverResult(ctx, a, conn, rev, paused, held, err)
	}
	var final pgtypes.LSN
	err = a.step(ctx, 3, func() (string, error) {
		fenced, err := e.takeTableFence(ctx, a, e.writableSource(), pub)
		if err != nil {
			return "", err
		}
		mark, err := emitMark(ctx, src, "cutover")
		if err != nil {
			return "", e.source().Describe(err)
		}
		err = waitFor(ctx, e.cs.CatchUpTimeout, fmt.Sprintf("the target applying the source up to %s", mark), func() (bool, error) {
			return e.d.Metrics.AppliedLSN() > mark, nil
		})
		if err != nil {
			return "", err
		}
		e.hold() // the forward session stops; its position is durable on the target
		held = true
		pos, err := state.LoadPosition(ctx, conn)
		if err != nil {
			return "", e.target().Describe(err)
		}
		if pos.AppliedLSN <= mark {
			return "", fmt.Errorf("the target's stored applied position %s is not past the source's mark %s", pos.AppliedLSN, mark)
		}
		final = pos.AppliedLSN
		return fmt.Sprintf("applied %s (mark %s)", final, mark) + fenced, nil
	})
	if err != nil {
		return e.abortCutoverResult(ctx, a, conn, rev, paused, held, err)
	}
	err = a.step(ctx, 4, func() (string, error) {
		n, err := syncSequences(ctx, src, conn, e.d.Config.Filter(), e.cs.SequenceMargin)
		return fmt.Sprintf("%d sequences set from the source (margin %d)", n, e.cs.SequenceMargin), err
	})
	if err != nil {
		return e.abortCutoverResult(ctx, a, conn, rev, paused, held, err)
	}
	err = a.step(ctx, 5, func() (string, error) {
		n, err := refreshMatViews(ctx, conn, e.cs, "pause")
		if err != nil {
			return "", err
		}
		detail := fmt.Sprintf("%d materialized views refreshed", n.refreshed)
		if n.after > 0 || n.skipped > 0 {
			detail += fmt.Sprintf(" (%d after the switch, %d skipped: cutover.matviews)", n.after, n.skipped)
		}
		more, err := e.syncUnfollowed(ctx, e.source(), e.target(), src, conn)
		if err != nil {
			return "", err
		}
		trig, err := e.triggersLive(ctx, conn, src, state.LiveTarget)
		return detail + more + trig, err
	})
	if err != nil {
		return e.abortCutoverResult(ctx, a, conn, rev, paused, held, err)
	}
	err = a.step(ctx, 6, func() (string, error) {
		start, err := e.armReverse(ctx, conn, src, rev)
		if err != nil {
			return "", err
		}
		rev.ReverseStart, rev.ForwardFinal = start, final
		return fmt.Sprintf("slot %s and publication %s on the target from %s", rev.ReverseSlot, rev.ReversePublication, start), nil
	})
	if err != nil {
		return e.abortCutoverResult(ctx, a, conn, rev, paused, held, err)
	}
	err = a.step(ctx, 7, func() (string, error) {
		// The commit point: from this transaction on, the target is the live side.
		live := rev
		live.Live, live.StepNo, live.SwitchedAt = state.LiveTarget, 7, time.Now()
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if err := state.SaveCutoverState(ctx, tx, state.LiveSource, state.OpCutover, live); err != nil {
				return err
			}
			return state.Advance(ctx, tx, pgtypes.PhaseFollowing, pgtypes.PhaseCutover)
		})
		if err != nil {
			return "", e.target().Describe(err)
		}
		if f := e.d.Fault; f != nil {
			if err := f(state.OpCutover, 70); err != nil { // between the commit and the proxy's switch
				e.die(err)
				return "", &faultError{err}
			}
		}
		err = e.fence(ctx, src)
		if err == nil {
			err = p.Switch(ctx, proxy.Target)
		}
		if err != nil {
			// Nothing has written to the target: moving the live side back is safe.
			undo := live
			undo.Live, undo.SwitchedAt = state.LiveSource, time.Time{}
			rctx := context.WithoutCancel(ctx)
			var uerr error
			if e.fencing() {
				uerr = e.unfence(rctx, src)
			}
			uerr = errors.Join(uerr, pgx.BeginFunc(rctx, conn, func(tx pgx.Tx) error {
				if err := state.SaveCutoverState(rctx, tx, state.LiveTarget, state.OpCutover, undo); err != nil {
					return err
				}
				return state.ReturnToFollowing(rctx, tx)
			}))
			if uerr != nil {
				return "", fmt.Errorf("switch the proxy: %w; and moving the live side back to the source failed: %w (restart the agent: it settles the cutover from its state)", err, uerr)
			}
			return "", fmt.Errorf("switch the proxy: %w", err)
		}
		rev = live
		detail := fmt.Sprintf("%d client sessions on the target", p.Stats().Clients)
		if e.fencing() {
			n, err := e.endBypassers(ctx, src, p.CatalogPID(proxy.Source), a.lock.pidOrZero())
			if err != nil {
				// New sessions are fenced already; say what is left.
				e.d.Log.Warn("the source is fenced for new sessions, but ending the sessions that bypass the proxy failed", "err", err)
				detail += "; source fenced for new sessions, ending the others failed: " + err.Error()
			} else {
				detail += fmt.Sprintf("; source fenced (%s, %d other sessions ended)", e.fenceWhat(), n)
			}
		}
		return detail + a.dropTableFence(ctx), nil
	})
	if err != nil {
		if isFault(err) {
			return nil, err
		}
		if rev.Live != state.LiveTarget {
			return e.abortCutoverResult(ctx, a, conn, rev, paused, held, err)
		}
	}
	err = a.quickStep(ctx, 8, func() (string, error) {
		p.Resume()
		paused = false
		res.PauseSeconds = p.LastPauseDuration().Seconds()
		return fmt.Sprintf("write pause %s", p.LastPauseDuration().Round(time.Millisecond)), nil
	})
	if isFault(err) {
		return nil, err
	}
	done := rev
	done.Op, done.StepNo = state.OpNone, 0
	if err := state.SaveCutoverState(context.WithoutCancel(ctx), conn, state.LiveTarget, state.OpCutover, done); err != nil {
		e.d.Log.Warn("could not record the cutover as finished; the agent settles it when it restarts", "err", err)
	}
	e.release() // Run starts reverse replication
	res.Outcome, res.Live = OutcomeDone, state.LiveTarget
	if err := e.postSwitch(ctx, a, 9, conn, state.OpCutover, state.LiveTarget); isFault(err) {
		return nil, err
	}
	e.startWatch(a.no)
	e.audit(ctx, conn, "cutover", "ok", map[string]any{"attempt": a.no, "pause_seconds": res.PauseSeconds,
		"forward_final_lsn": rev.ForwardFinal.String(), "reverse_start_lsn": rev.ReverseStart.String()})
	return res, nil
}

// abortCutoverResult aborts a cutover before its switch and returns the aborted result (or
// the fault that killed it).
func (e *Engine) abortCutoverResult(ctx context.Context, a *attempt, conn *pgx.Conn, rev state.CutoverState, paused, held bool, cause error) (*Result, error) {
	if isFault(cause) {
		return nil, cause
	}
	if err := e.abortCutover(ctx, a, conn, rev, paused, held, cause); err != nil {
		return nil, err
	}
	return a.res, nil
}

// abortCutover resumes traffic on the source, drops the reverse objects, records the attempt
// aborted and lets forward replication run again. It returns an error only when the cleanup
// itself failed (the next agent start settles it).
func (e *Engine) abortCutover(ctx context.Context, a *attempt, conn *pgx.Conn, rev state.CutoverState, paused, held bool, cause error) error {
	rctx := context.WithoutCancel(ctx)
	if paused {
		e.d.Proxy.Resume()
	}
	if a.cur >= 2 {
		// A pause that timed out held the sessions that were idle until it gave up.
		a.res.PauseSeconds = e.d.Proxy.LastPauseDuration().Seconds()
	}
	a.skipRest(ctx, "cutover aborted: traffic resumed on the source")
	var cleanup error
	if _, err := a.lock.release(rctx, false); err != nil {
		cleanup = err
	}
	if err := dropReverse(rctx, conn, rev.ReverseSlot, rev.ReversePublication); err != nil {
		cleanup = err
	}
	if a.cur >= 5 { // the deferred triggers and rules may be on on the target already
		if _, err := e.triggersLive(rctx, conn, nil, state.LiveSource); err != nil {
			cleanup = errors.Join(cleanup, err)
		}
	}
	back := state.CutoverState{Live: state.LiveSource, Op: state.OpNone, Attempt: a.no}
	if err := state.SaveCutoverState(rctx, conn, state.LiveSource, state.OpCutover, back); err != nil {
		cleanup = errors.Join(cleanup, err)
	}
	_ = held // the session, stopped or not, may run again: the forward position is untouched
	e.release()
	e.aborted(ctx, conn, a.res, cause)
	if cleanup != nil {
		return fmt.Errorf("cutover aborted (%v), traffic resumed on the source, but cleaning up failed: %w; restart the agent to settle it", cause, cleanup)
	}
	return nil
}

// aborted fills res as aborted by cause and audits it.
func (e *Engine) aborted(ctx context.Context, conn *pgx.Conn, res *Result, cause error) *Result {
	res.Outcome, res.Error = OutcomeAborted, cause.Error()
	e.audit(ctx, conn, res.Op, "failed", map[string]any{"attempt": res.Attempt, "error": cause.Error()})
	e.d.Log.Warn(res.Op+" aborted", "attempt", res.Attempt, "err", cause)
	return res
}

// openOp connects to the target and reads the durable cutover state for a cutover or a
// rollback, refusing (ErrCannotRun) in an agent without a proxy (why says what the proxy is
// for) and while an operation is recorded in progress. The caller closes conn.
func (e *Engine) openOp(ctx context.Context, why string) (*pgx.Conn, state.CutoverState, error) {
	conn, err := e.target().Connect(ctx)
	if err != nil {
		return nil, state.CutoverState{}, fmt.Errorf("%w: %w", ErrCannotRun, err)
	}
	st, err := state.LoadCutoverState(ctx, conn)
	switch {
	case err != nil:
		err = fmt.Errorf("%w: %w", ErrCannotRun, e.target().Describe(err))
	case e.d.Proxy == nil:
		err = fmt.Errorf("%w: this agent runs no proxy; start it with pgshift run --proxy ADDR%s", ErrCannotRun, why)
	case st.Op != state.OpNone:
		err = fmt.Errorf("%w: a %s is in progress (attempt %d); the agent settles it when it restarts", ErrCannotRun, st.Op, st.Attempt)
	case st.Live == state.LiveTarget:
		err = e.unsettledTargetLost(ctx, st)
	}
	if err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, state.CutoverState{}, err
	}
	return conn, st, nil
}

// Rollback moves traffic back from the target to the source, which reverse replication has
// kept current, then re-arms forward replication (see the package comment).
func (e *Engine) Rollback(ctx context.Context) (*Result, error) {
	if !e.ops.TryLock() {
		return nil, fmt.Errorf("%w: a cutover or rollback is already running in this agent", ErrCannotRun)
	}
	defer e.ops.Unlock()
	res := &Result{Op: state.OpRollback, Live: state.LiveTarget}
	conn, st, err := e.openOp(ctx, "")
	if err != nil {
		if cause := e.targetUnreachable(ctx); cause != nil {
			return e.rollbackWithoutTarget(ctx, cause)
		}
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	switch {
	case st.Live != state.LiveTarget:
		return nil, fmt.Errorf("%w: traffic is on the source; there is nothing to roll back", ErrCannotRun)
	}
	res.Checks = e.precheckRollback(ctx)
	m, err := state.Load(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCannotRun, e.target().Describe(err))
	}
	res.Checks = append(res.Checks, e.precheckForeign(ctx, m, st))
	res.Checks = append(res.Checks, e.userChecks(ctx, conn, state.OpRollback, state.LiveTarget)...)
	res.Checks = append(res.Checks, e.tableFenceChecks(ctx, conn)...)
	no, err := state.NextCutoverAttempt(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCannotRun, err)
	}
	res.Attempt = no
	a := &attempt{e: e, op: state.OpRollback, no: no, conn: conn, names: RollbackSteps(), res: res, start: time.Now()}
	defer func() { _ = a.flush(ctx) }() // the last outcome held
	if err := a.begin(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrCannotRun, err)
	}
	e.audit(ctx, conn, "rollback.start", "ok", map[string]any{"attempt": no})
	failed := failedChecks(res.Checks)
	err = a.step(ctx, 1, func() (string, error) {
		if failed != "" {
			return "", errors.New(failed)
		}
		return fmt.Sprintf("%d checks passed", len(res.Checks)), nil
	})
	if err != nil {
		if isFault(err) {
			return nil, err
		}
		a.skipRest(ctx, "pre-checks failed: nothing was changed")
		return e.aborted(ctx, conn, res, err), nil
	}
	rb := st
	rb.Op, rb.Attempt, rb.StepNo = state.OpRollback, no, 2
	if err := state.SaveCutoverState(ctx, conn, state.LiveTarget, state.OpNone, rb); err != nil {
		a.skipRest(ctx, "not started")
		return nil, fmt.Errorf("%w: %w", ErrCannotRun, err)
	}
	return e.runRollback(ctx, a, conn, rb, m)
}

func (e *Engine) runRollback(ctx context.Context, a *attempt, conn *pgx.Conn, rb state.CutoverState, m state.Migration) (*Result, error) {
	res := a.res
	p := e.d.Proxy
	paused, unfenced := false, false
	var src *pgx.Conn
	abort := func(cause error) (*Result, error) {
		if isFault(cause) {
			return nil, cause
		}
		rctx := context.WithoutCancel(ctx)
		if _, err := a.lock.release(rctx, false); err != nil {
			e.d.Log.Warn("could not release the table fence of the aborted rollback; it goes with its session", "err", err)
		}
		if unfenced {
			if err := e.fence(rctx, src); err != nil {
				e.d.Log.Warn("could not fence the source again after the aborted rollback; the agent fences it when it restarts", "err", err)
			}
		}
		if a.cur >= 4 { // the deferred triggers and rules may be on on the source already
			if _, err := e.triggersLive(rctx, conn, src, state.LiveTarget); err != nil {
				e.d.Log.Warn("could not turn the deferred triggers and rules back for traffic on the target; the agent does it when it restarts", "err", err)
			}
		}
		if paused {
			p.Resume()
		}
		if a.cur >= 2 {
			res.PauseSeconds = p.LastPauseDuration().Seconds()
		}
		a.skipRest(ctx, "rollback aborted: traffic resumed on the target")
		back := rb
		back.Op, back.StepNo = state.OpNone, 0
		serr := state.SaveCutoverState(rctx, conn, state.LiveTarget, state.OpRollback, back)
		e.release() // reverse replication runs again
		e.aborted(ctx, conn, res, cause)
		if serr != nil {
			return nil, fmt.Errorf("rollback aborted (%v), traffic resumed on the target, but recording it failed: %w; restart the agent to settle it", cause, serr)
		}
		return res, nil
	}
	src, err := e.source().Connect(ctx)
	if err == nil {
		err = writable(ctx, src)
	}
	if err != nil {
		return abort(err)
	}
	defer src.Close(context.WithoutCancel(ctx))
	if e.fencing() {
		// Lifted before the pause: the pause opens the proxy's new source sessions, which
		// would start read-only (or not log in at all). A write outside the proxy from here to
		// the pause's position is caught by the check below; after it, forward replication
		// carries it.
		if err := e.unfence(ctx, src); err != nil {
			return abort(err)
		}
		unfenced = true
	}
	// What the forward slot gained since the pre-checks is checked now, before the pause, so
	// the check inside it (step 3) decodes only the last moments before the pause.
	if _, err := checkForwardNow(ctx, src, m.Slot, m.Publication, rb.ForwardFinal); err != nil {
		return abort(e.source().Describe(err))
	}
	err = a.step(ctx, 2, func() (string, error) {
		took, err := p.Pause(ctx, e.d.Config.ProxySettings.PauseTimeout)
		if err != nil {
			return "", err
		}
		paused = true
		return fmt.Sprintf("all sessions held after %s", took.Round(time.Millisecond)), nil
	})
	if err != nil {
		return abort(err)
	}
	var resumeAt pgtypes.LSN
	err = a.step(ctx, 3, func() (string, error) {
		fenced, err := e.takeTableFence(ctx, a, e.target(), rb.ReversePublication)
		if err != nil {
			return "", err
		}
		mark, err := emitMark(ctx, conn, "rollback")
		if err != nil {
			return "", e.target().Describe(err)
		}
		err = waitFor(ctx, e.cs.CatchUpTimeout, fmt.Sprintf("the source applying the target up to %s", mark), func() (bool, error) {
			return pgtypes.LSN(e.rstats.AppliedLSN.Load()) > mark, nil
		})
		if err != nil {
			return "", err
		}
		e.hold() // the reverse session stops; its position is durable on the source
		pos, err := state.LoadPosition(ctx, src)
		if err != nil {
			return "", e.source().Describe(err)
		}
		if pos.AppliedLSN <= mark {
			return "", fmt.Errorf("the source's stored reverse position %s is not past the target's mark %s", pos.AppliedLSN, mark)
		}
		// Everything on the source up to here is reverse replication's own (traffic was on the
		// target): forward replication resumes after it.
		var s string
		if err := src.QueryRow(ctx, `SELECT pg_catalog.pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
			return "", e.source().Describe(err)
		}
		if resumeAt, err = pgtypes.ParseLSN(s); err != nil {
			return "", err
		}
		// Prove it: what the forward slot holds since the cutover carries reverse replication's
		// origin (the pre-check decoded all but the last moments).
		if err := checkForward(ctx, src, m.Slot, m.Publication, rb.ForwardFinal, resumeAt); err != nil {
			return "", err
		}
		return fmt.Sprintf("source applied %s (mark %s); forward resumes at %s", pos.AppliedLSN, mark, resumeAt) + fenced, nil
	})
	if err != nil {
		return abort(err)
	}
	err = a.step(ctx, 4, func() (string, error) {
		n, err := syncSequences(ctx, conn, src, e.d.Config.Filter(), e.cs.SequenceMargin)
		if err != nil {
			return "", err
		}
		detail := fmt.Sprintf("%d sequences set from the target (margin %d)", n, e.cs.SequenceMargin)
		more, err := e.syncUnfollowed(ctx, e.target(), e.writableSource(), conn, src)
		if err != nil {
			return "", err
		}
		trig, err := e.triggersLive(ctx, conn, src, state.LiveSource)
		return detail + more + trig, err
	})
	if err != nil {
		return abort(err)
	}
	switched := false
	err = a.step(ctx, 5, func() (string, error) {
		live := rb
		live.Live, live.StepNo, live.SwitchedAt = state.LiveSource, 5, time.Now()
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if err := state.SaveCutoverState(ctx, tx, state.LiveTarget, state.OpRollback, live); err != nil {
				return err
			}
			if err := state.ReturnToFollowing(ctx, tx); err != nil {
				return err
			}
			return state.SetPosition(ctx, tx, resumeAt)
		})
		if err != nil {
			return "", e.target().Describe(err)
		}
		if f := e.d.Fault; f != nil {
			if err := f(state.OpRollback, 50); err != nil {
				e.die(err)
				return "", &faultError{err}
			}
		}
		if err := p.Switch(ctx, proxy.Source); err != nil {
			rctx := context.WithoutCancel(ctx)
			undo := live
			undo.Live, undo.SwitchedAt = state.LiveTarget, rb.SwitchedAt
			uerr := errors.Join(pgx.BeginFunc(rctx, conn, func(tx pgx.Tx) error {
				if err := state.SaveCutoverState(rctx, tx, state.LiveSource, state.OpRollback, undo); err != nil {
					return err
				}
				return state.Advance(rctx, tx, pgtypes.PhaseFollowing, pgtypes.PhaseCutover)
			}))
			if uerr != nil {
				return "", fmt.Errorf("switch the proxy: %w; and moving the live side back to the target failed: %w (restart the agent)", err, uerr)
			}
			return "", fmt.Errorf("switch the proxy: %w", err)
		}
		rb, switched = live, true
		return fmt.Sprintf("%d client sessions on the source", p.Stats().Clients) + a.dropTableFence(ctx), nil
	})
	if err != nil && (isFault(err) || !switched) {
		return abort(err)
	}
	err = a.quickStep(ctx, 6, func() (string, error) {
		p.Resume()
		paused = false
		res.PauseSeconds = p.LastPauseDuration().Seconds()
		return fmt.Sprintf("write pause %s", p.LastPauseDuration().Round(time.Millisecond)), nil
	})
	if isFault(err) {
		return nil, err
	}
	err = a.step(ctx, 7, func() (string, error) {
		if err := dropReverse(ctx, conn, rb.ReverseSlot, rb.ReversePublication); err != nil {
			return "", err
		}
		return "forward replication resumes from " + resumeAt.String(), nil
	})
	if isFault(err) {
		return nil, err
	}
	done := state.CutoverState{Live: state.LiveSource, Op: state.OpNone, Attempt: a.no, SwitchedAt: rb.SwitchedAt}
	if err != nil {
		// The slot stays recorded so the next start drops it.
		done.ReverseSlot, done.ReversePublication = rb.ReverseSlot, rb.ReversePublication
	}
	if serr := state.SaveCutoverState(context.WithoutCancel(ctx), conn, state.LiveSource, state.OpRollback, done); serr != nil {
		e.d.Log.Warn("could not record the rollback as finished; the agent settles it when it restarts", "err", serr)
	}
	e.release() // Run starts forward replication again
	res.Outcome, res.Live = OutcomeDone, state.LiveSource
	if err := e.postSwitch(ctx, a, 8, conn, state.OpRollback, state.LiveSource); isFault(err) {
		return nil, err
	}
	e.audit(ctx, conn, "rollback", "ok", map[string]any{"attempt": a.no, "pause_seconds": res.PauseSeconds, "forward_resume_lsn": resumeAt.String()})
	return res, nil
}

// userChecks runs the configured pre hooks and smoke and health checks as pre-checks.
func (e *Engine) userChecks(ctx context.Context, conn *pgx.Conn, op, live string) []Check {
	var out []Check
	if len(e.cs.PreHooks) > 0 {
		detail, err := runHooks(ctx, e.cs.PreHooks, e.cs.HookTimeout, op, live)
		c := Check{Name: "pre hooks", OK: err == nil, Detail: detail}
		if err != nil {
			c.Detail = err.Error()
		}
		out = append(out, c)
	}
	// The smoke and health checks judge the target before traffic moves there; a rollback
	// leaves it, so they do not gate one (the watch window's automatic rollback runs because
	// they fail).
	if op == state.OpCutover && len(e.cs.SmokeSQL)+len(e.cs.HTTPChecks) > 0 {
		detail, err := smokeChecks(ctx, conn, e.cs.SmokeSQL, e.cs.HTTPChecks)
		c := Check{Name: "smoke and health checks", OK: err == nil, Detail: detail}
		if err != nil {
			c.Detail = err.Error()
		}
		out = append(out, c)
	}
	return out
}

// postSwitch runs the post-switch hooks and the smoke and health checks once traffic runs on
// its new side. A failure does not move traffic back (that is the user's call: the result
// says so); it is recorded as the step's failure and in the result's error.
func (e *Engine) postSwitch(ctx context.Context, a *attempt, no int, conn *pgx.Conn, op, live string) error {
	err := a.step(ctx, no, func() (string, error) {
		var parts []string
		if live == state.LiveTarget {
			// The views cutover.matviews keeps out of the pause, now that traffic runs here.
			n, err := refreshMatViews(ctx, conn, e.cs, "after")
			if err != nil {
				return "", err
			}
			if n.refreshed > 0 {
				parts = append(parts, fmt.Sprintf("%d materialized views refreshed after the switch", n.refreshed))
			}
		}
		if len(e.cs.PostSwitchHooks) > 0 {
			d, err := runHooks(ctx, e.cs.PostSwitchHooks, e.cs.HookTimeout, op, live)
			if err != nil {
				return "", err
			}
			parts = append(parts, d)
		}
		if len(e.cs.SmokeSQL)+len(e.cs.HTTPChecks) > 0 {
			// On the side traffic is on now.
			on := conn
			if live == state.LiveSource {
				src, err := e.source().Connect(ctx)
				if err != nil {
					return "", err
				}
				defer src.Close(context.WithoutCancel(ctx))
				on = src
			}
			d, err := smokeChecks(ctx, on, e.cs.SmokeSQL, e.cs.HTTPChecks)
			if err != nil {
				return "", fmt.Errorf("on the %s: %w", live, err)
			}
			parts = append(parts, d)
		}
		if len(parts) == 0 {
			return "none configured", nil
		}
		return strings.Join(parts, "; "), nil
	})
	if err != nil && !isFault(err) {
		other := map[string]string{state.OpCutover: "pgshift rollback", state.OpRollback: "pgshift cutover"}[op]
		a.res.Error = fmt.Sprintf("traffic is on the %s, but the post-switch step failed: %v; if the application is not healthy, run %s", live, err, other)
		e.audit(ctx, conn, op+".post_switch", "failed", map[string]any{"attempt": a.no, "error": err.Error()})
	}
	return err
}

// failedChecks joins the failed checks' details ("" when all passed).
func failedChecks(cs []Check) string {
	var out []string
	for _, c := range cs {
		if !c.OK {
			out = append(out, c.Name+": "+c.Detail)
		}
	}
	return strings.Join(out, "; ")
}

// plan is the dry run's list of steps with what each is expected to take.
func (e *Engine) plan(steps []string) []string {
	lag := e.d.Metrics.LastStatus().LagSeconds
	expect := []string{"", fmt.Sprintf("up to pause_timeout %s", e.pauseTimeout()),
		fmt.Sprintf("about the current lag %.1fs, at most %s", lag, e.cs.CatchUpTimeout), "", "", "", "", ""}
	out := make([]string, len(steps))
	for i, s := range steps {
		out[i] = fmt.Sprintf("%d. %s", i+1, s)
		if i < len(expect) && expect[i] != "" {
			out[i] += " (" + expect[i] + ")"
		}
	}
	return out
}

func (e *Engine) pauseTimeout() time.Duration {
	if t := e.d.Config.ProxySettings.PauseTimeout; t > 0 {
		return t
	}
	return 30 * time.Second
}

// tableFenceChecks is the table fence's pre-check, when it is configured.
func (e *Engine) tableFenceChecks(ctx context.Context, conn *pgx.Conn) []Check {
	if !e.cs.FenceTables {
		return nil
	}
	d, err := state.LoadDeferred(ctx, conn)
	if err != nil {
		return []Check{{Name: "table fence possible", Detail: e.target().Describe(err).Error()}}
	}
	return []Check{tableFenceCheck(len(d))}
}

// takeTableFence takes the table fence (see lockTables) on a session of its own opened on ep
// for publication pub, when cutover.fence_tables is set; the step's detail says how long it
// waited.
func (e *Engine) takeTableFence(ctx context.Context, a *attempt, ep db.Endpoint, pub string) (string, error) {
	if !e.cs.FenceTables {
		return "", nil
	}
	lc, err := ep.Connect(ctx)
	if err != nil {
		return "", err
	}
	start := time.Now()
	l, err := lockTables(ctx, lc, pub, e.cs.FenceLockTimeout)
	if err != nil {
		lc.Close(context.WithoutCancel(ctx))
		return "", ep.Describe(err)
	}
	a.lock = l
	return fmt.Sprintf("; table fence: %d tables locked after %s", len(l.tables), time.Since(start).Round(time.Millisecond)), nil
}

// dropTableFence releases the table fence at the switch, ending the writers queued behind it.
func (a *attempt) dropTableFence(ctx context.Context) string {
	if a.lock == nil {
		return ""
	}
	n, err := a.lock.release(ctx, true)
	if err != nil {
		a.e.d.Log.Warn("the table fence: ending the writers queued behind it failed", "err", err)
		return "; table fence released, ending the writers queued behind it failed: " + err.Error()
	}
	return fmt.Sprintf("; table fence released, %d writers queued behind it ended", n)
}

// precheckCutover checks, changing nothing, that a cutover can run now.
func (e *Engine) precheckCutover(ctx context.Context, conn *pgx.Conn) []Check {
	var out []Check
	add := func(name string, ok bool, detail string) {
		out = append(out, Check{Name: name, OK: ok, Detail: detail})
	}
	m, err := state.Load(ctx, conn)
	switch {
	case err != nil:
		add("phase", false, err.Error())
	case m.Phase != pgtypes.PhaseFollowing:
		add("phase", false, fmt.Sprintf("the migration is in phase %s, not following: run pgshift run until it follows", m.Phase))
	default:
		add("phase", true, "following")
	}
	ls := e.d.Metrics.LastStatus()
	e.mu.Lock()
	since := e.forwardSince
	e.mu.Unlock()
	switch {
	case ls.MeasuredAt.IsZero() || time.Since(ls.MeasuredAt) > 30*time.Second:
		add("lag", false, "no recent lag measurement: the agent is not following right now")
	case ls.MeasuredAt.Before(since):
		// The last measurement is of the forward session before the last cutover and
		// rollback: what the target lags now is not known yet.
		add("lag", false, "forward replication restarted and has not measured its lag yet: wait a few seconds")
	case ls.LagSeconds > e.cs.MaxLag.Seconds():
		add("lag", false, fmt.Sprintf("applied lag %.1fs is over cutover.max_lag %s: wait for the target to catch up", ls.LagSeconds, e.cs.MaxLag))
	default:
		add("lag", true, fmt.Sprintf("%.1fs, %d bytes (max_lag %s)", ls.LagSeconds, ls.LagBytes, e.cs.MaxLag))
	}
	if e.d.Config.Cutover.RequireVerify == nil || *e.d.Config.Cutover.RequireVerify {
		r, err := state.LatestVerifyRun(ctx, conn)
		switch {
		case err != nil:
			add("last verify", false, err.Error()+" (or set cutover.require_verify: false)")
		case r.Differences != 0:
			add("last verify", false, fmt.Sprintf("the last verify (%s, %s mode) found %d differences: repair them and verify again", r.FinishedAt.Format(time.RFC3339), r.Mode, r.Differences))
		case time.Since(r.FinishedAt) > e.cs.VerifyMaxAge:
			add("last verify", false, fmt.Sprintf("the last verify is from %s, older than cutover.verify_max_age %s: verify again", r.FinishedAt.Format(time.RFC3339), e.cs.VerifyMaxAge))
		default:
			add("last verify", true, fmt.Sprintf("clean (%s mode, %s)", r.Mode, r.FinishedAt.Format(time.RFC3339)))
		}
	}
	name, ok, detail := reverseChecks(ctx, conn, e.d.Config.Filter())
	add(name, ok, detail)
	out = append(out, e.userChecks(ctx, conn, state.OpCutover, state.LiveSource)...)
	if e.fencing() {
		src, err := e.source().Connect(ctx)
		if err != nil {
			add("source fence possible", false, err.Error())
		} else {
			if e.cs.FenceSource {
				out = append(out, fenceCheck(ctx, src))
			}
			if len(e.cs.FenceRoles) > 0 {
				out = append(out, roleFenceCheck(ctx, src, e.cs.FenceRoles))
			}
			src.Close(context.WithoutCancel(ctx))
		}
	}
	if d, err := state.LoadDeferred(ctx, conn); err != nil {
		add("deferred statements", false, err.Error())
	} else {
		if e.cs.FenceTables {
			out = append(out, tableFenceCheck(len(d)))
		}
		n := 0
		for _, s := range d {
			if s.AppliedAt.IsZero() {
				n++
			}
		}
		if n > 0 {
			add("deferred statements", true, fmt.Sprintf("%d trigger and rule statements kept back by the copy (pgshift status lists them): run on the target in the pause, and the source's turned off while reverse replication applies", n))
		} else {
			add("deferred statements", true, "none")
		}
	}
	return out
}

// reverseChecks checks that reverse replication can be armed on the target: logical WAL, a
// free slot and WAL sender, the right to create them, and a replica identity on every
// migrated table.
func reverseChecks(ctx context.Context, conn *pgx.Conn, f config.TableFilter) (string, bool, string) {
	var walLevel string
	var slots, used, senders, usedSenders int
	var mayRepl bool
	err := conn.QueryRow(ctx, `SELECT current_setting('wal_level'), current_setting('max_replication_slots')::int,
		(SELECT count(*) FROM pg_catalog.pg_replication_slots)::int, current_setting('max_wal_senders')::int,
		(SELECT count(*) FROM pg_catalog.pg_stat_replication)::int,
		(SELECT rolsuper OR rolreplication FROM pg_catalog.pg_roles WHERE rolname = current_user)`).
		Scan(&walLevel, &slots, &used, &senders, &usedSenders, &mayRepl)
	if err != nil {
		return "reverse replication possible", false, fmt.Sprintf("read the target's replication settings: %v", err)
	}
	var problems []string
	if walLevel != "logical" {
		problems = append(problems, fmt.Sprintf("the target's wal_level is %s: set wal_level = logical and restart it", walLevel))
	}
	if used >= slots {
		problems = append(problems, fmt.Sprintf("the target has no free replication slot (%d of max_replication_slots %d used)", used, slots))
	}
	if usedSenders >= senders {
		problems = append(problems, fmt.Sprintf("the target has no free WAL sender (%d of max_wal_senders %d used)", usedSenders, senders))
	}
	if !mayRepl {
		problems = append(problems, "the target user has neither SUPERUSER nor REPLICATION: ALTER ROLE ... REPLICATION")
	}
	migrated, err := migratedTables(ctx, conn)
	if err != nil {
		return "reverse replication possible", false, err.Error()
	}
	tables, err := catalog.Tables(ctx, conn, f)
	if err != nil {
		return "reverse replication possible", false, fmt.Sprintf("read the target's tables: %v", err)
	}
	var keyless []string
	for _, t := range tables {
		if migrated[t.ID] && t.HoldsData() && !t.HasUsableIdentity() {
			keyless = append(keyless, t.ID.String())
		}
	}
	if len(keyless) > 0 {
		problems = append(problems, fmt.Sprintf("%d tables on the target have no primary key or usable replica identity, so their UPDATEs and DELETEs could not be replicated back (%s): add a key or ALTER TABLE ... REPLICA IDENTITY FULL on the target",
			len(keyless), strings.Join(keyless, ", ")))
	}
	if len(problems) > 0 {
		return "reverse replication possible", false, strings.Join(problems, "; ")
	}
	return "reverse replication possible", true, fmt.Sprintf("%d tables, %d of %d slots used", len(migrated), used, slots)
}

// reverseStartWait bounds how long a rollback waits for a reverse session that has not started
// streaming yet, with no error: the one the switch started a moment ago.
const reverseStartWait = 15 * time.Second

// precheckRollback checks that the reverse session is streaming. A rollback asked for right
// after the switch waits up to reverseStartWait for it to start rather than refusing at once.
func (e *Engine) precheckRollback(ctx context.Context) []Check {
	e.mu.Lock()
	rerr, since := e.revErr, e.revSince
	e.mu.Unlock()
	for deadline := time.Now().Add(reverseStartWait); rerr == nil && since.IsZero() && time.Now().Before(deadline); {
		select {
		case <-ctx.Done():
			return []Check{{Name: "reverse replication", Detail: "not streaming in this agent yet"}}
		case <-time.After(50 * time.Millisecond):
		}
		e.mu.Lock()
		rerr, since = e.revErr, e.revSince
		e.mu.Unlock()
	}
	switch {
	case rerr != nil:
		return []Check{{Name: "reverse replication", Detail: "failing: " + rerr.Error()}}
	case since.IsZero():
		return []Check{{Name: "reverse replication", Detail: "not streaming in this agent yet"}}
	}
	return []Check{{Name: "reverse replication", OK: true, Detail: fmt.Sprintf("streaming since %s, applied %s", since.Format(time.RFC3339), pgtypes.LSN(e.rstats.AppliedLSN.Load()))}}
}

// precheckForeign decodes the forward slot since the cutover (see checkForward): a write on
// the source that bypassed the proxy fails the rollback's pre-checks.
func (e *Engine) precheckForeign(ctx context.Context, m state.Migration, st state.CutoverState) Check {
	c := Check{Name: "no writes on the source outside the proxy"}
	src, err := e.source().Connect(ctx)
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	defer src.Close(context.WithoutCancel(ctx))
	upto, err := checkForwardNow(ctx, src, m.Slot, m.Publication, st.ForwardFinal)
	if err != nil {
		c.Detail = e.source().Describe(err).Error()
		return c
	}
	c.OK, c.Detail = true, fmt.Sprintf("every change on the source since %s came from reverse replication (checked up to %s)", st.ForwardFinal, upto)
	return c
}

// migratedTables are the tables that hold the migration's rows (leaf partitions and plain
// tables, as the forward publication names them).
func migratedTables(ctx context.Context, q catalog.Querier) (map[pgtypes.TableID]bool, error) {
	tables, err := state.LoadTables(ctx, q)
	if err != nil {
		return nil, err
	}
	out := map[pgtypes.TableID]bool{}
	for _, t := range tables {
		if t.Kind != state.KindPartitioned {
			out[t.ID] = true
		}
	}
	return out, nil
}
