package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestPlanCouldNotRun: bad flags and unreachable servers exit 2, saying what to fix, never the password.
func TestPlanCouldNotRun(t *testing.T) {
	const secret = "Zq9-secret-pw"
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"bad format", []string{"plan", "--source", "host=x", "--format", "yaml"}, "rds-json"},
		{"bad memory", []string{"plan", "--source", "host=x", "--target-memory", "lots"}, "--target-memory"},
		{"negative cpus", []string{"plan", "--source", "host=x", "--target-cpus", "-1"}, "--target-cpus"},
		{"no source", []string{"plan"}, "--source"},
		{"refused", []string{"plan", "--source", "postgres://app:" + secret + "@127.0.0.1:1/shop?connect_timeout=3"}, "connection refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := pgshift(t, nil, c.args...)
			if code != 2 || !strings.Contains(stderr, c.want) {
				t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, c.want)
			}
			if strings.Contains(stdout+stderr, secret) {
				t.Errorf("password leaked: %q", stderr)
			}
		})
	}
}

// TestPlanCommand runs `pgshift plan` end to end on a real source and target: JSON with the
// settings and their reasons, and SQL that names only what the target needs changed.
func TestPlanCommand(t *testing.T) {
	_, _, srcDSN, dstDSN := pgtest.Pair(t, "shop")
	code, stdout, stderr := pgshift(t, nil, "plan", "--source", srcDSN, "--target", dstDSN, "--target-memory", "2GB", "--format", "json", "--sample-mb", "0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var p struct {
		Family   string `json:"family"`
		Settings []struct {
			Name, Value, Reason, Current string
			Change                       bool
		} `json:"settings"`
	}
	if err := json.Unmarshal([]byte(stdout), &p); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, stdout)
	}
	got := map[string]string{}
	for _, s := range p.Settings {
		if s.Reason == "" {
			t.Errorf("%s has no reason", s.Name)
		}
		got[s.Name] = s.Value + " " + s.Current
	}
	// pgtest's target has shared_buffers 128MB and wal_level logical; 2GB plans 512MB.
	if got["shared_buffers"] != "512MB 128MB" || got["wal_level"] != "logical logical" || p.Family != "postgres15" {
		t.Errorf("plan: family %s, shared_buffers %q, wal_level %q", p.Family, got["shared_buffers"], got["wal_level"])
	}
	code, stdout, stderr = pgshift(t, nil, "plan", "--source", srcDSN, "--target", dstDSN, "--target-memory", "2GB", "--format", "sql", "--sample-mb", "0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(stdout, "ALTER SYSTEM SET shared_buffers = '512MB';") || strings.Contains(stdout, "ALTER SYSTEM SET wal_level") {
		t.Errorf("SQL should change shared_buffers and leave wal_level, which the target has:\n%s", stdout)
	}
}
