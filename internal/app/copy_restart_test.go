package app

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/schema"
)

// TestCopyPostDataSurvivesSourceRestart: pg_dump --section=post-data failing because the source
// restarted under it ended the copy with exit 2 (the torture harness found it). The copy now
// asks the source whether it restarted and dumps again; a pg_dump failing on a source that
// stayed up still fails the copy at once.
func TestCopyPostDataSurvivesSourceRestart(t *testing.T) {
	ctx := context.Background()
	src, dst, _, _ := pgtest.Pair(t, "unused")
	cfg := cpDB(t, src, dst, "pdrestart", `CREATE TABLE a (id int PRIMARY KEY, v text); CREATE INDEX a_v ON a (v);
INSERT INTO a SELECT g, g::text FROM generate_series(1, 100) g;`)
	real, err := schema.FindPgDump(ctx, "", 150000)
	if err != nil {
		t.Fatal(err)
	}
	// The wrapper's first post-data dump announces itself, waits for the test to restart the
	// source, and fails as pg_dump does when its server goes away.
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "pg_dump")
	script := fmt.Sprintf(`#!/bin/sh
case "$*" in
*--section=post-data*)
	if [ ! -e %[1]s/first ]; then
		touch %[1]s/first
		while [ ! -e %[1]s/restarted ]; do sleep 0.1; done
		echo "pg_dump: error: query failed: server closed the connection unexpectedly" >&2
		exit 1
	fi;;
esac
exec %[2]s "$@"
`, dir, real.Path)
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(filepath.Dir(real.Path), "pg_dumpall"), filepath.Join(dir, "pg_dumpall")); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if _, err := os.Stat(filepath.Join(dir, "first")); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if err := src.Restart(ctx, false); err != nil {
			t.Error(err)
		}
		os.WriteFile(filepath.Join(dir, "restarted"), nil, 0o644)
	}()
	if _, err := Copy(ctx, cfg, CopyOptions{PgDump: wrapper}, testLogger(t)); err != nil {
		t.Fatalf("copy across a source restart during post-data: %v", err)
	}
	tc := cpConnect(t, cfg.Target)
	if got := cpQuery(t, tc, `SELECT count(*)::text FROM pg_indexes WHERE indexname = 'a_v'`); got != "1" {
		t.Errorf("index a_v on the target: %s, want the post-data dumped again", got)
	}
	if got := cpQuery(t, tc, `SELECT count(*)::text FROM a`); got != "100" {
		t.Errorf("rows on the target: %s, want 100", got)
	}

	// A pg_dump failing while the source stays up is its own failure: reported, not retried
	// (beyond dumping again after the data when the dump beside it failed).
	cfg2 := cpDB(t, src, dst, "pdfail", `CREATE TABLE b (id int PRIMARY KEY);`)
	failDir := t.TempDir()
	failing := filepath.Join(failDir, "pg_dump")
	if err := os.Symlink(filepath.Join(filepath.Dir(real.Path), "pg_dumpall"), filepath.Join(failDir, "pg_dumpall")); err != nil {
		t.Fatal(err)
	}
	script = fmt.Sprintf("#!/bin/sh\ncase \"$*\" in *--section=post-data*) echo 'pg_dump: error: no luck' >&2; echo x >> %s/calls; exit 1;; esac\nexec %s \"$@\"\n", dir, real.Path)
	if err := os.WriteFile(failing, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(ctx, cfg2, CopyOptions{PgDump: failing}, testLogger(t)); err == nil {
		t.Fatal("copy succeeded with a failing pg_dump")
	}
	// Twice: the dump beside the data phase (in the copy's snapshot), whose failure is only
	// warned of, and the one after the data, whose failure is the copy's; no retries.
	calls, _ := os.ReadFile(filepath.Join(dir, "calls"))
	if len(calls) != 4 {
		t.Errorf("post-data dumped %d times on a source that stayed up, want twice (beside the data, then after it)", len(calls)/2)
	}
}

