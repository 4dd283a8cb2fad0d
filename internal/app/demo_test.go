package app

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/assess"
	"github.com/pgshift/pgshift/internal/pgtest"
)

func gone(t *testing.T, dirs ...string) {
	t.Helper()
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("cluster directory %s still exists after the demo (%v)", d, err)
		}
	}
}

func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL (skipped with -short)")
	}
	if _, err := pgtest.FindBinDir(""); err != nil {
		t.Skip(err)
	}

	t.Run("runs and cleans up", func(t *testing.T) {
		var out bytes.Buffer
		var dirs []string
		var seen *Demo
		steps := append(DemoSteps(), DemoStep{"record", func(_ context.Context, d *Demo) error {
			seen = d
			dirs = []string{d.Source.Dir, d.Target.Dir}
			return nil
		}})
		reportFile := filepath.Join(artifactsDir(t), "demo-report.html")
		scale, err := DemoScale("small") // pgshift demo --scale small
		if err != nil {
			t.Fatal(err)
		}
		opts := DemoOptions{Scale: scale, Warmup: 700 * time.Millisecond, FollowFor: 6 * time.Second, Format: assess.FormatText, Out: &out,
			HTTP: freeTCPAddr(t), ReportFile: reportFile}
		if err := RunDemo(context.Background(), opts, steps); err != nil {
			t.Fatalf("demo: %v\n%s", err, out.String())
		}
		text := out.String()
		// finish keeps its report where the report step wrote it, not in the working directory.
		if _, err := os.Stat("pgshift-report.md"); err == nil {
			t.Error("the demo left pgshift-report.md in the working directory")
		}
		if err := os.WriteFile(filepath.Join(filepath.Dir(reportFile), "demo-output.txt"), out.Bytes(), 0o644); err != nil {
			t.Error(err)
		}
		for _, s := range []string{"[1/17] start source and target clusters", "create the sample supply-chain database",
			"Result: READY", "[replica_identity_full] public.inventory_transactions", "public.order_items",
			"copied 7 tables", "target caught up", "Tables identical: 7/7", "Result: IDENTICAL (exit 0)",
			"MODE split", "were answered by the target", "cutover done", "traffic is on the target", "rollback done", "traffic is on the source",
			"reverse replication keeps the source current", "; 0 failed", "the rollback lost nothing",
			"stopped cleanly", "dashboard: http://" + opts.HTTP, "QUERY", "revenue by country", "queries slower on the target", "Table Validation Summary:", "Tables matched: 7/7 tables (100%)",
			"report: " + reportFile, "no slot, publication or pgshift schema is left", "demo finished"} {
			if !strings.Contains(text, s) {
				t.Errorf("demo output lacks %q:\n%s", s, text)
			}
		}
		// Three switches under load, each with its pause measured; the application committed
		// through all of them, and both sides were equal afterwards (the demo's own md5).
		if len(seen.pauses) != 3 {
			t.Errorf("%d switches measured, want 3 (cutover, rollback, cutover)", len(seen.pauses))
		}
		for i, p := range seen.pauses {
			if p <= 0 || p > 5 {
				t.Errorf("switch %d: write pause %.3f s", i+1, p)
			}
		}
		if seen.clientTxs == 0 || !seen.lossless {
			t.Errorf("application transactions through the switches: %d, lossless: %v", seen.clientTxs, seen.lossless)
		}
		// 30 % of 40 application_names, by hash: some reader sessions on each side.
		if m := regexp.MustCompile(`rule demo-rollout sent (\d+) reads to the target`).FindStringSubmatch(text); m == nil || m[1] == "0" ||
			seen.routedSessions < 4 || seen.routedSessions > 24 {
			t.Errorf("the read rollout: %v, %d of 40 sessions on the target", m, seen.routedSessions)
		}
		if seen.Workload.Transactions == 0 {
			t.Error("warm-up workload ran no transactions")
		}
		// The assessment saw the workload: activity since stats reset includes its inserts.
		if seen.Report.Totals.Inserts < seen.Workload.Inserts {
			t.Errorf("assessment shows %d inserts, workload made %d after the load", seen.Report.Totals.Inserts, seen.Workload.Inserts)
		}
		gone(t, dirs...)
		// The demo's report, rendered in headless Chromium.
		html, err := os.ReadFile(reportFile)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"<svg", "Table Validation Summary", "following", "agent.start", "agent.stop", "revenue by country", "cutover", "rollback"} {
			if !strings.Contains(string(html), want) {
				t.Errorf("demo report lacks %q", want)
			}
		}
		// The demo's copy step held the lease before the agent: that is no agent restart.
		if strings.Contains(string(html), "PgshiftAgentRestarted") {
			t.Errorf("the demo report shows an agent restart")
		}
		b := newBrowser(t)
		b.open("file://"+reportFile, `document.querySelector("svg polyline") !== null`)
		b.screenshot(strings.TrimSuffix(reportFile, ".html") + ".png")
	})

	t.Run("interrupted", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var dirs []string
		steps := []DemoStep{DemoSteps()[0], {"interrupt", func(ctx context.Context, d *Demo) error {
			dirs = []string{d.Source.Dir, d.Target.Dir}
			cancel() // what Ctrl-C does through signal.NotifyContext
			<-ctx.Done()
			return ctx.Err()
		}}, {"never reached", func(context.Context, *Demo) error {
			t.Error("step after the interruption ran")
			return nil
		}}}
		err := RunDemo(ctx, DemoOptions{Scale: 1}, steps)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("want context.Canceled, got %v", err)
		}
		gone(t, dirs...)
	})

	t.Run("keep waits for the signal", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		started := make(chan []string, 1)
		steps := []DemoStep{DemoSteps()[0], {"check", func(_ context.Context, d *Demo) error {
			started <- []string{d.Source.Dir, d.Target.Dir}
			return nil
		}}}
		var out bytes.Buffer
		done := make(chan error, 1)
		go func() { done <- RunDemo(ctx, DemoOptions{Scale: 1, Keep: true, Out: &out}, steps) }()
		dirs := <-started
		select {
		case err := <-done:
			t.Fatalf("--keep returned before the signal: %v", err)
		case <-time.After(time.Second):
		}
		for _, d := range dirs {
			if _, err := os.Stat(d); err != nil {
				t.Errorf("kept cluster %s gone: %v", d, err)
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("keep: %v", err)
		}
		if !strings.Contains(out.String(), "until you press Ctrl-C") || !strings.Contains(out.String(), "dbname=supply_chain") {
			t.Errorf("keep must print the DSNs:\n%s", out.String())
		}
		gone(t, dirs...)
	})
}
