package compare

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtest"
)

func TestParse(t *testing.T) {
	qs, err := Parse(`-- queries of the shop
-- name: one account
SELECT abalance FROM pgbench_accounts WHERE aid = 4242;

-- name:   branch totals
-- the busiest report
SELECT bid, sum(abalance)
FROM pgbench_accounts GROUP BY bid;
`)
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 2 || qs[0].Name != "one account" || qs[1].Name != "branch totals" {
		t.Fatalf("queries = %+v", qs)
	}
	if qs[0].SQL != "SELECT abalance FROM pgbench_accounts WHERE aid = 4242" || !strings.HasSuffix(qs[1].SQL, "GROUP BY bid") {
		t.Errorf("SQL = %q, %q", qs[0].SQL, qs[1].SQL)
	}
	if qs, err := Parse("SELECT 1"); err != nil || len(qs) != 1 || qs[0].Name != "query" {
		t.Errorf("a file without headers: %+v, %v", qs, err)
	}
	for _, bad := range []string{"", "-- just a comment\n", "-- name: a\n-- nothing\n-- name: b\nSELECT 1", "-- name: a\nSELECT 1;\n-- name: a\nSELECT 2"} {
		if _, err := Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
}

func TestSummarise(t *testing.T) {
	ms := func(n ...int) []time.Duration {
		out := make([]time.Duration, len(n))
		for i, v := range n {
			out[i] = time.Duration(v) * time.Millisecond
		}
		return out
	}
	p50, p95, mx := summarise(ms(5, 1, 3, 2, 4))
	if p50 != 3*time.Millisecond || p95 != 5*time.Millisecond || mx != 5*time.Millisecond {
		t.Errorf("odd: %v %v %v", p50, p95, mx)
	}
	p50, p95, _ = summarise(ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 100))
	if p50 != 10500*time.Microsecond || p95 != 19*time.Millisecond {
		t.Errorf("20 runs: p50 %v, p95 %v", p50, p95)
	}
}

// TestCompareMissingIndex: pgbench tables on both sides, the accounts key dropped on the
// target. The key lookup is flagged slower and the missing index is named; the report of a
// query the target runs as fast is clean; nothing is left open or written on either side.
func TestCompareMissingIndex(t *testing.T) {
	ctx := context.Background()
	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "bench")
	for _, c := range []struct {
		cl  *pgtest.Cluster
		dsn string
	}{{src, srcDSN}, {dst, dstDSN}} {
		out, err := exec.CommandContext(ctx, filepath.Join(c.cl.ClientBinDir(), "pgbench"), "-i", "-s", "2", "-q", c.dsn).CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench -i: %v: %s", err, out)
		}
	}
	if _, err := dst.Psql(ctx, "bench", `ALTER TABLE pgbench_accounts DROP CONSTRAINT pgbench_accounts_pkey; ANALYZE pgbench_accounts`); err != nil {
		t.Fatal(err)
	}
	sc, err := pgx.Connect(ctx, srcDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(ctx)
	tc, err := pgx.Connect(ctx, dstDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close(ctx)
	queries := []Query{
		{Name: "account", SQL: "SELECT abalance FROM pgbench_accounts WHERE aid = 4242"},
		{Name: "branches", SQL: "SELECT bid, bbalance FROM pgbench_branches ORDER BY bid"},
		{Name: "broken", SQL: "SELECT nosuchcolumn FROM pgbench_branches"},
	}
	res, err := Run(ctx, Side{"source", sc}, Side{"target", tc}, queries, Options{Runs: 5, Explain: true})
	if err != nil {
		t.Fatal(err)
	}
	acc, br, broken := res[0], res[1], res[2]
	if !acc.Slower || acc.Ratio < 5 {
		t.Errorf("key lookup without its index: slower=%v ratio %.1f (source %v, target %v), want flagged", acc.Slower, acc.Ratio, acc.Source.P50, acc.Target.P50)
	}
	if acc.Plans == nil || !strings.Contains(strings.Join(acc.Plans.Differences, "\n"), "Seq Scan") {
		t.Errorf("plan differences %+v: want the target's Seq Scan named", acc.Plans)
	}
	if acc.Plans == nil || !strings.Contains(strings.Join(acc.Plans.Causes, "\n"), "missing index on the target: pgbench_accounts_pkey") {
		t.Errorf("likely causes %+v: want the missing index named", acc.Plans)
	}
	if br.Slower || br.Err != "" || br.RowsDiffer {
		t.Errorf("branches: %+v, want not flagged", br)
	}
	if broken.Err == "" || !strings.Contains(broken.Err, "nosuchcolumn") {
		t.Errorf("broken query: error %q, want it reported", broken.Err)
	}
	var b strings.Builder
	if err := Write(&b, Report{Runs: 5, Ratio: 1.5, Results: res}, FormatText); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + b.String())
	if !strings.Contains(b.String(), "SLOWER") || !strings.Contains(b.String(), "likely cause: missing index") {
		t.Errorf("text report:\n%s", b.String())
	}
	// Read-only: a writing query is refused, and no transaction is left open.
	w, err := Run(ctx, Side{"source", sc}, Side{"target", tc}, []Query{{Name: "w", SQL: "DELETE FROM pgbench_history"}}, Options{Runs: 1})
	if err != nil || !strings.Contains(w[0].Err, "read-only") {
		t.Errorf("a DELETE: %+v, %v; want refused by the read-only transaction", w, err)
	}
	for _, c := range []*pgx.Conn{sc, tc} {
		if st := c.PgConn().TxStatus(); st != 'I' {
			t.Errorf("session left in transaction status %c", st)
		}
	}
}

// TestTopStatements: without a queries file the source's own top statements are compared, only
// those that run as they are (no parameters, reads only); a source without pg_stat_statements
// is told how to get it.
func TestTopStatements(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL (skipped with -short)")
	}
	ctx := context.Background()
	cl, err := pgtest.Start(ctx, pgtest.Options{Name: t.Name(), Settings: map[string]string{"shared_preload_libraries": "'pg_stat_statements'"}})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	dsn, err := cl.CreateDB(ctx, "top")
	if err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	if _, err := TopStatements(ctx, c, 10); err == nil || !strings.Contains(err.Error(), "CREATE EXTENSION pg_stat_statements") {
		t.Errorf("without the extension: %v, want the fix", err)
	}
	if _, err := c.Exec(ctx, `CREATE EXTENSION pg_stat_statements; CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, g::text FROM generate_series(1, 1000) g`); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := c.Exec(ctx, `SELECT count(*) FROM t WHERE v IS NOT NULL`); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `SELECT v FROM t WHERE id = $1`, i); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Exec(ctx, `UPDATE t SET v = v WHERE id = 1`); err != nil {
			t.Fatal(err)
		}
	}
	qs, err := TopStatements(ctx, c, 10)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, q := range qs {
		got = append(got, q.SQL)
		if strings.Contains(q.SQL, "$1") || strings.Contains(strings.ToUpper(q.SQL), "UPDATE") {
			t.Errorf("statement %q taken: it needs parameters or writes", q.SQL)
		}
	}
	if !strings.Contains(strings.Join(got, "\n"), "FROM t WHERE v IS NOT NULL") {
		t.Errorf("statements %q: want the count query", got)
	}
}
