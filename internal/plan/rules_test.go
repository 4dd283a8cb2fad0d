package plan

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/assess"
)

const (
	kB = int64(1) << 10
	mB = int64(1) << 20
	gB = int64(1) << 30
	tB = int64(1) << 40
)

func TestLoadMaxWALSize(t *testing.T) {
	for _, tc := range []struct {
		name        string
		copyWAL     int64
		copySeconds float64
		want        int64
	}{
		{"unknown copy keeps the default", 0, 0, 1 * gB},
		{"a copy smaller than one checkpoint's WAL keeps the default", 100 * mB, 10, 1 * gB},
		// 2GB in 10 s: 15 min at that rate is far more than the whole copy, so the whole copy's
		// WAL × 1.9 = 3.8GB, rounded up.
		{"fast copy: no WAL-triggered checkpoint for the whole copy", 2 * gB, 10, 4 * gB},
		// 1TB in 10 h: 30.5MB/s × 900 s × 1.9 = 48.6GB, rounded up.
		{"long copy: 15 minutes of its WAL", 1 * tB, 36000, 49 * gB},
		// 600MB × 1.9 = 1.14GB: just over the default.
		{"just over the default", 600 * mB, 5, 2 * gB},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := LoadMaxWALSize(tc.copyWAL, tc.copySeconds, LoadCheckpointTimeout); got != tc.want {
				t.Fatalf("LoadMaxWALSize(%d, %g) = %s, want %s", tc.copyWAL, tc.copySeconds, pgSize(got), pgSize(tc.want))
			}
		})
	}
}

func TestCheckpointEvery(t *testing.T) {
	for _, tc := range []struct {
		maxWAL int64
		cct    float64
		rate   float64
		want   time.Duration
	}{
		// The default 1GB with 0.9: a checkpoint every 539MB; at 100MB/s every 5.39 s.
		{1 * gB, 0.9, float64(100 * mB), 5389 * time.Millisecond},
		// 0.5 (the default before 14): every 683MB.
		{1 * gB, 0.5, float64(100 * mB), 6827 * time.Millisecond},
		{4 * gB, 0.9, float64(10 * mB), 215578 * time.Millisecond},
		{1 * gB, 0.9, 0, 0},
	} {
		got := CheckpointEvery(tc.maxWAL, tc.cct, tc.rate)
		if d := got - tc.want; d < -time.Millisecond || d > time.Millisecond {
			t.Errorf("CheckpointEvery(%s, %g, %g) = %s, want %s", pgSize(tc.maxWAL), tc.cct, tc.rate, got, tc.want)
		}
	}
}

// pgbenchFacts are the facts of pgbench -i -s 100 on PostgreSQL 15 as Gather reads them.
func pgbenchFacts() Facts {
	return Facts{
		Source: assess.Server{Endpoint: "source", Version: "15.18", VersionNum: 150018, DatabaseBytes: 1503 * mB,
			MaxSlots: 10, UsedSlots: 0, MaxSenders: 10},
		DataBytes: 1281 * mB, IndexBytes: 214 * mB, CopySeconds: 4.3,
		LargestIndex:   Index{Name: "public.pgbench_accounts_pkey", Bytes: 214 * mB},
		MaxConnections: 100, MaxLogicalWorkers: 4,
	}
}

