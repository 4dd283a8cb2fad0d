package proxy_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// replicate gives the target the source's schema and data, kept current by native logical
// replication (a subscription on the target), and waits for the initial sync.
func (e *env) replicate(ctx context.Context) {
	t := e.t
	dump := exec.CommandContext(ctx, filepath.Join(e.src.BinDir(), "pg_dump"), "--schema-only", "--no-publications", "--no-subscriptions", "-d", e.srcDSN)
	schema, err := dump.Output()
	if err != nil {
		t.Fatalf("pg_dump: %v", err)
	}
	restore := exec.CommandContext(ctx, filepath.Join(e.src.BinDir(), "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", e.dstDSN)
	restore.Stdin = strings.NewReader(string(schema))
	if out, err := restore.CombinedOutput(); err != nil {
		t.Fatalf("restore schema: %v: %s", err, out)
	}
	e.exec(e.src, `CREATE PUBLICATION testpub FOR ALL TABLES`)
	e.exec(e.dst, fmt.Sprintf(`CREATE SUBSCRIPTION testsub CONNECTION '%s' PUBLICATION testpub`, e.srcDSN))
	e.waitSynced(ctx)
}

// waitSynced waits until the subscription has copied every table and applied everything the
// source had written when called.
func (e *env) waitSynced(ctx context.Context) {
	t := e.t
	lsn := e.exec(e.src, `SELECT pg_current_wal_lsn()`)
	for {
		ready := e.exec(e.dst, `SELECT count(*) FILTER (WHERE srsubstate <> 'r') FROM pg_subscription_rel`)
		caught := e.exec(e.src, fmt.Sprintf(`SELECT coalesce(bool_and(confirmed_flush_lsn >= '%s'), false) FROM pg_replication_slots WHERE slot_name = 'testsub'`, lsn))
		if ready == "0" && caught == "t" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("subscription did not catch up: %s tables not ready, caught up %s", ready, caught)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pgbench runs pgbench through the proxy.
func (e *env) pgbench(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"-h", "127.0.0.1", "-p", strconv.Itoa(e.port), "-U", "postgres"}, args...)
	full = append(full, "app")
	cmd := exec.CommandContext(ctx, pgbenchPath(), full...)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+testPassword, "PGSSLMODE=disable")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func pgbenchPath() string {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p
	}
	return "/usr/lib/postgresql/15/bin/pgbench"
}

// admin opens the admin console.
func (e *env) admin() *pgx.Conn {
	e.t.Helper()
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=%s dbname=pgshift sslmode=disable", e.port, testPassword))
	if err != nil {
		e.t.Fatal(err)
	}
	cfg.DefaultQueryExecMode = pgx.QueryExecModeSimpleProtocol
	c, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		e.t.Fatalf("admin console: %v", err)
	}
	e.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func adminExec(ctx context.Context, c *pgx.Conn, cmd string) error {
	_, err := c.PgConn().Exec(ctx, cmd).ReadAll()
	return err
}

var failedRE = regexp.MustCompile(`number of failed transactions: (\d+)`)
var processedRE = regexp.MustCompile(`number of transactions actually processed: (\d+)`)

// TestSwitchUnderPgbench is the switch test of the issue: pgbench -M prepared -c 8 -T 30
// through the proxy, PAUSE + SWITCH target + RESUME in the middle, then back: zero failed
// transactions, and each pause (PAUSE to RESUME as the console's client measures it) under
// 100 ms.
func TestSwitchUnderPgbench(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := e.pgbench(ctx, "-i", "-s", "2", "-q"); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	e.replicate(ctx)
	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := e.pgbench(ctx, "-M", "prepared", "-c", "8", "-j", "2", "-T", "30", "-n")
		done <- result{out, err}
	}()
	adm := e.admin()
	var pauses []time.Duration
	time.Sleep(8 * time.Second)
	e.waitSynced(ctx) // the target has what the source committed (writes continue meanwhile)
	// The sequence on the console: PAUSE, SWITCH target, RESUME.
	start := time.Now()
	for _, cmd := range []string{"PAUSE 10", "SWITCH target", "RESUME"} {
		if err := adminExec(ctx, adm, cmd); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
	}
	pauses = append(pauses, time.Since(start))
	// The writes now land on the target.
	srcBefore := e.exec(e.src, `SELECT count(*) FROM pgbench_history`)
	dstBefore := e.exec(e.dst, `SELECT count(*) FROM pgbench_history`)
	time.Sleep(2 * time.Second)
	if after := e.exec(e.src, `SELECT count(*) FROM pgbench_history`); after != srcBefore {
		t.Errorf("after SWITCH target the source still gets writes: pgbench_history %s -> %s", srcBefore, after)
	}
	if after := e.exec(e.dst, `SELECT count(*) FROM pgbench_history`); after == dstBefore {
		t.Errorf("after SWITCH target the target gets no writes")
	}
	time.Sleep(6 * time.Second)
	// Back in one command: SWITCH opens the new connections before it pauses.
	if err := adminExec(ctx, adm, "SWITCH source"); err != nil {
		t.Fatalf("SWITCH source: %v", err)
	}
	pauses = append(pauses, e.p.LastPauseDuration())
	r := <-done
	t.Logf("pgbench:\n%s", r.out)
	if r.err != nil {
		t.Fatalf("pgbench failed: %v", r.err)
	}
	m := failedRE.FindStringSubmatch(r.out)
	if m == nil || m[1] != "0" {
		t.Errorf("failed transactions: %v", m)
	}
	if p := processedRE.FindStringSubmatch(r.out); p == nil || p[1] == "0" {
		t.Errorf("no transactions processed: %v", p)
	}
	// The race detector slows the proxy several times over; there the bound is looser.
	limit := 100 * time.Millisecond
	if raceEnabled {
		limit = time.Second
	}
	for i, d := range pauses {
		t.Logf("pause %d: %s", i+1, d)
		if d > limit {
			t.Errorf("pause %d took %s, want under %s", i+1, d, limit)
		}
	}
}
