package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAlertsConfigLoads: the alerts section (a mapping of free label names, lists of webhooks
// and rules with durations) passes the key check, and its mistakes are named in YAML terms.
func TestAlertsConfigLoads(t *testing.T) {
	good := "alerts:\n  interval: 5s\n  labels:\n    team: db\n    env: prod\n  webhooks:\n    - url_file: /etc/hook\n      format: slack\n" +
		"  rules:\n    - name: Lag\n      kind: lag_seconds\n      over: 1m\n      for: 30s\n      severity: critical\n" +
		"http_settings:\n  token_file: /etc/token\n"
	file := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(file, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(file, env(nil))
	if err != nil {
		t.Fatalf("valid alerts section refused: %v", err)
	}
	if cfg.Alerts.Labels["team"] != "db" || cfg.Alerts.Interval != 5*time.Second || len(cfg.Alerts.Rules) != 1 ||
		cfg.Alerts.Rules[0].For != 30*time.Second || cfg.HTTPSettings.TokenFile != "/etc/token" {
		t.Fatalf("alerts section read wrong: %+v %+v", cfg.Alerts, cfg.HTTPSettings)
	}
	for _, c := range []struct{ yaml, want string }{
		{"alerts:\n  labels: prod\n", "a mapping of names to text values"},
		{"alerts:\n  labels:\n    team: [a, b]\n", "alerts.labels.team"},
		{"alerts:\n  rules:\n    - nmae: x\n", `unknown key "alerts.rules[0].nmae"`},
	} {
		if err := os.WriteFile(file, []byte(c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(file, env(nil))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: want an error naming %q, got %v", c.yaml, c.want, err)
		}
	}
}