func TestMemorySettings(t *testing.T) {
	for _, tc := range []struct {
		name                            string
		mem                             int64
		conns                           int
		largestIndex                    int64
		shared, cache, work, maint      string
		sharedRDS, workRDS, maintRDS    string
		maintCapped, workAtDefaultFloor bool
	}{
		// 4GB: 1GB shared; (4GB − 1GB) / (100 × 3) = 10.24MB → 10MB; the 214MB index rounds up to 256MB, under the 256MB cap.
		{name: "4GB, pgbench", mem: 4 * gB, conns: 100, largestIndex: 214 * mB,
			shared: "1GB", cache: "3GB", work: "10MB", maint: "256MB", sharedRDS: "131072", workRDS: "10240", maintRDS: "262144"},
		// 16GB: 4GB shared; 12GB / 600 = 20.48MB → 20MB; a 3GB index is capped at 16GB / 16 = 1GB.
		{name: "16GB, big index", mem: 16 * gB, conns: 200, largestIndex: 3 * gB,
			shared: "4GB", cache: "12GB", work: "20MB", maint: "1GB", sharedRDS: "524288", workRDS: "20480", maintRDS: "1048576", maintCapped: true},
		// 1GB and 500 connections: 768MB / 1500 = 0.5MB, under PostgreSQL's 4MB default.
		{name: "1GB, many connections", mem: 1 * gB, conns: 500, largestIndex: 0,
			shared: "256MB", cache: "768MB", work: "4MB", maint: "64MB", sharedRDS: "32768", workRDS: "4096", maintRDS: "65536", workAtDefaultFloor: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := pgbenchFacts()
			f.Resources.MemoryBytes = tc.mem
			f.MaxConnections = tc.conns
			f.LargestIndex.Bytes = tc.largestIndex
			p := Build(f)
			for name, want := range map[string][2]string{
				"shared_buffers": {tc.shared, tc.sharedRDS}, "effective_cache_size": {tc.cache, ""},
				"work_mem": {tc.work, tc.workRDS}, "maintenance_work_mem": {tc.maint, tc.maintRDS},
			} {
				s, ok := settingByName(p.Settings, name)
				if !ok {
					t.Fatalf("%s not planned", name)
				}
				if s.Value != want[0] || (want[1] != "" && s.RDSValue != want[1]) {
					t.Errorf("%s = %s (RDS %s), want %s (RDS %s)", name, s.Value, s.RDSValue, want[0], want[1])
				}
				if s.Reason == "" {
					t.Errorf("%s has no reason", name)
				}
			}
			maint, _ := settingByName(p.Settings, "maintenance_work_mem")
			if got := strings.Contains(maint.Reason, "capped"); got != tc.maintCapped {
				t.Errorf("maintenance_work_mem reason %q: capped = %v, want %v", maint.Reason, got, tc.maintCapped)
			}
			work, _ := settingByName(p.Settings, "work_mem")
			if got := strings.Contains(work.Reason, "default"); got != tc.workAtDefaultFloor {
				t.Errorf("work_mem reason %q: floor = %v, want %v", work.Reason, got, tc.workAtDefaultFloor)
			}
			if sb, _ := settingByName(p.Settings, "shared_buffers"); !sb.Restart {
				t.Error("shared_buffers must be marked restart")
			}
		})
	}
}

func TestUnknownMemoryIsNotGuessed(t *testing.T) {
	p := Build(pgbenchFacts())
	for _, name := range []string{"shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem", "max_worker_processes"} {
		if _, ok := settingByName(p.Settings, name); ok {
			t.Errorf("%s planned without the target's resources", name)
		}
	}
	if len(p.Notes) < 2 || !strings.Contains(p.Notes[0], "--target-memory") || !strings.Contains(p.Notes[1], "--target-cpus") {
		t.Errorf("notes do not say which flag is missing: %q", p.Notes)
	}
}

func TestStorageAndWAL(t *testing.T) {
	for _, tc := range []struct {
		name            string
		dbBytes         int64
		data, index     int64
		copySeconds     float64
		maxWAL, storage string
	}{
		// pgbench 100: 1495MB of WAL × 1.9 = 2.77GB → 3GB; 1503MB × 1.5 + 3GB = 5.2GB → 20GB minimum.
		{"pgbench 100", 1503 * mB, 1281 * mB, 214 * mB, 4.3, "3GB", "20GB"},
		// 2TB in 8 h: 2TB of WAL at 72.8MB/s, × 900 s × 1.9 = 121.6GB → 122GB; 3TB + 122GB → 3194GB.
		{"case study, 2TB", 2 * tB, 1536 * gB, 512 * gB, 8 * 3600, "122GB", "3194GB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := pgbenchFacts()
			f.Source.DatabaseBytes, f.DataBytes, f.IndexBytes, f.CopySeconds = tc.dbBytes, tc.data, tc.index, tc.copySeconds
			p := Build(f)
			w, _ := settingByName(p.Settings, "max_wal_size")
			if w.Value != tc.maxWAL {
				t.Errorf("max_wal_size = %s, want %s (%s)", w.Value, tc.maxWAL, w.Reason)
			}
			if got := pgSize(p.StorageBytes); got != tc.storage {
				t.Errorf("storage = %s, want %s (%s)", got, tc.storage, p.StorageReason)
			}
		})
	}
}

