package app

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/metrics"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/report"
	"github.com/pgshift/pgshift/internal/web"
)

// webhookSink records the alert webhooks it receives.
type webhookSink struct {
	mu   sync.Mutex
	got  map[string][]string
	srv  *httptest.Server
	urls map[string]string
}

func newWebhookSink(t *testing.T) *webhookSink {
	s := &webhookSink{got: map[string][]string{}}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		s.mu.Lock()
		s.got[r.URL.Path] = append(s.got[r.URL.Path], string(b))
		s.mu.Unlock()
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *webhookSink) bodies(path string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got[path]...)
}

// artifactsDir is where tests leave screenshots and reports: $PGSHIFT_ARTIFACTS, else
// testdata-out/ beside the package (ignored by git). The test prints it.
func artifactsDir(t *testing.T) string {
	dir := os.Getenv("PGSHIFT_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", "testdata-out")
	}
	dir = filepath.Join(dir, t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	t.Logf("artifacts in %s", abs)
	return abs
}

func freeTCPAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// observeSchema is the source database of the end-to-end test.
const observeSchema = `
CREATE TABLE orders (id bigint PRIMARY KEY, customer int NOT NULL, note text, placed timestamptz NOT NULL DEFAULT now());
INSERT INTO orders SELECT g, g % 97, repeat('x', 40 + g % 30), '2026-01-01'::timestamptz + g * interval '1 minute' FROM generate_series(1, 20000) g;
CREATE TABLE items (order_id bigint NOT NULL REFERENCES orders, line int NOT NULL, qty numeric(10,2), PRIMARY KEY (order_id, line));
INSERT INTO items SELECT g, l, (g * l) % 1000 / 7.0 FROM generate_series(1, 5000) g, generate_series(1, 3) l;
CREATE SEQUENCE invoice_no START 1000;
SELECT nextval('invoice_no') FROM generate_series(1, 25);
ANALYZE;
`

