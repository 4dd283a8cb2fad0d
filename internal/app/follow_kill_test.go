package app

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// buildBinary returns the pgshift command for tests that run it as a real process, with the
// fault hooks (build tag faults: PGSHIFT_TEST_KILL_AT) that release builds leave out. It is
// built once per test binary (each link of the cgo binary costs seconds) into a directory
// TestMain removes; the tests only run it.
func buildBinary(t *testing.T) string {
	t.Helper()
	testBinary.once.Do(func() {
		dir, err := os.MkdirTemp("", "pgshift-app-test-bin-")
		if err != nil {
			testBinary.err = err
			return
		}
		testBinary.dir = dir
		bin := filepath.Join(dir, "pgshift")
		if out, err := exec.Command("go", "build", "-tags", "faults", "-o", bin, "github.com/pgshift/pgshift/cmd/pgshift").CombinedOutput(); err != nil {
			testBinary.err = fmt.Errorf("build pgshift: %v\n%s", err, out)
			return
		}
		testBinary.path = bin
	})
	if testBinary.err != nil {
		t.Fatal(testBinary.err)
	}
	return testBinary.path
}

// testBinary is the one build of buildBinary.
var testBinary struct {
	once      sync.Once
	dir, path string
	err       error
}

// TestMain removes buildBinary's build after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if testBinary.dir != "" {
		_ = os.RemoveAll(testBinary.dir)
	}
	os.Exit(code)
}

// TestRunKillResumeLoop SIGKILLs a real `pgshift run` at random moments under continuous writes
// (and, on some rounds, exactly between a target commit and its acknowledgement), then lets it
// catch up and compares: identical, no duplicates.
func TestRunKillResumeLoop(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	bin := buildBinary(t)
	e := newFollowEnv(t, src, dst, "killloop", workloadSchema)
	var logs bytes.Buffer
	startArgs := func(extra []string, extraEnv ...string) *exec.Cmd {
		args := append([]string{"run", "--source", e.cfg.Source, "--target", e.cfg.Target, "--log-level", "debug"}, extra...)
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), extraEnv...)
		cmd.Stderr = &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	start := func(extraEnv ...string) *exec.Cmd { return startArgs(nil, extraEnv...) }
	w := e.startWriter(4)
	kills := 0
	for round := range 12 {
		if round%4 == 3 {
			// Killed by itself right after a target commit, before the source hears of it.
			cmd := start("PGSHIFT_TEST_KILL_AT=after-target-commit")
			err := cmd.Wait()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
				t.Fatalf("round %d: agent with the after-target-commit hook ended with %v, want SIGKILL\n%s", round, err, logs.String())
			}
		} else {
			cmd := start()
			time.Sleep(time.Duration(200+rand.IntN(1300)) * time.Millisecond)
			if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			_ = cmd.Wait()
		}
		kills++
	}
	commits := w.halt()
	if commits < 100 {
		t.Fatalf("only %d source transactions during the test", commits)
	}
	// With no agent running, wait gives up at its timeout with exit code 1.
	timeout := exec.Command(bin, "wait", "--source", e.cfg.Source, "--target", e.cfg.Target, "--timeout", "1s")
	if err := timeout.Run(); timeout.ProcessState == nil || timeout.ProcessState.ExitCode() != 1 {
		t.Fatalf("pgshift wait with no agent: %v, want exit code 1", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := ln.Addr().String()
	ln.Close()
	agent := startArgs([]string{"--http", httpAddr})
	wait := exec.Command(bin, "wait", "--source", e.cfg.Source, "--target", e.cfg.Target, "--timeout", "90s")
	if out, err := wait.CombinedOutput(); err != nil {
		t.Fatalf("pgshift wait: %v\n%s\nagent log:\n%s", err, out, logs.String())
	}
	e.compare()
	if got := e.query(dst, `SELECT count(*) - count(DISTINCT id) FROM history`); got != "0" {
		t.Fatalf("%s duplicate rows in history", got)
	}
	// status reads the state the agent keeps on the target.
	time.Sleep(1200 * time.Millisecond)
	out, err := exec.Command(bin, "status", "--target", e.cfg.Target, "--source", e.cfg.Source, "--json").Output()
	if err != nil {
		t.Fatalf("pgshift status: %v", err)
	}
	var st Status
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status JSON: %v\n%s", err, out)
	}
	if st.Phase != "following" || st.AppliedLSN == "0/0" || st.Slot != "pgshift_killloop" {
		t.Fatalf("status = %+v", st)
	}
	// The agent's own API: status from the agent, and Prometheus metrics.
	out, err = exec.Command(bin, "status", "--http", httpAddr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "phase:") || !strings.Contains(string(out), "following") {
		t.Fatalf("pgshift status --http: %v\n%s", err, out)
	}
	// The lag families appear with the agent's first lag measurement (every MonitorInterval,
	// 5 s by default) after this restart; the counters are there from the start.
	var missing string
	var metrics []byte
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		resp, err := http.Get("http://" + httpAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		metrics, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		missing = ""
		for _, m := range []string{"pgshift_applied_transactions_total", "pgshift_replication_lag_seconds", "pgshift_slot_retained_wal_bytes", "pgshift_received_transactions_total"} {
			if !strings.Contains(string(metrics), m) {
				missing = m
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics lacks %s after 30 s:\n%s", missing, metrics)
		}
	}
	// SIGTERM is a clean stop: exit 0.
	if err := agent.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- agent.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("agent after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		_ = agent.Process.Kill()
		t.Fatal("agent did not stop on SIGTERM")
	}
	t.Logf("%d kills, %d source transactions", kills, commits)
}
