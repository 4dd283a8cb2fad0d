package metrics

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollector(t *testing.T) {
	snap := Snapshot{Phase: "data", Tables: []Table{{Name: "public.a", State: "done", Rows: 10, Bytes: 100, EstimatedBytes: 90}, {Name: "public.b", State: "copying", Rows: 5, Bytes: 50}},
		Cutover: []Step{{Name: "pause", State: "done", Seconds: 0.25}, {Name: "resume", State: "pending"}}}
	measured := false
	reg := prometheus.NewRegistry()
	err := Register(reg, Sources{Snapshot: func() (Snapshot, bool) {
		s := snap
		if measured {
			s.Measured, s.LagBytes, s.LagSeconds, s.MeasuredAt = true, 4096, 1.5, time.Unix(1700000000, 0)
		}
		return s, true
	}, Counters: func() Counters { return Counters{ApplyErrors: 2} }, AgentStart: time.Unix(1600000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP pgshift_phase 1 for the phase the migration is in, 0 for the others.
# TYPE pgshift_phase gauge
pgshift_phase{phase="new"} 0
pgshift_phase{phase="schema"} 0
pgshift_phase{phase="data"} 1
pgshift_phase{phase="post-data"} 0
pgshift_phase{phase="sequences"} 0
pgshift_phase{phase="copied"} 0
pgshift_phase{phase="following"} 0
pgshift_phase{phase="cutover"} 0
pgshift_phase{phase="finished"} 0
# HELP pgshift_copy_tables Migrated tables by copy state (pending, copying, done, dropped).
# TYPE pgshift_copy_tables gauge
pgshift_copy_tables{state="copying"} 1
pgshift_copy_tables{state="done"} 1
pgshift_copy_tables{state="pending"} 0
# HELP pgshift_copy_rows_total Rows copied into the target per table (committed chunks).
# TYPE pgshift_copy_rows_total counter
pgshift_copy_rows_total{table="public.a"} 10
pgshift_copy_rows_total{table="public.b"} 5
# HELP pgshift_apply_errors_total Errors that stopped applying changes (each is followed by a retry or a fatal stop).
# TYPE pgshift_apply_errors_total counter
pgshift_apply_errors_total 2
# HELP pgshift_cutover_step_duration_seconds How long each step of the latest cutover attempt ran (to now while it runs).
# TYPE pgshift_cutover_step_duration_seconds gauge
pgshift_cutover_step_duration_seconds{step="pause"} 0.25
`), "pgshift_phase", "pgshift_copy_tables", "pgshift_copy_rows_total", "pgshift_apply_errors_total", "pgshift_cutover_step_duration_seconds"); err != nil {
		t.Error(err)
	}
	// No lag gauges before a measurement (a 0 would read as "caught up").
	if n, _ := testutil.GatherAndCount(reg, LagBytes, LagSeconds, VerifyDifferences); n != 0 {
		t.Errorf("%d lag/verify series before a measurement", n)
	}
	measured = true
	if n, _ := testutil.GatherAndCount(reg, LagBytes, LagSeconds); n != 2 {
		t.Errorf("%d lag series after a measurement", n)
	}
	if _, err := testutil.GatherAndLint(reg); err != nil {
		t.Errorf("lint: %v", err)
	}
}

func TestGrafana(t *testing.T) {
	out, err := Grafana()
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
			GridPos struct{ X, Y, W, H int } `json:"gridPos"`
		}
	}
	if err := json.Unmarshal(out, &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Panels) < 10 {
		t.Fatalf("%d panels", len(d.Panels))
	}
	all := string(out)
	for _, name := range []string{LagSeconds, LagBytes, RetainedWAL, AppliedTransactions, CopyBytes, ProxyStatements, ProxyPauseDuration, CutoverStepDuration, VerifyDifferences} {
		if !strings.Contains(all, name) {
			t.Errorf("dashboard does not use %s", name)
		}
	}
	for _, p := range d.Panels {
		if p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q overflows the grid: %+v", p.Title, p.GridPos)
		}
	}
}
