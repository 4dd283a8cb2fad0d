package metrics

import (
	"encoding/json"
	"fmt"
)

// Grafana returns a Grafana dashboard (JSON model, schema 39) over the agent's metrics, with a
// Prometheus data source variable, for users who run their own Prometheus and Grafana.
func Grafana() ([]byte, error) {
	type target struct {
		Expr         string `json:"expr"`
		LegendFormat string `json:"legendFormat,omitempty"`
		RefID        string `json:"refId"`
	}
	ds := map[string]string{"type": "prometheus", "uid": "${datasource}"}
	var panels []map[string]any
	id := 0
	add := func(kind, title, unit string, w, h int, exprs ...[2]string) {
		id++
		var ts []target
		for i, e := range exprs {
			ts = append(ts, target{Expr: e[0], LegendFormat: e[1], RefID: string(rune('A' + i))})
		}
		x, y := 0, 0
		if len(panels) > 0 {
			last := panels[len(panels)-1]["gridPos"].(map[string]int)
			x, y = last["x"]+last["w"], last["y"]
			if x+w > 24 {
				x, y = 0, y+last["h"]
			}
		}
		panels = append(panels, map[string]any{
			"id": id, "type": kind, "title": title, "datasource": ds, "targets": ts,
			"gridPos":     map[string]int{"x": x, "y": y, "w": w, "h": h},
			"fieldConfig": map[string]any{"defaults": map[string]any{"unit": unit}, "overrides": []any{}},
		})
	}
	add("stat", "Phase", "none", 6, 4, [2]string{fmt.Sprintf(`max by (phase) (%s) == 1`, Phase), "{{phase}}"})
	add("stat", "Replication lag", "s", 6, 4, [2]string{LagSeconds, "lag"})
	add("stat", "WAL retained by the slot", "bytes", 6, 4, [2]string{RetainedWAL, "retained"})
	add("stat", "Verify differences", "none", 6, 4, [2]string{VerifyDifferences, "differences"})
	add("timeseries", "Replication lag", "s", 12, 8, [2]string{LagSeconds, "seconds"})
	add("timeseries", "Replication lag (bytes) and retained WAL", "bytes", 12, 8,
		[2]string{LagBytes, "lag"}, [2]string{RetainedWAL, "retained WAL"})
	add("timeseries", "Apply throughput", "ops", 12, 8,
		[2]string{fmt.Sprintf("rate(%s[1m])", AppliedTransactions), "transactions/s"},
		[2]string{fmt.Sprintf("rate(%s[1m])", AppliedChanges), "changes/s"})
	add("timeseries", "Applied WAL per second and apply errors", "Bps", 12, 8,
		[2]string{ApplyRate, "applied WAL"}, [2]string{fmt.Sprintf("increase(%s[5m])", ApplyErrors), "apply errors (5m)"})
	add("timeseries", "Copy throughput by table", "Bps", 12, 8,
		[2]string{fmt.Sprintf("sum by (table) (rate(%s[1m]))", CopyBytes), "{{table}}"})
	add("bargauge", "Copy progress by table", "percentunit", 12, 8,
		[2]string{fmt.Sprintf("%s / on(job, instance, table) %s", CopyBytes, CopyEstimatedBytes), "{{table}}"})
	add("timeseries", "Tables by copy state", "none", 12, 8, [2]string{fmt.Sprintf("sum by (state) (%s)", CopyTables), "{{state}}"})
	add("timeseries", "Proxy sessions and routed statements", "ops", 12, 8,
		[2]string{ProxyClientSessions, "client sessions"},
		[2]string{fmt.Sprintf("sum by (route) (rate(%s[1m]))", ProxyStatements), "statements/s to {{route}}"})
	add("timeseries", "Proxy pause duration (p50, p99)", "s", 12, 8,
		[2]string{fmt.Sprintf("histogram_quantile(0.5, sum by (le) (rate(%s_bucket[5m])))", ProxyPauseDuration), "p50"},
		[2]string{fmt.Sprintf("histogram_quantile(0.99, sum by (le) (rate(%s_bucket[5m])))", ProxyPauseDuration), "p99"})
	add("bargauge", "Cutover step durations", "s", 12, 8, [2]string{CutoverStepDuration, "{{step}}"})
	dash := map[string]any{
		"title": "pgshift migration", "uid": "pgshift", "schemaVersion": 39, "version": 1, "editable": true,
		"tags": []string{"pgshift", "postgresql"}, "time": map[string]string{"from": "now-6h", "to": "now"}, "refresh": "10s",
		"templating": map[string]any{"list": []any{map[string]any{
			"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus",
		}}},
		"panels": panels,
	}
	out, err := json.MarshalIndent(dash, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render Grafana dashboard: %w", err)
	}
	return append(out, '\n'), nil
}
