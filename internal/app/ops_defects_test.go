package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/assess"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestOpsWaitBeforeState: wait started a moment before run, on a target that holds no
// migration state yet, waits for the agent to create it and catch up.
func TestOpsWaitBeforeState(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := emptyTargetEnv(t, src, dst, "waitfirst", workloadSchema)
	done := make(chan error, 1)
	go func() {
		_, err := WaitWith(context.Background(), e.cfg, WaitOptions{AgentGrace: 20 * time.Second, Timeout: 90 * time.Second}, testLogger(t))
		done <- err
	}()
	time.Sleep(time.Second)
	select {
	case err := <-done:
		t.Fatalf("wait ended before any agent started: %v", err)
	default:
	}
	a := e.launch(func(ctx context.Context, opts RunOptions) error { return Run(ctx, e.cfg, opts, testLogger(t)) }, RunOptions{})
	if err := <-done; err != nil {
		t.Fatalf("wait started before run: %v", err)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	e.compare()
}

// TestOpsWaitSaysWhatStoppedIt: a timeout and an interruption are named as such, with the
// positions, never as "context deadline exceeded" / "context canceled".
func TestOpsWaitSaysWhatStoppedIt(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newFollowEnv(t, src, dst, "waitwords", workloadSchema)
	e.exec(`UPDATE accounts SET balance = 7 WHERE id = 1`)

	_, err := WaitWith(context.Background(), e.cfg, WaitOptions{Timeout: 1500 * time.Millisecond, AgentGrace: time.Minute}, testLogger(t))
	if !errors.Is(err, ErrWaitTimeout) {
		t.Fatalf("timeout: %v, want ErrWaitTimeout", err)
	}
	msg := err.Error()
	if strings.Contains(msg, "context deadline exceeded") || !strings.Contains(msg, "1.5s") || !strings.Contains(msg, "applied") {
		t.Errorf("timeout message: %s", msg)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(time.Second, cancel)
	_, err = WaitWith(ctx, e.cfg, WaitOptions{AgentGrace: time.Minute}, testLogger(t))
	if !errors.Is(err, ErrWaitInterrupted) {
		t.Fatalf("interrupted: %v, want ErrWaitInterrupted", err)
	}
	if msg := err.Error(); strings.Contains(msg, "context canceled") || !strings.Contains(msg, "interrupted") {
		t.Errorf("interruption message: %s", msg)
	}
}

// TestOpsCopyInterrupted: Ctrl-C during the data phase says the copy was interrupted and that
// running it again resumes; running it again completes it.
func TestOpsCopyInterrupted(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := emptyTargetEnv(t, src, dst, "copyint", workloadSchema+bulkSchema)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := Copy(ctx, e.cfg, CopyOptions{ChunkBytes: 1 << 20, NoProgress: true}, testLogger(t))
		done <- err
	}()
	until(t, 60*time.Second, "the copy to commit a chunk", e.copying)
	cancel()
	err := <-done
	if err == nil {
		t.Fatal("interrupted copy returned no error")
	}
	msg := err.Error()
	if strings.Contains(msg, "context canceled") || !strings.Contains(msg, "interrupted") || !strings.Contains(msg, "again") ||
		!strings.Contains(msg, "data") {
		t.Errorf("interrupted copy says: %s", msg)
	}
	if _, err := Copy(context.Background(), e.cfg, CopyOptions{NoProgress: true}, testLogger(t)); err != nil {
		t.Fatalf("resumed copy: %v", err)
	}
	e.compare()
}

// TestOpsCopySteps: each step runs alone once the steps before it are done, refuses to run
// before them, and the steps in turn give what one copy gives; the indexes step leaves every
// table analyzed.
func TestOpsCopySteps(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := emptyTargetEnv(t, src, dst, "steps", workloadSchema+`CREATE TABLE notes (id serial PRIMARY KEY, body text); INSERT INTO notes (body) SELECT 'n' || g FROM generate_series(1, 500) g;`)
	ctx := context.Background()
	step := func(name string) (CopySummary, error) {
		s, err := ParseCopyStep(name)
		if err != nil {
			t.Fatal(err)
		}
		return Copy(ctx, e.cfg, CopyOptions{Step: s, NoProgress: true}, testLogger(t))
	}
	if _, err := step("data"); err == nil || !strings.Contains(err.Error(), "copy schema") {
		t.Fatalf("data before schema: %v, want it refused", err)
	}
	if _, err := step("schema"); err != nil {
		t.Fatal(err)
	}
	if _, err := step("indexes"); err == nil || !strings.Contains(err.Error(), "step 2 (data) is not done") {
		t.Fatalf("indexes before data: %v, want it refused", err)
	}
	e.exec(`INSERT INTO notes (body) VALUES ('written between the steps')`)
	for _, name := range []string{"data", "indexes", "sequences"} {
		if _, err := step(name); err != nil {
			t.Fatalf("step %s: %v", name, err)
		}
	}
	if n := e.targetInt(`SELECT count(*) FROM pg_stat_user_tables WHERE schemaname <> 'pgshift' AND last_analyze IS NULL`); n != 0 {
		t.Errorf("%d copied tables were not analyzed", n)
	}
	if got := e.phase(); got != "copied" {
		t.Fatalf("phase after the steps: %s", got)
	}
	a := e.start(RunOptions{})
	e.exec(`UPDATE notes SET body = body || '!' WHERE id % 3 = 0`)
	e.waitApplied(a)
	e.compare()
	if got, want := e.query(dst, `SELECT nextval('notes_id_seq')`), e.query(src, `SELECT nextval('notes_id_seq')`); got != want {
		t.Errorf("sequence on the target gives %s, the source %s", got, want)
	}
}

// statusText renders the status as `pgshift status` prints it.
func statusText(t *testing.T, st Status) string {
	t.Helper()
	var b strings.Builder
	if err := PrintStatus(&b, st, false); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestOpsStatusTellsTheTruth: right after a copy the applied position is the copy's consistent
// point, not 0/0; with the agent stopped and the source megabytes ahead, status says so —
// behind, in bytes and seconds, no agent, phase stopped — and never "caught up"; a running
// agent that has applied everything is caught up.
func TestOpsStatusTellsTheTruth(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newFollowEnv(t, src, dst, "truth", workloadSchema)
	ctx := context.Background()
	log := testLogger(t)

	st, err := ReadStatus(ctx, e.cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	consistent := e.query(dst, `SELECT consistent_lsn FROM pgshift.migration`)
	if st.AppliedLSN != consistent {
		t.Errorf("after the copy: applied position %s, want the consistent point %s", st.AppliedLSN, consistent)
	}
	if st.LagBytes > 1<<20 {
		t.Errorf("after the copy: lag %d bytes, as if the whole WAL were behind", st.LagBytes)
	}

	a := e.start(RunOptions{})
	e.exec(`UPDATE accounts SET balance = balance + 1`)
	e.waitApplied(a)
	until(t, 30*time.Second, "a running agent to report it is caught up", func() bool {
		st, err := ReadStatus(ctx, e.cfg, log)
		return err == nil && st.CaughtUp && st.Agent != nil && st.Agent.Alive
	})
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	// The agent is stopped; the source writes about 4 MiB of published changes.
	e.exec(`INSERT INTO history (account, delta) SELECT g % 200, g FROM generate_series(1, 40000) g`)
	time.Sleep(1100 * time.Millisecond)

	for _, withSource := range []bool{true, false} {
		cfg := e.cfg
		if !withSource {
			cfg.Source = ""
		}
		st, err := ReadStatus(ctx, cfg, log)
		if err != nil {
			t.Fatal(err)
		}
		text := statusText(t, st)
		if st.CaughtUp || strings.Contains(text, "caught up") {
			t.Errorf("source %v: status claims caught up while the agent is stopped and behind:\n%s", withSource, text)
		}
		if st.Agent == nil || st.Agent.Alive || !strings.Contains(text, "none running") {
			t.Errorf("source %v: status does not say no agent runs:\n%s", withSource, text)
		}
		if !strings.Contains(text, "stopped") {
			t.Errorf("source %v: phase shown as if following went on:\n%s", withSource, text)
		}
		if withSource {
			if st.LagBytes < 2<<20 || st.LagSeconds < 1 {
				t.Errorf("stopped agent, source ahead: lag %d bytes, %.1f s; want megabytes and seconds:\n%s", st.LagBytes, st.LagSeconds, text)
			}
		}
	}
}

// logTo is a logger at the info level (the command's default) writing into b.
func logTo(b *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// TestOpsRunReportsProgress: at the default log level, following logs a line at every progress
// interval with the applied position, the lag in bytes and seconds, and changes and
// transactions per second.
func TestOpsRunReportsProgress(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newFollowEnv(t, src, dst, "progress", workloadSchema)
	var logs syncBuffer
	a := e.launch(func(ctx context.Context, opts RunOptions) error { return Follow(ctx, e.cfg, opts, logTo(&logs)) },
		RunOptions{ProgressInterval: time.Second})
	w := e.startWriter(2)
	time.Sleep(3500 * time.Millisecond)
	w.halt()
	e.waitApplied(a)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "msg=following") {
			lines = append(lines, l)
		}
	}
	if len(lines) < 2 {
		t.Fatalf("%d progress lines in 3.5 s at a 1 s interval:\n%s", len(lines), logs.String())
	}
	busy := false
	for _, l := range lines {
		for _, f := range []string{"applied=", "lag_bytes=", "lag_seconds=", "changes_per_second=", "txs_per_second="} {
			if !strings.Contains(l, f) {
				t.Errorf("progress line lacks %s: %s", f, l)
			}
		}
		busy = busy || !strings.Contains(l, "txs_per_second=0 ")
	}
	if !busy {
		t.Errorf("no progress line shows the writer's transactions:\n%s", strings.Join(lines, "\n"))
	}
}

// TestOpsRunGivesUpOnAnUnreachedSource: a source that following never reached ends the run
// after the start timeout with the classified cause; Ctrl-C before that is no clean stop either.
// Once following has run, an outage is retried with the attempt count and the time since the
// last success.
func TestOpsRunGivesUpOnAnUnreachedSource(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newFollowEnv(t, src, dst, "unreached", workloadSchema)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cfg := e.cfg
	cfg.Source = fmt.Sprintf("host=127.0.0.1 port=%d user=postgres dbname=unreached connect_timeout=2", closed)

	began := time.Now()
	err = Follow(context.Background(), cfg, RunOptions{StartTimeout: 3 * time.Second, MaxRetryDelay: time.Second}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "connection refused") || !strings.Contains(err.Error(), "could not start following") {
		t.Fatalf("unreachable source: %v", err)
	}
	if d := time.Since(began); d > 20*time.Second {
		t.Errorf("gave up after %s, want about the 3 s start timeout", d)
	}

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(2500*time.Millisecond, cancel)
	err = Follow(ctx, cfg, RunOptions{StartTimeout: time.Hour, MaxRetryDelay: time.Second}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("Ctrl-C while the source was never reached: %v, want the cause", err)
	}

	var logs syncBuffer
	a := e.launch(func(ctx context.Context, opts RunOptions) error { return Follow(ctx, e.cfg, opts, logTo(&logs)) },
		RunOptions{StartTimeout: time.Second})
	e.exec(`UPDATE accounts SET balance = 1 WHERE id = 1`)
	e.waitApplied(a)
	if err := src.StopServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	until(t, 30*time.Second, "two retries logged", func() bool { return strings.Contains(logs.String(), "attempt=2") })
	select {
	case <-a.done:
		t.Fatalf("the agent gave up on an outage after following ran: %v", a.err)
	default:
	}
	if !strings.Contains(logs.String(), "since_last_success=") {
		t.Errorf("retries do not say how long since the last success:\n%s", logs.String())
	}
	if err := src.StartServer(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.exec(`UPDATE accounts SET balance = 2 WHERE id = 1`)
	e.waitApplied(a)
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	e.compare()
}

// TestOpsVerifyLeavesAPlainTargetAlone: verify of a target that holds no migration (a copy made
// otherwise) compares and reports, and creates nothing on the target.
func TestOpsVerifyLeavesAPlainTargetAlone(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := emptyTargetEnv(t, src, dst, "plain", workloadSchema)
	if out, err := dst.Psql(context.Background(), "plain", workloadSchema); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	rep, err := Verify(context.Background(), e.cfg, VerifyOptions{Live: "auto"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if code := rep.ExitCode(); code != 0 {
		t.Errorf("identical copies: exit %d", code)
	}
	if got := e.query(dst, `SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift'`); got != "0" {
		t.Errorf("verify created the pgshift schema on a target it only read")
	}
}

// assessFindings runs Assess and returns its findings by code.
func assessFindings(t *testing.T, cfg config.Config) (assess.Report, map[string][]assess.Finding) {
	t.Helper()
	rep, err := Assess(context.Background(), cfg, AssessOptions{Format: assess.FormatJSON}, io.Discard, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	by := map[string][]assess.Finding{}
	for _, f := range rep.Findings {
		by[f.Code] = append(by[f.Code], f)
	}
	return rep, by
}

// TestOpsAssessAndCopyAgree: copy's preflight evaluates assess's rules. A non-empty target is
// a blocker in both (assess is not READY where copy refuses), an unlogged table a warning in
// both (copied once, not followed); a live
// migration's slot and publication are never called leftovers nor offered for DROP, with or
// without --target.
func TestOpsAssessAndCopyAgree(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	ctx := context.Background()

	e := emptyTargetEnv(t, src, dst, "agree", workloadSchema+`CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);`)
	if _, err := dst.Psql(ctx, "agree", `CREATE TABLE stale (id int)`); err != nil {
		t.Fatal(err)
	}
	rep, by := assessFindings(t, e.cfg)
	if rep.Ready || by[assess.CodeTargetNotEmpty] == nil || by[assess.CodeTargetNotEmpty][0].Severity != assess.Blocker {
		t.Errorf("assess of a non-empty target: ready %v, findings %+v", rep.Ready, by[assess.CodeTargetNotEmpty])
	}
	if f := by[assess.CodeUnloggedTable]; f == nil || f[0].Severity != assess.Warning {
		t.Errorf("assess of an unlogged table: %+v", f)
	}
	_, err := Copy(ctx, e.cfg, CopyOptions{NoProgress: true}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "public.stale") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("copy: %v, want assess's blocker", err)
	}
	if _, err := dst.Psql(ctx, "agree", `DROP TABLE stale`); err != nil {
		t.Fatal(err)
	}
	if rep, _ := assessFindings(t, e.cfg); !rep.Ready {
		t.Errorf("assess with the blocker fixed is not ready: %+v", rep.Findings)
	}
	sum, err := Copy(ctx, e.cfg, CopyOptions{NoProgress: true}, testLogger(t))
	if err != nil {
		t.Fatalf("copy with the blocker fixed: %v", err)
	}
	if w := strings.Join(sum.Warnings, "\n"); !strings.Contains(w, "public.scratch: unlogged table") {
		t.Errorf("copy does not give assess's warning for the unlogged table: %q", sum.Warnings)
	}
	e.exec(`DROP TABLE scratch`) // never followed: the comparison below is of the followed tables

	a := e.start(RunOptions{})
	e.exec(`UPDATE accounts SET balance = 3 WHERE id = 3`)
	e.waitApplied(a)
	for _, withTarget := range []bool{true, false} {
		cfg := e.cfg
		if !withTarget {
			cfg.Target = ""
		}
		rep, by := assessFindings(t, cfg)
		if by[assess.CodeLeftoverSlot] != nil || by[assess.CodeLeftoverPublication] != nil {
			t.Errorf("target %v: the live migration's objects are called leftovers: %+v %+v", withTarget, by[assess.CodeLeftoverSlot], by[assess.CodeLeftoverPublication])
		}
		for _, f := range rep.Findings {
			if strings.Contains(f.Fix, "pg_drop_replication_slot") || strings.Contains(f.Fix, "DROP PUBLICATION") {
				t.Errorf("target %v: assess offers to drop the live migration's objects: %+v", withTarget, f)
			}
		}
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestOpsCopyAcceptsRDSReplication: a member of rds_replication (RDS's replication role) passes
// copy's preflight as it passes assess; on a plain PostgreSQL the server itself then refuses
// the slot, which shows the preflight did not.
func TestOpsCopyAcceptsRDSReplication(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := emptyTargetEnv(t, src, dst, "rds", workloadSchema)
	e.exec(`CREATE ROLE rds_replication NOLOGIN; CREATE ROLE rds_mover LOGIN IN ROLE rds_replication;
		ALTER TABLE accounts OWNER TO rds_mover; ALTER TABLE history OWNER TO rds_mover; GRANT CREATE ON DATABASE rds TO rds_mover;`)
	cfg := e.cfg
	cfg.Source = withUser(cfg.Source, "rds_mover")
	_, by := assessFindings(t, cfg)
	if f := by[assess.CodeReplicationPriv]; f != nil {
		t.Fatalf("assess refuses an rds_replication member: %+v", f)
	}
	_, err := Copy(context.Background(), cfg, CopyOptions{NoProgress: true}, testLogger(t))
	if err == nil {
		t.Fatal("copy as a plain role created a replication slot")
	}
	if strings.Contains(err.Error(), "the copy cannot start") || strings.Contains(err.Error(), "may not") && strings.Contains(err.Error(), "replication") && !strings.Contains(err.Error(), "SQLSTATE") {
		t.Errorf("copy's preflight refuses what assess accepts: %v", err)
	}
}