// TestCopyPreDataRaceStartsOver: pg_dump of the schema fails when the source's schema changes
// while it reads the catalogs ("cache lookup failed for index …", found by the torture
// harness with concurrent DDL), and `pgshift copy` exited 2 although nothing had been copied.
// The copy now starts over with a new slot, as running it again would.
func TestCopyPreDataRaceStartsOver(t *testing.T) {
	ctx := context.Background()
	src, dst, _, _ := pgtest.Pair(t, "unused")
	cfg := cpDB(t, src, dst, "prerace", `CREATE TABLE a (id int PRIMARY KEY, v text); INSERT INTO a SELECT g, g::text FROM generate_series(1, 100) g;`)
	real, err := schema.FindPgDump(ctx, "", 150000)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	script := fmt.Sprintf(`#!/bin/sh
case "$*" in
*--create*) ;;
*--section=pre-data*)
	if [ ! -e %[1]s/raced ]; then
		touch %[1]s/raced
		echo "pg_dump: error: query failed: ERROR:  cache lookup failed for index 307451" >&2
		exit 1
	fi;;
esac
exec %[2]s "$@"
`, dir, real.Path)
	if err := os.WriteFile(filepath.Join(dir, "pg_dump"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(filepath.Dir(real.Path), "pg_dumpall"), filepath.Join(dir, "pg_dumpall")); err != nil {
		t.Fatal(err)
	}
	if _, err := Copy(ctx, cfg, CopyOptions{PgDump: filepath.Join(dir, "pg_dump")}, testLogger(t)); err != nil {
		t.Fatalf("copy after a pre-data dump that raced a schema change: %v", err)
	}
	cpCompareDigests(t, oracleDigests(t, cfg.Source), oracleDigests(t, cfg.Target))
	if got := cpQuery(t, cpConnect(t, cfg.Source), `SELECT count(*)::text FROM pg_replication_slots WHERE database = current_database()`); got != "1" {
		t.Errorf("%s slots on the source, want the one of the copy that went through", got)
	}
}

// TestCopyResumesAfterLeaseLost: the copy's lease session is ended on the target during the data
// phase (as a target restart or an administrator would). The copy stops writing at once, takes
// the lease again and resumes; it used to end with "run it again to resume" (torture seed
// 16677859444433994704, a target restart during the copy). The target then holds exactly the
// source's rows.
func TestCopyResumesAfterLeaseLost(t *testing.T) {
	ctx := context.Background()
	src, dst, _, _ := pgtest.Pair(t, "unused")
	cfg := cpDB(t, src, dst, "leasecopy", `CREATE TABLE a (id int PRIMARY KEY, v text);
INSERT INTO a SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 400000) g;`)
	done := make(chan error, 1)
	go func() {
		_, err := Copy(ctx, cfg, CopyOptions{ChunkBytes: 1 << 20, LeaseInterval: 200 * time.Millisecond}, testLogger(t))
		done <- err
	}()
	tc := cpConnect(t, cfg.Target)
	killed := 0
	deadline := time.Now().Add(time.Minute)
	for killed == 0 {
		select {
		case err := <-done:
			t.Fatalf("the copy ended before its lease session could be ended in the data phase: %v", err)
		default:
		}
		var pid int
		err := tc.QueryRow(ctx, `SELECT a.lease_pid FROM pgshift.agent a, pgshift.migration m WHERE m.phase = 'data'`).Scan(&pid)
		if err == nil && pid != 0 {
			if _, err := tc.Exec(ctx, `SELECT pg_terminate_backend($1::int4)`, pid); err == nil {
				killed = pid
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the copy never reached its data phase with a lease session recorded")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the copy ended after its lease session %d was ended: %v", killed, err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("the copy did not finish within 3 minutes after its lease session was ended")
	}
	q := `SELECT count(*) || ' ' || md5(string_agg(a::text, ',' ORDER BY id)) FROM a`
	sc := cpConnect(t, cfg.Source)
	if s, d := cpQuery(t, sc, q), cpQuery(t, tc, q); s != d {
		t.Fatalf("after the resumed copy: source %s, target %s", s, d)
	}
	var pid int
	if err := tc.QueryRow(ctx, `SELECT lease_pid FROM pgshift.agent`).Scan(&pid); err != nil || pid == killed {
		t.Fatalf("lease session after the copy: %d (%v), the ended one was %d", pid, err, killed)
	}
}
