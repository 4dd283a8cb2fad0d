package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestConfigErrorsSpeakYAML: an unknown key, or a value of the wrong kind, is reported with its
// line, its key path and what is valid there, never with a Go type name.
func TestConfigErrorsSpeakYAML(t *testing.T) {
	cases := []struct {
		yaml string
		want []string
	}{
		{"source: host=a\nsorce: host=b\n", []string{"line 2", `unknown key "sorce"`, "valid keys", "source", "target", "jobs"}},
		{"proxy_settings:\n  mdoe: split\n", []string{"line 2", `unknown key "proxy_settings.mdoe"`, "mode", "auth_file"}},
		{"proxy_settings:\n  rules:\n    - name: r\n      percnt: 10\n", []string{"line 4", `"proxy_settings.rules[0].percnt"`, "percent"}},
		{"jobs: four\n", []string{"line 1", "jobs", "a whole number", `"four"`}},
		{"lag_warn: soon\n", []string{"line 1", "lag_warn", "a duration such as 30s or 5m"}},
		{"include: public.orders\n", []string{"line 1", "include", "a list"}},
	}
	for _, c := range cases {
		file := filepath.Join(t.TempDir(), "c.yaml")
		if err := os.WriteFile(file, []byte(c.yaml), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(file, env(nil))
		if err == nil {
			t.Errorf("%q accepted", c.yaml)
			continue
		}
		msg := err.Error()
		for _, w := range c.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%q: error lacks %q: %s", c.yaml, w, msg)
			}
		}
		for _, goName := range []string{"config.Config", "config.ProxySettings", "config.RouteRule", "time.Duration", "!!str", "[]string", "into int"} {
			if strings.Contains(msg, goName) {
				t.Errorf("%q: error shows Go/YAML internals %q: %s", c.yaml, goName, msg)
			}
		}
	}
}

// TestValidateNamesTheFlag: a bad value is reported by the flag and the config key that set it.
func TestValidateNamesTheFlag(t *testing.T) {
	cfg := Defaults()
	cfg.Jobs = 0
	err := cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), "--jobs") || !strings.Contains(err.Error(), "jobs:") {
		t.Errorf("jobs 0: %v", err)
	}
	cfg = Defaults()
	cfg.LagWarn = -1
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "lag_warn:") {
		t.Errorf("negative lag_warn: %v", err)
	}
}
