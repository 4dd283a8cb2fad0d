package snapshot

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// TestCopyInSlotSnapshot copies a table in a slot's exported snapshot while rows are inserted
// after the slot was created, then shows a stalled chunk becoming an error instead of a hang.
func TestCopyInSlotSnapshot(t *testing.T) {
	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "snap")
	ctx := context.Background()
	const setup = `CREATE TABLE t (id int PRIMARY KEY, v text);`
	for _, c := range []*pgtest.Cluster{src, dst} {
		if out, err := c.Psql(ctx, "snap", setup); err != nil {
			t.Fatal(err, out)
		}
	}
	if _, err := src.Psql(ctx, "snap", `INSERT INTO t SELECT i, repeat('x', 500) FROM generate_series(1, 20000) i`); err != nil {
		t.Fatal(err)
	}
	srcEP, dstEP := db.Endpoint{Role: db.Source, DSN: srcDSN}, db.Endpoint{Role: db.Target, DSN: dstDSN}
	repl, err := srcEP.Replication(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer repl.Close(ctx)
	slot, err := CreateSlot(ctx, repl, "snap_test", true)
	if err != nil {
		t.Fatal(err)
	}
	// Committed after the snapshot: must not be copied.
	if _, err := src.Psql(ctx, "snap", `INSERT INTO t VALUES (0, 'late')`); err != nil {
		t.Fatal(err)
	}
	sc, err := srcEP.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(ctx)
	tc, err := dstEP.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close(ctx)
	if err := state.Ensure(ctx, tc); err != nil {
		t.Fatal(err)
	}
	// Table states move only in the data phase of a migration (compare-and-set transitions).
	if err := state.Create(ctx, tc, state.Migration{SourceSystemID: "1", SourceDatabase: "snap", Slot: "snap_test",
		Publication: "snap_test", Phase: pgtypes.PhaseData}); err != nil {
		t.Fatal(err)
	}
	tables, err := catalog.Tables(ctx, sc, config.TableFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if err := state.RegisterTables(ctx, tc, []state.TableProgress{{ID: tables[0].ID, Root: tables[0].ID, Kind: state.KindData}}, slot.ConsistentLSN); err != nil {
		t.Fatal(err)
	}
	items := Plan(DataTables(tables), PlanOptions{ChunkBytes: 1 << 20, Jobs: 3})
	res, err := Copy(ctx, srcEP, dstEP, items, CopyOptions{Jobs: 3, Snapshot: slot.SnapshotName, Binary: true})
	if err != nil {
		t.Fatal(err)
	}
	var n, late int
	if err := tc.QueryRow(ctx, `SELECT count(*), count(*) FILTER (WHERE id = 0) FROM t`).Scan(&n, &late); err != nil {
		t.Fatal(err)
	}
	if n != 20000 || late != 0 || res.Rows != 20000 || res.Tables != 1 || len(items) < 3 {
		t.Errorf("copied %d rows (late %d), result %+v, %d items", n, late, res, len(items))
	}
	var st string
	if err := tc.QueryRow(ctx, `SELECT state FROM pgshift.tables WHERE table_name = 't'`).Scan(&st); err != nil || st != state.TableDone {
		t.Errorf("table state %q (%v)", st, err)
	}

	// A chunk that cannot make progress (its table is locked on the target) fails after the
	// stall timeout, and the error says so. (The table is marked pending again first: a done
	// table is never copied again.)
	if _, err := tc.Exec(ctx, `UPDATE pgshift.tables SET state = 'pending' WHERE table_name = 't'`); err != nil {
		t.Fatal(err)
	}
	lock, err := pgx.Connect(ctx, dstDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close(ctx)
	if _, err := lock.Exec(ctx, `BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE`); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = Copy(ctx, srcEP, dstEP, items[:1], CopyOptions{Jobs: 1, Snapshot: slot.SnapshotName, StallTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "no data moved") || time.Since(start) > 30*time.Second {
		t.Errorf("stalled copy: %v after %s", err, time.Since(start))
	}
}
