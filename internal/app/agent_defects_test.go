package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/state"
	"github.com/pgshift/pgshift/internal/verify"
)

// bulkSchema makes a copy last long enough (many 1 MiB chunks) for a second agent to arrive
// while the first is still copying.
const bulkSchema = `
CREATE TABLE bulk (id int PRIMARY KEY, v text NOT NULL);
INSERT INTO bulk SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 600000) g;`

// emptyTargetEnv is a source with schema and an empty target database, as before `pgshift copy`.
func emptyTargetEnv(t *testing.T, src, dst *pgtest.Cluster, name, schema string) *followEnv {
	t.Helper()
	ctx := context.Background()
	srcDSN, err := src.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	dstDSN, err := dst.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	e := &followEnv{t: t, src: src, dst: dst, name: name, cfg: config.Defaults()}
	e.cfg.Source, e.cfg.Target, e.cfg.Jobs = srcDSN, dstDSN, 1
	e.exec(schema)
	return e
}

// until polls cond every 20 ms and fails the test when it is not true within d.
func until(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// targetInt runs a query returning one number on the target; -1 when it fails (for example
// because pgshift's state tables do not exist yet).
func (e *followEnv) targetInt(sql string) int {
	out, err := e.dst.Psql(context.Background(), e.name, sql)
	if err != nil {
		return -1
	}
	var n int
	if _, err := fmt.Sscan(out, &n); err != nil {
		return -1
	}
	return n
}

// copying reports whether the target's copy has committed at least one chunk.
func (e *followEnv) copying() bool { return e.targetInt(`SELECT count(*) FROM pgshift.chunks`) > 0 }

func (e *followEnv) phase() string {
	out, _ := e.dst.Psql(context.Background(), e.name, `SELECT phase FROM pgshift.migration`)
	return out
}

const heldMessage = "another pgshift agent holds this migration"

// TestAgentTwoCopiesInProcess starts a second Copy while the first is copying: the second is
// refused and changes nothing, the first completes, and after follow the target is identical
// to the source.
func TestAgentTwoCopiesInProcess(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := emptyTargetEnv(t, src, dst, "twocopies", workloadSchema+bulkSchema)
	w := e.startWriter(2)
	ctx := context.Background()
	first := make(chan error, 1)
	go func() {
		_, err := Copy(ctx, e.cfg, CopyOptions{ChunkBytes: 1 << 20, NoProgress: true}, testLogger(t))
		first <- err
	}()
	until(t, 60*time.Second, "the first copy to commit a chunk", e.copying)
	_, err := Copy(ctx, e.cfg, CopyOptions{ChunkBytes: 1 << 20, NoProgress: true}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), heldMessage) || !strings.Contains(err.Error(), "running `copy`") ||
		!strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("second copy: %v; want it refused, naming the first agent", err)
	}
	// --force is refused too: it would drop the running agent's state and slot.
	_, err = Copy(ctx, e.cfg, CopyOptions{Force: true, NoProgress: true}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), heldMessage) {
		t.Fatalf("copy --force during a copy: %v; want it refused", err)
	}
	if err := <-first; err != nil {
		t.Fatalf("first copy: %v", err)
	}
	a := e.start(RunOptions{})
	time.Sleep(500 * time.Millisecond)
	w.halt()
	e.waitApplied(a)
	e.compare()
}

// syncBuffer is a bytes.Buffer safe to read while a process writes to it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a pgshift process started by a test.
type proc struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	err    error
}

