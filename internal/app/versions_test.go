package app

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// versionSchema is the version matrix's database for a source of that major, the same data
// on every version: a keyed table under a TPC-B-like workload (accounts, history), a
// partitioned table (on 12 a publication cannot name the root; on 10 a partitioned table
// cannot have a key, so its leaves have theirs), edge values of built-in types, a table
// without a key under REPLICA IDENTITY FULL, and (12+) a generated column.
func versionSchema(major int) string {
	events := `CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, payload text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');`
	generated := `, total int GENERATED ALWAYS AS (id * 2) STORED`
	if major < 11 {
		events = `CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, payload text) PARTITION BY RANGE (at);
CREATE TABLE events_2024 PARTITION OF events (PRIMARY KEY (id, at)) FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE events_2025 PARTITION OF events (PRIMARY KEY (id, at)) FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');`
	}
	if major < 12 {
		generated = ""
	}
	return workloadSchema + "\n" + events + `
INSERT INTO events SELECT g, date '2024-06-01' + (g % 400), md5(g::text) FROM generate_series(1, 2000) g;
CREATE TABLE edge (id int PRIMARY KEY, n numeric, f float8, ts timestamptz, b bytea, t text, a int[], j jsonb` + generated + `);
INSERT INTO edge VALUES (1, 'NaN', 'NaN', 'infinity', '\x00', 'Grüße, 世界', '{{1,NULL},{3,4}}', '{"a": [1, 2.50]}'),
	(2, '-0.000000000000000000000000000001', '-0', '-infinity', '\x', E'tab\there', '{}', 'null'),
	(3, '123456789012345678901234567890.12345', 1.7976931348623157e308, '0044-03-15 BC', decode(repeat('00ff', 3000), 'hex'), repeat('x', 20000), NULL, NULL);
CREATE TABLE nokey (a int, b text);
ALTER TABLE nokey REPLICA IDENTITY FULL;
INSERT INTO nokey VALUES (1, 'a'), (1, 'a'), (2, NULL);`
}

// versionCase is one source → target pair of the matrix.
type versionCase struct{ src, dst int }

// ciVersionCases are the pairs CI runs: every source the case studies move from into a 15
// target, and 15 into the two newest majors. bench/versions.sh runs every pair.
var ciVersionCases = []versionCase{{12, 15}, {13, 15}, {14, 15}, {15, 15}, {15, 17}, {15, 18}}

// TestVersionMatrix migrates between real servers of different major versions with the real
// binary: `pgshift run` copies under a concurrent workload, is SIGKILLed while following
// (plus a large transaction, which 14+ streams and older servers send whole, and a TRUNCATE),
// resumes, and after
// `pgshift wait` every table is compared by row-text md5 with SQL of the test's own, and
// `pgshift verify` must agree.
func TestVersionMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL servers of several majors (skipped with -short)")
	}
	cases := ciVersionCases
	if env := os.Getenv("PGSHIFT_VERSION_PAIRS"); env != "" {
		// bench/versions.sh runs the full matrix through this: "12:15,13:17".
		cases = nil
		for _, p := range strings.Split(env, ",") {
			var vc versionCase
			if _, err := fmt.Sscanf(strings.TrimSpace(p), "%d:%d", &vc.src, &vc.dst); err != nil {
				t.Fatalf("PGSHIFT_VERSION_PAIRS: %q is not SOURCE:TARGET", p)
			}
			cases = append(cases, vc)
		}
	}
	bin := buildBinary(t)
	for _, vc := range cases {
		t.Run(fmt.Sprintf("%d_to_%d", vc.src, vc.dst), func(t *testing.T) {
			t.Parallel() // go test runs GOMAXPROCS (here 2) of them at once
			runVersionCase(t, bin, vc)
		})
	}
}

