package alert

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
)

func mustRules(t *testing.T, rs []config.AlertRule) []Rule {
	t.Helper()
	r, err := FromConfig(rs)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestLagFiresOnceResolvesOnce: over the limit for longer than For fires once; staying over
// sends nothing more; back under resolves once.
func TestLagFiresOnceResolvesOnce(t *testing.T) {
	rules := mustRules(t, []config.AlertRule{{Name: "Lag", Kind: "lag_seconds", Over: "5m", For: time.Minute, Severity: "critical"}})
	e := NewEngine(rules, 0, map[string]string{"migration": "m"})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	obs := func(at time.Duration, lag float64) Observation {
		return Observation{Now: t0.Add(at), Phase: "following", Measured: true, MeasuredAt: t0.Add(at), LagSeconds: lag, LagBytes: 1 << 20}
	}
	var sent []Notification
	for i, c := range []struct {
		at  time.Duration
		lag float64
	}{{0, 10}, {10 * time.Second, 400}, {40 * time.Second, 400}, {80 * time.Second, 500}, {120 * time.Second, 450}, {200 * time.Second, 20}, {300 * time.Second, 1}} {
		n := e.Evaluate(obs(c.at, c.lag))
		sent = append(sent, n...)
		if i == 2 && e.States()[0].State != "pending" {
			t.Errorf("at %s: state %s, want pending", c.at, e.States()[0].State)
		}
	}
	if len(sent) != 2 || sent[0].Status != "firing" || sent[1].Status != "resolved" {
		t.Fatalf("sent %+v", sent)
	}
	if !strings.Contains(sent[0].Message, "8m20s") || sent[0].Labels["migration"] != "m" || sent[0].Labels["alertname"] != "Lag" {
		t.Errorf("firing: %+v", sent[0])
	}
	if !sent[0].StartsAt.Equal(t0.Add(80*time.Second)) || !sent[1].EndsAt.Equal(t0.Add(200*time.Second)) {
		t.Errorf("times: %v %v", sent[0].StartsAt, sent[1].EndsAt)
	}
}

func TestRepeatAndStalled(t *testing.T) {
	rules := mustRules(t, []config.AlertRule{{Kind: "apply_stalled", For: time.Minute}, {Kind: "verify_differences"}})
	e := NewEngine(rules, 5*time.Minute, nil)
	t0 := time.Unix(1000, 0)
	var sent []Notification
	for s := 0; s <= 700; s += 10 {
		o := Observation{Now: t0.Add(time.Duration(s) * time.Second), Phase: "following", Measured: true,
			MeasuredAt: t0.Add(time.Duration(s) * time.Second), LagBytes: 100, AppliedLSN: 5, Verified: true, Differences: 0}
		if s >= 600 {
			o.AppliedLSN = uint64(s) // moving again
		}
		sent = append(sent, e.Evaluate(o)...)
	}
	// fires at 60 s, repeats at 360 s, resolves at 600 s.
	var got []string
	for _, n := range sent {
		got = append(got, n.Status+"@"+n.StartsAt.Sub(t0).String())
	}
	if strings.Join(got, ",") != "firing@1m0s,firing@1m0s,resolved@1m0s" {
		t.Errorf("notifications %v", got)
	}
}

func TestFromConfigErrors(t *testing.T) {
	for _, c := range []config.AlertRule{{Kind: "lag_seconds", Over: "soon"}, {Kind: "lag_bytes", Over: "10 parsecs"}, {Kind: "nope"}, {Name: "bad name", Kind: "agent_restarted"}} {
		if _, err := FromConfig([]config.AlertRule{c}); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	r := mustRules(t, []config.AlertRule{{Kind: "retained_wal_bytes", Over: "20GiB"}, {Kind: "lag_bytes", Over: "1.5GB"}})
	if r[0].Over != 20<<30 || r[1].Over != 1.5e9 {
		t.Errorf("sizes %v %v", r[0].Over, r[1].Over)
	}
}

// TestWebhooksDelivered: both formats reach a receiver, once per transition, and the URL
// (a secret) appears in no log line.
func TestWebhooksDelivered(t *testing.T) {
	var mu sync.Mutex
	got := map[string][]string{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got[r.URL.Path] = append(got[r.URL.Path], string(b))
		mu.Unlock()
	}))
	defer srv.Close()
	hooks, err := WebhooksFromConfig([]config.Webhook{{URL: srv.URL + "/slack/T0KEN", Format: "slack"}, {URL: srv.URL + "/am", Format: "alertmanager"}})
	if err != nil {
		t.Fatal(err)
	}
	var logs strings.Builder
	nt := NewNotifier(hooks, slogTo(&logs))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- nt.Run(ctx) }()
	r := mustRules(t, []config.AlertRule{{Name: "Lag", Kind: "lag_seconds", Over: "1s"}})[0]
	now := time.Now()
	nt.Send(Notification{Rule: r, Status: "firing", Message: "lag 3s", StartsAt: now, Labels: map[string]string{"alertname": "Lag", "migration": "m"}})
	nt.Send(Notification{Rule: r, Status: "resolved", Message: "lag 0s", StartsAt: now, EndsAt: now.Add(time.Second), Labels: map[string]string{"alertname": "Lag", "migration": "m"}})
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(got["/slack/T0KEN"]) + len(got["/am"])
		mu.Unlock()
		if n == 4 || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	if len(got["/slack/T0KEN"]) != 2 || !strings.Contains(got["/slack/T0KEN"][0], "[FIRING] Lag") || !strings.Contains(got["/slack/T0KEN"][1], "[RESOLVED]") {
		t.Errorf("slack: %q", got["/slack/T0KEN"])
	}
	if len(got["/am"]) != 2 {
		t.Fatalf("alertmanager: %q", got["/am"])
	}
	var am struct {
		Version, Status string
		Alerts          []struct {
			Status   string
			Labels   map[string]string
			EndsAt   time.Time
			StartsAt time.Time
		}
	}
	if err := json.Unmarshal([]byte(got["/am"][1]), &am); err != nil {
		t.Fatal(err)
	}
	if am.Version != "4" || am.Status != "resolved" || len(am.Alerts) != 1 || am.Alerts[0].Labels["alertname"] != "Lag" || am.Alerts[0].EndsAt.IsZero() {
		t.Errorf("alertmanager payload: %+v", am)
	}
	if strings.Contains(logs.String(), "T0KEN") {
		t.Errorf("the webhook URL reached the log:\n%s", logs.String())
	}
}

