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
