package cutover

import (
	"context"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestCutoverDeferredTriggers: an audit trigger set ENABLE ALWAYS on the source fires in apply
// sessions too. copy keeps it off on the target; each switch turns it on where traffic goes and
// off where replication applies, so every balance change through cutover, rollback and cutover
// again has exactly one audit row on both sides (before, the pre-checks refused to cut over at
// all). finish gives the source its trigger back, and lifts the source fence.
func TestCutoverDeferredTriggers(t *testing.T) {
	e := newEnvWith(t, func(ctx context.Context, src *pgtest.Cluster) {
		if out, err := src.Psql(ctx, "shop", `
			CREATE TABLE audit (id bigserial PRIMARY KEY, account int NOT NULL, at timestamptz NOT NULL DEFAULT now());
			CREATE FUNCTION audit_balance() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN INSERT INTO audit (account) VALUES (NEW.id); RETURN NULL; END $$;
			CREATE TRIGGER audit_balance AFTER UPDATE ON accounts FOR EACH ROW EXECUTE FUNCTION audit_balance();
			ALTER TABLE accounts ENABLE ALWAYS TRIGGER audit_balance;`); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}, func(c *config.Config) { c.Cutover.FenceSource = true })
	const enabled = `SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_balance'`
	if got := e.q(e.dst, enabled); got != "D" {
		t.Fatalf("the copy left the target's trigger %s, want D (off while pgshift applies)", got)
	}
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := e.startWorkload(2)
	time.Sleep(time.Second)
	for i, toTarget := range []bool{true, false, true} {
		if !toTarget {
			e.waitLive(ctx)
		} else if i > 0 {
			e.waitFollowing()
		}
		e.run(ctx, toTarget)
		want := map[bool][2]string{true: {"D", "A"}, false: {"A", "D"}}[toTarget] // source, target
		if s, d := e.q(e.src, enabled), e.q(e.dst, enabled); s != want[0] || d != want[1] {
			t.Fatalf("switch %d: trigger source %s target %s, want %s %s", i+1, s, d, want[0], want[1])
		}
		time.Sleep(1500 * time.Millisecond)
	}
	w.stop()
	e.waitSame()
	w.check(t, e.dst, "the target")
	for _, c := range []*pgtest.Cluster{e.src, e.dst} {
		if got := e.q(c, `SELECT (SELECT count(*) FROM audit) - (SELECT count(*) FROM history)`); got != "0" {
			t.Errorf("audit rows minus balance changes: %s (the trigger fired on replicated rows, or not at all)", got)
		}
	}
	if got := e.q(e.dst, `SELECT count(*) FROM audit`); got == "0" {
		t.Fatal("no audit rows: the test exercised nothing")
	}
	if err := e.agent.stop(); err != nil {
		t.Fatal(err)
	}
	res, err := Finish(ctx, e.cfg, FinishOptions{Yes: true}, testLog())
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	t.Logf("finish: %v", res.Removed)
	if got := e.q(e.src, enabled); got != "A" {
		t.Errorf("the source's trigger after finish: %s, want A (as before the migration)", got)
	}
	if got := e.q(e.src, `SELECT count(*) FROM pg_db_role_setting WHERE setconfig::text LIKE '%default_transaction_read_only%'`); got != "0" {
		t.Errorf("the source fence is still up after finish")
	}
}
