// Command follow benchmarks the follow phase: `pgshift run` against native logical replication
// (a subscription), one after the other in one run, on fresh local clusters with the same data
// and the same load. See bench/follow.sh for how to run it and bench/RESULTS.md for results.
//
// For each follower it measures, with SQL of its own on both servers:
//   - during `pgbench -c 8 -j 2 -T 120` on the source: source TPS, and every second the lag in
//     seconds (source now() − the newest pgbench_history.mtime on the target: the start time
//     of the newest applied transaction) and in bytes (source pg_current_wal_lsn() − the end
//     LSN of the last applied source transaction: pgshift.position / the subscription's
//     replication origin);
//   - probe lag, the measure: a row inserted into lag_probe every 100 ms on the source
//     (created_at = the source's clock_timestamp()) during the load, and the target polled every
//     millisecond for the newest probe id; a probe's lag is the time of the first poll that saw
//     it minus its created_at (one machine, one clock). p50/p99/max over all probes. (The
//     target's commit timestamps cannot be used: a subscription's apply worker records the
//     source's commit time as its own.);
//   - catch-up: from the end of pgbench until the target's pgbench_history has as many rows as
//     the source's;
//   - backlog replay: with the follower stopped, pgbench runs a fixed number of transactions
//     (4 row changes each, 1M changes by default); the follower is started and timed until the
//     target has every row.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

type result struct {
	Follower        string  `json:"follower"`
	TPS             float64 `json:"source_tps"`
	LagP50          float64 `json:"lag_seconds_p50"`
	LagP99          float64 `json:"lag_seconds_p99"`
	LagMax          float64 `json:"lag_seconds_max"`
	LagBytesP50     float64 `json:"lag_bytes_p50"`
	LagBytesP99     float64 `json:"lag_bytes_p99"`
	LagBytesMax     float64 `json:"lag_bytes_max"`
	CatchUpSeconds  float64 `json:"catch_up_seconds"`
	BacklogChanges  int     `json:"backlog_changes"`
	BacklogSeconds  float64 `json:"backlog_replay_seconds"`
	BacklogRate     float64 `json:"backlog_changes_per_second"`
	Samples         int     `json:"samples"`
	SourceWALBytes  int64   `json:"source_wal_bytes_during_load"`
	HistoryRowsLoad int64   `json:"history_rows_after_load"`
	ProbeP50MS      float64 `json:"probe_lag_ms_p50"`
	ProbeP99MS      float64 `json:"probe_lag_ms_p99"`
	ProbeMaxMS      float64 `json:"probe_lag_ms_max"`
	Probes          int     `json:"probes"`
	// BacklogCPU is the CPU seconds each role used during the backlog replay (cpu.go).
	BacklogCPU map[string]float64 `json:"backlog_cpu_seconds"`
}

