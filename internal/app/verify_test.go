package app

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/state"
	"github.com/pgshift/pgshift/internal/verify"
)

// pgbenchSchema is what `pgbench -i -s 1` creates, made with SQL so both sides get the same rows.
const pgbenchSchema = `
CREATE TABLE pgbench_branches (bid int PRIMARY KEY, bbalance int, filler char(88));
CREATE TABLE pgbench_tellers (tid int PRIMARY KEY, bid int, tbalance int, filler char(84));
CREATE TABLE pgbench_accounts (aid int PRIMARY KEY, bid int, abalance int, filler char(84));
CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22));
ALTER TABLE pgbench_history REPLICA IDENTITY FULL;
INSERT INTO pgbench_branches SELECT 1, 0;
INSERT INTO pgbench_tellers SELECT g, 1, 0 FROM generate_series(1, 10) g;
INSERT INTO pgbench_accounts SELECT g, 1, 0, '' FROM generate_series(1, 100000) g;
ANALYZE;`

// TestVerifyLiveWhileFollowing runs verify again and again while a pgbench workload runs on the
// source and pgshift follows it: verify must report no differences (rows merely not applied
// yet are re-checked), and must still find differences injected directly into the target.
func TestVerifyLiveWhileFollowing(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newFollowEnv(t, src, dst, "bench", pgbenchSchema)
	a := e.start(RunOptions{})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	bench := exec.CommandContext(ctx, filepath.Join(src.BinDir(), "pgbench"), "-n", "-c", "3", "-j", "1", "-T", "120",
		"-R", "300", e.cfg.Source)
	var benchOut strings.Builder
	bench.Stdout, bench.Stderr = &benchOut, &benchOut
	if err := bench.Start(); err != nil {
		t.Fatalf("start pgbench: %v", err)
	}
	benchDone := make(chan error, 1)
	go func() { benchDone <- bench.Wait() }()
	defer func() {
		cancel()
		<-benchDone
	}()
	time.Sleep(2 * time.Second) // let the workload and the follower get going

	cfg := e.cfg
	cfg.Jobs = 2
	opts := VerifyOptions{Mode: verify.ModeChecksum, ChunkRows: 20_000, LeafRows: 500, Live: "auto",
		RecheckRounds: 6, RecheckTimeout: time.Minute}
	for i := 0; i < 3; i++ {
		select {
		case <-a.done:
			t.Fatalf("agent stopped: %v", a.err)
		case err := <-benchDone:
			t.Fatalf("pgbench stopped early: %v\n%s", err, benchOut.String())
		default:
		}
		rep, err := Verify(context.Background(), cfg, opts, testLogger(t))
		if err != nil {
			t.Fatalf("verify %d: %v", i, err)
		}
		if rep.Live == nil || !rep.Live.Following {
			t.Fatalf("verify %d did not run in live mode: %+v", i, rep.Notes)
		}
		var b strings.Builder
		_ = rep.WriteText(&b, 20)
		if rep.ExitCode() == 1 || rep.Summary.RowDifferences != 0 {
			t.Fatalf("verify %d while following reported differences:\n%s", i, b.String())
		}
		// pgbench updates its one branch row (and its ten tellers) in every transaction: they
		// may never hold still for a re-check round, and are then unconfirmed — exit 2, never
		// IDENTICAL. Every other row must be confirmed.
		for _, tr := range rep.Tables {
			if tr.Unstable > 0 && tr.Name != "public.pgbench_branches" && tr.Name != "public.pgbench_tellers" {
				t.Fatalf("verify %d: rows of %s unconfirmed:\n%s", i, tr.Name, b.String())
			}
		}
		if (rep.ExitCode() == 0) != (rep.Summary.RowsUnstable == 0) || rep.ExitCode() != 0 && strings.Contains(b.String(), "Result: IDENTICAL") {
			t.Fatalf("verify %d: exit %d with %d unconfirmed rows:\n%s", i, rep.ExitCode(), rep.Summary.RowsUnstable, b.String())
		}
		t.Logf("verify %d: %d rows, first pass found %d lag differences, re-check: %d rounds, %d resolved, %d unstable",
			i, rep.Summary.SourceRows, rep.Live.Resolved+rep.Live.Unstable, rep.Live.Rounds, rep.Live.Resolved, rep.Live.Unstable)
	}

	// Differences injected into the target while the workload goes on: an account pgbench
	// never touches, and a history row (insert-only on the source) deleted.
	if out, err := dst.Psql(context.Background(), "bench", `INSERT INTO pgbench_accounts VALUES (10000000, 1, 42, '');
		DELETE FROM pgbench_history WHERE ctid = (SELECT ctid FROM pgbench_history ORDER BY mtime LIMIT 1)`); err != nil {
		t.Fatalf("inject: %v %s", err, out)
	}
	rep, err := Verify(context.Background(), cfg, opts, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = rep.WriteText(&b, 20)
	if rep.ExitCode() != 1 || rep.Summary.RowDifferences != 2 {
		t.Fatalf("injected differences: exit %d, %d differences\n%s", rep.ExitCode(), rep.Summary.RowDifferences, b.String())
	}
	var foundExtra, foundMissing bool
	for _, tr := range rep.Tables {
		for _, r := range tr.Rows {
			foundExtra = foundExtra || tr.Name == "public.pgbench_accounts" && r.Key == "aid=10000000" && r.Kind == verify.KindExtra
			foundMissing = foundMissing || tr.Name == "public.pgbench_history" && r.Kind == verify.KindMissing
		}
	}
	if !foundExtra || !foundMissing {
		t.Fatalf("injected rows not named:\n%s", b.String())
	}

	// The result is in the state for status and the report.
	tc, err := db.Endpoint{Role: db.Target, DSN: e.cfg.Target}.Connect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close(context.Background())
	run, err := state.LatestVerifyRun(context.Background(), tc)
	if err != nil || run.Differences != 2 || run.Mode != "checksum" || !strings.Contains(string(run.Result), "aid=10000000") {
		t.Fatalf("saved verify run: %+v %v", run.Differences, err)
	}
	st, err := ReadStatus(context.Background(), e.cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if st.LastVerify == nil || st.LastVerify.Summary.RowDifferences != 2 || st.LastVerify.Summary.Identical || st.LastVerify.Mode != "checksum" {
		t.Fatalf("status does not show the last verify: %+v", st.LastVerify)
	}
	var out bytes.Buffer
	if err := PrintStatus(&out, st, false); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "last verify:") || !strings.Contains(out.String(), "2 differences (2 rows, 0 schema, 0 sequences)") {
		t.Errorf("status text lacks the last verify:\n%s", out.String())
	}
	if err := a.stop(); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("agent: %v", err)
	}
}

