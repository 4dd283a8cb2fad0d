package verify

import (
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestKeylessVerifySpeed compares a keyless table (pgbench_history's shape) and a keyed one of
// the same rows, in checksum mode with the default options, and logs the time per row of each:
// a keyless table must verify about as fast per row as a keyed one (125,000 keyless rows took
// 20 s here, 1,000,000 keyed ones 6 s). Both sides hold the same rows, plus one extra
// duplicate on the target, which must be found.
func TestKeylessVerifySpeed(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	src, dst, _, _ := pgtest.Pair(t, "unused")
	const schema = `
CREATE TABLE hist (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
INSERT INTO hist SELECT g % 10, g % 1, g, g % 5000 - 2500, '2024-01-01'::timestamp + g * interval '1 second', NULL FROM generate_series(1, 250000) g;
CREATE TABLE keyed (id int PRIMARY KEY, tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
INSERT INTO keyed SELECT g, g % 10, g % 1, g, g % 5000 - 2500, '2024-01-01'::timestamp + g * interval '1 second', NULL FROM generate_series(1, 250000) g;
ANALYZE;`
	e := newPairEnv(t, src, dst, "speed", schema)
	for _, c := range []struct {
		extra bool
		mode  Mode
	}{{false, ModeChecksum}, {true, ModeChecksum}, {true, ModeRows}} {
		extra := c.extra
		if extra && c.mode == ModeChecksum {
			e.target(`INSERT INTO hist SELECT * FROM hist WHERE aid = 77`)
		}
		for _, table := range []string{"public.hist", "public.keyed"} {
			opts := Options{Mode: c.mode, Filter: config.TableFilter{Include: []string{table}}}
			start := time.Now()
			rep := e.run(opts)
			took := time.Since(start)
			tr := tableResult(rep, table)
			t.Logf("%s %s mode (target with an extra duplicate: %t): %d rows in %s (%.1f µs/row), %d chunks, %d differences", table, c.mode, extra, tr.SourceRows,
				took.Round(time.Millisecond), float64(took.Microseconds())/float64(tr.SourceRows), tr.Chunks, rep.Summary.RowDifferences)
			want := int64(0)
			if extra && table == "public.hist" {
				want = 1
			}
			if rep.Summary.RowDifferences != want {
				t.Errorf("%s: %d differences, want %d", table, rep.Summary.RowDifferences, want)
			}
		}
	}
}
