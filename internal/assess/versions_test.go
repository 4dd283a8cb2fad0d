package assess

import (
	"strings"
	"testing"
)

// TestVersionFindings checks what assess says about each source major: every version is told
// that sequences and DDL never replicate; 10 that TRUNCATE does not; sources before 14 that
// large transactions are not streamed; 12 with partitions how new partitions are handled; 17+
// about failover slots; and a major upgrade names what the new server gives.
func TestVersionFindings(t *testing.T) {
	type want struct {
		sev  Severity
		text string
	}
	cases := []struct {
		name     string
		src, dst int
		parts    bool
		want     []want
		wantNot  []string
	}{
		{"9.6 source", 90624, 150004, false, []want{{Blocker, "PostgreSQL 10 or newer"}}, nil},
		{"10 source", 100023, 150004, true, []want{{Warning, "does not replicate TRUNCATE"}, {Warning, "statement-level trigger"}, {Info, "cannot stream transactions"},
			{Info, "no max_slot_wal_keep_size"}, {Info, "leaf partitions only"}}, []string{"10 or newer"}},
		{"11 source", 110022, 150004, true, []want{{Info, "cannot stream transactions"}, {Info, "leaf partitions only"}}, []string{"TRUNCATE", "10 or newer"}},
		{"11 target", 110022, 110022, false, []want{{Blocker, "target of 12 or newer"}}, nil},
		{"12 source with partitions", 120022, 150004, true, []want{{Info, "leaf partitions only"}, {Info, "cannot stream transactions"}, {Info, "no max_slot_wal_keep_size"}},
			[]string{"TRUNCATE"}},
		{"13 source", 130023, 150004, true, []want{{Info, "cannot stream transactions"}}, []string{"leaf partitions only", "no max_slot_wal_keep_size"}},
		{"14 source", 140023, 150004, false, nil, []string{"cannot stream", "leaf partitions"}},
		{"17 source", 170010, 180004, false, []want{{Info, "failover slots"}}, []string{"cannot stream"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := readyFacts()
			f.Source.VersionNum, f.Target.VersionNum = c.src, c.dst
			if c.parts {
				f.Tables = append(f.Tables, Table{Schema: "public", Name: "events", Kind: "partitioned"})
			}
			fs := versionFindings(f)
			all := ""
			for _, x := range fs {
				all += string(x.Severity) + ": " + x.Message + "\n"
			}
			if !strings.Contains(all, "sequence values or schema changes (DDL)") {
				t.Errorf("no finding that sequences and DDL never replicate:\n%s", all)
			}
			for _, w := range c.want {
				if !containsFinding(fs, w.sev, w.text) {
					t.Errorf("no %s finding saying %q:\n%s", w.sev, w.text, all)
				}
			}
			for _, n := range c.wantNot {
				if strings.Contains(all, n) {
					t.Errorf("a finding says %q, which does not apply to %d:\n%s", n, c.src, all)
				}
			}
		})
	}
	gains := upgradeGains(120022, 170010)
	if len(gains) != 7 || !strings.Contains(strings.Join(gains, ";"), "origin = none") {
		t.Errorf("12 → 17 gains: %v", gains)
	}
	gains = upgradeGains(100023, 150004)
	if all := strings.Join(gains, ";"); len(gains) != 8 || !strings.Contains(all, "TRUNCATE in logical replication") || !strings.Contains(all, "streaming") {
		t.Errorf("10 → 15 gains: %v", gains)
	}
	if g := upgradeGains(150004, 150010); len(g) != 0 {
		t.Errorf("a minor upgrade gains %v", g)
	}
}

func containsFinding(fs []Finding, sev Severity, text string) bool {
	for _, f := range fs {
		if f.Severity == sev && strings.Contains(f.Message, text) {
			return true
		}
	}
	return false
}
