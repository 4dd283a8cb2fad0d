package cutover

import (
	"context"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/state"
)

// TestCutoverRollbackCutover: a workload writes through the proxy the whole time; cutover in
// the middle, writes on the target, rollback, writes on the source, cutover again. No client
// transaction fails, every committed one is on both sides (independent md5 comparison), and
// no identity value is handed out twice.
func TestCutoverRollbackCutover(t *testing.T) {
	e := newEnv(t)
	e.start(nil)
	e.waitFollowing()
	w := e.startWorkload(4)
	defer w.stop()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	time.Sleep(time.Second)

	r, err := e.agent.engine.Cutover(ctx, false)
	if err != nil {
		t.Fatalf("cutover: %v", err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeDone {
		t.Fatalf("cutover: %s (%s)", r.Outcome, r.Error)
	}
	if got := e.agent.proxy.Mode().String(); got != "target" {
		t.Fatalf("proxy mode after cutover: %s", got)
	}
	// The cutover refreshed the target's materialized view with the final data (it was 0
	// when copied, before the workload).
	if got := e.q(e.dst, `SELECT total FROM balance_total`); got == "0" {
		t.Errorf("target's balance_total after cutover is still %s: not refreshed", got)
	}
	time.Sleep(1500 * time.Millisecond) // writes on the target, replicated back
	before := w.commits.Load()
	r, err = e.agent.engine.Rollback(ctx)
	if err != nil {
		t.Fatalf("rollback: %v", err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeDone {
		t.Fatalf("rollback: %s (%s)", r.Outcome, r.Error)
	}
	if w.commits.Load() == before {
		t.Log("note: no commits between cutover and rollback")
	}
	time.Sleep(1500 * time.Millisecond) // writes on the source, followed again
	e.waitFollowing()
	r, err = e.agent.engine.Cutover(ctx, false)
	if err != nil {
		t.Fatalf("second cutover: %v", err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeDone {
		t.Fatalf("second cutover: %s (%s)", r.Outcome, r.Error)
	}
	time.Sleep(time.Second)
	w.stop()
	t.Logf("%d client transactions committed", w.commits.Load())
	w.check(t, e.dst, "the target (live)")
	e.waitSame() // reverse replication brought the source up to date
	w.check(t, e.src, "the source (after catch-up)")
	st, err := e.agent.engine.loadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Live != state.LiveTarget || st.Op != state.OpNone {
		t.Errorf("state after the second cutover: %+v", st)
	}
	// Identity and serial values continue past every value handed out on either side.
	if got := e.q(e.dst, `SELECT (SELECT max(id) FROM events) < (SELECT last_value FROM events_id_seq) OR (SELECT max(id) FROM events) = (SELECT last_value FROM events_id_seq)`); got != "t" {
		t.Errorf("target's events sequence is behind the events table")
	}
}