// TestDeliveryFailureHidesURL: a receiver that cannot be reached is logged by host only.
func TestDeliveryFailureHidesURL(t *testing.T) {
	hooks, _ := WebhooksFromConfig([]config.Webhook{{URL: "http://127.0.0.1:1/services/T0KEN", Timeout: time.Second}})
	var logs strings.Builder
	nt := NewNotifier(hooks, slogTo(&logs))
	nt.Retries, nt.RetryDelay = 1, time.Millisecond
	r := mustRules(t, []config.AlertRule{{Kind: "agent_restarted"}})[0]
	nt.deliver(context.Background(), hooks[0], Notification{Rule: r, Status: "firing"})
	if !strings.Contains(logs.String(), "alert not delivered") || !strings.Contains(logs.String(), "127.0.0.1:1") || strings.Contains(logs.String(), "T0KEN") {
		t.Errorf("log:\n%s", logs.String())
	}
}

// TestPrometheusRules: the rules file of the default rules passes promtool check rules (when
// promtool is installed: Debian's prometheus package, see scripts/deps.sh).
func TestPrometheusRules(t *testing.T) {
	out, err := PrometheusRules(mustRules(t, config.DefaultAlertRules(5*time.Minute)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"alert: PgshiftReplicationLagHigh", "pgshift_replication_lag_seconds > 300", "for: 1m", "pgshift_slot_retained_wal_bytes > 21474836480",
		`pgshift_cutover_steps{state="failed"} > 0`, "changes(pgshift_agent_start_time_seconds[15m]) > 0", "severity: critical"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("rules lack %q:\n%s", want, out)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed")
	}
	f := filepath.Join(t.TempDir(), "pgshift.rules.yml")
	if err := os.WriteFile(f, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if res, err := exec.Command(promtool, "check", "rules", f).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s\n%s", err, res, out)
	} else {
		t.Logf("promtool: %s", strings.TrimSpace(string(res)))
	}
}
