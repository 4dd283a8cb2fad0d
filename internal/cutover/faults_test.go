package cutover

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"

	"github.com/pgshift/pgshift/internal/state"
)

// TestCutoverPrecheckFails: with require_verify on and no verify saved, cutover aborts at the
// pre-checks; nothing changes: traffic stays on the source, no reverse slot, phase following.
func TestCutoverPrecheckFails(t *testing.T) {
	e := newEnv(t)
	yes := true
	e.cfg.Cutover.RequireVerify = &yes
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dry, err := e.agent.engine.Cutover(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if dry.Outcome != OutcomePlanned || !strings.Contains(dry.Error, "verify") || len(dry.Plan) != len(CutoverSteps()) {
		t.Errorf("dry run: %+v", dry)
	}
	r, err := e.agent.engine.Cutover(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeAborted || !strings.Contains(r.Error, "verify") {
		t.Fatalf("want aborted at the verify pre-check, got %s: %s", r.Outcome, r.Error)
	}
	if got := e.agent.proxy.Mode().String(); got != "source" {
		t.Errorf("proxy mode %s", got)
	}
	if got := e.q(e.dst, `SELECT count(*) FROM pg_replication_slots`); got != "0" {
		t.Errorf("target has %s slots", got)
	}
	if got := e.q(e.dst, `SELECT phase FROM pgshift.migration`); got != "following" {
		t.Errorf("phase %s", got)
	}
	if got := e.q(e.dst, `SELECT string_agg(state, ',' ORDER BY step_no) FROM pgshift.cutover_steps WHERE attempt = 1`); got != "failed,skipped,skipped,skipped,skipped,skipped,skipped,skipped,skipped" {
		t.Errorf("steps %s", got)
	}
	// Still following.
	e.q(e.src, `INSERT INTO accounts VALUES (100, 1)`)
	e.waitSame()
}

// TestCutoverPauseTimeout: a transaction open through the proxy outlives pause_timeout; the
// cutover aborts, traffic resumes on the source, and the transaction commits there.
func TestCutoverPauseTimeout(t *testing.T) {
	e := newEnv(t)
	e.cfg.ProxySettings.PauseTimeout = 500 * time.Millisecond
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := e.startWorkload(2)
	defer w.stop()
	c, err := pgx.Connect(ctx, fmt.Sprintf("postgres://postgres:proxy-pw@%s/shop?sslmode=disable", e.addr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO accounts VALUES (200, 2)`); err != nil {
		t.Fatal(err)
	}
	r, err := e.agent.engine.Cutover(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeAborted || !strings.Contains(r.Error, "pause timed out") {
		t.Fatalf("want aborted by the pause timeout, got %s: %s", r.Outcome, r.Error)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatalf("the open transaction could not commit after the abort: %v", err)
	}
	if got := e.agent.proxy.Mode().String(); got != "source" {
		t.Errorf("proxy mode %s", got)
	}
	time.Sleep(500 * time.Millisecond)
	w.stop()
	w.check(t, e.src, "the source")
	if got := e.q(e.src, `SELECT balance FROM accounts WHERE id = 200`); got != "2" {
		t.Errorf("the open transaction's row: %q", got)
	}
	e.waitSame()
	st, err := e.agent.engine.loadState(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Live != state.LiveSource || st.Op != state.OpNone {
		t.Errorf("state %+v", st)
	}
	if got := e.q(e.dst, `SELECT count(*) FROM pg_replication_slots`); got != "0" {
		t.Errorf("target has %s slots", got)
	}
}

var errKilled = errors.New("killed")

// TestCutoverKilled: the agent dies at each step of a cutover and of a rollback (no cleanup
// runs, as after SIGKILL) and is started again. On restart it completes the operation when
// its switch was committed and rolls it back otherwise; the proxy starts on that side; clients
// writing through it afterwards lose nothing, and the sides end up equal.
//
// The source fence is on, so its recovery is exercised too: after every restart the source
// is read-only exactly while traffic is on the target.
func TestCutoverKilled(t *testing.T) {
	e := newEnvWith(t, nil, func(c *config.Config) { c.Cutover.FenceSource = true })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	type kill struct {
		op   string
		step int
		live string // where traffic is after the restart
	}
	kills := []kill{
		{state.OpCutover, 3, state.LiveSource},  // paused, before catch-up
		{state.OpCutover, 7, state.LiveSource},  // reverse armed, before the switch commit
		{state.OpCutover, 70, state.LiveTarget}, // switch committed, proxy not switched yet
		{state.OpCutover, 8, state.LiveTarget},  // switched, not resumed
		{state.OpRollback, 3, state.LiveTarget},
		{state.OpRollback, 50, state.LiveSource},
		{state.OpRollback, 7, state.LiveSource},
	}
	e.start(nil)
	for _, k := range kills {
		e.waitLive(ctx)
		before := e.liveSide(ctx)
		if (k.op == state.OpRollback) != (before == state.LiveTarget) {
			// Bring traffic to the side the operation starts from.
			e.run(ctx, before == state.LiveSource)
		}
		e.agent.stop()
		fault := func(op string, step int) error {
			if op == k.op && step == k.step {
				return errKilled
			}
			return nil
		}
		e.start(fault)
		e.waitLive(ctx)
		w := e.startWorkload(2)
		time.Sleep(300 * time.Millisecond)
		var err error
		if k.op == state.OpCutover {
			_, err = e.agent.engine.Cutover(ctx, false)
		} else {
			_, err = e.agent.engine.Rollback(ctx)
		}
		if !errors.Is(err, errKilled) {
			t.Fatalf("%s killed at step %d: got %v", k.op, k.step, err)
		}
		<-e.agent.done // the engine died with the fault; the proxy went with it
		w.stop()
		// Clients saw their connections close with the process; what they committed before must be kept.
		e.start(nil)
		if got := e.liveSide(ctx); got != k.live {
			t.Fatalf("%s killed at step %d: live on %s after restart, want %s", k.op, k.step, got, k.live)
		}
		if got := e.agent.proxy.Mode().String(); got != k.live {
			t.Fatalf("%s killed at step %d: proxy mode %s after restart, want %s", k.op, k.step, got, k.live)
		}
		e.waitLive(ctx)
		w2 := e.startWorkload(2)
		time.Sleep(700 * time.Millisecond)
		w2.stop()
		if len(w2.errs) > 0 {
			t.Errorf("%s killed at step %d: clients after the restart: %s", k.op, k.step, w2.errs[0])
		}
		e.waitSame()
		for _, ww := range []*workload{w, w2} {
			ww.mu.Lock()
			ids := len(ww.ids)
			ww.mu.Unlock()
			if ids == 0 && ww == w2 {
				t.Errorf("%s killed at step %d: no commits after the restart", k.op, k.step)
			}
		}
		e.checkIDs(t, w, w2)
		wantRO := map[string]string{state.LiveTarget: "on", state.LiveSource: "off"}[k.live]
		if got := e.q(e.src, `SHOW default_transaction_read_only`); got != wantRO {
			t.Errorf("%s killed at step %d: a new source session has default_transaction_read_only = %s, want %s", k.op, k.step, got, wantRO)
		}
		t.Logf("%s killed at step %d: settled live on %s", k.op, k.step, k.live)
	}
}

// checkIDs checks that every event id the clients got is on both sides, each once.
func (e *env) checkIDs(t *testing.T, ws ...*workload) {
	t.Helper()
	for _, c := range []struct {
		name string
		q    func(string) string
	}{{"source", func(s string) string { return e.q(e.src, s) }}, {"target", func(s string) string { return e.q(e.dst, s) }}} {
		for _, w := range ws {
			w.mu.Lock()
			var ids []string
			for id := range w.ids {
				ids = append(ids, fmt.Sprint(id))
			}
			w.mu.Unlock()
			if len(ids) == 0 {
				continue
			}
			got := c.q(`SELECT count(*) FROM events WHERE id IN (` + strings.Join(ids, ",") + `)`)
			if got != fmt.Sprint(len(ids)) {
				t.Errorf("%s has %s of the %d committed events", c.name, got, len(ids))
			}
		}
	}
}

func (e *env) liveSide(ctx context.Context) string {
	e.t.Helper()
	st, err := e.agent.engine.loadState(ctx)
	if err != nil {
		select {
		case <-e.agent.done:
			e.t.Fatalf("the agent stopped: %v", e.agent.err)
		default:
		}
		e.t.Fatal(err)
	}
	return st.Live
}

// waitLive waits until the live side's replication streams: forward measured lag, or reverse
// streaming.
func (e *env) waitLive(ctx context.Context) {
	e.t.Helper()
	if e.liveSide(ctx) == state.LiveSource {
		e.waitFollowing()
		return
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		e.agent.engine.mu.Lock()
		since, rerr := e.agent.engine.revSince, e.agent.engine.revErr
		e.agent.engine.mu.Unlock()
		if !since.IsZero() {
			return
		}
		select {
		case <-e.agent.done:
			e.t.Fatalf("the agent stopped: %v", e.agent.err)
		default:
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("reverse replication never started (last error: %v)", rerr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// run performs a cutover (toTarget) or rollback that must succeed.
func (e *env) run(ctx context.Context, toTarget bool) {
	e.t.Helper()
	var r *Result
	var err error
	if toTarget {
		r, err = e.agent.engine.Cutover(ctx, false)
	} else {
		r, err = e.agent.engine.Rollback(ctx)
	}
	if err != nil || r.Outcome != OutcomeDone {
		e.t.Fatalf("toTarget=%t: %v %+v", toTarget, err, r)
	}
	e.waitLive(ctx)
}

// TestRollbackRefusesForeignWrite: while traffic is on the target, a writer connected to the
// source directly (not through the proxy) changes a row. The rollback's pre-checks find it in
// the forward slot, name the table and position, and refuse: traffic stays on the target,
// reverse replication goes on.
func TestRollbackRefusesForeignWrite(t *testing.T) {
	e := newEnv(t)
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := e.startWorkload(2)
	defer w.stop()
	e.run(ctx, true)
	time.Sleep(500 * time.Millisecond)
	// A clean rollback pre-check first (the workload's writes came back by reverse replication).
	dry := e.agent.engine.precheckForeign(ctx, mustMigration(t, e), mustState(t, e))
	if !dry.OK {
		t.Fatalf("pre-check before the foreign write: %s", dry.Detail)
	}
	e.q(e.src, `UPDATE accounts SET balance = balance + 1000 WHERE id = 3`)
	r, err := e.agent.engine.Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeAborted || !strings.Contains(r.Error, "public.accounts") || !strings.Contains(r.Error, "bypassed the proxy") {
		t.Fatalf("want the rollback refused naming public.accounts, got %s: %s", r.Outcome, r.Error)
	}
	if got := e.agent.proxy.Mode().String(); got != "target" {
		t.Errorf("proxy mode %s", got)
	}
	if st := mustState(t, e); st.Live != state.LiveTarget || st.Op != state.OpNone {
		t.Errorf("state %+v", st)
	}
	time.Sleep(300 * time.Millisecond)
	w.stop()
	w.check(t, e.dst, "the target")
}

func mustMigration(t *testing.T, e *env) state.Migration {
	t.Helper()
	c, err := pgx.Connect(context.Background(), e.cfg.Target)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	m, err := state.Load(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func mustState(t *testing.T, e *env) state.CutoverState {
	t.Helper()
	st, err := e.agent.engine.loadState(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestReverseStopKeepsTraffic: a column with a default added on the target while traffic is
// there stops reverse replication (the source lacks it, and its rows' values were never
// streamed). The agent and its proxy stay up — clients keep
// working on the target — and rollback is refused while reverse replication is stopped; once
// the column exists on the source too, reverse replication resumes from its position, the
// source catches up and rollback works.
func TestReverseStopKeepsTraffic(t *testing.T) {
	e := newEnv(t)
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.run(ctx, true)
	// A column with a default: its existing rows' values were never streamed, so the applier
	// stops rather than guess them (apply.ErrSchema).
	e.q(e.dst, `ALTER TABLE accounts ADD COLUMN note text NOT NULL DEFAULT 'x'`)
	w := e.startWorkload(2)
	defer w.stop()
	deadline := time.Now().Add(30 * time.Second)
	for {
		e.agent.engine.mu.Lock()
		rerr := e.agent.engine.revErr
		e.agent.engine.mu.Unlock()
		if rerr != nil {
			t.Logf("reverse replication stopped as expected: %v", rerr)
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("reverse replication did not stop on the target's new column")
		}
		time.Sleep(100 * time.Millisecond)
	}
	r, err := e.agent.engine.Rollback(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != OutcomeAborted || !strings.Contains(r.Error, "reverse replication") {
		t.Fatalf("rollback while reverse replication is stopped: %s %s", r.Outcome, r.Error)
	}
	select {
	case <-e.agent.done:
		t.Fatalf("the agent stopped: %v", e.agent.err)
	case <-time.After(500 * time.Millisecond):
	}
	e.q(e.src, `ALTER TABLE accounts ADD COLUMN note text NOT NULL DEFAULT 'x'`)
	e.waitLive(ctx)
	time.Sleep(500 * time.Millisecond)
	w.stop()
	if len(w.errs) > 0 {
		t.Errorf("clients on the target: %s", w.errs[0])
	}
	e.waitSame()
	e.run(ctx, false)
	w.check(t, e.src, "the source")
}
