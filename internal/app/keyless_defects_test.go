package app

import (
	"context"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/state"
)

// keylessSchema: a table without key, one whose primary key is DEFERRABLE (no identity
// PostgreSQL uses), an insert-only table the user set to REPLICA IDENTITY NOTHING, and
// identical duplicate rows.
const keylessSchema = `
CREATE TABLE events (at int, kind text, payload jsonb);
CREATE INDEX events_at ON events (at);
INSERT INTO events SELECT g % 50, 'k' || (g % 3), jsonb_build_object('g', g) FROM generate_series(1, 500) g;
INSERT INTO events VALUES (7, 'dup', '{}'), (7, 'dup', '{}');
CREATE TABLE deferred (id int PRIMARY KEY DEFERRABLE, v text);
INSERT INTO deferred SELECT g, 'v' FROM generate_series(1, 20) g;
CREATE TABLE insert_only (id int PRIMARY KEY, v text);
ALTER TABLE insert_only REPLICA IDENTITY NOTHING;
INSERT INTO insert_only VALUES (1, 'a');`

// TestCopyKeylessTables: pgbench's own pgbench_history (no key) and other keyless tables are
// refused with the flag named; with --replica-identity-full pgshift sets FULL on the source
// (recorded there), the migration follows their UPDATEs and DELETEs (duplicates one row at a
// time), REPLICA IDENTITY NOTHING is accepted with a warning, and
// state.RestoreReplicaIdentities gives both sides their original identities back. Before the
// fix every keyless table was refused with no way forward but altering the source by hand.
func TestCopyKeylessTables(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := emptyTargetEnv(t, src, dst, "bench", keylessSchema)
	ctx := context.Background()
	pgbench := filepath.Join(src.BinDir(), "pgbench")
	if out, err := exec.Command(pgbench, "-i", "-s", "1", "-q", "-h", src.Host, "-p", strconv.Itoa(src.Port), "-U", src.User, "bench").CombinedOutput(); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	_, err := Copy(ctx, e.cfg, CopyOptions{NoProgress: true}, testLogger(t))
	for _, want := range []string{"public.pgbench_history", "public.events", "public.deferred", "--replica-identity-full", "nothing was created"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("copy without --replica-identity-full: want an error naming %q, got %v", want, err)
		}
	}
	if strings.Contains(err.Error(), "insert_only") {
		t.Errorf("REPLICA IDENTITY NOTHING refused: %v", err)
	}
	if got := e.query(dst, `SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift'`); got != "0" {
		t.Fatalf("the refused copy created pgshift's state on the target")
	}

	e.cfg.ReplicaIdentityFull = true
	sum, err := Copy(ctx, e.cfg, CopyOptions{NoProgress: true}, testLogger(t))
	if err != nil {
		t.Fatalf("copy --replica-identity-full: %v", err)
	}
	warned := strings.Join(sum.Warnings, "\n")
	for _, want := range []string{"insert_only", "REPLICA IDENTITY NOTHING", "pgbench_history has no key"} {
		if !strings.Contains(warned, want) {
			t.Errorf("warnings lack %q:\n%s", want, warned)
		}
	}
	const identSQL = `SELECT string_agg(relname || '=' || relreplident::text, ' ' ORDER BY relname) FROM pg_class
		WHERE relname IN ('pgbench_history', 'events', 'deferred', 'insert_only', 'pgbench_accounts')`
	if got := e.query(src, identSQL); got != "deferred=f events=f insert_only=n pgbench_accounts=d pgbench_history=f" {
		t.Errorf("source identities after copy: %s", got)
	}

	a := e.launch(func(ctx context.Context, opts RunOptions) error { return Run(ctx, e.cfg, opts, testLogger(t)) }, RunOptions{})
	until(t, 60*time.Second, "the agent to follow", func() bool { return e.phase() == "following" })
	if out, err := exec.Command(pgbench, "-t", "300", "-c", "2", "-n", "-h", src.Host, "-p", strconv.Itoa(src.Port), "-U", src.User, "bench").CombinedOutput(); err != nil {
		t.Fatalf("pgbench: %v\n%s", err, out)
	}
	e.exec(`UPDATE pgbench_history SET delta = delta + 1 WHERE tid = 1;
		DELETE FROM pgbench_history WHERE bid = 1 AND aid % 3 = 0;
		UPDATE events SET kind = 'changed' WHERE at = 3;
		DELETE FROM events WHERE ctid = (SELECT ctid FROM events WHERE kind = 'dup' LIMIT 1);
		UPDATE events SET payload = '{"new": true}' WHERE kind = 'dup';
		UPDATE deferred SET v = 'w' WHERE id < 5; DELETE FROM deferred WHERE id = 20;
		INSERT INTO insert_only VALUES (2, 'b');`)
	e.waitApplied(a)
	e.compare()
	if got := e.query(dst, `SELECT count(*) > 0 FROM pgbench_history`); got != "t" {
		t.Errorf("pgbench wrote no history rows on the target: the test exercised nothing")
	}
	if err := a.stop(); err != nil {
		t.Fatalf("agent: %v", err)
	}

	// finish's part: the original identities back, on both sides, once.
	sc, tc := cpConnect(t, e.cfg.Source), cpConnect(t, e.cfg.Target)
	res, err := state.RestoreReplicaIdentities(ctx, sc, tc)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Restored) != 3 || len(res.Left) != 0 {
		t.Errorf("restore: %+v", res)
	}
	const want = "deferred=d events=d insert_only=n pgbench_accounts=d pgbench_history=d"
	for _, c := range []*pgtest.Cluster{src, dst} {
		if got := e.query(c, identSQL); got != want {
			t.Errorf("identities after restore: %s, want %s", got, want)
		}
	}
	again, err := state.RestoreReplicaIdentities(ctx, sc, tc)
	if err != nil || len(again.Restored) != 0 || len(again.Left) != 0 {
		t.Errorf("second restore: %+v, %v", again, err)
	}
}
