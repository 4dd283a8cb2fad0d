package app

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// TestCopyTableRewrittenAfterSnapshot: a table rewritten on the source (here ALTER TABLE …
// TYPE with USING, which keeps the type and so sends nothing down the stream) after the
// copy's snapshot was taken but before a worker read it. The snapshot cannot see the rows of
// the new file: the copy read the table as empty and reported success (found by the torture
// harness, class rewrite). Now the copy notices the changed storage and copies the table
// again in a new snapshot.
func TestCopyTableRewrittenAfterSnapshot(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "rewrite_unused")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// One worker copies the big table first (largest first), long enough for the rewrite of
	// the small one to land before the worker reaches it. big is an inheritance child (in
	// another schema) of the tiny zparent (listed after small), which is copied last: the parent is copied again
	// with small, and emptying it on the target must leave big's finished copy alone (the
	// torture harness found "TRUNCATE ONLY small, zparent" emptying big too: ONLY binds to one
	// name).
	cfg := cpDB(t, src, dst, "rewrite", `
		CREATE TABLE zparent (id int PRIMARY KEY, pad text);
		INSERT INTO zparent VALUES (0, 'p');
		CREATE SCHEMA other;
		CREATE TABLE other.big (id int PRIMARY KEY, pad text) INHERITS (zparent);
		INSERT INTO other.big SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 150000) g;
		CREATE TABLE small (id int PRIMARY KEY, n int8 NOT NULL);
		INSERT INTO small SELECT g, g FROM generate_series(1, 300) g;`)
	cfg.Jobs = 1

	rewritten := make(chan error, 1)
	go func() {
		conn := cpConnect(t, cfg.Source)
		for ctx.Err() == nil {
			var n int
			if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&n); err != nil {
				rewritten <- err
				return
			}
			if n > 0 {
				_, err := conn.Exec(ctx, `ALTER TABLE small ALTER COLUMN n TYPE int8 USING n + 0`)
				rewritten <- err
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
		rewritten <- ctx.Err()
	}()
	sum, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t))
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	if err := <-rewritten; err != nil {
		t.Fatalf("rewrite on the source: %v", err)
	}
	t.Logf("copied again in a new snapshot: %v", sum.Recopied)
	if got := allRows(t, cfg.Target, "small"); got != "300" {
		t.Errorf("target has %s of 300 rows of the rewritten table", got)
	}
	if got := allRows(t, cfg.Target, "other.big"); got != "150000" {
		t.Errorf("target has %s of 150000 rows of the inheritance child copied before its parent was copied again", got)
	}
	cpCompareDigests(t, oracleDigests(t, cfg.Source), oracleDigests(t, cfg.Target))
	if !slices.Contains(sum.Recopied, pgtypes.TableID{Schema: "public", Name: "small"}) {
		t.Errorf("the copy did not copy public.small again in a new snapshot (recopied %v): either the rewrite came too late for this test or it was not noticed", sum.Recopied)
	}
}

// TestCopyTableTruncatedOverAndOver: an application TRUNCATEs a table every few milliseconds
// (a queue, a staging table) while the copy runs. Each TRUNCATE after a snapshot made the
// table unreadable in it, and the copy gave up after five new snapshots (the torture harness
// found it): the moment between a new snapshot and the lock its worker took was always hit.
// Now a table rewritten again after a new snapshot is copied in one session holding it in
// SHARE mode from before its own snapshot: the next TRUNCATE waits for the copy.
func TestCopyTableTruncatedOverAndOver(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "churn_unused")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cfg := cpDB(t, src, dst, "churn", `
		CREATE TABLE big (id int PRIMARY KEY, pad text);
		INSERT INTO big SELECT g, repeat(md5(g::text), 16) FROM generate_series(1, 100000) g;
		CREATE TABLE churn (id int PRIMARY KEY, n int8 NOT NULL);
		INSERT INTO churn SELECT g, g FROM generate_series(1, 50) g;`)
	cfg.Jobs = 1
	stop := make(chan struct{})
	churned := make(chan int, 1)
	go func() {
		conn := cpConnect(t, cfg.Source)
		n := 0
		for {
			select {
			case <-stop:
				churned <- n
				return
			default:
			}
			if _, err := conn.Exec(ctx, `BEGIN; TRUNCATE churn; INSERT INTO churn SELECT g, g FROM generate_series(1, 50) g; COMMIT`); err != nil && ctx.Err() == nil {
				t.Errorf("churn: %v", err)
			}
			n++
			time.Sleep(5 * time.Millisecond)
		}
	}()
	sum, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t))
	if err != nil {
		close(stop)
		t.Fatalf("copy under %d TRUNCATEs: %v", <-churned, err)
	}
	// Following from the copy's consistent point, with the churn going on: the changes of the
	// churned table before its own snapshot position are skipped, the later ones applied.
	fctx, stopFollow := context.WithCancel(ctx)
	followed := make(chan error, 1)
	go func() {
		followed <- Follow(fctx, cfg, RunOptions{HeartbeatInterval: 500 * time.Millisecond, MonitorInterval: 500 * time.Millisecond}, testLogger(t))
	}()
	time.Sleep(time.Second)
	close(stop)
	n := <-churned
	if _, err := Wait(ctx, cfg, time.Minute, testLogger(t)); err != nil {
		t.Fatalf("wait: %v", err)
	}
	stopFollow()
	if err := <-followed; err != nil {
		t.Fatalf("follow: %v", err)
	}
	t.Logf("%d TRUNCATEs during the copy and follow; tables copied again: %v", n, sum.Recopied)
	if !slices.Contains(sum.Recopied, pgtypes.TableID{Schema: "public", Name: "churn"}) {
		t.Errorf("churn was not copied again (recopied %v): the TRUNCATEs missed the copy", sum.Recopied)
	}
	cpCompareDigests(t, oracleDigests(t, cfg.Source), oracleDigests(t, cfg.Target))
	// The recorded snapshot position of the churned table lies past the copy's consistent
	// point: follow skips its changes before it, and they are in its copy.
	tc := cpConnect(t, cfg.Target)
	if got := cpQuery(t, tc, `SELECT (snapshot_lsn > (SELECT consistent_lsn FROM pgshift.migration))::text FROM pgshift.tables WHERE table_name = 'churn'`); got != "true" {
		t.Errorf("snapshot_lsn of churn past the consistent point: %s", got)
	}
}