func (e *followEnv) startProc(bin string, args ...string) *proc {
	e.t.Helper()
	full := append(append([]string{}, args...), "--source", e.cfg.Source, "--target", e.cfg.Target)
	p := &proc{cmd: exec.Command(bin, full...), stderr: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Stderr = p.stderr
	p.cmd.Stdout = p.stderr
	if err := p.cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	e.t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// wait waits for the process to end and returns its exit code.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		_ = p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%v did not end within %s\n%s", p.cmd.Args[:2], d, p.stderr.String())
	}
	return p.cmd.ProcessState.ExitCode()
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// binStatus runs `pgshift status --json` and decodes it.
func (e *followEnv) binStatus(bin string) Status {
	e.t.Helper()
	out, err := exec.Command(bin, "status", "--target", e.cfg.Target, "--json").Output()
	if err != nil {
		e.t.Fatalf("pgshift status: %v", err)
	}
	var st Status
	if err := json.Unmarshal(out, &st); err != nil {
		e.t.Fatalf("status JSON: %v\n%s", err, out)
	}
	return st
}

// TestAgentLeaseBinary runs the real binary: a second `copy` during a copy, a second `run`
// while one follows and `copy --force` while it runs are all refused with exit code 2 and the
// holder's identity; the holder killed with SIGKILL is taken over at once; and the story ends
// with the target identical to the source.
func TestAgentLeaseBinary(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	bin := buildBinary(t)
	e := emptyTargetEnv(t, src, dst, "leasebin", workloadSchema+bulkSchema)
	w := e.startWriter(2)

	first := e.startProc(bin, "copy", "--chunk-size", "1", "--jobs", "1", "--progress", "none")
	until(t, 60*time.Second, "the first copy to commit a chunk", e.copying)
	second := e.startProc(bin, "copy", "--progress", "none")
	if code := second.wait(t, 60*time.Second); code != 2 {
		t.Fatalf("second copy exited %d, want 2\n%s", code, second.stderr.String())
	}
	msg := second.stderr.String()
	for _, want := range []string{heldMessage, fmt.Sprintf("pid %d", first.cmd.Process.Pid), "running `copy`", "stop it first"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("second copy's error lacks %q:\n%s", want, msg)
		}
	}
	if code := first.wait(t, 120*time.Second); code != 0 {
		t.Fatalf("first copy exited %d\n%s", code, first.stderr.String())
	}

	agent := e.startProc(bin, "run")
	until(t, 30*time.Second, "the agent to follow", func() bool { return e.phase() == "following" })
	rival := e.startProc(bin, "run")
	if code := rival.wait(t, 60*time.Second); code != 2 {
		t.Fatalf("second run exited %d, want 2\n%s", code, rival.stderr.String())
	}
	if msg := rival.stderr.String(); !strings.Contains(msg, heldMessage) || !strings.Contains(msg, fmt.Sprintf("pid %d", agent.cmd.Process.Pid)) ||
		!strings.Contains(msg, "running `run`") {
		t.Fatalf("second run's error does not name the agent:\n%s", msg)
	}
	force := e.startProc(bin, "copy", "--force", "--progress", "none")
	if code := force.wait(t, 60*time.Second); code != 2 || !strings.Contains(force.stderr.String(), heldMessage) {
		t.Fatalf("copy --force while run follows exited %d, want 2 and refused:\n%s", code, force.stderr.String())
	}
	if p := e.phase(); p != "following" {
		t.Fatalf("after the refused copy --force the phase is %q", p)
	}
	if !agent.running() {
		t.Fatalf("the agent stopped:\n%s", agent.stderr.String())
	}
	// status names the holder and says it is alive (from the lease lock).
	if st := e.binStatus(bin); st.Agent == nil || st.Agent.PID != agent.cmd.Process.Pid || !st.Agent.Alive || st.Agent.Command != "run" {
		t.Fatalf("status agent = %+v, want pid %d alive running run", st.Agent, agent.cmd.Process.Pid)
	}

	// SIGKILL: the lease dies with the agent's session, so the next agent takes over at once.
	time.Sleep(500 * time.Millisecond)
	if err := agent.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-agent.done
	// The lock goes when the server has ended the dead agent's session: at once when it is
	// idle, a moment later when the server is busy.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		st := e.binStatus(bin)
		if st.Agent != nil && !st.Agent.Alive {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status 10 s after SIGKILL: agent %+v, want recorded and not alive", st.Agent)
		}
	}
	next := e.startProc(bin, "run")
	until(t, 10*time.Second, "the next agent to take the lease", func() bool {
		st := e.binStatus(bin)
		return st.Agent != nil && st.Agent.Alive && st.Agent.PID == next.cmd.Process.Pid
	})
	time.Sleep(time.Second)
	if !next.running() {
		t.Fatalf("the agent started after a SIGKILL ended:\n%s", next.stderr.String())
	}
	w.halt()
	wait := e.startProc(bin, "wait", "--timeout", "90s")
	if code := wait.wait(t, 120*time.Second); code != 0 {
		t.Fatalf("wait exited %d\n%s\nagent:\n%s", code, wait.stderr.String(), next.stderr.String())
	}
	e.compare()
	if err := next.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := next.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("agent after SIGTERM exited %d\n%s", code, next.stderr.String())
	}
}