func main() {
	bin := flag.String("pgshift", "bin/pgshift", "pgshift binary")
	scale := flag.Int("scale", 10, "pgbench scale")
	duration := flag.Int("T", 120, "pgbench duration in seconds")
	clients := flag.Int("c", 8, "pgbench clients")
	threads := flag.Int("j", 2, "pgbench threads")
	backlog := flag.Int("backlog", 1_000_000, "row changes in the backlog replay (4 per pgbench transaction)")
	only := flag.String("only", "", "run only this follower: pgshift or native")
	flag.Parse()
	var results []result
	for _, f := range []string{"pgshift", "native"} {
		if *only != "" && *only != f {
			continue
		}
		r, err := runOne(f, *bin, *scale, *duration, *clients, *threads, *backlog)
		if err != nil {
			log.Fatalf("%s: %v", f, err)
		}
		results = append(results, r)
		b, _ := json.Marshal(r)
		fmt.Println(string(b))
	}
	fmt.Println()
	fmt.Println("| follower | probe lag p50 / p99 / max (ms) | probes |")
	fmt.Println("|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %s | %.1f / %.1f / %.1f | %d |\n", r.Follower, r.ProbeP50MS, r.ProbeP99MS, r.ProbeMaxMS, r.Probes)
	}
	if len(results) == 2 {
		p, n := results[0], results[1]
		fmt.Printf("\nprobe p50: pgshift %.1f ms vs native %.1f ms (goal ≤ 2 × native + 5 = %.1f ms); p99: %.2f × native (goal ≤ 1.2); backlog replay: %.2f × native (goal ≥ 1.3)\n\n",
			p.ProbeP50MS, n.ProbeP50MS, 2*n.ProbeP50MS+5, p.ProbeP99MS/n.ProbeP99MS, p.BacklogRate/n.BacklogRate)
	}
	fmt.Println("CPU seconds during the backlog replay, by process role:")
	for _, r := range results {
		roles := make([]string, 0, len(r.BacklogCPU))
		for k := range r.BacklogCPU {
			roles = append(roles, k)
		}
		slices.Sort(roles)
		var parts []string
		total := 0.0
		for _, k := range roles {
			parts = append(parts, fmt.Sprintf("%s %.1f", k, r.BacklogCPU[k]))
			total += r.BacklogCPU[k]
		}
		fmt.Printf("  %s (%.1f s wall): %s; total %.1f (%.2f cores)\n", r.Follower, r.BacklogSeconds, strings.Join(parts, ", "), total, total/max(r.BacklogSeconds, 0.001))
	}
	fmt.Println()
	fmt.Printf("| follower | source TPS | lag p50 / p99 / max (s) | lag p50 / p99 / max (bytes) | catch-up after load (s) | backlog replay: changes/s (s for %d) |\n", *backlog)
	fmt.Println("|---|---|---|---|---|---|")
	for _, r := range results {
		fmt.Printf("| %s | %.0f | %.2f / %.2f / %.2f | %s / %s / %s | %.1f | %.0f (%.1f) |\n", r.Follower, r.TPS, r.LagP50, r.LagP99, r.LagMax,
			human(r.LagBytesP50), human(r.LagBytesP99), human(r.LagBytesMax), r.CatchUpSeconds, r.BacklogRate, r.BacklogSeconds)
	}
}

