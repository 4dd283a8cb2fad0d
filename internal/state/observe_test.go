package state

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// TestObservationState: phase changes and lag measurements are recorded by the triggers
// whoever writes them (a replica-role session too); measurements within a bucket fold into
// one row keeping the maxima; the history stays bounded and keeps its peaks when thinned;
// audit entries and cutover steps round-trip.
func TestObservationState(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	_, conn := c.NewDB(t, "obs")
	if err := Ensure(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := Ensure(ctx, conn); err != nil {
		t.Fatalf("Ensure twice: %v", err)
	}
	if err := Create(ctx, conn, Migration{SourceSystemID: "1", SourceDatabase: "obs", Slot: "s", Publication: "p", Phase: pgtypes.PhaseSchema}); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `SET session_replication_role = replica`); err != nil {
		t.Fatal(err)
	}
	for _, p := range []pgtypes.Phase{pgtypes.PhaseData, pgtypes.PhaseData, pgtypes.PhasePostData} {
		if err := SetPhase(ctx, conn, p); err != nil {
			t.Fatal(err)
		}
	}
	ph, err := LoadPhaseHistory(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(ph) != 3 || ph[0].Phase != pgtypes.PhaseSchema || ph[1].Phase != pgtypes.PhaseData || ph[2].Phase != pgtypes.PhasePostData {
		t.Fatalf("phase history %+v", ph)
	}

	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	save := func(at time.Duration, lag int64, txs int64) {
		t.Helper()
		err := SaveFollowStatus(ctx, conn, FollowStatus{SourceLSN: pgtypes.LSN(1000 + at), AppliedLSN: pgtypes.LSN(900 + at),
			LagBytes: lag, LagSeconds: float64(lag) / 100, RetainedBytes: lag * 2, TxsApplied: txs, MeasuredAt: t0.Add(at)})
		if err != nil {
			t.Fatal(err)
		}
	}
	save(0, 10, 1)
	save(HistoryBucket/4, 500, 2) // the peak
	save(HistoryBucket/2, 20, 3)
	save(HistoryBucket+time.Second, 5, 4) // a new bucket
	h, err := LoadFollowHistory(ctx, conn, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) != 2 || h[0].Samples != 3 || h[0].LagBytes != 500 || h[0].RetainedBytes != 1000 || h[0].LagSeconds != 5 ||
		h[0].TxsApplied != 3 || !h[0].At.Equal(t0.Add(HistoryBucket/2)) || !h[0].First.Equal(t0) || h[1].LagBytes != 5 {
		t.Fatalf("history %+v", h)
	}
	if h2, _ := LoadFollowHistory(ctx, conn, h[0].At); len(h2) != 1 {
		t.Errorf("history after %s: %+v", h[0].At, h2)
	}
	// Many buckets: the table stays bounded, and the old peak survives the thinning.
	for i := 2; i < HistoryMaxRows+600; i++ {
		save(time.Duration(i)*2*HistoryBucket, 1, int64(i))
	}
	h, err = LoadFollowHistory(ctx, conn, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if len(h) > HistoryMaxRows || len(h) < HistoryMaxRows/2 {
		t.Fatalf("%d history rows, want at most %d", len(h), HistoryMaxRows)
	}
	if h[0].LagBytes != 500 || !h[0].First.Equal(t0) {
		t.Errorf("the oldest row lost the peak or the start: %+v", h[0])
	}
	samples := 0
	for i, p := range h {
		samples += p.Samples
		if i > 0 && !p.At.After(h[i-1].At) {
			t.Fatalf("history out of order at %d", i)
		}
	}
	if want := 4 + HistoryMaxRows + 600 - 2; samples != want {
		t.Errorf("samples %d, want %d (one per measurement)", samples, want)
	}

	e, err := RecordAudit(ctx, conn, AuditEntry{Actor: "api", Action: "proxy.pause", Outcome: "ok", Detail: json.RawMessage(`{"wait_seconds": 0.1}`)})
	if err != nil || e.ID == 0 || e.At.IsZero() {
		t.Fatalf("audit %+v %v", e, err)
	}
	at := time.Date(2026, 2, 2, 2, 2, 2, 0, time.UTC)
	if _, err := RecordAudit(ctx, conn, AuditEntry{At: at, Actor: "agent", Action: "agent.stop", Outcome: "ok"}); err != nil {
		t.Fatal(err)
	}
	a, err := LoadAudit(ctx, conn, 0, 0)
	if err != nil || len(a) != 2 || a[1].Action != "agent.stop" || !a[1].At.Equal(at) || string(a[1].Detail) != "{}" {
		t.Fatalf("audit log %+v %v", a, err)
	}
	if a, _ := LoadAudit(ctx, conn, 0, 1); len(a) != 1 || a[0].Action != "agent.stop" {
		t.Errorf("newest entry %+v", a)
	}

	if s, err := LoadCutoverSteps(ctx, conn); err != nil || len(s) != 0 {
		t.Fatalf("no cutover yet: %+v %v", s, err)
	}
	step := CutoverStep{Attempt: 1, No: 2, Name: "pause", State: StepRunning, StartedAt: at}
	if err := SaveCutoverStep(ctx, conn, step); err != nil {
		t.Fatal(err)
	}
	step.State, step.FinishedAt = StepDone, at.Add(1500*time.Millisecond)
	if err := SaveCutoverStep(ctx, conn, step); err != nil {
		t.Fatal(err)
	}
	s, err := LoadCutoverSteps(ctx, conn)
	if err != nil || len(s) != 1 || s[0].State != StepDone || s[0].Duration(time.Now()) != 1500*time.Millisecond {
		t.Fatalf("cutover steps %+v %v", s, err)
	}
}
