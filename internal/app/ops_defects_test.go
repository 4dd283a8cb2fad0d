package app

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

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