func TestIOPS(t *testing.T) {
	for _, tc := range []struct {
		name    string
		w       WriteStats
		want    int
		snippet string
	}{
		// 1000 + 500 pages a second over an hour: × 3 = 4500.
		{"busy source", WriteStats{From: "pg_stat_wal", Bytes: 1000 * 8192 * 3600, Seconds: 3600, ReadBytes: 500 * 8192 * 3600, ReadSeconds: 3600}, 4500, "= 4500"},
		// 100 pages a second: 300, under gp3's baseline.
		{"quiet source", WriteStats{From: "pg_stat_bgwriter", Bytes: 100 * 8192 * 86400, Seconds: 86400}, 3000, "baseline"},
		{"no history", WriteStats{From: "pg_stat_wal", Bytes: 1 << 30, Seconds: 60}, 3000, "too little"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := pgbenchFacts()
			f.Writes = tc.w
			p := Build(f)
			if p.IOPS != tc.want || !strings.Contains(p.IOPSReason, tc.snippet) {
				t.Errorf("IOPS = %d (%s), want %d with %q", p.IOPS, p.IOPSReason, tc.want, tc.snippet)
			}
		})
	}
}

func TestSteadyWALRateRaisesMaxWALSize(t *testing.T) {
	f := pgbenchFacts()
	// 20MB/s of WAL over a day: 15 min × 1.9 of it is 33.4GB → 34GB, more than the copy's 3GB.
	f.Writes = WriteStats{From: "pg_stat_wal", Bytes: 20 * mB * 86400, Seconds: 86400}
	w, _ := settingByName(Build(f).Settings, "max_wal_size")
	if w.Value != "34GB" || !strings.Contains(w.Reason, "after cutover") {
		t.Fatalf("max_wal_size = %s (%s), want 34GB from the steady rate", w.Value, w.Reason)
	}
}

func TestDifferenceWithTarget(t *testing.T) {
	f := pgbenchFacts()
	f.Resources.MemoryBytes = 4 * gB
	f.Target = &assess.Server{Endpoint: "target", Version: "16.4", VersionNum: 160004}
	f.TargetHasContrib = true
	f.TargetSettings = map[string]Current{
		"shared_buffers":                  {"16384", "8kB"}, // 128MB
		"effective_cache_size":            {"393216", "8kB"},
		"work_mem":                        {"10240", "kB"}, // already 10MB
		"maintenance_work_mem":            {"65536", "kB"},
		"max_wal_size":                    {"1024", "MB"},
		"checkpoint_timeout":              {"900", "s"}, // already 15 min
		"checkpoint_completion_target":    {"0.9", ""},
		"wal_level":                       {"replica", ""},
		"max_replication_slots":           {"32", ""}, // more than planned is as good
		"max_wal_senders":                 {"5", ""},
		"max_logical_replication_workers": {"4", ""},
		"shared_preload_libraries":        {"pg_stat_statements", ""},
	}
	p := Build(f)
	if p.Family != "postgres16" {
		t.Errorf("family = %s, want the target's postgres16", p.Family)
	}
	want := map[string]struct {
		change  bool
		current string
	}{
		"shared_buffers": {true, "128MB"}, "effective_cache_size": {false, "3GB"}, "work_mem": {false, "10MB"},
		"maintenance_work_mem": {true, "64MB"}, "max_wal_size": {true, "1GB"}, "checkpoint_timeout": {false, "900s"},
		"checkpoint_completion_target": {false, "0.9"}, "wal_level": {true, "replica"}, "max_replication_slots": {false, "32"},
		"max_wal_senders": {true, "5"}, "max_logical_replication_workers": {false, "4"}, "shared_preload_libraries": {true, "pg_stat_statements"},
	}
	for name, w := range want {
		s, ok := settingByName(p.Settings, name)
		if !ok {
			t.Fatalf("%s not planned", name)
		}
		if s.Change != w.change || s.Current != w.current {
			t.Errorf("%s: change %v current %q, want %v %q (plan %s)", name, s.Change, s.Current, w.change, w.current, s.Value)
		}
	}
	// A target with more WAL room, a longer timeout and more index memory than planned is not
	// asked to lower them; one with less shared_buffers or more work_mem than planned is.
	f.TargetSettings["max_wal_size"] = Current{"8192", "MB"}
	f.TargetSettings["checkpoint_timeout"] = Current{"1800", "s"}
	f.TargetSettings["maintenance_work_mem"] = Current{"1048576", "kB"}
	f.TargetSettings["work_mem"] = Current{"65536", "kB"}
	p = Build(f)
	for name, change := range map[string]bool{"max_wal_size": false, "checkpoint_timeout": false, "maintenance_work_mem": false, "work_mem": true} {
		if s, _ := settingByName(p.Settings, name); s.Change != change {
			t.Errorf("%s: target has %s, plan %s: change %v, want %v", name, s.Current, s.Value, s.Change, change)
		}
	}
	f.TargetSettings["shared_preload_libraries"] = Current{"", ""}
	if s, _ := settingByName(Build(f).Settings, "shared_preload_libraries"); !s.Change || s.Current != "(empty)" {
		t.Errorf("an empty shared_preload_libraries: change %v, current %q; want a change from (empty)", s.Change, s.Current)
	}
	f.TargetSettings["wal_level"] = Current{"logical", ""}
	f.TargetSettings["shared_preload_libraries"] = Current{`"auto_explain", pg_stat_statements`, ""}
	p = Build(f)
	for _, name := range []string{"wal_level", "shared_preload_libraries"} {
		if s, _ := settingByName(p.Settings, name); s.Change {
			t.Errorf("%s: target has %s, which the plan asks for, but it is marked to change", name, s.Current)
		}
	}
}

