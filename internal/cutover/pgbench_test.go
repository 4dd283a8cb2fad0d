package cutover

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestCutoverPgbench: pgbench -M prepared -c 8 through the proxy, with the insert-heavy
// identity-key writer beside it, continuously; cutover, rollback and cutover again while they
// run. pgbench reports no failed transaction and no aborted client, pgbench_history has
// exactly the transactions pgbench reported on both sides, every table is equal (independent
// md5), and no identity value was handed out twice. pgbench_history has no key: the copy sets
// REPLICA IDENTITY FULL on it (--replica-identity-full), which reverse replication uses too.
func TestCutoverPgbench(t *testing.T) {
	var bin string
	e := newEnvWith(t, func(ctx context.Context, src *pgtest.Cluster) {
		bin = filepath.Join(src.ClientBinDir(), "pgbench")
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("no pgbench beside psql: %v", err)
		}
		cmd := exec.CommandContext(ctx, bin, "-i", "-s", "2", "-q", "-h", "127.0.0.1", "-p", fmt.Sprint(src.Port), "-U", "postgres", "shop")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pgbench -i: %v\n%s", err, out)
		}
	}, func(c *config.Config) { c.ReplicaIdentityFull = true })
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	host, port, _ := strings.Cut(e.addr, ":")
	bench := exec.CommandContext(ctx, bin, "-M", "prepared", "-c", "8", "-j", "2", "-T", "14", "-n", "-h", host, "-p", port, "-U", "postgres", "shop")
	bench.Env = append(os.Environ(), "PGPASSWORD=proxy-pw")
	var out strings.Builder
	bench.Stdout, bench.Stderr = &out, &out
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	w := e.startWorkload(2)
	time.Sleep(2 * time.Second)
	for i, toTarget := range []bool{true, false, true} {
		var r *Result
		var err error
		if toTarget {
			r, err = e.agent.engine.Cutover(ctx, false)
		} else {
			r, err = e.agent.engine.Rollback(ctx)
		}
		if err != nil || r.Outcome != OutcomeDone {
			t.Fatalf("operation %d: %v %+v", i+1, err, r)
		}
		t.Logf("%s %d: write pause %.1f ms", r.Op, r.Attempt, r.PauseSeconds*1000)
		e.waitLive(ctx)
		time.Sleep(3 * time.Second)
	}
	err := bench.Wait()
	w.stop()
	t.Logf("pgbench:\n%s", out.String())
	if err != nil {
		t.Fatalf("pgbench: %v", err)
	}
	processed := regexp.MustCompile(`number of transactions actually processed: (\d+)`).FindStringSubmatch(out.String())
	if processed == nil {
		t.Fatal("pgbench did not report its transactions")
	}
	if m := regexp.MustCompile(`number of failed transactions: (\d+)`).FindStringSubmatch(out.String()); m != nil && m[1] != "0" {
		t.Errorf("pgbench: %s failed transactions", m[1])
	}
	if strings.Contains(out.String(), "aborted") {
		t.Errorf("pgbench clients aborted")
	}
	if got := e.q(e.dst, `SELECT count(*) FROM pgbench_history`); got != processed[1] {
		t.Errorf("target pgbench_history has %s rows, pgbench reported %s transactions", got, processed[1])
	}
	w.check(t, e.dst, "the target (live)")
	e.waitSame()
	if got := e.q(e.src, `SELECT count(*) FROM pgbench_history`); got != processed[1] {
		t.Errorf("source pgbench_history has %s rows, pgbench reported %s transactions", got, processed[1])
	}
	w.check(t, e.src, "the source (after catch-up)")

	// finish gives pgbench_history back the replica identity it had before the migration, on
	// both sides, and leaves no slot behind; the target stays a database pgbench can write to.
	const identSQL = `SELECT string_agg(relname || '=' || relreplident::text, ' ' ORDER BY relname) FROM pg_class
		WHERE relname IN ('pgbench_accounts', 'pgbench_history')`
	if got := e.q(e.src, identSQL); got != "pgbench_accounts=d pgbench_history=f" {
		t.Errorf("source identities before finish: %s", got)
	}
	if err := e.agent.stop(); err != nil {
		t.Fatalf("agent: %v", err)
	}
	res, err := Finish(ctx, e.cfg, FinishOptions{Yes: true}, testLog())
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	if !strings.Contains(strings.Join(res.Removed, "\n"), "replica identity FULL set by pgshift on public.pgbench_history") || len(res.IdentitiesLeft) > 0 {
		t.Errorf("finish: removed %q, identities left %q", res.Removed, res.IdentitiesLeft)
	}
	for _, c := range []*pgtest.Cluster{e.src, e.dst} {
		if got := e.q(c, identSQL); got != "pgbench_accounts=d pgbench_history=d" {
			t.Errorf("identities after finish: %s", got)
		}
		if got := e.q(c, `SELECT count(*) FROM pg_replication_slots`); got != "0" {
			t.Errorf("%s slots left after finish", got)
		}
	}
	e.compare()
	after := exec.CommandContext(ctx, bin, "-t", "50", "-n", "-h", e.dst.Host, "-p", fmt.Sprint(e.dst.Port), "-U", "postgres", "shop")
	if out, err := after.CombinedOutput(); err != nil {
		t.Fatalf("pgbench on the finished target: %v\n%s", err, out)
	}
	if got, want := e.q(e.dst, `SELECT count(*) FROM pgbench_history`), e.q(e.src, `SELECT count(*) + 50 FROM pgbench_history`); got != want {
		t.Errorf("the finished target has %s history rows after 50 more transactions, want %s", got, want)
	}
}
