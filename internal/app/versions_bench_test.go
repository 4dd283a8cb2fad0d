package app

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestVersionBench measures, for each source → target pair in PGSHIFT_BENCH_VERSIONS (e.g.
// "12:15,15:15"; skipped when unset), what bench/versions.sh reports in bench/RESULTS.md:
//   - copy: `pgshift copy --jobs 2` of pgbench data at scale PGSHIFT_BENCH_SCALE (default 10);
//   - follow: source TPS and catch-up time after `pgbench -c 4 -j 2 -T PGSHIFT_BENCH_SECONDS`
//     (default 30) with `pgshift run` following;
//   - one large transaction (UPDATE of every pgbench_accounts row): its time on the source, and
//     the time from its commit until the target has applied it (the source streams it while it
//     runs from 14 on; 12 and 13 send it only after the commit), the agent's peak memory, and
//     what the source spilled to its own disk (pg_stat_replication_slots, 14+).
//
// Each pair ends with row-text md5 of every pgbench table on both sides.
func TestVersionBench(t *testing.T) {
	pairs := os.Getenv("PGSHIFT_BENCH_VERSIONS")
	if pairs == "" {
		t.Skip("set PGSHIFT_BENCH_VERSIONS (e.g. 12:15,15:15) to run; bench/versions.sh does")
	}
	scale := envInt("PGSHIFT_BENCH_SCALE", 10)
	seconds := envInt("PGSHIFT_BENCH_SECONDS", 30)
	bin := buildBinary(t)
	for _, p := range strings.Split(pairs, ",") {
		var vc versionCase
		if _, err := fmt.Sscanf(strings.TrimSpace(p), "%d:%d", &vc.src, &vc.dst); err != nil {
			t.Fatalf("PGSHIFT_BENCH_VERSIONS: %q is not SOURCE:TARGET", p)
		}
		t.Run(fmt.Sprintf("%d_to_%d", vc.src, vc.dst), func(t *testing.T) { benchVersionPair(t, bin, vc, scale, seconds) })
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

func benchVersionPair(t *testing.T, bin string, vc versionCase, scale, seconds int) {
	src, dst, _, _ := pgtest.PairVersions(t, "unused", vc.src, vc.dst)
	e := emptyTargetEnv(t, src, dst, "vbench", `SELECT 1`)
	pgbench := func(args ...string) string {
		full := append([]string{"-h", src.Host, "-p", strconv.Itoa(src.Port), "-U", "postgres"}, args...)
		cmd := exec.Command(pgbenchPath(t), append(full, e.name)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("pgbench %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	pgbench("-i", "-q", "-s", strconv.Itoa(scale))
	e.exec(`ALTER TABLE pgbench_history REPLICA IDENTITY FULL`) // no key; only INSERTs touch it

	t0 := time.Now()
	cp := e.startProc(bin, "copy", "--jobs", "2", "--progress", "none")
	if code := cp.wait(t, 30*time.Minute); code != 0 {
		t.Fatalf("pgshift copy: exit %d\n%s", code, cp.stderr.String())
	}
	copySec := time.Since(t0).Seconds()

	agent := e.startProc(bin, "run", "--jobs", "2")
	out := pgbench("-c", "4", "-j", "2", "-T", strconv.Itoa(seconds), "-n")
	tps := regexp.MustCompile(`tps = ([0-9.]+)`).FindStringSubmatch(out)
	if tps == nil {
		t.Fatalf("no tps in pgbench output:\n%s", out)
	}
	t1 := time.Now()
	wait := e.startProc(bin, "wait", "--timeout", "30m")
	if code := wait.wait(t, 31*time.Minute); code != 0 {
		t.Fatalf("pgshift wait: exit %d\n%s\n%s", code, wait.stderr.String(), agent.stderr.String())
	}
	catchUp := time.Since(t1).Seconds()

	t2 := time.Now()
	e.exec(`UPDATE pgbench_accounts SET abalance = abalance + 1`)
	bigTx := time.Since(t2).Seconds()
	t3 := time.Now()
	wait = e.startProc(bin, "wait", "--timeout", "30m")
	if code := wait.wait(t, 31*time.Minute); code != 0 {
		t.Fatalf("pgshift wait after the large transaction: exit %d\n%s\n%s", code, wait.stderr.String(), agent.stderr.String())
	}
	bigApply := time.Since(t3).Seconds()
	peak := procPeakRSS(agent.cmd.Process.Pid)
	spill := "n/a (no pg_stat_replication_slots before 14)"
	if vc.src >= 14 {
		spill = e.query(src, `SELECT format('spilled %s in %s txs, streamed %s in %s txs', pg_size_pretty(spill_bytes), spill_txns, pg_size_pretty(stream_bytes), stream_txns)
			FROM pg_stat_replication_slots WHERE slot_name = 'pgshift_vbench'`)
	}
	_ = agent.cmd.Process.Signal(syscall.SIGTERM)
	agent.wait(t, time.Minute)
	e.compare()
	rows := e.query(src, `SELECT count(*) FROM pgbench_accounts`)
	line := fmt.Sprintf("| %d → %d | %s rows | %.1f s | %s | %.1f s | %.1f s | %.1f s | %s | %s |",
		vc.src, vc.dst, rows, copySec, tps[1], catchUp, bigTx, bigApply, peak, spill)
	t.Log(line)
	if f := os.Getenv("PGSHIFT_BENCH_OUT"); f != "" {
		fh, err := os.OpenFile(f, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintln(fh, line)
			fh.Close()
		}
	}
}

// pgbenchPath is the system's pgbench (the fetched servers ship none; pgbench 15 drives
// servers of other majors).
func pgbenchPath(t *testing.T) string {
	if p, err := exec.LookPath("pgbench"); err == nil {
		return p
	}
	dir, err := pgtest.FindBinDir("")
	if err != nil {
		t.Fatal(err)
	}
	return dir + "/pgbench"
}

// procPeakRSS reads a process's peak resident memory (VmHWM) from /proc.
func procPeakRSS(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmHWM:") {
			f := strings.Fields(l)
			if kb, err := strconv.Atoi(f[1]); err == nil {
				return fmt.Sprintf("%d MiB", kb/1024)
			}
		}
	}
	return "?"
}