// leasePID returns the target backend pid of the running agent's lease session, from status.
func (e *followEnv) leasePID() int {
	e.t.Helper()
	st, err := ReadStatus(context.Background(), e.cfg, testLogger(e.t))
	if err != nil || st.Agent == nil || !st.Agent.Alive || !st.Agent.Identified {
		return 0
	}
	return st.Agent.LeasePID
}

// TestAgentLeaseSessionLost ends the agent's lease session on the target while it applies
// writes. Alone, the agent stops writing, takes the lease again and goes on. With a rival
// agent starting at that moment, exactly one of the two keeps the migration — the other stops
// with the holder's identity — and the target still ends identical to the source.
func TestAgentLeaseSessionLost(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	opts := RunOptions{LeaseInterval: 200 * time.Millisecond}

	t.Run("Alone", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "leaselost", workloadSchema)
		// The agent's log is kept (the last lines are printed if it does not take its lease
		// again: that flaked twice under CI's load, and the target then showed no lock at all).
		logs := &lineBuffer{max: 300}
		a := e.launch(func(ctx context.Context, opts RunOptions) error {
			return Follow(ctx, e.cfg, opts, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
		}, opts)
		w := e.startWriter(2)
		for round := range 3 {
			var pid int
			until(t, 30*time.Second, "the agent to hold the lease", func() bool { pid = e.leasePID(); return pid != 0 })
			e.query(dst, fmt.Sprintf(`SELECT pg_terminate_backend(%d)`, pid))
			// A minute: under CI's load with the race detector this once took over 30 s, for a
			// reason not found; what the target shows then is logged for the next time.
			deadline := time.Now().Add(time.Minute)
			for p := e.leasePID(); p == 0 || p == pid; p = e.leasePID() {
				select {
				case <-a.done:
					t.Fatalf("round %d: the agent stopped after losing its lease session: %v\nits last log lines:\n%s", round, a.err, logs)
				default:
				}
				if time.Now().After(deadline) {
					st, err := ReadStatus(context.Background(), e.cfg, testLogger(e.t))
					t.Fatalf("round %d: the agent did not take the lease again within a minute (status %+v, %v; agent %+v)\nadvisory locks and sessions on the target:\n%s\nthe agent's last log lines:\n%s", round, st.Phase, err, st.Agent,
						e.query(dst, `SELECT string_agg(format('%s %s objid=%s granted=%s app=%s state=%s wait=%s query=%s', l.pid, l.mode, l.objid, l.granted, a.application_name, a.state, a.wait_event, left(a.query, 80)), E'\n')
							FROM pg_locks l LEFT JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory'`), logs)
				}
				time.Sleep(20 * time.Millisecond)
			}
			select {
			case <-a.done:
				t.Fatalf("round %d: the agent stopped after losing its lease session: %v", round, a.err)
			case <-time.After(500 * time.Millisecond):
			}
		}
		w.halt()
		e.waitApplied(a)
		e.compare()
	})

	t.Run("RivalTakesOver", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "leaserival", workloadSchema)
		first := e.start(opts)
		w := e.startWriter(2)
		var pid int
		until(t, 30*time.Second, "the agent to hold the lease", func() bool { pid = e.leasePID(); return pid != 0 })
		time.Sleep(500 * time.Millisecond)
		e.query(dst, fmt.Sprintf(`SELECT pg_terminate_backend(%d)`, pid))
		second := e.start(opts)
		var survivor, loser *agent
		select {
		case <-first.done:
			survivor, loser = second, first
		case <-second.done:
			survivor, loser = first, second
		case <-time.After(60 * time.Second):
			t.Fatal("both agents still run a minute after the lease session was lost")
		}
		var held *state.HeldError
		if !errors.As(loser.err, &held) || !strings.Contains(loser.err.Error(), heldMessage) {
			t.Fatalf("the agent that gave up ended with %v, want a HeldError", loser.err)
		}
		t.Logf("first agent survived: %v; the other ended with: %v", survivor == first, loser.err)
		time.Sleep(time.Second)
		w.halt()
		e.waitApplied(survivor)
		e.compare()
		if got := e.query(dst, `SELECT count(*) - count(DISTINCT id) FROM history`); got != "0" {
			t.Fatalf("%s duplicate rows in history", got)
		}
	})
}

