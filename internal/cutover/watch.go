package cutover

import (
	"context"
	"time"

	"github.com/pgshift/pgshift/internal/state"
)

// startWatch runs the watch window after cutover attempt no (cutover.watch_window): the
// smoke and health checks every watch_interval, on the target; a failure is logged and
// audited and, with cutover.auto_rollback, rolls back. It ends with the window, the agent, or
// the first failure.
func (e *Engine) startWatch(no int) {
	if e.cs.WatchWindow <= 0 || len(e.cs.SmokeSQL)+len(e.cs.HTTPChecks) == 0 {
		return
	}
	e.mu.Lock()
	ctx := e.runCtx
	e.mu.Unlock()
	if ctx == nil {
		return
	}
	e.watches.Add(1)
	go func() {
		defer e.watches.Done()
		e.watch(ctx, no)
	}()
}

func (e *Engine) watch(ctx context.Context, no int) {
	end := time.Now().Add(e.cs.WatchWindow)
	t := time.NewTicker(e.cs.WatchInterval)
	defer t.Stop()
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		conn, err := e.target().Connect(ctx)
		if err == nil {
			if st, lerr := state.LoadCutoverState(ctx, conn); lerr != nil || st.Live != state.LiveTarget || st.Attempt != no {
				conn.Close(context.WithoutCancel(ctx))
				return // traffic moved since (a rollback): the window is over
			}
			_, err = smokeChecks(ctx, conn, e.cs.SmokeSQL, e.cs.HTTPChecks)
			if err != nil {
				e.audit(ctx, conn, "cutover.watch", "failed", map[string]any{"attempt": no, "error": err.Error(), "auto_rollback": e.cs.AutoRollback})
			}
			conn.Close(context.WithoutCancel(ctx))
		}
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return
		}
		if !e.cs.AutoRollback {
			e.d.Log.Error("a check failed in the watch window after the cutover; traffic stays on the target: run pgshift rollback if the application is not healthy", "attempt", no, "err", err)
			return
		}
		e.d.Log.Error("a check failed in the watch window after the cutover; rolling back (cutover.auto_rollback)", "attempt", no, "err", err)
		r, rerr := e.Rollback(ctx)
		switch {
		case rerr != nil:
			e.d.Log.Error("the automatic rollback could not run", "err", rerr)
		case r.Outcome != OutcomeDone:
			e.d.Log.Error("the automatic rollback was aborted; traffic stays on the target", "err", r.Error)
		default:
			e.d.Log.Warn("rolled back automatically: traffic is on the source", "attempt", r.Attempt, "pause_seconds", r.PauseSeconds)
		}
		return
	}
}
