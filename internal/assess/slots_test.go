package assess

import (
	"strings"
	"testing"
	"time"
)

func int64p(v int64) *int64 { return &v }

// only returns the findings with one of the given codes.
func only(fs []Finding, codes ...string) []Finding {
	var out []Finding
	for _, f := range fs {
		for _, c := range codes {
			if f.Code == c {
				out = append(out, f)
			}
		}
	}
	return out
}

func TestSlotRules(t *testing.T) {
	idle := Slot{Name: "pgshift_shop", Type: "logical", Database: "shop", RetainedBytes: 3 << 30, WALStatus: "extended"}
	migration := &TargetMigration{SourceDatabase: "shop", Slot: "pgshift_shop", Publication: "pgshift_shop", Phase: "follow"}
	type expect struct {
		code, sev, object string
		// in lists substrings the message (m:) or the fix (f:) must contain.
		in []string
	}
	cases := []struct {
		name   string
		change func(*Facts)
		want   []expect
	}{
		{"no pgshift objects", func(*Facts) {}, nil},
		{"inactive leftover slot", func(f *Facts) { f.PgshiftSlots = []Slot{idle} },
			[]expect{{CodeLeftoverSlot, "warning", "replication slot pgshift_shop", []string{
				"m:3.0 GB of WAL", "m:pg_current_wal_lsn() - restart_lsn", "m:the target holds no pgshift migration state", "m:database shop",
				"m:until the source's disk fills", "f:SELECT pg_drop_replication_slot('pgshift_shop');", "f:pgshift finish"}}}},
		{"leftover slot with a WAL limit", func(f *Facts) {
			f.PgshiftSlots = []Slot{idle}
			f.Source.MaxSlotWALKeepBytes = int64p(10 << 30)
		}, []expect{
			{CodeLeftoverSlot, "warning", "replication slot pgshift_shop", []string{"m:until it passes max_slot_wal_keep_size = 10 GB"}},
			{CodeMaxSlotWALKeepSize, "info", "setting max_slot_wal_keep_size", nil},
		}},
		{"leftover slot without a target", func(f *Facts) { f.Target = nil; f.PgshiftSlots = []Slot{idle} },
			[]expect{{CodeLeftoverSlot, "warning", "replication slot pgshift_shop", []string{"m:no target was given", "f:--target"}}}},
		// A slot something streams from is in use: never a leftover, never offered for DROP.
		{"active slot of another migration", func(f *Facts) {
			s := idle
			s.Active, s.ActivePID = true, 4242
			f.PgshiftSlots = []Slot{s}
			f.PgshiftPublications = []string{"pgshift_shop"}
		}, []expect{{CodeMigrationInProgress, "info", "replication slot pgshift_shop", []string{"m:process 4242", "m:in use"}}}},
		{"invalidated leftover slot", func(f *Facts) {
			s := idle
			s.WALStatus, s.RetainedBytes = "lost", 0
			f.PgshiftSlots = []Slot{s}
		}, []expect{{CodeLeftoverSlot, "warning", "replication slot pgshift_shop", []string{"m:wal_status lost"}}}},
		{"leftover default publication", func(f *Facts) { f.PgshiftPublications = []string{"pgshift_shop"} },
			[]expect{{CodeLeftoverPublication, "warning", "publication pgshift_shop", []string{
				"m:refuses to start", `f:DROP PUBLICATION "pgshift_shop";`, "f:pgshift finish"}}}},
		{"leftover publication with an odd name is quoted", func(f *Facts) { f.PgshiftPublications = []string{`pgshift_Old "one"`} },
			[]expect{{CodeLeftoverPublication, "warning", `publication pgshift_Old "one"`, []string{
				`f:DROP PUBLICATION "pgshift_Old ""one""";`, "m:costs nothing by itself"}}}},
		{"migration in progress", func(f *Facts) {
			f.TargetMigration = migration
			f.PgshiftSlots = []Slot{idle}
			f.PgshiftPublications = []string{"pgshift_shop"}
		}, []expect{{CodeMigrationInProgress, "info", "replication slot pgshift_shop", []string{"m:phase follow", "m:3.0 GB", "m:agent is stopped"}}}},
		{"migration in progress beside a leftover", func(f *Facts) {
			f.TargetMigration = migration
			f.PgshiftSlots = []Slot{{Name: "pgshift_old", Type: "logical", Database: "shop", RetainedBytes: 1 << 20}, idle}
			f.PgshiftPublications = []string{"pgshift_old", "pgshift_shop"}
		}, []expect{
			{CodeMigrationInProgress, "info", "replication slot pgshift_shop", nil},
			{CodeLeftoverSlot, "warning", "replication slot pgshift_old", []string{"m:the migration recorded on the target uses slot pgshift_shop"}},
			{CodeLeftoverPublication, "warning", "publication pgshift_old", []string{"m:costs nothing by itself"}},
		}},
		{"migration whose slot was invalidated", func(f *Facts) {
			s := idle
			s.WALStatus = "lost"
			f.TargetMigration = migration
			f.PgshiftSlots = []Slot{s}
		}, []expect{{CodeMigrationInProgress, "warning", "replication slot pgshift_shop", []string{"m:cannot continue", "f:pgshift copy --force"}}}},
		{"WAL limit unknown before PostgreSQL 13", func(f *Facts) { f.Source.MaxSlotWALKeepBytes = nil }, nil},
		{"WAL limit unlimited", func(f *Facts) {
			f.Source.MaxSlotWALKeepBytes = int64p(-1)
			f.Source.WALBytesPerSec, f.CopySeconds = 1<<20, 3600
		}, []expect{{CodeMaxSlotWALKeepSize, "info", "setting max_slot_wal_keep_size", []string{
			"m:-1 (unlimited)", "m:until the source's disk fills", "m:3.5 GB of WAL per hour", "m:3.5 GB during a copy of up to 1h0m0s",
			"f:ALTER SYSTEM SET max_slot_wal_keep_size = '11GB'; SELECT pg_reload_conf();"}}}},
		{"WAL limit unlimited, rate unknown", func(f *Facts) { f.Source.MaxSlotWALKeepBytes = int64p(-1) },
			[]expect{{CodeMaxSlotWALKeepSize, "info", "setting max_slot_wal_keep_size", []string{
				"m:rate is unknown", "f:max_slot_wal_keep_size = '...'", "f:a few times the WAL written during the expected copy time"}}}},
		{"WAL limit above the copy's WAL", func(f *Facts) {
			f.Source.MaxSlotWALKeepBytes = int64p(10 << 30)
			f.Source.WALBytesPerSec, f.CopySeconds = 1<<20, 3600
		}, []expect{{CodeMaxSlotWALKeepSize, "info", "setting max_slot_wal_keep_size", []string{
			"m:is 10 GB", "m:fall up to 10 GB of WAL behind", "m:fatal error", "m:start over"}}}},
		{"WAL limit below the copy's WAL", func(f *Facts) {
			f.Source.MaxSlotWALKeepBytes = int64p(1 << 30)
			f.Source.WALBytesPerSec, f.CopySeconds = 1<<20, 3600
		}, []expect{{CodeMaxSlotWALKeepSize, "warning", "setting max_slot_wal_keep_size", []string{
			"m:is 1.0 GB", "m:3.5 GB during a copy", "m:invalidate it during the copy", "f:max_slot_wal_keep_size = '11GB'"}}}},
		{"WAL limit with the rate but no estimate", func(f *Facts) {
			f.Source.MaxSlotWALKeepBytes = int64p(1 << 20)
			f.Source.WALBytesPerSec = 1 << 20
		}, []expect{{CodeMaxSlotWALKeepSize, "info", "setting max_slot_wal_keep_size", []string{"m:per hour"}}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := readyFacts()
			c.change(&f)
			got := only(Evaluate(f), CodeLeftoverSlot, CodeLeftoverPublication, CodeMigrationInProgress, CodeMaxSlotWALKeepSize)
			if len(got) != len(c.want) {
				t.Fatalf("got %d findings, want %d: %+v", len(got), len(c.want), got)
			}
			for _, w := range c.want {
				i := -1
				for j, g := range got {
					if g.Code == w.code && g.Object == w.object {
						i = j
					}
				}
				if i < 0 {
					t.Errorf("no %s finding for %s in %+v", w.code, w.object, got)
					continue
				}
				g := got[i]
				if string(g.Severity) != w.sev {
					t.Errorf("%s %s: severity %s, want %s", w.code, w.object, g.Severity, w.sev)
				}
				if g.Message == "" || (g.Severity != Info && g.Fix == "") {
					t.Errorf("finding without message or fix: %+v", g)
				}
				for _, s := range w.in {
					text := g.Message
					if strings.HasPrefix(s, "f:") {
						text = g.Fix
					}
					if !strings.Contains(text, s[2:]) {
						t.Errorf("%s %s lacks %q:\n message: %s\n fix: %s", w.code, w.object, s[2:], g.Message, g.Fix)
					}
				}
			}
		})
	}
}

// TestBuildPassesTheCopyEstimate checks that the WAL limit is compared with the WAL written
// during the slow end of the copy estimate.
func TestBuildPassesTheCopyEstimate(t *testing.T) {
	f := readyFacts()
	f.Source.MaxSlotWALKeepBytes = int64p(1 << 30)
	f.Source.WALBytesPerSec = 1 << 20
	short := Build(f, Estimate{HighSeconds: 60}, time.Now())
	if !short.Has(CodeMaxSlotWALKeepSize, Info, "setting max_slot_wal_keep_size") {
		t.Errorf("60 MB of WAL fits 1 GB: %+v", short.Findings)
	}
	long := Build(f, Estimate{HighSeconds: 7200}, time.Now())
	if !long.Has(CodeMaxSlotWALKeepSize, Warning, "setting max_slot_wal_keep_size") || long.Warnings != 1 {
		t.Errorf("7 GB of WAL does not fit 1 GB: %+v", long.Findings)
	}
}