// TestWaitCoversAsyncCommits commits rows with synchronous_commit = off on the source, each
// followed at once by a Wait: every row visible on the source when Wait began must be on the
// target when Wait returns (checked with a query of the test's own).
func TestWaitCoversAsyncCommits(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newFollowEnv(t, src, dst, "asyncwait", `CREATE TABLE marks (id int PRIMARY KEY, at timestamptz DEFAULT now());`)
	a := e.start(RunOptions{})
	ctx := context.Background()
	sconn := cpConnect(t, e.cfg.Source)
	if _, err := sconn.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		t.Fatal(err)
	}
	tconn := cpConnect(t, e.cfg.Target)
	e.waitApplied(a)
	missing := 0
	const rounds = 200
	for i := 1; i <= rounds; i++ {
		if _, err := sconn.Exec(ctx, `INSERT INTO marks (id) VALUES ($1)`, i); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := Wait(wctx, e.cfg, 0, testLogger(t))
		cancel()
		if err != nil {
			t.Fatalf("wait after row %d: %v", i, err)
		}
		var there bool
		if err := tconn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM marks WHERE id = $1)`, i).Scan(&there); err != nil {
			t.Fatal(err)
		}
		if !there {
			missing++
		}
	}
	if missing > 0 {
		t.Fatalf("%d of %d rows committed (synchronous_commit = off) before wait began were not on the target when wait returned", missing, rounds)
	}
	e.compare()
}

// TestWaitWithoutAgent: wait gives up with ErrNoAgent when no agent runs for the grace period,
// waits for an agent that starts during it, and the binary exits 1 with the message.
func TestWaitWithoutAgent(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newFollowEnv(t, src, dst, "noagent", workloadSchema)
	e.exec(`UPDATE accounts SET balance = 7 WHERE id = 1`)
	ctx := context.Background()

	start := time.Now()
	_, err := WaitWith(ctx, e.cfg, WaitOptions{AgentGrace: 2 * time.Second}, testLogger(t))
	if !errors.Is(err, ErrNoAgent) || !strings.Contains(err.Error(), "no agent is running: start pgshift run") {
		t.Fatalf("wait without an agent: %v, want ErrNoAgent", err)
	}
	if d := time.Since(start); d < 2*time.Second || d > 10*time.Second {
		t.Fatalf("wait without an agent gave up after %s, want about the 2 s grace", d)
	}
	if _, err := WaitWith(ctx, e.cfg, WaitOptions{Timeout: -time.Second}, testLogger(t)); err == nil || !strings.Contains(err.Error(), "negative") {
		t.Fatalf("negative timeout: %v, want it refused", err)
	}

	// An agent that starts a moment after wait is waited for.
	done := make(chan error, 1)
	go func() {
		_, err := WaitWith(ctx, e.cfg, WaitOptions{AgentGrace: 20 * time.Second, Timeout: 60 * time.Second}, testLogger(t))
		done <- err
	}()
	time.Sleep(1500 * time.Millisecond)
	a := e.start(RunOptions{})
	if err := <-done; err != nil {
		t.Fatalf("wait with an agent started after it: %v", err)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	e.compare()

	bin := buildBinary(t)
	e.exec(`UPDATE accounts SET balance = 8 WHERE id = 1`)
	p := e.startProc(bin, "wait", "--agent-grace", "1s")
	if code := p.wait(t, 30*time.Second); code != 1 || !strings.Contains(p.stderr.String(), "no agent is running: start pgshift run") {
		t.Fatalf("pgshift wait without an agent: exit %d\n%s", code, p.stderr.String())
	}
}

// replicaTriggerSchema has triggers and a rule that fire in session_replication_role =
// replica: an audit trigger ENABLE ALWAYS, a REPLICA trigger, an ENABLE ALWAYS rule, and on a
// partitioned table an ALWAYS trigger whose clones differ per partition (REPLICA on one,
// ordinary on another), which pg_dump restores with statements in order.
const replicaTriggerSchema = `
CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL);
CREATE TABLE audit (n bigserial PRIMARY KEY, item int, op text, via text);
CREATE TABLE rule_log (n bigserial PRIMARY KEY, item int);
CREATE FUNCTION audit_always() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO audit (item, op, via) VALUES (NEW.id, TG_OP, 'always'); RETURN NEW; END$$;
CREATE FUNCTION audit_replica() RETURNS trigger LANGUAGE plpgsql AS
  $$BEGIN INSERT INTO audit (item, op, via) VALUES (NEW.id, TG_OP, 'replica'); RETURN NEW; END$$;
