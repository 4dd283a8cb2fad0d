package cutover

// A rollback while the target is unreachable. The durable cutover state lives on the target,
// and a normal rollback first drains the target into the source; neither is possible here.
// What makes it safe anyway is a proof that nothing exists only on the target: every client
// of the migration reaches the target through this agent's proxy, and the proxy counts the
// client units it sent to the target since the switch (proxy.UnitsOnTarget). While that count
// is zero, and reverse replication has carried no row back since the switch, no client can
// have changed the target, so the source — the old primary, current as of the cutover — is
// everything. The rollback then records itself on the source (state.TargetLostRollback, the
// commit point), lifts the source fences, turns the deferred triggers and rules on there,
// and moves traffic by closing every client session so that clients reconnect to the source
// (proxy.Abandon: no session state can be read from a server that is gone). When the target
// is reachable again, the engine settles the target's state from the source's record before
// it starts forward replication, from the position the rollback took.
//
// Refused, with the reason, when any of it cannot be proven: a client unit went to the
// target, reverse replication applied a row (a writer outside the proxy wrote on the
// target), post-switch hooks are configured (they restart applications that reach the target
// without the proxy), or this agent did not see the state of the cutover it would undo. The
// user then brings the target back and rolls back normally, which loses nothing.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/proxy"
	"github.com/pgshift/pgshift/internal/state"
)

// seen is what the engine last read of the target while traffic was live there, kept for a
// rollback that cannot read it (rollbackWithoutTarget).
type seen struct {
	ok           bool
	st           state.CutoverState
	slot, pub    string   // the forward slot and publication on the source
	deferred     []string // the deferred trigger and rule statements (as copy recorded them)
	revChanges   uint64   // reverse replication's applied row changes when st was first seen
	revChangesAt int      // the attempt revChanges belongs to
}