// TestObserveEndToEnd runs the agent (copy, then follow) with its API, and checks against it:
// /metrics parses with the Prometheus text parser and agrees with the status; /api/status
// equals what `pgshift status --json` prints from the target; a lag alert fires once and
// resolves once at a local webhook receiver; the dashboard loads in headless Chromium and its
// progress moves (screenshot saved); the report has every section filled, and its HTML
// renders in the same browser (screenshot saved).
func TestObserveEndToEnd(t *testing.T) {
	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "observe")
	ctx := context.Background()
	if out, err := src.Psql(ctx, "observe", observeSchema); err != nil {
		t.Fatalf("schema: %v\n%s", err, out)
	}
	_ = dst
	sink := newWebhookSink(t)
	cfg := config.Defaults()
	cfg.Source, cfg.Target = srcDSN, dstDSN
	cfg.HTTP = freeTCPAddr(t)
	cfg.LagWarn = time.Minute
	cfg.Alerts = config.Alerts{Interval: 200 * time.Millisecond, Labels: map[string]string{"env": "test"},
		Webhooks: []config.Webhook{{URL: sink.srv.URL + "/slack/T0KEN", Format: "slack"}, {URL: sink.srv.URL + "/am", Format: "alertmanager"}},
		Rules:    []config.AlertRule{{Name: "LagHigh", Kind: "lag_seconds", Over: "2s", Severity: "critical"}}}
	var logs syncBuffer
	log := slogTo(&logs)
	actx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(actx, cfg, RunOptions{HeartbeatInterval: 300 * time.Millisecond, MonitorInterval: 300 * time.Millisecond}, log)
	}()
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent: %v", err)
			}
		}
	}
	defer stop()
	client := web.Client{Addr: cfg.HTTP}

	// Following, with a lag measurement.
	waitFor(t, 90*time.Second, done, "the agent follows with a lag measurement", func() bool {
		var st Status
		return client.Get(ctx, "/api/status", &st) == nil && st.Phase == "following" && st.MeasuredAt != nil && st.MeasuredAt.After(time.Now().Add(-2*time.Second))
	})
	src.Psql(ctx, "observe", `UPDATE orders SET note = note || 'y' WHERE id <= 500; INSERT INTO orders (id, customer) SELECT g, 1 FROM generate_series(20001, 20300) g`)
	waitFor(t, 30*time.Second, done, "the agent applied the updates", func() bool {
		var st Status
		return client.Get(ctx, "/api/status", &st) == nil && st.ChangesApplied >= 800
	})
	if _, err := Verify(ctx, cfg, VerifyOptions{Mode: "checksum", Live: "auto"}, log); err != nil {
		t.Fatalf("verify: %v", err)
	}

	t.Run("status equals pgshift status --json", func(t *testing.T) {
		cliCfg := cfg
		cliCfg.Source = "" // pgshift status --target T: the agent's last measurement, as the API serves it
		for attempt := 0; ; attempt++ {
			before := rawGet(t, cfg.HTTP, "/api/status")
			st, err := ReadStatus(ctx, cliCfg, log)
			if err != nil {
				t.Fatal(err)
			}
			var cli bytes.Buffer
			if err := PrintStatus(&cli, st, true); err != nil {
				t.Fatal(err)
			}
			after := rawGet(t, cfg.HTTP, "/api/status")
			if attempt > 0 {
				time.Sleep(100 * time.Millisecond)
			}
			if !jsonEqual(before, after) {
				if attempt > 50 {
					t.Fatal("the status never stood still between two reads")
				}
				continue // a measurement landed in between: try again
			}
			if !jsonEqual(before, cli.Bytes()) {
				if attempt > 50 {
					t.Fatalf("/api/status differs from pgshift status --json:\napi: %s\ncli: %s", before, cli.Bytes())
				}
				continue // the agent has not refreshed since the last measurement yet
			}
			if !strings.Contains(string(before), `"last_verify"`) || !strings.Contains(string(before), `"timeline"`) {
				t.Errorf("status lacks verify or timeline: %s", before)
			}
			return
		}
	})

	t.Run("metrics parse and match the status", func(t *testing.T) {
		for attempt := 0; ; attempt++ {
			var st1, st2 Status
			if err := client.Get(ctx, "/api/status", &st1); err != nil {
				t.Fatal(err)
			}
			body := rawGet(t, cfg.HTTP, "/metrics")
			if err := client.Get(ctx, "/api/status", &st2); err != nil {
				t.Fatal(err)
			}
			if (!reflect.DeepEqual(st1, st2) || st1.LastVerify == nil) && attempt < 50 {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			p := expfmt.NewTextParser(model.UTF8Validation)
			fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
			if err != nil {
				t.Fatalf("/metrics does not parse: %v\n%s", err, body)
			}
			for _, name := range []string{metrics.Phase, metrics.CopyRows, metrics.CopyBytes, metrics.CopyTables, metrics.LagBytes, metrics.LagSeconds,
				metrics.RetainedWAL, metrics.AppliedTransactions, metrics.AppliedChanges, metrics.ApplyErrors, metrics.VerifyDifferences,
				metrics.CutoverSteps, metrics.AgentStart} {
				if fams[name] == nil {
					t.Errorf("/metrics lacks %s", name)
				}
			}
			if t.Failed() {
				t.Fatalf("metrics:\n%s", body)
			}
			val := func(name string, labels ...string) float64 {
				for _, m := range fams[name].Metric {
					if matchLabels(m, labels) {
						switch {
						case m.Gauge != nil:
							return m.Gauge.GetValue()
						case m.Counter != nil:
							return m.Counter.GetValue()
						}
					}
				}
				t.Errorf("%s%v not found", name, labels)
				return -1
			}
			check := func(what string, got, want float64) {
				if got != want {
					t.Errorf("%s: metrics %v, status %v", what, got, want)
				}
			}
			check("phase", val(metrics.Phase, "phase", "following"), 1)
			check("phase copied", val(metrics.Phase, "phase", "copied"), 0)
			check("lag bytes", val(metrics.LagBytes), float64(st1.LagBytes))
			check("lag seconds", val(metrics.LagSeconds), st1.LagSeconds)
			check("retained", val(metrics.RetainedWAL), float64(st1.RetainedBytes))
			check("transactions", val(metrics.AppliedTransactions), float64(st1.TxsApplied))
			check("changes", val(metrics.AppliedChanges), float64(st1.ChangesApplied))
			check("verify differences", val(metrics.VerifyDifferences), float64(st1.LastVerify.Summary.Differences))
			check("tables done", val(metrics.CopyTables, "state", "done"), float64(len(st1.Tables)))
			check("cutover pending", val(metrics.CutoverSteps, "state", "pending"), float64(len(st1.Cutover.Steps)))
			for _, tb := range st1.Tables {
				check("rows of "+tb.Table, val(metrics.CopyRows, "table", tb.Table), float64(tb.Rows))
				check("bytes of "+tb.Table, val(metrics.CopyBytes, "table", tb.Table), float64(tb.Bytes))
			}
			if len(st1.Tables) != 2 || st1.Tables[1].Rows != 20000 {
				t.Errorf("tables: %+v", st1.Tables)
			}
			return
		}
	})

	t.Run("lag alert fires once and resolves once", func(t *testing.T) {
		// Hold a lock on the target so the applier waits while the source writes on.
		lockConn, err := pgx.Connect(ctx, dstDSN)
		if err != nil {
			t.Fatal(err)
		}
		defer lockConn.Close(ctx)
		tx, err := lockConn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `LOCK TABLE orders IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		src.Psql(ctx, "observe", `UPDATE orders SET customer = customer + 1 WHERE id <= 100`)
		waitFor(t, 30*time.Second, done, "the lag alert fires", func() bool { return len(sink.bodies("/am")) >= 1 })
		time.Sleep(time.Second) // several evaluations while firing: no second message
		if err := tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 30*time.Second, done, "the lag alert resolves", func() bool { return len(sink.bodies("/am")) >= 2 })
		time.Sleep(time.Second)
		am, slack := sink.bodies("/am"), sink.bodies("/slack/T0KEN")
		if len(am) != 2 || len(slack) != 2 {
			t.Fatalf("webhooks: alertmanager %d, slack %d, want 2 each:\n%q\n%q", len(am), len(slack), am, slack)
		}
		var firing, resolved struct {
			Status string `json:"status"`
			Alerts []struct {
				Labels map[string]string `json:"labels"`
			} `json:"alerts"`
		}
		_ = json.Unmarshal([]byte(am[0]), &firing)
		_ = json.Unmarshal([]byte(am[1]), &resolved)
		if firing.Status != "firing" || resolved.Status != "resolved" || firing.Alerts[0].Labels["alertname"] != "LagHigh" ||
			firing.Alerts[0].Labels["env"] != "test" || firing.Alerts[0].Labels["migration"] != "pgshift_observe" {
			t.Errorf("alertmanager payloads: %s / %s", am[0], am[1])
		}
		if !strings.Contains(slack[0], "[FIRING] LagHigh") || !strings.Contains(slack[1], "[RESOLVED] LagHigh") {
			t.Errorf("slack payloads: %q", slack)
		}
		if strings.Contains(logs.String(), "T0KEN") || strings.Contains(logs.String(), "password") {
			t.Errorf("a secret reached the log")
		}
	})

	t.Run("dashboard in headless Chromium", func(t *testing.T) {
		dir := artifactsDir(t)
		b := newBrowser(t)
		url := "http://" + cfg.HTTP + "/"
		first := b.open(url, `document.querySelector('#tables tbody tr') !== null && document.getElementById('audit').innerText.includes('agent.start') && document.getElementById('alerts').innerText.includes('LagHigh') && document.getElementById('verify-summary').innerText.includes('IDENTICAL') && document.querySelector('#lag-chart canvas') !== null`)
		for _, want := range []string{"following", "public.orders", "done", "LagHigh", "agent.start", "not started", "IDENTICAL"} {
			if !strings.Contains(first, want) {
				t.Errorf("dashboard lacks %q:\n%s", want, first)
			}
		}
		before := b.text("#applied-count")
		src.Psql(ctx, "observe", `INSERT INTO orders (id, customer) SELECT g, 2 FROM generate_series(30001, 30200) g`)
		waitFor(t, 20*time.Second, done, "the dashboard's applied count moves", func() bool { return b.text("#applied-count") != before })
		b.screenshot(filepath.Join(dir, "dashboard.png"))
	})

	stop()
	t.Run("report", func(t *testing.T) {
		dir := artifactsDir(t)
		rep, err := Report(ctx, cfg, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		var md, html bytes.Buffer
		if err := rep.Write(&md, report.Markdown); err != nil {
			t.Fatal(err)
		}
		if err := rep.Write(&html, report.HTML); err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"## Timeline", "| data |", "| following |", "2/2 tables, 35,000 rows", "Tables matched: 2/2 tables (100%)",
			"Data integrity: 100% match rate", "Schema consistency: 100% match", "Sequences: 1/1 in step", "## Cutover", "alert.firing", "agent.stop"} {
			if !strings.Contains(md.String(), want) {
				t.Errorf("report lacks %q:\n%s", want, md.String())
			}
		}
		if rep.Follow.Transactions == 0 || rep.Follow.MaxLagSeconds < 2 || len(rep.History) < 3 || rep.Copy.BytesPerSec <= 0 {
			t.Errorf("report figures: follow %+v, %d history points, copy %+v", rep.Follow, len(rep.History), rep.Copy)
		}
		if strings.Contains(html.String(), "http://") && strings.Contains(html.String(), "<script src") {
			t.Errorf("the HTML report loads something from elsewhere")
		}
		mdFile, htmlFile := filepath.Join(dir, "report.md"), filepath.Join(dir, "report.html")
		_ = os.WriteFile(mdFile, md.Bytes(), 0o644)
		if err := os.WriteFile(htmlFile, html.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		b := newBrowser(t)
		text := b.open("file://"+htmlFile, `document.querySelector("svg polyline") !== null`)
		if !strings.Contains(text, "Table Validation Summary") || !strings.Contains(text, "Replication lag over time") {
			t.Errorf("rendered report:\n%s", text)
		}
		b.screenshot(filepath.Join(dir, "report.png"))
	})

	t.Run("agent restart alert", func(t *testing.T) {
		cfg2 := cfg
		cfg2.HTTP = ""
		cfg2.Alerts.Webhooks = []config.Webhook{{URL: sink.srv.URL + "/restart", Format: "slack"}}
		cfg2.Alerts.Rules = []config.AlertRule{{Name: "Restarted", Kind: "agent_restarted"}}
		rctx, rcancel := context.WithCancel(ctx)
		rdone := make(chan error, 1)
		go func() {
			rdone <- Run(rctx, cfg2, RunOptions{HeartbeatInterval: 300 * time.Millisecond, MonitorInterval: 300 * time.Millisecond}, log)
		}()
		defer func() {
			rcancel()
			if err := <-rdone; err != nil {
				t.Errorf("second agent: %v", err)
			}
		}()
		waitFor(t, 30*time.Second, rdone, "the restart alert fires and resolves", func() bool { return len(sink.bodies("/restart")) >= 2 })
		got := sink.bodies("/restart")
		if !strings.Contains(got[0], "[FIRING] Restarted") || !strings.Contains(got[0], "stopped cleanly") || !strings.Contains(got[1], "[RESOLVED] Restarted") {
			t.Errorf("restart webhooks: %q", got)
		}
	})
}

func rawGet(t *testing.T, addr, path string) []byte {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %s", path, resp.Status, b)
	}
	return b
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

func matchLabels(m *dto.Metric, kv []string) bool {
	for i := 0; i+1 < len(kv); i += 2 {
		ok := false
		for _, l := range m.Label {
			if l.GetName() == kv[i] && l.GetValue() == kv[i+1] {
				ok = true
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds, failing after d or when the agent stops.
func waitFor(t *testing.T, d time.Duration, agentDone chan error, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		select {
		case err := <-agentDone:
			agentDone <- err
			t.Fatalf("waiting until %s: the agent stopped: %v", what, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
