package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/pgtest"
)

func pgshift(t *testing.T, env map[string]string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(t.Context(), args, &out, &errOut, func(k string) string { return env[k] })
	return code, out.String(), errOut.String()
}

// TestAssessCouldNotRun: exit 2 with one line that says what to fix, never the password.
func TestAssessCouldNotRun(t *testing.T) {
	const secret = "Zq9-secret-pw"
	badConfig := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(badConfig, []byte("sorce: host=x\n"), 0o600)
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"refused URL", nil, []string{"assess", "--source", "postgres://app:" + secret + "@127.0.0.1:1/shop?connect_timeout=3"},
			[]string{"source app@127.0.0.1:1/shop", "connection refused", "is the server running"}},
		{"refused key/value from env", map[string]string{"PGSHIFT_SOURCE": "host=127.0.0.1 port=1 user=app password=" + secret + " dbname=shop connect_timeout=3"},
			[]string{"assess"}, []string{"source app@127.0.0.1:1/shop", "connection refused"}},
		{"refused target", nil, []string{"assess", "--source", "postgres://app:" + secret + "@127.0.0.1:1/shop", "--target", "host=127.0.0.1 port=1 password=" + secret},
			[]string{"source app@127.0.0.1:1/shop", "connection refused"}},
		{"no source", nil, []string{"assess"}, []string{"--source", "PGSHIFT_SOURCE"}},
		{"bad format", nil, []string{"assess", "--source", "host=x", "--format", "yaml"}, []string{"--format", "text, json or markdown"}},
		{"bad flag", nil, []string{"assess", "--sorce", "host=x"}, []string{"unknown flag: --sorce"}},
		{"malformed config", nil, []string{"assess", "-c", badConfig}, []string{badConfig, "valid keys"}},
		{"malformed DSN", nil, []string{"assess", "--source", "postgres://app:" + secret + "@host:notaport/db"}, []string{"invalid connection string"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, stderr := pgshift(t, c.env, c.args...)
			if code != 2 {
				t.Errorf("exit %d, want 2; stderr %q", code, stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q lacks %q", stderr, w)
				}
			}
			if strings.Contains(stderr+stdout, secret) {
				t.Errorf("password leaked: %q", stderr)
			}
			var errLines []string // the one-line error, after any warnings
			for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
				if !strings.HasPrefix(l, "warning: ") {
					errLines = append(errLines, l)
				}
			}
			if lines := len(errLines); lines != 1 {
				t.Errorf("want a one-line error, got %d lines: %q", lines, stderr)
			}
		})
	}
}

// TestAssessExitCodes runs the command against a real, password-protected server.
func TestAssessExitCodes(t *testing.T) {
	const secret = "Pw-7f3e-assess"
	c := pgtest.New(t, pgtest.Options{Password: secret})
	ctx := context.Background()
	readyDSN, err := c.CreateDB(ctx, "ready")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Psql(ctx, "ready", `CREATE TABLE items (id int PRIMARY KEY, name text); INSERT INTO items VALUES (1, 'a')`); err != nil {
		t.Fatal(err)
	}
	blockedDSN, err := c.CreateDB(ctx, "blocked")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Psql(ctx, "blocked", `CREATE TABLE audit_log (at timestamptz, what text)`); err != nil {
		t.Fatal(err)
	}
	targetURL := c.URL("postgres")

	t.Run("ready", func(t *testing.T) {
		code, stdout, stderr := pgshift(t, nil, "assess", "--source", readyDSN, "--target", targetURL)
		if code != 0 {
			t.Fatalf("exit %d: %s\n%s", code, stderr, stdout)
		}
		if !strings.Contains(stdout, "READY") || !strings.Contains(stdout, "public.items") {
			t.Errorf("report:\n%s", stdout)
		}
		if strings.Contains(stdout+stderr, secret) {
			t.Error("password in output")
		}
	})
	t.Run("blockers", func(t *testing.T) {
		code, stdout, stderr := pgshift(t, map[string]string{"PGSHIFT_SOURCE": blockedDSN}, "assess", "--format", "json", "--log-level", "error")
		if code != 1 {
			t.Fatalf("exit %d, want 1: %s", code, stderr)
		}
		var rep struct {
			Ready    bool `json:"ready"`
			Findings []struct{ Code, Severity, Object string }
		}
		if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
			t.Fatalf("stdout is not JSON: %v\n%s", err, stdout)
		}
		found := false
		for _, f := range rep.Findings {
			found = found || (f.Code == "no_replica_identity" && f.Severity == "blocker" && f.Object == "public.audit_log")
		}
		if rep.Ready || !found {
			t.Errorf("want not ready with no_replica_identity on public.audit_log: %+v", rep)
		}
		if stderr != "" {
			t.Errorf("stderr must be empty at --log-level error: %q", stderr)
		}
	})
	t.Run("markdown", func(t *testing.T) {
		code, stdout, _ := pgshift(t, nil, "assess", "--source", readyDSN, "--format", "markdown", "--sample-mb", "0")
		if code != 0 || !strings.HasPrefix(stdout, "# pgshift assessment") {
			t.Errorf("exit %d:\n%s", code, stdout)
		}
	})
	t.Run("wrong password", func(t *testing.T) {
		const wrong = "Wr0ng-guess-991"
		dsn := strings.Replace(readyDSN, "password="+secret, "password="+wrong, 1)
		code, stdout, stderr := pgshift(t, nil, "assess", "--source", dsn)
		if code != 2 || !strings.Contains(stderr, "password") || strings.Contains(stderr+stdout, wrong) {
			t.Errorf("exit %d, stderr %q", code, stderr)
		}
	})
}

func TestDemoFlags(t *testing.T) {
	for _, args := range [][]string{{"demo", "--scale", "0"}, {"demo", "--format", "pdf"}, {"demo", "--warmup", "-1s"}} {
		if code, _, stderr := pgshift(t, nil, args...); code != 2 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q", args, code, stderr)
		}
	}
}