func TestPreloadLibraries(t *testing.T) {
	for _, tc := range []struct {
		name     string
		source   []string
		target   bool
		contrib  bool
		want     string // "" means not planned
		wantNote bool
	}{
		{"no target: contrib assumed and said so", nil, false, false, "pg_stat_statements,auto_explain", true},
		{"target with contrib keeps the source's first", []string{"timescaledb"}, true, true, "timescaledb,pg_stat_statements,auto_explain", false},
		{"target without contrib: only the source's", []string{"timescaledb"}, true, false, "timescaledb", true},
		{"nothing to preload", nil, true, false, "", true},
		{"source already has them", []string{"auto_explain", "pg_stat_statements"}, true, true, "auto_explain,pg_stat_statements", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := pgbenchFacts()
			f.PreloadLibraries = tc.source
			if tc.target {
				f.Target = &assess.Server{Endpoint: "target", VersionNum: 150018}
				f.TargetHasContrib = tc.contrib
			}
			p := Build(f)
			s, ok := settingByName(p.Settings, "shared_preload_libraries")
			if got := map[bool]string{true: s.Value}[ok]; got != tc.want {
				t.Errorf("shared_preload_libraries = %q, want %q", got, tc.want)
			}
			hasNote := false
			for _, n := range p.Notes {
				hasNote = hasNote || strings.Contains(n, "shared_preload_libraries")
			}
			if hasNote != tc.wantNote {
				t.Errorf("note about shared_preload_libraries: %v, want %v (%q)", hasNote, tc.wantNote, p.Notes)
			}
		})
	}
}

func TestReplicationSettings(t *testing.T) {
	f := pgbenchFacts()
	f.Source.MaxSlots, f.Source.UsedSlots, f.Source.MaxSenders, f.MaxLogicalWorkers = 20, 19, 25, 6
	p := Build(f)
	for name, want := range map[string]string{"max_replication_slots": "21", "max_wal_senders": "25", "max_logical_replication_workers": "6", "wal_level": "logical"} {
		if s, _ := settingByName(p.Settings, name); s.Value != want || !s.Restart {
			t.Errorf("%s = %s (restart %v), want %s with restart", name, s.Value, s.Restart, want)
		}
	}
	if s, _ := settingByName(p.Settings, "wal_level"); s.RDSName != "rds.logical_replication" || s.RDSValue != "1" {
		t.Errorf("wal_level on RDS = %s %s, want rds.logical_replication 1", s.RDSName, s.RDSValue)
	}
}

