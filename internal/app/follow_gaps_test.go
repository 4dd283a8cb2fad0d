package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// deadPID returns the PID of a process that has exited.
func deadPID(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	return cmd.Process.Pid
}

// TestFollowSweepsStaleSpillDirs checks that only spill directories of processes that are gone
// are removed, and nothing else in the temp directory.
func TestFollowSweepsStaleSpillDirs(t *testing.T) {
	dir := t.TempDir()
	dead := deadPID(t)
	entries := []struct {
		name   string
		isDir  bool
		remove bool
	}{
		{fmt.Sprintf("pgshift-spill-%d-1234567", dead), true, true},
		{fmt.Sprintf("pgshift-spill-%d-7654321", os.Getpid()), true, false}, // a running agent's
		{fmt.Sprintf("pgshift-spill-%d-1", os.Getppid()), true, false},      // another live process
		{"pgshift-spill-987654321", true, false},                            // no owner in the name
		{"pgshift-spill-abc-1", true, false},                                // not a PID
		{fmt.Sprintf("pgshift-spill-%d-file", dead), false, false},          // not a directory
		{fmt.Sprintf("other-%d-1", dead), true, false},
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.name)
		if e.isDir {
			if err := os.MkdirAll(filepath.Join(p, "sub"), 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(p, "sub", "xid-1"), []byte("spilled"), 0o600); err != nil {
				t.Fatal(err)
			}
		} else if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	n, err := cdc.SweepSpillDirs(dir)
	if err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Errorf("removed %d directories, want 1", n)
	}
	for _, e := range entries {
		_, err := os.Lstat(filepath.Join(dir, e.name))
		switch gone := errors.Is(err, os.ErrNotExist); {
		case e.remove && !gone:
			t.Errorf("%s was kept, want it removed (its owner %d is not alive)", e.name, dead)
		case !e.remove && gone:
			t.Errorf("%s was removed, want it kept", e.name)
		}
	}
	// A second sweep finds nothing more.
	if n, err := cdc.SweepSpillDirs(dir); err != nil || n != 0 {
		t.Errorf("second sweep removed %d (err %v), want 0", n, err)
	}
}

