package app

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestApplyPlansSurviveTableGrowth: the applier's prepared statements were planned while a
// table was small, where a sequential scan is cheaper than the key index; PostgreSQL then
// keeps that generic plan, and a large transaction that grew the table applied each of its
// UPDATEs with a scan of the whole table — the torture harness saw a 100 MiB streamed
// transaction take minutes where it takes seconds. The applier now prepares its statements
// again every thousand executions, so they are planned for the table as it is: the scans are
// bounded by that, not one per row.
func TestApplyPlansSurviveTableGrowth(t *testing.T) {
	ctx := context.Background()
	src, dst, _, _ := pgtest.Pair(t, "unused")
	// Streamed transactions are applied change by change: one UPDATE statement per row.
	for _, sql := range []string{`ALTER SYSTEM SET logical_decoding_work_mem = '64kB'`, `SELECT pg_reload_conf()`} {
		if _, err := src.Psql(ctx, "postgres", sql); err != nil {
			t.Fatal(err)
		}
	}
	e := newFollowEnv(t, src, dst, "growth", `CREATE TABLE hot (id int PRIMARY KEY, v int, pad text);
CREATE TABLE filler (id int PRIMARY KEY, pad text);
INSERT INTO hot SELECT g, 0, 'x' FROM generate_series(1, 5) g;`)
	e.query(dst, `ANALYZE hot`)
	a := e.start(RunOptions{})
	// Enough single-row updates of the small table, in a streamed transaction, for PostgreSQL
	// to settle on a generic plan of the applier's UPDATE.
	tx := `BEGIN; INSERT INTO filler SELECT g, repeat('f', 200) FROM generate_series(1, 2000) g;`
	for i := range 12 {
		tx += ` UPDATE hot SET v = v + 1 WHERE id = ` + strconv.Itoa(i%5+1) + `;`
	}
	e.exec(tx + ` COMMIT;`)
	e.waitApplied(a)
	scans := func() int {
		time.Sleep(1500 * time.Millisecond) // backends report their counters at most every second
		n, err := strconv.Atoi(e.query(dst, `SELECT seq_scan FROM pg_stat_user_tables WHERE relid = 'hot'::regclass`))
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	before := scans()
	const rows = 6000
	e.exec(`INSERT INTO hot SELECT g, 0, repeat('p', 200) FROM generate_series(6, ` + strconv.Itoa(rows) + `) g`)
	e.exec(`UPDATE hot SET v = v + 1`)
	e.waitApplied(a)
	d := scans() - before
	t.Logf("sequential scans of hot on the target while applying %d UPDATEs: %d", rows, d)
	if d > 1100 {
		t.Errorf("the target scanned table hot %d times to apply %d UPDATEs by key: the applier's statements do not use the key's index", d, rows)
	}
	e.compareOnly()
}