func TestWriteSQL(t *testing.T) {
	f := pgbenchFacts()
	f.PreloadLibraries = []string{"it's"}
	var b bytes.Buffer
	if err := WriteSQL(&b, Build(f)); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"ALTER SYSTEM SET shared_preload_libraries = 'it''s', 'pg_stat_statements', 'auto_explain';",
		"ALTER SYSTEM SET max_wal_size = '3GB';",
		"ALTER SYSTEM SET wal_level = 'logical';",
		"SELECT pg_reload_conf();",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("SQL lacks %q:\n%s", want, out)
		}
	}
	if quoteLiteral(`a\b`) != `E'a\\b'` {
		t.Errorf("quoteLiteral(a\\b) = %s", quoteLiteral(`a\b`))
	}

	// With a target that has everything, nothing is to be run.
	f = pgbenchFacts()
	f.Target = &assess.Server{Endpoint: "target", VersionNum: 150018}
	p := Build(f)
	for i := range p.Settings {
		p.Settings[i].Change = false
	}
	b.Reset()
	if err := WriteSQL(&b, p); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "ALTER SYSTEM SET") || !strings.Contains(b.String(), "already has") {
		t.Errorf("SQL for a target with nothing to change:\n%s", b.String())
	}
}

func TestWriteTerraformAndRDSJSON(t *testing.T) {
	f := pgbenchFacts()
	f.Resources.MemoryBytes = 4 * gB
	p := Build(f)
	var b bytes.Buffer
	if err := WriteTerraform(&b, p); err != nil {
		t.Fatal(err)
	}
	tf := b.String()
	for _, want := range []string{
		`resource "aws_db_parameter_group" "pgshift_target" {`, `family      = "postgres15"`,
		"name         = \"rds.logical_replication\"\n    value        = \"1\"\n    apply_method = \"pending-reboot\"",
		"name         = \"shared_buffers\"\n    value        = \"131072\"",
		"name         = \"max_wal_size\"\n    value        = \"3072\"\n    apply_method = \"immediate\"",
	} {
		if !strings.Contains(tf, want) {
			t.Errorf("terraform lacks %q:\n%s", want, tf)
		}
	}
	if strings.Count(tf, "{") != strings.Count(tf, "}") {
		t.Errorf("unbalanced braces:\n%s", tf)
	}
	if hcl("a${b}%{c}\"") != `"a$${b}%%{c}\""` {
		t.Errorf("hcl escaping: %s", hcl("a${b}%{c}\""))
	}

	b.Reset()
	if err := WriteRDSJSON(&b, p); err != nil {
		t.Fatal(err)
	}
	var params []rdsParameter
	if err := json.Unmarshal(b.Bytes(), &params); err != nil {
		t.Fatalf("rds-json is not JSON: %v\n%s", err, b.String())
	}
	if len(params) != len(p.Settings) {
		t.Fatalf("%d parameters for %d settings", len(params), len(p.Settings))
	}
	for _, pr := range params {
		if pr.ParameterName == "work_mem" && (pr.ParameterValue != "10240" || pr.ApplyMethod != "immediate") {
			t.Errorf("work_mem = %+v, want 10240 kB, immediate", pr)
		}
		if pr.ParameterName == "wal_level" {
			t.Error("RDS has no wal_level parameter: rds.logical_replication sets it")
		}
	}
}

func TestParseMemory(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		bad  bool
	}{
		{"16GB", 16 * gB, false}, {"16GiB", 16 * gB, false}, {"512MB", 512 * mB, false}, {"1.5TB", 3 * tB / 2, false},
		{"64kB", 64 * kB, false}, {"1073741824", gB, false}, {" 2 gb ", 2 * gB, false},
		{"", 0, true}, {"-1GB", 0, true}, {"lots", 0, true}, {"0", 0, true},
	} {
		got, err := ParseMemory(tc.in)
		if (err != nil) != tc.bad || got != tc.want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d (error %v)", tc.in, got, err, tc.want, tc.bad)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, s := range []string{"text", "json", "markdown", "sql", "terraform", "rds-json"} {
		if _, err := ParseFormat(s); err != nil {
			t.Errorf("ParseFormat(%s): %v", s, err)
		}
	}
	if _, err := ParseFormat("yaml"); err == nil {
		t.Error("yaml accepted")
	}
}
