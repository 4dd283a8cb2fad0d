package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestVerifyCommand checks verify's exit codes and outputs end to end: 0 identical, 1 with
// differences (text and JSON), --repair back to 0, 2 when it cannot run, and never a password.
func TestVerifyCommand(t *testing.T) {
	const secret = "Zq9-secret-pw"
	for _, args := range [][]string{
		{"verify", "--source", "postgres://app:" + secret + "@127.0.0.1:1/shop?connect_timeout=3", "--target", "host=127.0.0.1 port=1"},
		{"verify", "--source", "host=x", "--target", "host=y", "--mode", "fast"},
		{"verify", "--target", "host=y"},
	} {
		code, stdout, stderr := pgshift(t, nil, args...)
		if code != 2 || strings.Contains(stdout+stderr, secret) || strings.TrimSpace(stderr) == "" {
			t.Errorf("%v: exit %d, stderr %q", args[1:], code, stderr)
		}
	}

	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "shop")
	ctx := context.Background()
	schema := `CREATE TABLE items (id int PRIMARY KEY, name text, price numeric(10,2), at timestamptz);
INSERT INTO items SELECT g, 'item ' || g, g * 1.25, timestamptz '2024-05-01 12:00:00.123456+00' + g * interval '1 s' FROM generate_series(1, 5000) g;
CREATE SEQUENCE ticket_seq; SELECT setval('ticket_seq', 40);`
	for _, c := range []*pgtest.Cluster{src, dst} {
		if out, err := c.Psql(ctx, "shop", schema); err != nil {
			t.Fatal(err, out)
		}
	}
	base := []string{"verify", "--source", srcDSN, "--target", dstDSN, "--progress", "none"}
	code, stdout, stderr := pgshift(t, nil, append(base, "--no-save")...)
	if code != 0 || !strings.Contains(stdout, "Result: IDENTICAL (exit 0)") || !strings.Contains(stdout, "Tables identical: 1/1 (100%)") {
		t.Fatalf("identical: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if out, _ := dst.Psql(ctx, "shop", `SELECT to_regnamespace('pgshift') IS NULL`); out != "t" {
		t.Errorf("--no-save wrote the pgshift schema on the target")
	}

	if out, err := dst.Psql(ctx, "shop", `UPDATE items SET at = date_trunc('milliseconds', at) WHERE id = 42;
		DELETE FROM items WHERE id = 4000; SELECT setval('ticket_seq', 10);`); err != nil {
		t.Fatal(err, out)
	}
	code, stdout, stderr = pgshift(t, nil, append(base, "--json")...)
	if code != 1 {
		t.Fatalf("differences: exit %d\n%s", code, stderr)
	}
	var rep struct {
		Tables []struct {
			Table string `json:"table"`
			Rows  []struct {
				Kind, Key, Class string
			} `json:"rows"`
		} `json:"tables"`
		Summary struct {
			Differences int64 `json:"differences"`
		} `json:"summary"`
		Classes map[string]int `json:"classes"`
	}
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("JSON output: %v\n%s", err, stdout)
	}
	if rep.Summary.Differences != 3 || rep.Classes["timestamp precision"] != 1 || rep.Classes["sequence drift"] != 1 ||
		len(rep.Tables) != 1 || len(rep.Tables[0].Rows) != 2 {
		t.Errorf("JSON report: %+v", rep)
	}
	code, stdout, _ = pgshift(t, nil, base...)
	for _, want := range []string{"public.items: 2 differences (1 missing, 1 different) in 5000 source rows",
		`at: source "2024-05-01 12:00:42.123456+00", target "2024-05-01 12:00:42.123+00" [timestamp precision]`,
		"id=4000: missing [missing row]", "public.ticket_seq: source 40, target 10 (30 behind) [sequence drift]",
		"1 tables with timestamp precision differences (1 rows)", "Result: DIFFERENCES FOUND (exit 1)"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("text output lacks %q:\n%s", want, stdout)
		}
	}
	if code != 1 {
		t.Errorf("text: exit %d", code)
	}
	code, stdout, stderr = pgshift(t, nil, append(base, "--repair")...)
	if code != 0 || !strings.Contains(stdout, "public.items: 1 deleted, 2 inserted, 0 still different") {
		t.Errorf("repair: exit %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, _ = pgshift(t, nil, base...)
	if code != 0 {
		t.Errorf("after repair: exit %d\n%s", code, stdout)
	}
	// The target holds no migration: verify only read it, and saved nothing (it says so).
	if out, _ := dst.Psql(ctx, "shop", `SELECT to_regnamespace('pgshift') IS NULL`); out != "t" {
		t.Errorf("verify wrote the pgshift schema on a target that holds no migration")
	}
	if !strings.Contains(stdout, "the result was not saved") {
		t.Errorf("verify does not say the result was not saved:\n%s", stdout)
	}
}