func runVersionCase(t *testing.T, bin string, vc versionCase) {
	ctx := context.Background()
	src, dst, _, _ := pgtest.PairVersions(t, "unused", vc.src, vc.dst)
	if src.Major != vc.src || dst.Major != vc.dst {
		t.Fatalf("asked for %d → %d, started %d → %d", vc.src, vc.dst, src.Major, dst.Major)
	}
	if vc.src >= 13 {
		// Small, so the large transaction below is streamed in pieces where the server can.
		if _, err := src.Psql(ctx, "postgres", `ALTER SYSTEM SET logical_decoding_work_mem = '64kB'`); err != nil {
			t.Fatal(err)
		}
		if _, err := src.Psql(ctx, "postgres", `SELECT pg_reload_conf()`); err != nil {
			t.Fatal(err)
		}
	}
	e := emptyTargetEnv(t, src, dst, "vm", versionSchema(vc.src))
	// assess reads every version's catalogs: ready (0) or blockers (1), never "could not run".
	as := e.startProc(bin, "assess", "--format", "json")
	if code := as.wait(t, time.Minute); code != 0 && code != 1 {
		t.Fatalf("pgshift assess on %d → %d: exit %d\n%s", vc.src, vc.dst, code, as.stderr.String())
	}
	w := e.startWriter(2)
	defer func() {
		select {
		case <-w.stop:
		default:
			w.halt()
		}
	}()
	run := func() *proc {
		return e.startProc(bin, "run", "--jobs", "2", "--log-level", "debug")
	}
	// Copy under the workload; the agent goes on following once the copy is done.
	p := run()
	until(t, 2*time.Minute, "the copy to complete", func() bool {
		if !p.running() {
			t.Fatalf("pgshift run ended during the copy (exit %d)\n%s", p.cmd.ProcessState.ExitCode(), p.stderr.String())
		}
		return e.targetInt(`SELECT count(*) FROM pgshift.migration WHERE phase IN ('copied', 'following')`) == 1
	})
	// Follow, killed twice; the large transaction (about 3 MB of changes) lands between kills.
	for round := range 3 {
		time.Sleep(1500 * time.Millisecond)
		if round == 1 {
			e.exec(`INSERT INTO events SELECT 100000 + g, date '2025-02-01' + (g % 300), repeat(md5(g::text), 8) FROM generate_series(1, 10000) g`)
			e.exec(`BEGIN; UPDATE edge SET t = t || '!' WHERE id = 3; DELETE FROM nokey WHERE b IS NULL; INSERT INTO nokey VALUES (3, 'c'); COMMIT`)
		}
		if round == 2 {
			// A TRUNCATE, then rows again, before the last kill: on 10, which does not
			// replicate TRUNCATE, pgshift's trigger captures it.
			e.exec(`BEGIN; TRUNCATE nokey; INSERT INTO nokey VALUES (4, 'd'), (4, 'd'); COMMIT`)
		}
		if !p.running() {
			t.Fatalf("pgshift run ended by itself (exit %d)\n%s", p.cmd.ProcessState.ExitCode(), p.stderr.String())
		}
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		p = run()
	}
	commits := w.halt()
	if commits < 50 {
		t.Fatalf("only %d source transactions during the test", commits)
	}
	waitCmd := e.startProc(bin, "wait", "--timeout", "120s")
	if code := waitCmd.wait(t, 150*time.Second); code != 0 {
		t.Fatalf("pgshift wait: exit %d\n%s\nagent log:\n%s", code, waitCmd.stderr.String(), p.stderr.String())
	}
	e.compare()
	if got := e.query(dst, `SELECT count(*) - count(DISTINCT id) FROM history`); got != "0" {
		t.Fatalf("%s duplicate rows in history", got)
	}
	if got := e.query(dst, `SELECT count(*) FROM events`); got != "12000" {
		t.Fatalf("target has %s rows in events, want 12000", got)
	}
	if got := e.query(dst, `SELECT string_agg(a || b, ',') FROM nokey`); got != "4d,4d" {
		t.Fatalf("target's nokey after the TRUNCATE: %q, want 4d,4d", got)
	}
	verify := e.startProc(bin, "verify", "--mode", "rows")
	if code := verify.wait(t, 2*time.Minute); code != 0 {
		t.Fatalf("pgshift verify: exit %d\n%s", code, verify.stderr.String())
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("agent after SIGTERM: exit %d\n%s", code, p.stderr.String())
	}
	if os.Getenv("PGSHIFT_TEST_LOG") != "" {
		t.Logf("agent log:\n%s", tailLines(p.stderr.String(), 40))
	}
	t.Logf("%d → %d: %d source transactions, 3 SIGKILLs", vc.src, vc.dst, commits)
}

// tailLines returns the last n lines of s.
func tailLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
