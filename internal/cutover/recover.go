package cutover

import (
	"context"
	"fmt"
	"time"

	"github.com/pgshift/pgshift/internal/proxy"
	"github.com/pgshift/pgshift/internal/state"
)

// recover settles an operation a killed agent left in progress, from the durable state alone:
// one whose switch was committed is completed (the proxy of this agent started on the side
// that switch chose), one whose switch was not is rolled back. Reverse objects of a side no
// longer live are dropped. Traffic is not paused: this agent's proxy has just started.
func (e *Engine) recover(ctx context.Context) error {
	conn, err := e.target().Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	st, err := state.LoadCutoverState(ctx, conn)
	if err != nil {
		return e.target().Describe(err)
	}
	mark := func(outcome string) {
		steps, err := state.LoadCutoverSteps(ctx, conn)
		if err != nil {
			return
		}
		now := time.Now()
		for _, s := range steps {
			if s.Attempt != st.Attempt || (s.State != state.StepRunning && s.State != state.StepPending) {
				continue
			}
			if s.State == state.StepRunning {
				s.State, s.FinishedAt, s.Detail = state.StepFailed, now, "the agent stopped during this step or just after it; "+outcome
			} else {
				s.State, s.Detail = state.StepSkipped, outcome
			}
			_ = state.SaveCutoverStep(ctx, conn, s)
		}
	}
	// fence: what the source fence must be once settled ("" leaves it): a kill may have come
	// between the switch's commit and the fence's change.
	fence := ""
	if st.Live == state.LiveTarget {
		fence = "on"
	}
	switch {
	case st.Op == state.OpCutover && st.Live == state.LiveSource:
		fence = "off"
		// Killed before the switch: nothing wrote to the target; undo the reverse objects.
		if err := dropReverse(ctx, conn, st.ReverseSlot, st.ReversePublication); err != nil {
			return e.target().Describe(err)
		}
		next := state.CutoverState{Live: state.LiveSource, Op: state.OpNone, Attempt: st.Attempt}
		if err := state.SaveCutoverState(ctx, conn, st.Live, st.Op, next); err != nil {
			return e.target().Describe(err)
		}
		mark("rolled back when the agent restarted: traffic stays on the source")
		e.audit(ctx, conn, "cutover.recover", "failed", map[string]any{"attempt": st.Attempt, "settled": "rolled back before the switch"})
		e.d.Log.Warn("a cutover was interrupted before its switch; rolled back: traffic stays on the source", "attempt", st.Attempt)
	case st.Op == state.OpCutover && st.Live == state.LiveTarget:
		fence = "on+end"
		next := st
		next.Op, next.StepNo = state.OpNone, 0
		if err := state.SaveCutoverState(ctx, conn, st.Live, st.Op, next); err != nil {
			return e.target().Describe(err)
		}
		mark("completed when the agent restarted: traffic is on the target")
		e.audit(ctx, conn, "cutover.recover", "ok", map[string]any{"attempt": st.Attempt, "settled": "completed after the switch"})
		e.d.Log.Warn("a cutover was interrupted after its switch; completed: traffic is on the target", "attempt", st.Attempt)
	case st.Op == state.OpRollback && st.Live == state.LiveTarget:
		// The rollback lifts the fences before its pause: up again, and whoever came in
		// meanwhile is ended, since traffic stays on the target.
		fence = "on+end"
		next := st
		next.Op, next.StepNo = state.OpNone, 0
		if err := state.SaveCutoverState(ctx, conn, st.Live, st.Op, next); err != nil {
			return e.target().Describe(err)
		}
		mark("rolled back when the agent restarted: traffic stays on the target")
		e.audit(ctx, conn, "rollback.recover", "failed", map[string]any{"attempt": st.Attempt, "settled": "traffic stays on the target"})
		e.d.Log.Warn("a rollback was interrupted before its switch; traffic stays on the target", "attempt", st.Attempt)
	case st.Op == state.OpRollback && st.Live == state.LiveSource, st.Op == state.OpNone && st.Live == state.LiveSource && st.ReverseSlot != "":
		if st.Op == state.OpRollback {
			fence = "off"
		}
		if err := dropReverse(ctx, conn, st.ReverseSlot, st.ReversePublication); err != nil {
			return e.target().Describe(err)
		}
		next := state.CutoverState{Live: state.LiveSource, Op: state.OpNone, Attempt: st.Attempt, SwitchedAt: st.SwitchedAt}
		if err := state.SaveCutoverState(ctx, conn, st.Live, st.Op, next); err != nil {
			return e.target().Describe(err)
		}
		if st.Op == state.OpRollback {
			mark("completed when the agent restarted: traffic is on the source")
			e.audit(ctx, conn, "rollback.recover", "ok", map[string]any{"attempt": st.Attempt, "settled": "completed after the switch"})
			e.d.Log.Warn("a rollback was interrupted after its switch; completed: traffic is on the source", "attempt", st.Attempt)
		}
	case st.Op != state.OpNone:
		return fmt.Errorf("unknown cutover state: %q in progress, live on %s", st.Op, st.Live)
	}
	if st.Op != state.OpNone {
		// The operation may have stopped between turning the deferred triggers and rules on
		// one side and off the other: they follow the side that is live now.
		if _, err := e.triggersLive(ctx, conn, nil, st.Live); err != nil {
			return err
		}
	}
	if !e.fencing() || fence == "" {
		return nil
	}
	src, err := e.source().Connect(ctx)
	if err != nil {
		return err
	}
	defer src.Close(context.WithoutCancel(ctx))
	if err := writable(ctx, src); err != nil { // a fenced source starts its sessions read-only
		return e.source().Describe(err)
	}
	switch fence {
	case "off":
		err = e.unfence(ctx, src)
	case "on":
		err = e.fence(ctx, src)
	case "on+end":
		if err = e.fence(ctx, src); err == nil {
			var keep uint32
			if e.d.Proxy != nil {
				keep = e.d.Proxy.CatalogPID(proxy.Source)
			}
			_, err = e.endBypassers(ctx, src, keep)
		}
	}
	return e.source().Describe(err)
}