// expectWALLost checks err is the fatal error of a slot that lost WAL, with the way out.
func expectWALLost(t *testing.T, err error, slot string) {
	t.Helper()
	var fe *FatalError
	if !errors.As(err, &fe) {
		t.Fatalf("got %v, want a fatal error", err)
	}
	for _, w := range []string{slot, "lost WAL", "max_slot_wal_keep_size", "pgshift copy --force", "pgshift finish", "pgshift run"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
}

// lostSlot writes published changes and switches WAL segments, checkpointing now and then,
// until the slot is invalidated (wal_status = lost).
func (e *followEnv) lostSlot(slot string) {
	e.t.Helper()
	status := ""
	for i := 0; ; i++ {
		e.exec(`INSERT INTO history (account, delta) SELECT 1, g FROM generate_series(1, 2000) g`)
		e.exec(`SELECT pg_switch_wal()`)
		if i%3 == 2 {
			e.exec(`CHECKPOINT`)
			status = e.query(e.src, `SELECT coalesce(wal_status, 'null') || ' ' || coalesce(restart_lsn::text, 'invalidated')
				FROM pg_replication_slots WHERE slot_name = '`+slot+`'`)
			if strings.HasPrefix(status, "lost ") {
				return
			}
		}
		if i > 30 {
			e.t.Fatalf("slot %s did not lose WAL (wal_status, restart_lsn: %s)", slot, status)
		}
	}
}

// TestFollowGaps runs on a source whose slots may keep only 1 MB of WAL, so a stopped agent's
// slot can be made to lose WAL with a few segment switches and a checkpoint. The heartbeat case
// runs first: it writes little WAL and no checkpoint, so its slot stays intact.
func TestFollowGaps(t *testing.T) {
	src := pgtest.New(t, pgtest.Options{Name: t.Name() + "-src", Settings: map[string]string{
		"max_slot_wal_keep_size": "'1MB'",
		"wal_keep_size":          "0",
	}})
	dst := pgtest.New(t, pgtest.Options{Name: t.Name() + "-dst"})

	t.Run("HeartbeatWithoutPrivilege", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "noheartbeat", workloadSchema)
		e.exec(`CREATE ROLE pgshift_nohb LOGIN REPLICATION`)
		e.exec(`ALTER TABLE accounts OWNER TO pgshift_nohb; ALTER TABLE history OWNER TO pgshift_nohb`)
		// PostgreSQL grants EXECUTE on pg_logical_emit_message to PUBLIC by default (checked on
		// 15); a hardened source revokes it.
		e.exec(`REVOKE EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) FROM PUBLIC`)
		if got := e.query(src, `SELECT has_function_privilege('pgshift_nohb', 'pg_logical_emit_message(boolean, text, text)', 'EXECUTE')`); got != "f" {
			t.Fatalf("the role can still execute pg_logical_emit_message (%s); the test needs it not to", got)
		}
		e.cfg.Source = src.DSN(e.name) + " user=pgshift_nohb"

		// A spill directory of a killed agent in the agent's spill directory goes at start.
		spillDir := t.TempDir()
		stale := filepath.Join(spillDir, fmt.Sprintf("pgshift-spill-%d-42", deadPID(t)))
		if err := os.MkdirAll(stale, 0o700); err != nil {
			t.Fatal(err)
		}

		var logs lockedBuffer
		log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
		a := e.launch(func(ctx context.Context, opts RunOptions) error { return Follow(ctx, e.cfg, opts, log) },
			RunOptions{HeartbeatInterval: 200 * time.Millisecond, SpillDir: spillDir})
		w := e.startWriter(2)
		time.Sleep(1500 * time.Millisecond) // several heartbeat intervals
		// After a reconnect the agent tries heartbeats again but does not repeat the warning.
		e.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'pgshift' AND usename = 'pgshift_nohb'`)
		time.Sleep(2500 * time.Millisecond) // the retry delay and several heartbeat intervals
		if n := w.halt(); n == 0 {
			t.Fatal("the writer committed nothing")
		}
		// Without heartbeats the applied position only moves with published transactions, so
		// the last one is a marker: once it is on the target, everything before it is too.
		e.exec(`INSERT INTO accounts VALUES (100000, 1, 'marker')`)
		deadline := time.Now().Add(60 * time.Second)
		for e.query(dst, `SELECT count(*) FROM accounts WHERE id = 100000`) != "1" {
			select {
			case <-a.done:
				t.Fatalf("agent stopped: %v\n%s", a.err, logs.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("the marker row was not applied within 60 s\n%s", logs.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		e.compare()
		select {
		case <-a.done:
			t.Fatalf("agent stopped: %v", a.err)
		default:
		}
		if n := strings.Count(logs.String(), "cannot write heartbeats on the source"); n != 1 {
			t.Errorf("the missing heartbeat privilege was logged %d times, want once:\n%s", n, logs.String())
		}
		if !strings.Contains(logs.String(), "replication interrupted") {
			t.Errorf("the agent did not reconnect after its walsender was terminated:\n%s", logs.String())
		}
		if !strings.Contains(logs.String(), "GRANT EXECUTE ON FUNCTION pg_logical_emit_message") {
			t.Errorf("the warning does not say how to fix it:\n%s", logs.String())
		}
		if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the spill directory of a killed agent %s was not removed (stat: %v)", stale, err)
		}
		if own, _ := filepath.Glob(filepath.Join(spillDir, fmt.Sprintf("pgshift-spill-%d-*", os.Getpid()))); len(own) != 1 {
			t.Errorf("want one spill directory named after the running agent's PID, found %v", own)
		}
		if err := a.stop(); err != nil {
			t.Fatalf("agent: %v", err)
		}
	})

	t.Run("SlotLostWAL", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "walost", workloadSchema)
		a := e.start(RunOptions{})
		e.exec(`UPDATE accounts SET balance = 7 WHERE id <= 10`)
		e.waitApplied(a)
		e.compare()
		if err := a.stop(); err != nil {
			t.Fatalf("agent: %v", err)
		}
		// While the agent is down, the source writes published changes and moves through
		// several WAL segments; the checkpoint removes them, past what the slot may keep.
		e.lostSlot("pgshift_walost")
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		began := time.Now()
		err := Follow(ctx, e.cfg, RunOptions{MaxRetryDelay: 200 * time.Millisecond}, testLogger(t))
		if ctx.Err() != nil {
			t.Fatalf("follow kept going on a slot that lost WAL (ended with %v after %s)", err, time.Since(began))
		}
		expectWALLost(t, err, "pgshift_walost")
		// Nothing after the loss was applied: the target still has only the rows from before.
		if got := e.query(dst, `SELECT count(*) FROM history`); got != "0" {
			t.Errorf("target history has %s rows, want 0 (nothing may be applied from a slot that lost WAL)", got)
		}
	})
	t.Run("SlotLostWhileStreaming", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "walostlive", workloadSchema)
		a := e.start(RunOptions{})
		e.waitApplied(a)
		// A lock on the target stalls the applier, so the slot's confirmed position stays put
		// while the source moves on; the checkpoint then invalidates the slot under the agent.
		lockCtx, cancel := context.WithCancel(context.Background())
		defer cancel()
		locker, err := db.Endpoint{Role: db.Target, DSN: e.cfg.Target}.Connect(lockCtx)
		if err != nil {
			t.Fatal(err)
		}
		defer locker.Close(context.Background())
		if _, err := locker.Exec(lockCtx, `BEGIN; LOCK TABLE history IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		e.lostSlot("pgshift_walostlive")
		select {
		case <-a.done:
		case <-time.After(30 * time.Second):
			t.Fatal("the agent kept running after its slot lost WAL")
		}
		expectWALLost(t, a.err, "pgshift_walostlive")
		if _, err := locker.Exec(lockCtx, `ROLLBACK`); err != nil {
			t.Fatal(err)
		}
	})
}