// remember keeps st (and what a rollback without the target needs) from conn, a target
// session, while traffic is live on the target with nothing in progress.
func (e *Engine) remember(ctx context.Context, conn *pgx.Conn, st state.CutoverState) {
	if st.Live != state.LiveTarget || st.Op != state.OpNone {
		e.mu.Lock()
		e.seen = seen{}
		e.mu.Unlock()
		return
	}
	m, err := state.Load(ctx, conn)
	if err != nil {
		e.d.Log.Debug("could not read the migration for a rollback without the target", "err", err)
		return
	}
	ds, err := state.LoadDeferred(ctx, conn)
	if err != nil {
		e.d.Log.Debug("could not read the deferred statements for a rollback without the target", "err", err)
		return
	}
	stmts := make([]string, len(ds))
	for i, d := range ds {
		stmts[i] = d.Statement
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	prev := e.seen
	e.seen = seen{ok: true, st: st, slot: m.Slot, pub: m.Publication, deferred: stmts,
		revChanges: e.rstats.Changes.Load(), revChangesAt: st.Attempt}
	if prev.ok && prev.revChangesAt == st.Attempt {
		e.seen.revChanges = prev.revChanges // counted from the first sight of this cutover
	}
}

// targetUnreachable says why the target cannot be reached, or nil when it answers (even with
// an error: a server that answers may have committed something).
func (e *Engine) targetUnreachable(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ep := db.Endpoint{Role: db.Target, DSN: e.d.Config.Target}
	conn, err := ep.Connect(cctx)
	if err == nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return nil
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	if errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// rollbackWithoutTarget is Rollback when the target cannot be reached (see the file comment).
func (e *Engine) rollbackWithoutTarget(ctx context.Context, unreachable error) (*Result, error) {
	e.mu.Lock()
	k := e.seen
	e.mu.Unlock()
	p := e.d.Proxy
	res := &Result{Op: state.OpRollback, Live: state.LiveTarget}
	check := func(name string, ok bool, detail string) {
		res.Checks = append(res.Checks, Check{Name: name, OK: ok, Detail: detail})
	}
	check("target unreachable", true, "the target cannot be reached ("+unreachable.Error()+"); rolling back without it if nothing can exist only there")
	switch {
	case p == nil:
		return nil, fmt.Errorf("%w: the target cannot be reached (%w), and this agent runs no proxy", ErrCannotRun, unreachable)
	case !k.ok:
		return nil, fmt.Errorf("%w: the target cannot be reached (%w), and this agent has not read the state of the cutover it would undo; bring the target back and run pgshift rollback", ErrCannotRun, unreachable)
	}
	units, known := p.UnitsOnTarget()
	if known {
		check("no client statement on the target", units == 0, fmt.Sprintf("%d client requests went to the target through the proxy since the switch", units))
	} else {
		check("no client statement on the target", false, "this agent's proxy started after the switch, so it cannot tell what reached the target before")
	}
	rev := e.rstats.Changes.Load() - k.revChanges
	check("no row carried back from the target", rev == 0, fmt.Sprintf("reverse replication applied %d row changes from the target since the switch", rev))
	check("no post-switch hooks", len(e.cs.PostSwitchHooks) == 0, fmt.Sprintf("%d post-switch hooks configured", len(e.cs.PostSwitchHooks)))
	src, err := e.writableSource().Connect(ctx)
	if err != nil {
		check("source reachable", false, err.Error())
	} else {
		defer src.Close(context.WithoutCancel(ctx))
		check("source reachable", true, "")
	}
	if failed := failedChecks(res.Checks); failed != "" {
		res.Outcome = OutcomeAborted
		res.Error = fmt.Sprintf("the target cannot be reached, and a rollback without it could lose writes: %s. "+
			"Bring the target back and run pgshift rollback: it carries the target's writes back first", failed)
		e.d.Log.Warn("rollback without the target refused", "err", res.Error)
		return res, nil
	}
	var got bool
	if err := src.QueryRow(ctx, `SELECT pg_catalog.pg_try_advisory_lock(hashtext('pgshift.rollback_without_target'))`).Scan(&got); err != nil || !got {
		return nil, fmt.Errorf("%w: another session is rolling back without the target (%v)", ErrCannotRun, err)
	}
	var steps []state.CutoverStep // for the target's record, when it is settled
	step := func(no int, name string, fn func() (string, error)) error {
		t0 := time.Now()
		detail, err := fn()
		st := state.StepDone
		if err != nil {
			st, detail = state.StepFailed, err.Error()
		}
		res.Steps = append(res.Steps, StepResult{No: no, Name: name, State: st, Seconds: time.Since(t0).Seconds(), Detail: detail})
		steps = append(steps, state.CutoverStep{No: no, Name: name, State: st, StartedAt: t0, FinishedAt: time.Now(), Detail: detail})
		e.d.Log.Info("rollback step "+st, "step", no, "name", name, "took", time.Since(t0).Round(time.Millisecond).String(), "detail", detail, "without_target", true)
		return err
	}
	abort := func(err error, paused bool) (*Result, error) {
		if paused {
			p.Resume()
			res.PauseSeconds = p.LastPauseDuration().Seconds()
		}
		res.Outcome, res.Error = OutcomeAborted, err.Error()
		e.d.Log.Warn("rollback without the target aborted; traffic stays on the target", "err", err)
		return res, nil
	}
	_ = step(1, "pre-checks (the target unreachable)", func() (string, error) {
		return fmt.Sprintf("%d checks passed", len(res.Checks)), nil
	})
	if err := step(2, "pause traffic at transaction boundaries", func() (string, error) {
		took, err := p.Pause(ctx, e.d.Config.ProxySettings.PauseTimeout)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("all sessions held after %s", took.Round(time.Millisecond)), nil
	}); err != nil {
		return abort(err, false)
	}
	var resumeAt pgtypes.LSN
	if err := step(3, "prove that the source holds everything", func() (string, error) {
		if n, _ := p.UnitsOnTarget(); n > 0 {
			return "", fmt.Errorf("%d client requests reached the target before the pause", n)
		}
		e.hold() // the reverse session (failing without the target) stays stopped
		var s string
		if err := src.QueryRow(ctx, `SELECT pg_catalog.pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
			return "", e.source().Describe(err)
		}
		var err error
		if resumeAt, err = pgtypes.ParseLSN(s); err != nil {
			return "", err
		}
		// As in a normal rollback: what the source gained since the cutover is reverse
		// replication's own, and there is none of that here either.
		if err := checkForward(ctx, src, k.slot, k.pub, k.st.ForwardFinal, resumeAt); err != nil {
			return "", err
		}
		return fmt.Sprintf("no client request reached the target since the switch; forward replication resumes at %s", resumeAt), nil
	}); err != nil {
		e.release()
		return abort(err, true)
	}
	if err := step(4, "make the source live", func() (string, error) {
		var parts []string
		if e.fencing() {
			if err := e.unfence(ctx, src); err != nil {
				return "", err
			}
			parts = append(parts, "fences lifted")
		}
		if len(k.deferred) > 0 {
			if err := runStatements(ctx, src, k.deferred); err != nil {
				return "", e.source().Describe(fmt.Errorf("turn the deferred triggers and rules on again on the source: %w", err))
			}
			parts = append(parts, fmt.Sprintf("%d deferred triggers and rules on again", len(k.deferred)))
		}
		if len(parts) == 0 {
			return "nothing to change", nil
		}
		return strings.Join(parts, "; "), nil
	}); err != nil {
		if e.fencing() {
			if ferr := e.fence(context.WithoutCancel(ctx), src); ferr != nil {
				e.d.Log.Warn("could not fence the source again after the aborted rollback", "err", ferr)
			}
		}
		e.release()
		return abort(err, true)
	}
	if err := step(5, "switch traffic to the source (recorded on the source)", func() (string, error) {
		// The record is the commit point: from here traffic is live on the source (an agent
		// that starts reads it), so the two steps left are recorded as done with it.
		now := time.Now()
		rec := state.TargetLostRollback{FromAttempt: k.st.Attempt, ResumeAt: resumeAt, At: now,
			Detail: "rolled back while the target was unreachable: " + unreachable.Error(),
			Steps: append(steps,
				state.CutoverStep{No: 5, Name: "switch traffic to the source (recorded on the source)", State: state.StepDone, StartedAt: now, FinishedAt: now,
					Detail: "recorded on the source; every client session closed to reconnect to the source"},
				state.CutoverStep{No: 6, Name: "resume traffic", State: state.StepDone, StartedAt: now, FinishedAt: now})}
		if err := state.SaveTargetLostRollback(ctx, src, rec); err != nil {
			return "", e.source().Describe(err)
		}
		n := p.Stats().Clients
		if err := p.Abandon(proxy.Source, "the target is unreachable"); err != nil {
			return "", err
		}
		e.mu.Lock()
		e.seen, e.lost = seen{}, true
		e.mu.Unlock()
		return fmt.Sprintf("%d client sessions closed to reconnect to the source", n), nil
	}); err != nil {
		e.release()
		return abort(err, true)
	}
	_ = step(6, "resume traffic", func() (string, error) {
		p.Resume()
		res.PauseSeconds = p.LastPauseDuration().Seconds()
		return fmt.Sprintf("write pause %s", p.LastPauseDuration().Round(time.Millisecond)), nil
	})
	e.release() // Run waits for the target, settles its state, then follows forward again
	res.Outcome, res.Live = OutcomeDone, state.LiveSource
	e.d.Log.Warn("rolled back without the target: traffic is on the source; the target's state is settled when it is reachable again",
		"forward_resume_lsn", resumeAt.String())
	return res, nil
}

// settleTargetLost brings the target's state (conn, fenced by the lease; st read from it) in
// line with a rollback made without it, when the source records one against st: live on the
// source, the phase back to following, forward replication resumed from the rollback's
// position, reverse replication's objects dropped, the deferred triggers and rules off on the
// target. It reports whether it settled one.
func (e *Engine) settleTargetLost(ctx context.Context, conn *pgx.Conn, st state.CutoverState) (bool, error) {
	if st.Live != state.LiveTarget || st.Op != state.OpNone {
		return false, nil
	}
	src, r, ok, err := readTargetLost(ctx, e.writableSource())
	if err != nil {
		return false, fmt.Errorf("read whether a rollback was made without the target: %w", err)
	}
	defer src.Close(context.WithoutCancel(ctx))
	if !ok {
		return false, nil
	}
	if r.FromAttempt != st.Attempt {
		// Left by a settle that stopped before its delete (the target moved on since).
		return false, e.source().Describe(state.DeleteTargetLostRollback(ctx, src))
	}
	// The deferred triggers and rules go off on the target first: forward replication applies
	// there next, and a settle that fails after this is done again.
	if _, err := e.triggersLive(ctx, conn, src, state.LiveSource); err != nil {
		return false, err
	}
	if err := dropReverse(ctx, conn, st.ReverseSlot, st.ReversePublication); err != nil {
		return false, e.target().Describe(err)
	}
	no, err := state.NextCutoverAttempt(ctx, conn)
	if err != nil {
		return false, e.target().Describe(err)
	}
	for i := range r.Steps {
		r.Steps[i].Attempt = no
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		next := state.CutoverState{Live: state.LiveSource, Op: state.OpNone, Attempt: no, SwitchedAt: r.At}
		if err := state.SaveCutoverState(ctx, tx, state.LiveTarget, state.OpNone, next); err != nil {
			return err
		}
		if err := state.ReturnToFollowing(ctx, tx); err != nil {
			return err
		}
		if err := state.SetPosition(ctx, tx, r.ResumeAt); err != nil {
			return err
		}
		return state.SaveCutoverSteps(ctx, tx, r.Steps...)
	})
	if err != nil {
		return false, e.target().Describe(fmt.Errorf("settle the rollback made without the target: %w", err))
	}
	if err := state.DeleteTargetLostRollback(ctx, src); err != nil {
		e.d.Log.Warn("could not remove the source's record of the rollback made without the target; it is removed next time", "err", err)
	}
	e.audit(ctx, conn, "rollback", "ok", map[string]any{"attempt": no, "without_target": true,
		"forward_resume_lsn": r.ResumeAt.String(), "detail": r.Detail})
	e.mu.Lock()
	e.lost = false
	e.mu.Unlock()
	e.d.Log.Warn("the target is reachable again: settled the rollback made without it; forward replication resumes",
		"attempt", no, "forward_resume_lsn", r.ResumeAt.String())
	return true, nil
}

// unsettledTargetLost refuses an operation (ErrCannotRun) while the source records a rollback
// made without the target against st that the engine has not settled on the target yet:
// traffic is on the source then, though st says the target, and an operation planned from st
// would act on the wrong side (an aborted rollback fences the source again, say).
func (e *Engine) unsettledTargetLost(ctx context.Context, st state.CutoverState) error {
	live, r, err := liveSide(ctx, e.source(), st)
	if err != nil {
		return fmt.Errorf("%w: read whether a rollback was made without the target: %w", ErrCannotRun, err)
	}
	if live != st.Live {
		return fmt.Errorf("%w: traffic is on the source after a rollback made while the target was unreachable (%s); the agent settles the target's state in a moment, then forward replication runs again", ErrCannotRun, r.At.Format(time.RFC3339))
	}
	return nil
}

// liveSide is the side traffic is live on given the target's cutover state st and what the
// source (read through source) records of a rollback made without the target (returned too).
func liveSide(ctx context.Context, source db.Endpoint, st state.CutoverState) (string, state.TargetLostRollback, error) {
	src, r, ok, err := readTargetLost(ctx, source)
	if err != nil {
		return "", r, err
	}
	src.Close(context.WithoutCancel(ctx))
	return state.LiveSide(st, r, ok), r, nil
}

// readTargetLost connects through source and reads its record of a rollback made without the
// target, again after a transient failure (up to 3 tries): a source fence put up or lifted
// (by this agent's recovery, say) ends every other session of the source database, this
// read's among them. The caller closes the returned session.
func readTargetLost(ctx context.Context, source db.Endpoint) (*pgx.Conn, state.TargetLostRollback, bool, error) {
	for attempt := 1; ; attempt++ {
		src, err := source.Connect(ctx)
		if err == nil {
			r, ok, rerr := state.LoadTargetLostRollback(ctx, src)
			if rerr == nil {
				return src, r, ok, nil
			}
			src.Close(context.WithoutCancel(ctx))
			err = source.Describe(rerr)
		}
		if attempt >= 3 || !db.Transient(err) {
			return nil, state.TargetLostRollback{}, false, err
		}
		select {
		case <-ctx.Done():
			return nil, state.TargetLostRollback{}, false, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// waitingForTarget says whether Run should wait for the target rather than end: after a
// rollback made without it, until its state is settled.
func (e *Engine) waitingForTarget() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lost
}