CREATE TRIGGER items_audit AFTER INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION audit_always();
ALTER TABLE items ENABLE ALWAYS TRIGGER items_audit;
CREATE TRIGGER "Items Replica" AFTER INSERT OR UPDATE ON items FOR EACH ROW EXECUTE FUNCTION audit_replica();
ALTER TABLE items ENABLE REPLICA TRIGGER "Items Replica";
CREATE RULE items_log AS ON UPDATE TO items DO ALSO INSERT INTO rule_log (item) VALUES (NEW.id);
ALTER TABLE items ENABLE ALWAYS RULE items_log;
CREATE TABLE parts (id int PRIMARY KEY, v int) PARTITION BY RANGE (id);
CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM (0) TO (1000);
CREATE TABLE parts_b PARTITION OF parts FOR VALUES FROM (1000) TO (2000);
CREATE TABLE parts_c PARTITION OF parts FOR VALUES FROM (2000) TO (3000);
CREATE TRIGGER parts_audit AFTER INSERT ON parts FOR EACH ROW EXECUTE FUNCTION audit_always();
ALTER TABLE parts ENABLE ALWAYS TRIGGER parts_audit;
ALTER TABLE parts_b ENABLE REPLICA TRIGGER parts_audit;
ALTER TABLE parts_c ENABLE TRIGGER parts_audit;
INSERT INTO items SELECT g, 0 FROM generate_series(1, 100) g;
INSERT INTO parts SELECT g, 0 FROM generate_series(1, 2999, 7) g;`

// enableStates lists every user trigger's and rule's enable state (pg_trigger.tgenabled,
// pg_rewrite.ev_enabled) on one side; pgshift's own state schema is not the user's.
const enableStatesSQL = `SELECT string_agg(x, E'\n' ORDER BY x) FROM (
	SELECT 'trigger ' || tgrelid::regclass::text || ' ' || tgname || ' ' || tgenabled::text AS x FROM pg_trigger
	WHERE NOT tgisinternal AND tgrelid::regclass::text NOT LIKE 'pgshift.%'
	UNION ALL
	SELECT 'rule ' || ev_class::regclass::text || ' ' || rulename || ' ' || ev_enabled::text FROM pg_rewrite
	WHERE rulename <> '_RETURN' AND ev_class::regclass::text NOT LIKE 'pg_%') s`

// TestReplicaModeTriggersDeferred: triggers and rules that fire in replica mode stay disabled on
// the target while pgshift applies, so the audit table is not doubled; they are recorded and
// shown by status, and state.ApplyDeferred gives the target the source's trigger states.
func TestReplicaModeTriggersDeferred(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := emptyTargetEnv(t, src, dst, "replicatrg", replicaTriggerSchema)
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn := cpConnect(t, e.cfg.Source)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := conn.Exec(ctx, `UPDATE items SET v = v + 1 WHERE id = $1`, i%100+1); err != nil {
				t.Error(err)
				return
			}
			if _, err := conn.Exec(ctx, `INSERT INTO parts VALUES ($1, 1) ON CONFLICT DO NOTHING`, i%2999+1); err != nil {
				t.Error(err)
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	a := e.launch(func(ctx context.Context, opts RunOptions) error { return Run(ctx, e.cfg, opts, testLogger(t)) }, RunOptions{})
	until(t, 60*time.Second, "the agent to follow", func() bool { return e.phase() == "following" })
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	e.waitApplied(a)
	e.compare() // audit and rule_log included: not doubled
	if got := e.query(src, `SELECT count(*) FROM audit`); got == "0" {
		t.Fatal("the source's audit trigger wrote nothing: the test exercised nothing")
	}

	st, err := ReadStatus(ctx, e.cfg, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var objects []string
	for _, d := range st.Deferred {
		objects = append(objects, d.Object)
	}
	list := strings.Join(objects, "\n")
	for _, want := range []string{`trigger items_audit on public.items`, `trigger "Items Replica" on public.items`,
		`rule items_log on public.items`, `trigger parts_audit on public.parts`, `trigger parts_audit on public.parts_b`} {
		if !strings.Contains(list, want) {
			t.Errorf("status lists as deferred:\n%s\nwant %s", list, want)
		}
	}
	if srcStates, dstStates := e.query(src, enableStatesSQL), e.query(dst, enableStatesSQL); srcStates == dstStates {
		t.Fatalf("trigger states already equal the source's during follow:\n%s", dstStates)
	}

	// Cutover's step: apply has stopped for good, then the deferred statements run.
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	// verify does not count the kept-back states as differences; it lists them as deferred,
	// the partitions whose clones the partitioned table's statement changes included.
	rep := e.verifySchema()
	var deferredNames []string
	for _, d := range rep.Schema.Deferred {
		deferredNames = append(deferredNames, d.Kind+" "+d.Name)
	}
	for _, want := range []string{"trigger public.items.items_audit", `trigger public.items."Items Replica"`, "rule public.items.items_log",
		"trigger public.parts.parts_audit", "trigger public.parts_a.parts_audit", "trigger public.parts_b.parts_audit"} {
		if !slices.Contains(deferredNames, want) {
			t.Errorf("verify's deferred list %q lacks %s", deferredNames, want)
		}
	}
	tc := cpConnect(t, e.cfg.Target)
	n, err := state.ApplyDeferred(ctx, tc)
	if err != nil || n != len(st.Deferred) {
		t.Fatalf("ApplyDeferred: %d, %v; want %d", n, err, len(st.Deferred))
	}
	if again, err := state.ApplyDeferred(ctx, tc); err != nil || again != 0 {
		t.Fatalf("ApplyDeferred again: %d, %v; want nothing to do", again, err)
	}
	if s, d := e.query(src, enableStatesSQL), e.query(dst, enableStatesSQL); s != d {
		t.Fatalf("trigger and rule states after ApplyDeferred:\nsource:\n%s\ntarget:\n%s", s, d)
	}
	if s, d := e.schemaDump(src), e.schemaDump(dst); s != d {
		t.Fatalf("pg_dump --schema-only differs after ApplyDeferred:\nsource:\n%s\ntarget:\n%s", s, d)
	}
	if rep := e.verifySchema(); len(rep.Schema.Deferred) > 0 {
		t.Errorf("verify after ApplyDeferred still lists deferred objects: %+v", rep.Schema.Deferred)
	}
}

// verifySchema runs verify (counts, schema) and fails on any schema difference.
func (e *followEnv) verifySchema() *verify.Report {
	e.t.Helper()
	rep, err := Verify(context.Background(), e.cfg, VerifyOptions{Mode: verify.ModeCount, Live: "off", NoSequences: true, NoSave: true}, testLogger(e.t))
	if err != nil {
		e.t.Fatalf("verify: %v", err)
	}
	if rep.Schema == nil {
		e.t.Fatal("verify compared no schema")
	}
	for _, d := range rep.Schema.Diffs {
		e.t.Errorf("verify reports a schema difference: %+v", d)
	}
	return rep
}

// TestFollowRefusesReplicaModeTriggers: a target whose migrated table has an ENABLE ALWAYS
// trigger that pgshift did not take in hand (copied by other means, or changed by hand) is
// refused with the fix before anything is applied; once disabled, follow converges.
func TestFollowRefusesReplicaModeTriggers(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newFollowEnv(t, src, dst, "activetrg", `
		CREATE TABLE items (id int PRIMARY KEY, v int);
		CREATE TABLE audit (n bigserial PRIMARY KEY, item int);
		CREATE FUNCTION aud() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO audit (item) VALUES (NEW.id); RETURN NEW; END$$;
		CREATE TRIGGER "Audit" AFTER INSERT ON items FOR EACH ROW EXECUTE FUNCTION aud();
		ALTER TABLE items ENABLE ALWAYS TRIGGER "Audit";`)
	// pgshift.tables as copy leaves it.
	e.query(dst, `INSERT INTO pgshift.tables (schema_name, table_name, root_schema, root_name, state, snapshot_lsn)
		SELECT 'public', t, 'public', t, 'done', (SELECT consistent_lsn FROM pgshift.migration) FROM unnest(ARRAY['items', 'audit']) t`)
	e.exec(`INSERT INTO items VALUES (1, 1)`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := Follow(ctx, e.cfg, RunOptions{}, testLogger(t))
	var fe *FatalError
	if !errors.As(err, &fe) || !strings.Contains(err.Error(), `trigger "Audit" on public.items (ENABLE ALWAYS)`) ||
		!strings.Contains(err.Error(), `ALTER TABLE public.items DISABLE TRIGGER "Audit";`) {
		t.Fatalf("follow with an active ALWAYS trigger on the target: %v", err)
	}
	if got := e.query(dst, `SELECT count(*) FROM items`); got != "0" {
		t.Fatalf("%s rows applied before the refusal", got)
	}
	e.query(dst, `ALTER TABLE public.items DISABLE TRIGGER "Audit"`)
	a := e.start(RunOptions{})
	e.waitApplied(a)
	e.compare()
}

// lineBuffer keeps the last max lines written to it (an slog handler's output), for a failing
// test to print.
type lineBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
}

func (b *lineBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lines = append(b.lines, strings.TrimRight(string(p), "\n"))
	if len(b.lines) > b.max {
		b.lines = b.lines[len(b.lines)-b.max:]
	}
	return len(p), nil
}

func (b *lineBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return strings.Join(b.lines, "\n")
}