func human(b float64) string {
	switch {
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.0f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

// settings make both clusters durable like production ones (pgtest turns fsync off for tests).
var settings = map[string]string{"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on", "max_wal_size": "4GB"}

func runOne(follower, bin string, scale, duration, clients, threads, backlog int) (result, error) {
	res := result{Follower: follower, BacklogChanges: backlog}
	ctx := context.Background()
	src, err := pgtest.Start(ctx, pgtest.Options{Name: "bench-follow-src", Settings: settings})
	if err != nil {
		return res, err
	}
	defer src.Stop()
	dst, err := pgtest.Start(ctx, pgtest.Options{Name: "bench-follow-dst", Settings: settings})
	if err != nil {
		return res, err
	}
	defer dst.Stop()
	const dbname = "bench"
	srcDSN, err := src.CreateDB(ctx, dbname)
	if err != nil {
		return res, err
	}
	dstDSN, err := dst.CreateDB(ctx, dbname)
	if err != nil {
		return res, err
	}
	pgbench := func(args ...string) (string, error) {
		full := append([]string{"-h", src.Host, "-p", strconv.Itoa(src.Port), "-U", "postgres"}, args...)
		full = append(full, dbname)
		out, err := exec.Command(filepath.Join(src.BinDir(), "pgbench"), full...).CombinedOutput()
		return string(out), err
	}
	log.Printf("%s: pgbench -i -s %d", follower, scale)
	if out, err := pgbench("-i", "-q", "-s", strconv.Itoa(scale)); err != nil {
		return res, fmt.Errorf("pgbench -i: %v\n%s", err, out)
	}
	if _, err := src.Psql(ctx, dbname, `CREATE TABLE lag_probe (id bigint PRIMARY KEY, created_at timestamptz NOT NULL)`); err != nil {
		return res, err
	}
	// The same starting copy for both followers: a dump restored before any change is made.
	dump := exec.Command("bash", "-c", fmt.Sprintf("%q -h %s -p %d -U postgres %s | %q -q -h %s -p %d -U postgres -d %s -v ON_ERROR_STOP=1",
		filepath.Join(src.BinDir(), "pg_dump"), src.Host, src.Port, dbname, filepath.Join(dst.BinDir(), "psql"), dst.Host, dst.Port, dbname))
	if out, err := dump.CombinedOutput(); err != nil {
		return res, fmt.Errorf("copy: %v\n%s", err, out)
	}
	// Lag probe: the newest applied pgbench transaction's start time, cheaply.
	if _, err := dst.Psql(ctx, dbname, `CREATE INDEX ON pgbench_history (mtime)`); err != nil {
		return res, err
	}
	if _, err := src.Psql(ctx, dbname, `CREATE PUBLICATION bench_pub FOR ALL TABLES`); err != nil {
		return res, err
	}
	scon, err := pgx.Connect(ctx, srcDSN)
	if err != nil {
		return res, err
	}
	defer scon.Close(ctx)
	tcon, err := pgx.Connect(ctx, dstDSN)
	if err != nil {
		return res, err
	}
	defer tcon.Close(ctx)

	var start, stop func() error
	alive := func() error { return nil }
	var applied func() (pgtypes.LSN, error)
	switch follower {
	case "pgshift":
		var lsn string
		if err := scon.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot('bench_slot', 'pgoutput')`).Scan(&lsn); err != nil {
			return res, err
		}
		consistent, _ := pgtypes.ParseLSN(lsn)
		info, err := catalog.Server(ctx, scon)
		if err != nil {
			return res, err
		}
		if err := state.Ensure(ctx, tcon); err != nil {
			return res, err
		}
		if err := state.Create(ctx, tcon, state.Migration{SourceSystemID: info.SystemID, SourceDatabase: dbname, Slot: "bench_slot",
			Publication: "bench_pub", ConsistentLSN: consistent, Phase: pgtypes.PhaseCopied}); err != nil {
			return res, err
		}
		var cmd *exec.Cmd
		logFile, err := os.Create(filepath.Join(os.TempDir(), "pgshift-bench-follow-agent.log"))
		if err != nil {
			return res, err
		}
		defer logFile.Close()
		exited := make(chan error, 1)
		start = func() error {
			cmd = exec.Command(bin, "run", "--source", srcDSN, "--target", dstDSN)
			cmd.Stderr = logFile
			if err := cmd.Start(); err != nil {
				return err
			}
			exited = make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			return nil
		}
		stop = func() error {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			return <-exited
		}
		alive = func() error {
			select {
			case err := <-exited:
				return fmt.Errorf("pgshift run exited (%v); see %s", err, logFile.Name())
			default:
				return nil
			}
		}
		applied = func() (pgtypes.LSN, error) {
			p, err := state.LoadPosition(ctx, tcon)
			return p.AppliedLSN, err
		}
	case "native":
		_, err := tcon.Exec(ctx, fmt.Sprintf(`CREATE SUBSCRIPTION bench_sub CONNECTION '%s' PUBLICATION bench_pub WITH (copy_data = false, enabled = false)`, srcDSN))
		if err != nil {
			return res, err
		}
		start = func() error { _, err := tcon.Exec(ctx, `ALTER SUBSCRIPTION bench_sub ENABLE`); return err }
		stop = func() error { _, err := tcon.Exec(ctx, `ALTER SUBSCRIPTION bench_sub DISABLE`); return err }
		applied = func() (pgtypes.LSN, error) {
			var s *string
			err := tcon.QueryRow(ctx, `SELECT remote_lsn::text FROM pg_replication_origin_status s
				JOIN pg_subscription sub ON s.external_id = 'pg_' || sub.oid WHERE sub.subname = 'bench_sub'`).Scan(&s)
			if err != nil || s == nil {
				return 0, err
			}
			return pgtypes.ParseLSN(*s)
		}
	}
	if err := start(); err != nil {
		return res, err
	}
	time.Sleep(3 * time.Second)

	// Phase 1: follow under load.
	log.Printf("%s: pgbench -c %d -j %d -T %d on the source while following", follower, clients, threads, duration)
	var walStart string
	_ = scon.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&walStart)
	type sample struct{ secs, bytes float64 }
	var samples []sample
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			var now time.Time
			var cur string
			if err := scon.QueryRow(ctx, `SELECT clock_timestamp(), pg_current_wal_lsn()::text`).Scan(&now, &cur); err != nil {
				log.Printf("sample: %v", err)
				continue
			}
			var newest *time.Time
			if err := tcon.QueryRow(ctx, `SELECT max(mtime) FROM pgbench_history`).Scan(&newest); err != nil {
				log.Printf("sample: %v", err)
				continue
			}
			a, err := applied()
			if err != nil {
				log.Printf("sample: %v", err)
				continue
			}
			c, _ := pgtypes.ParseLSN(cur)
			s := sample{bytes: math.Max(float64(int64(c)-int64(a)), 0)}
			if newest != nil {
				s.secs = math.Max(now.Sub(*newest).Seconds(), 0)
			} else {
				s.secs = float64(len(samples) + 1)
			}
			samples = append(samples, s)
		}
	}()
	probed := make(chan error, 1)
	go func() { probed <- probe(ctx, srcDSN, done) }()
	var seen map[int64]time.Time
	polled := make(chan error, 1)
	pollDone := make(chan struct{})
	go func() {
		var err error
		seen, err = pollProbes(ctx, dstDSN, pollDone)
		polled <- err
	}()
	out, err := pgbench("-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads), "-T", strconv.Itoa(duration))
	loadEnd := time.Now()
	close(done)
	<-sampled
	if perr := <-probed; perr != nil {
		return res, fmt.Errorf("probe: %w", perr)
	}
	if err != nil {
		return res, fmt.Errorf("pgbench: %v\n%s", err, out)
	}
	res.TPS = parseTPS(out)
	var walEnd string
	_ = scon.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&walEnd)
	ws, _ := pgtypes.ParseLSN(walStart)
	we, _ := pgtypes.ParseLSN(walEnd)
	res.SourceWALBytes = int64(we - ws)
	// Samples taken while pgbench was still running count; the first few seconds of warm-up too.
	secs := make([]float64, len(samples))
	bytes := make([]float64, len(samples))
	for i, s := range samples {
		secs[i], bytes[i] = s.secs, s.bytes
	}
	res.Samples = len(samples)
	res.LagP50, res.LagP99, res.LagMax = pct(secs, 50), pct(secs, 99), pct(secs, 100)
	res.LagBytesP50, res.LagBytesP99, res.LagBytesMax = pct(bytes, 50), pct(bytes, 99), pct(bytes, 100)
	var want int64
	if err := scon.QueryRow(ctx, `SELECT count(*) FROM pgbench_history`).Scan(&want); err != nil {
		return res, err
	}
	res.HistoryRowsLoad = want
	if err := waitRows(ctx, tcon, want, alive); err != nil {
		return res, err
	}
	res.CatchUpSeconds = time.Since(loadEnd).Seconds()
	time.Sleep(time.Second) // the last probes arrive
	close(pollDone)
	if err := <-polled; err != nil {
		return res, fmt.Errorf("poll probes: %w", err)
	}
	rows, err := scon.Query(ctx, `SELECT id, created_at FROM lag_probe ORDER BY id`)
	if err != nil {
		return res, err
	}
	var lags []float64
	for rows.Next() {
		var id int64
		var created time.Time
		if err := rows.Scan(&id, &created); err != nil {
			return res, err
		}
		at, ok := seen[id]
		if !ok {
			return res, fmt.Errorf("probe %d never seen on the target", id)
		}
		lags = append(lags, float64(at.Sub(created).Microseconds())/1000)
	}
	if err := rows.Err(); err != nil {
		return res, err
	}
	res.Probes = len(lags)
	res.ProbeP50MS, res.ProbeP99MS, res.ProbeMaxMS = pct(lags, 50), pct(lags, 99), pct(lags, 100)
	log.Printf("%s: %.0f TPS, lag p99 %.2fs, caught up %.1fs after the load", follower, res.TPS, res.LagP99, res.CatchUpSeconds)

	// Phase 2: replay a backlog.
	if err := stop(); err != nil {
		log.Printf("%s: stop: %v", follower, err)
	}
	txs := backlog / 4
	perClient := max(txs/clients, 1)
	log.Printf("%s: building a backlog of %d transactions (%d changes) with the follower stopped", follower, perClient*clients, perClient*clients*4)
	if out, err := pgbench("-n", "-c", strconv.Itoa(clients), "-j", strconv.Itoa(threads), "-t", strconv.Itoa(perClient)); err != nil {
		return res, fmt.Errorf("pgbench backlog: %v\n%s", err, out)
	}
	res.BacklogChanges = perClient * clients * 4
	if err := scon.QueryRow(ctx, `SELECT count(*) FROM pgbench_history`).Scan(&want); err != nil {
		return res, err
	}
	t0 := time.Now()
	cpu0 := cpuSeconds(src.Dir, dst.Dir, bin)
	if err := start(); err != nil {
		return res, err
	}
	if err := waitRows(ctx, tcon, want, alive); err != nil {
		return res, err
	}
	res.BacklogSeconds = time.Since(t0).Seconds()
	res.BacklogCPU = cpuDelta(cpu0, cpuSeconds(src.Dir, dst.Dir, bin))
	res.BacklogRate = float64(res.BacklogChanges) / res.BacklogSeconds
	log.Printf("%s: backlog replayed in %.1fs (%.0f changes/s)", follower, res.BacklogSeconds, res.BacklogRate)
	if err := stop(); err != nil {
		log.Printf("%s: stop: %v", follower, err)
	}
	// Independent check that the follower was exact, not just fast.
	for _, tbl := range []string{"pgbench_accounts", "pgbench_branches", "pgbench_tellers", "pgbench_history", "lag_probe"} {
		q := `SELECT count(*) || ' ' || md5(string_agg(t::text, E'\n' ORDER BY t::text COLLATE "C")) FROM ` + tbl + ` t`
		var a, b string
		if err := scon.QueryRow(ctx, q).Scan(&a); err != nil {
			return res, err
		}
		if err := tcon.QueryRow(ctx, q).Scan(&b); err != nil {
			return res, err
		}
		if a != b {
			return res, fmt.Errorf("%s differs after the run: source %s, target %s", tbl, a, b)
		}
	}
	return res, nil
}

// probe inserts a row into lag_probe every 100 ms, each in a transaction of its own, until done.
func probe(ctx context.Context, dsn string, done <-chan struct{}) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for id := 1; ; id++ {
		select {
		case <-done:
			return nil
		case <-t.C:
		}
		if _, err := conn.Exec(ctx, `INSERT INTO lag_probe VALUES ($1, clock_timestamp())`, id); err != nil {
			return err
		}
	}
}

// pollProbes polls the target every millisecond for the newest probe id until done and returns
// when each id was first seen.
func pollProbes(ctx context.Context, dsn string, done <-chan struct{}) (map[int64]time.Time, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	seen := map[int64]time.Time{}
	var last int64
	for {
		select {
		case <-done:
			return seen, nil
		default:
		}
		var newest int64
		if err := conn.QueryRow(ctx, `SELECT coalesce(max(id), 0) FROM lag_probe`).Scan(&newest); err != nil {
			return nil, err
		}
		now := time.Now()
		for id := last + 1; id <= newest; id++ {
			seen[id] = now
		}
		last = max(last, newest)
		time.Sleep(time.Millisecond)
	}
}

func waitRows(ctx context.Context, tcon *pgx.Conn, want int64, alive func() error) error {
	deadline := time.Now().Add(30 * time.Minute)
	for time.Now().Before(deadline) {
		if err := alive(); err != nil {
			return err
		}
		var n int64
		if err := tcon.QueryRow(ctx, `SELECT count(*) FROM pgbench_history`).Scan(&n); err != nil {
			return err
		}
		if n >= want {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("target did not catch up within 30 minutes")
}

func parseTPS(out string) float64 {
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "tps = ") {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[2], 64)
			return v
		}
	}
	return 0
}

func pct(v []float64, p float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	i := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[max(min(i, len(s)-1), 0)]
}
