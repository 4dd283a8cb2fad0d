package cutover

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/state"
)

// TestCutoverHooks: a failing pre hook, then a failing smoke check, abort the cutover before
// anything changes; with both passing, the post-switch hook runs with the operation and the
// live side in its environment (after the cutover and after the rollback); a smoke check that
// fails only after the switch is reported: traffic stays on the target and the result says to
// roll back if the application is unhealthy.
func TestCutoverHooks(t *testing.T) {
	dir := t.TempDir()
	gate := filepath.Join(dir, "allow")
	post := filepath.Join(dir, "post")
	e := newEnvWith(t, nil, func(c *config.Config) {
		c.Cutover.PreHooks = []string{"test -e " + gate + " || { echo 'change freeze in effect'; exit 3; }"}
		c.Cutover.PostSwitchHooks = []string{"echo \"$PGSHIFT_OP $PGSHIFT_LIVE\" >> " + post}
		c.Cutover.SmokeSQL = []string{"SELECT count(*) FROM accounts",
			"SELECT 1 / (SELECT count(*) FROM pg_catalog.pg_tables WHERE tablename = 'smoke_marker')::int",
			failAfterSwitch}
	})
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r, err := e.agent.engine.Cutover(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome != OutcomeAborted || !strings.Contains(r.Error, "change freeze in effect") {
		t.Fatalf("with the pre hook failing: %s %s", r.Outcome, r.Error)
	}
	if st := mustState(t, e); st.Live != state.LiveSource || st.Op != state.OpNone {
		t.Fatalf("state %+v", st)
	}
	// The second smoke check divides by zero until the marker table exists on the target.
	if err := os.WriteFile(gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r, err = e.agent.engine.Cutover(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeAborted || !strings.Contains(r.Error, "smoke check") {
		t.Fatalf("with a failing smoke check: %s %s", r.Outcome, r.Error)
	}
	// Made on the source (the checks run there after a rollback), ddl: follow makes it on the
	// target in order with the rows.
	e.q(e.src, `CREATE TABLE smoke_marker (id int PRIMARY KEY)`)
	for deadline := time.Now().Add(30 * time.Second); e.q(e.dst, `SELECT to_regclass('public.smoke_marker') IS NOT NULL`) != "t"; {
		if time.Now().After(deadline) {
			t.Fatal("the table created on the source did not reach the target")
		}
		time.Sleep(50 * time.Millisecond)
	}
	r, err = e.agent.engine.Cutover(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeDone || r.Error != "" {
		t.Fatalf("cutover: %s %s", r.Outcome, r.Error)
	}
	if b, err := os.ReadFile(post); err != nil || strings.TrimSpace(string(b)) != "cutover target" {
		t.Errorf("post-switch hook: %q %v", b, err)
	}
	e.waitLive(ctx)
	r, err = e.agent.engine.Rollback(ctx)
	if err != nil || r.Outcome != OutcomeDone || r.Error != "" {
		t.Fatalf("rollback: %v %+v", err, r)
	}
	if b, _ := os.ReadFile(post); !strings.Contains(string(b), "rollback source") {
		t.Errorf("post-switch hook after the rollback: %q", b)
	}
	// The third check fails only once traffic is on the target: the cutover is done, and
	// its result says the post-switch step failed and how to go back.
	e.waitFollowing()
	e.q(e.dst, `CREATE TABLE fail_after_switch ()`)
	r, err = e.agent.engine.Cutover(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeDone || r.Live != state.LiveTarget || !strings.Contains(r.Error, "post-switch step failed") || !strings.Contains(r.Error, "pgshift rollback") {
		t.Fatalf("cutover with a check failing after the switch: %s %s", r.Outcome, r.Error)
	}
	if got := e.agent.proxy.Mode().String(); got != "target" {
		t.Errorf("proxy mode %s", got)
	}
}

// failAfterSwitch is a smoke check that fails once traffic is on the target (the reverse slot
// exists only then) while a table fail_after_switch exists.
const failAfterSwitch = "SELECT 1 / (CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots WHERE slot_name = 'pgshift_reverse') " +
	"AND EXISTS (SELECT 1 FROM pg_catalog.pg_tables WHERE tablename = 'fail_after_switch') THEN 0 ELSE 1 END)"

// TestCutoverWatchRollsBack: in the watch window after a cutover a smoke check starts to
// fail; with auto_rollback the agent rolls back by itself, traffic returns to the source and
// nothing the clients committed is lost.
func TestCutoverWatchRollsBack(t *testing.T) {
	e := newEnvWith(t, nil, func(c *config.Config) {
		c.Cutover.SmokeSQL = []string{failAfterSwitch}
		c.Cutover.WatchWindow, c.Cutover.WatchInterval, c.Cutover.AutoRollback = 30*time.Second, 200*time.Millisecond, true
	})
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := e.startWorkload(2)
	defer w.stop()
	e.run(ctx, true)
	time.Sleep(time.Second)
	if got := e.liveSide(ctx); got != state.LiveTarget {
		t.Fatalf("live on %s while the checks pass", got)
	}
	e.q(e.dst, `CREATE TABLE fail_after_switch ()`)
	// The rollback's switch transaction records the source as live just before the proxy
	// moves the sessions: both, within the deadline.
	deadline := time.Now().Add(20 * time.Second)
	for e.liveSide(ctx) != state.LiveSource || e.agent.proxy.Mode().String() != "source" {
		if time.Now().After(deadline) {
			t.Fatalf("no automatic rollback after the check failed (live %s, proxy mode %s)", e.liveSide(ctx), e.agent.proxy.Mode())
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.waitFollowing()
	time.Sleep(500 * time.Millisecond)
	w.stop()
	w.check(t, e.src, "the source")
	e.waitSame()
	if got := e.q(e.dst, `SELECT count(*) FROM pgshift.audit_log WHERE action = 'cutover.watch' AND outcome = 'failed'`); got != "1" {
		t.Errorf("audit entries of the failed watch check: %s", got)
	}
}
