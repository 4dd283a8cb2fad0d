package cutover

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/state"
)

// TestRollbackWithoutTarget: the target becomes unreachable after a cutover.
//   - After a client request reached the target through the proxy, a rollback is refused
//     (its writes might exist only there) and traffic stays on the target; with the target
//     back, a normal rollback carries everything back.
//   - Cut over again and restart the agent: its proxy cannot know what reached the target
//     before it started, so the rollback without the target is refused.
//   - Cut over again; with no client request on the target since the switch, the rollback
//     goes ahead without the target: the proxy's clients reconnect to the source, and writes
//     go on there. The agent is then stopped while the target is still down; the target comes
//     back and a new agent starts: its proxy starts on the source (the source's record
//     overrides the target's state), it settles the target's state (live on the source, the
//     reverse objects gone, the record removed) and forward replication carries what the
//     source took meanwhile. Both sides compare equal; a new cutover then works.
func TestRollbackWithoutTarget(t *testing.T) {
	e := newEnv(t)
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	w := e.startWorkload(2)
	time.Sleep(500 * time.Millisecond)
	w.stop()
	proxyDSN := fmt.Sprintf("postgres://postgres:proxy-pw@%s/shop?sslmode=disable", e.addr)
	// waitSeen waits until the engine has read the state with traffic live on the target.
	waitSeen := func() {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			e.agent.engine.mu.Lock()
			ok := e.agent.engine.seen.ok
			e.agent.engine.mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatal("the engine never read the state after the cutover")
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	cutover := func() {
		t.Helper()
		e.waitFollowing()
		r, err := e.agent.engine.Cutover(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		logResult(t, r)
		if r.Outcome != OutcomeDone {
			t.Fatalf("cutover: %s: %s", r.Outcome, r.Error)
		}
		waitSeen()
	}
	// rollBack rolls back normally once the agent has its lease again and reverse replication
	// streams (after the target came back).
	rollBack := func() {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			r, err := e.agent.engine.Rollback(ctx)
			if err == nil && r.Outcome == OutcomeDone {
				logResult(t, r)
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the normal rollback with the target back: %v %+v", err, r)
			}
			time.Sleep(time.Second)
		}
	}

	// 1. A client request on the target, then the target goes away: refused.
	cutover()
	c, err := pgx.Connect(ctx, proxyDSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `INSERT INTO accounts VALUES (300, 3)`); err != nil {
		t.Fatal(err)
	}
	c.Close(ctx)
	if err := e.dst.StopServer(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := e.agent.engine.Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeAborted || !strings.Contains(r.Error, "client requests went to the target") {
		t.Fatalf("want refused because a request reached the target, got %s: %s", r.Outcome, r.Error)
	}
	if got := e.agent.proxy.Mode().String(); got != "target" {
		t.Fatalf("proxy mode %s after the refusal", got)
	}
	if err := e.dst.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	rollBack()
	if got := e.q(e.src, `SELECT balance FROM accounts WHERE id = 300`); got != "3" {
		t.Fatalf("the row written on the target before it went away is not on the source: %q", got)
	}

	// 2. Cut over again, then restart the agent: its proxy starts with traffic on the target
	// and cannot know what reached the target before; the rollback without it is refused.
	cutover()
	if err := e.agent.stop(); err != nil {
		t.Logf("agent stopped with: %v", err)
	}
	e.start(nil)
	waitSeen()
	if err := e.dst.StopServer(ctx); err != nil {
		t.Fatal(err)
	}
	r, err = e.agent.engine.Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeAborted || !strings.Contains(r.Error, "started after the switch") {
		t.Fatalf("want refused because the proxy started after the switch, got %s: %s", r.Outcome, r.Error)
	}
	if err := e.dst.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	rollBack()

	// 3. Cut over again; no client request; the target goes away: rolled back without it.
	cutover()
	if err := e.dst.StopServer(ctx); err != nil {
		t.Fatal(err)
	}
	r, err = e.agent.engine.Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeDone || r.Live != state.LiveSource {
		t.Fatalf("want rolled back without the target, got %s: %s", r.Outcome, r.Error)
	}
	if got := e.agent.proxy.Mode().String(); got != "source" {
		t.Fatalf("proxy mode %s after the rollback", got)
	}
	if got := e.q(e.src, `SELECT count(*) FROM pgshift.rollback_without_target`); got != "1" {
		t.Fatalf("the source records %s rollbacks made without the target", got)
	}
	// Until it is settled, an operation planned from the target's state (live on the target)
	// is refused.
	from, _ := strconv.Atoi(e.q(e.src, `SELECT from_attempt FROM pgshift.rollback_without_target`))
	if err := e.agent.engine.unsettledTargetLost(ctx, state.CutoverState{Live: state.LiveTarget, Attempt: from}); !errors.Is(err, ErrCannotRun) {
		t.Fatalf("an operation before the rollback made without the target is settled: %v", err)
	}
	c, err = pgx.Connect(ctx, proxyDSN)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `INSERT INTO accounts VALUES (301, 4)`); err != nil {
		t.Fatalf("a write through the proxy after the rollback: %v", err)
	}
	c.Close(ctx)
	if got := e.q(e.src, `SELECT balance FROM accounts WHERE id = 301`); got != "4" {
		t.Fatalf("the write after the rollback is not on the source: %q", got)
	}

	// 4. A new agent with the target back: proxy on the source, the target settled.
	if err := e.agent.stop(); err != nil {
		t.Logf("agent stopped with: %v", err)
	}
	if err := e.dst.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	// finish reads the target's state as live on the target; the source's record says
	// otherwise, and finish must not remove the replication that traffic on the source needs.
	if _, err := Finish(ctx, e.cfg, FinishOptions{Yes: true}, testLog()); !errors.Is(err, ErrFinishRefused) || !strings.Contains(err.Error(), "target was unreachable") {
		t.Fatalf("finish before the rollback made without the target was settled: %v", err)
	}
	e.start(nil)
	if got := e.agent.proxy.Mode().String(); got != "source" {
		t.Fatalf("the new agent's proxy started in mode %s; the source's record says the source", got)
	}
	e.waitFollowing()
	if got := e.q(e.dst, `SELECT live || '/' || op || '/' || (attempt > 4) FROM pgshift.cutover_state`); got != "source//true" {
		t.Errorf("target cutover state after settling: %s", got)
	}
	if got := e.q(e.dst, `SELECT phase FROM pgshift.migration`); got != "following" {
		t.Errorf("phase %s", got)
	}
	if got := e.q(e.dst, `SELECT count(*) FROM pg_replication_slots`); got != "0" {
		t.Errorf("the target keeps %s slots", got)
	}
	if got := e.q(e.src, `SELECT count(*) FROM pgshift.rollback_without_target`); got != "0" {
		t.Errorf("the source still records %s rollbacks made without the target", got)
	}
	if got := e.q(e.dst, `SELECT string_agg(step_no || ':' || state, ',' ORDER BY step_no) FROM pgshift.cutover_steps WHERE attempt = (SELECT attempt FROM pgshift.cutover_state)`); got != "1:done,2:done,3:done,4:done,5:done,6:done" {
		t.Errorf("the target records the steps of the rollback made without it as %s", got)
	}
	e.waitSame()
	if got := e.q(e.dst, `SELECT balance FROM accounts WHERE id = 301`); got != "4" {
		t.Errorf("the write on the source after the rollback did not reach the target: %q", got)
	}
	// And the migration goes on: a cutover works again.
	cutover()
}