// TestVerifyLiveNativeSubscription is the live re-check with a follower that is not pgshift:
// native logical replication (CREATE SUBSCRIPTION), named with --slot. The subscription's slot
// confirms what the subscriber has applied, which is the position the re-check waits for.
func TestVerifyLiveNativeSubscription(t *testing.T) {
	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "native")
	ctx := context.Background()
	for _, c := range []*pgtest.Cluster{src, dst} {
		if out, err := c.Psql(ctx, "native", pgbenchSchema); err != nil {
			t.Fatal(err, out)
		}
	}
	if out, err := src.Psql(ctx, "native", `CREATE PUBLICATION pub FOR ALL TABLES`); err != nil {
		t.Fatal(err, out)
	}
	conn := strings.ReplaceAll(srcDSN, "'", "''")
	if out, err := dst.Psql(ctx, "native", `CREATE SUBSCRIPTION sub CONNECTION '`+conn+`' PUBLICATION pub WITH (copy_data = false)`); err != nil {
		t.Fatal(err, out)
	}
	t.Cleanup(func() { _, _ = dst.Psql(context.Background(), "native", `DROP SUBSCRIPTION sub`) })

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bench := exec.CommandContext(wctx, filepath.Join(src.BinDir(), "pgbench"), "-n", "-c", "2", "-j", "1", "-T", "120", "-R", "200", srcDSN)
	var benchOut strings.Builder
	bench.Stdout, bench.Stderr = &benchOut, &benchOut
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = bench.Wait() }()
	time.Sleep(2 * time.Second)

	cfg := config.Defaults()
	cfg.Source, cfg.Target, cfg.Jobs = srcDSN, dstDSN, 2
	opts := VerifyOptions{Mode: verify.ModeChecksum, ChunkRows: 20_000, Live: "auto", FollowSlot: "sub", NoSave: true,
		RecheckRounds: 6, RecheckTimeout: time.Minute}
	for i := 0; i < 2; i++ {
		rep, err := Verify(ctx, cfg, opts, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Live == nil || rep.ExitCode() != 0 {
			var b strings.Builder
			_ = rep.WriteText(&b, 20)
			t.Fatalf("verify %d with a native follower:\n%s\npgbench: %s", i, b.String(), benchOut.String())
		}
		t.Logf("verify %d: re-check %d rounds, %d resolved, %d unstable", i, rep.Live.Rounds, rep.Live.Resolved, rep.Live.Unstable)
	}
	// A difference injected into the target, in a row the workload never touches.
	if out, err := dst.Psql(ctx, "native", `INSERT INTO pgbench_accounts VALUES (10000000, 1, 7, 'only on the target')`); err != nil {
		t.Fatal(err, out)
	}
	rep, err := Verify(ctx, cfg, opts, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	_ = rep.WriteText(&b, 20)
	if rep.ExitCode() != 1 || !strings.Contains(b.String(), "public.pgbench_accounts: 1 differences (1 extra)") ||
		!strings.Contains(b.String(), "aid=10000000: extra") {
		t.Fatalf("injected difference not found:\n%s", b.String())
	}
}
