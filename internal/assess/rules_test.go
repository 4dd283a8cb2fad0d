package assess

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// readyFacts is a source and target that pass every rule.
func readyFacts() Facts {
	srv := func(v int, version string) Server {
		return Server{Endpoint: "x", Version: version, VersionNum: v, Database: "shop", User: "migrator", Superuser: true,
			Replication: "superuser", CreateOnDatabase: true, Encoding: "UTF8", Collate: "en_US.UTF-8", Ctype: "en_US.UTF-8",
			Tablespace: "pg_default", WalLevel: "logical", MaxSlots: 10, MaxSenders: 10, DatabaseBytes: 1 << 30,
			Settings: map[string]string{"TimeZone": "UTC", "DateStyle": "ISO, MDY"}}
	}
	dst := srv(150004, "15.4")
	return Facts{
		Source: srv(150004, "15.4"),
		Target: &dst,
		Tables: []Table{{Schema: "public", Name: "orders", Kind: "table", ReplicaIdentity: "default", PrimaryKey: []string{"id"},
			UsableIdentity: true, RowsEstimate: 1000, HeapBytes: 1 << 20, TotalBytes: 2 << 20, CanSelect: true, OwnedByUser: true, Owner: "migrator"}},
	}
}

func codes(fs []Finding) map[string]Severity {
	m := map[string]Severity{}
	for _, f := range fs {
		if f.Code != CodeTargetSpace {
			m[f.Code] = f.Severity
		}
	}
	return m
}

func TestRules(t *testing.T) {
	cases := []struct {
		name   string
		change func(*Facts)
		want   map[string]Severity
	}{
		{"ready", func(*Facts) {}, map[string]Severity{}},
		{"target older major", func(f *Facts) { f.Target.VersionNum, f.Target.Version = 140010, "14.10" },
			map[string]Severity{CodeServerVersion: Blocker}},
		{"target newer major", func(f *Facts) { f.Target.VersionNum, f.Target.Version = 170002, "17.2" },
			map[string]Severity{CodeMajorUpgrade: Info}},
		{"target newer minor only", func(f *Facts) { f.Target.VersionNum = 150008 }, map[string]Severity{}},
		{"latin1 to utf8 converts", func(f *Facts) { f.Source.Encoding = "LATIN1" }, map[string]Severity{CodeEncoding: Warning}},
		{"sql_ascii to utf8 may not", func(f *Facts) { f.Source.Encoding = "SQL_ASCII" }, map[string]Severity{CodeEncoding: Blocker}},
		{"utf8 to latin1", func(f *Facts) { f.Target.Encoding = "LATIN1" }, map[string]Severity{CodeEncoding: Blocker}},
		{"one free slot", func(f *Facts) { f.Source.UsedSlots = 9 }, map[string]Severity{CodeReplicationSlots: Blocker}},
		{"two free slots", func(f *Facts) { f.Source.UsedSlots = 8 }, map[string]Severity{}},
		{"senders busy", func(f *Facts) { f.Source.ActiveSenders = 10 }, map[string]Severity{CodeWalSenders: Blocker}},
		{"setting only on one side is not compared", func(f *Facts) { delete(f.Target.Settings, "TimeZone") }, map[string]Severity{}},
		{"superuser needs no grants", func(f *Facts) {
			f.Source.CreateOnDatabase = false
			f.Tables[0].CanSelect, f.Tables[0].OwnedByUser = false, false
		}, map[string]Severity{}},
		{"rds_replication member", func(f *Facts) {
			f.Source.Superuser, f.Source.Replication = false, "rds_replication"
		}, map[string]Severity{}},
		{"partition without key", func(f *Facts) {
			f.Tables = append(f.Tables, Table{Schema: "public", Name: "events_2024", Kind: "table", Partition: true,
				ReplicaIdentity: "default", CanSelect: true, OwnedByUser: true})
		}, map[string]Severity{CodeNoReplicaIdentity: Blocker}},
		{"partitioned parent needs no identity", func(f *Facts) {
			f.Tables = append(f.Tables, Table{Schema: "public", Name: "events", Kind: "partitioned", ReplicaIdentity: "default",
				CanSelect: true, OwnedByUser: true})
		}, map[string]Severity{}},
		{"prepared transaction", func(f *Facts) { f.Source.PreparedXacts = []string{"tx-1"} },
			map[string]Severity{CodePreparedXacts: Warning}},
		{"transaction open 11 minutes", func(f *Facts) { f.Source.OldestXactSeconds = 660 },
			map[string]Severity{CodeLongTransaction: Warning}},
		{"transaction open 9 minutes", func(f *Facts) { f.Source.OldestXactSeconds = 540 }, map[string]Severity{}},
		{"long transaction on the target is not the source's problem", func(f *Facts) { f.Target.OldestXactSeconds = 3600 },
			map[string]Severity{}},
		{"tablespace of the database", func(f *Facts) { f.Source.Tablespace = "fast_ssd"; f.TargetTablespaces = []string{"pg_default"} },
			map[string]Severity{CodeTablespace: Warning}},
		{"tablespace exists on target", func(f *Facts) { f.Source.Tablespace = "fast_ssd"; f.TargetTablespaces = []string{"fast_ssd"} },
			map[string]Severity{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := readyFacts()
			c.change(&f)
			got := codes(Evaluate(f))
			// Said on every migration (versions_test.go checks it): not part of these cases.
			delete(got, CodeNotReplicated)
			if len(got) != len(c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
			for code, sev := range c.want {
				if got[code] != sev {
					t.Errorf("%s: got %q, want %q (all: %v)", code, got[code], sev, got)
				}
			}
		})
	}
}

func TestFindingsAreOrderedAndNameTheFix(t *testing.T) {
	f := readyFacts()
	f.Source.WalLevel = "replica"
	f.Source.Replication, f.Source.Superuser = "", false
	f.Tables[0].ReplicaIdentity, f.Tables[0].PrimaryKey, f.Tables[0].UsableIdentity = "default", nil, false
	f.Sequences = []string{"public.orders_id_seq"}
	fs := Evaluate(f)
	for i := 1; i < len(fs); i++ {
		if fs[i-1].Severity.rank() > fs[i].Severity.rank() {
			t.Errorf("finding %d (%s) after a less severe one", i, fs[i].Code)
		}
	}
	for _, fd := range fs {
		switch fd.Code {
		case CodeReplicationPriv:
			if !strings.Contains(fd.Fix, `ALTER ROLE "migrator" REPLICATION`) {
				t.Errorf("replication fix: %s", fd.Fix)
			}
		case CodeNoReplicaIdentity:
			if !strings.Contains(fd.Fix, `ALTER TABLE "public"."orders" REPLICA IDENTITY FULL`) || !strings.Contains(fd.Fix, "whole old row") {
				t.Errorf("identity fix must give the statement and its cost: %s", fd.Fix)
			}
		}
	}
}

func TestEstimate(t *testing.T) {
	e := EstimateCopy(EstimateInput{Jobs: 4, DataBytes: 100 << 30, IndexBytes: 20 << 30})
	if e.LowSeconds <= 0 || e.HighSeconds <= e.LowSeconds {
		t.Fatalf("range %v–%v", e.LowSeconds, e.HighSeconds)
	}
	if !strings.Contains(e.Assumption, "not measured") || !strings.Contains(e.Assumption, "4 parallel jobs") {
		t.Errorf("assumption must say what it rests on: %s", e.Assumption)
	}
	// 100 GB at 100 MB/s × 4 jobs + 20 GB of indexes at 50 MB/s × 4 = 256 s + 102.4 s.
	if want := 256.0 + 102.4; e.LowSeconds < want-1 || e.LowSeconds > want+1 {
		t.Errorf("low = %v, want %v", e.LowSeconds, want)
	}
	// 100 GB at 20 MB/s × 2 (half of 4 jobs) + 20 GB at 10 MB/s × 2 = 2560 s + 1024 s.
	if want := 2560.0 + 1024; e.HighSeconds < want-1 || e.HighSeconds > want+1 {
		t.Errorf("high = %v, want %v", e.HighSeconds, want)
	}
	many := EstimateCopy(EstimateInput{Jobs: 4, Objects: 3000})
	if many.LowSeconds != 6 || many.HighSeconds != 24 {
		t.Errorf("3000 empty tables and indexes: %v–%v s, want 6–24", many.LowSeconds, many.HighSeconds)
	}
	m := EstimateCopy(EstimateInput{Jobs: 8, DataBytes: 100 << 30, MeasuredBytesPerSec: 200 << 20, MeasuredTable: "public.orders", MeasuredBytes: 32 << 20})
	if !strings.Contains(m.Assumption, "measured") || !strings.Contains(m.Assumption, "public.orders") || m.MeasuredBytesPerSec != 200<<20 {
		t.Errorf("measured assumption: %s", m.Assumption)
	}
	if more := EstimateCopy(EstimateInput{Jobs: 16, DataBytes: 100 << 30}); more.HighSeconds >= e.HighSeconds {
		t.Errorf("more jobs must not be slower: %v vs %v", more.HighSeconds, e.HighSeconds)
	}
	if z := EstimateCopy(EstimateInput{}); z.Jobs != 1 || z.LowSeconds != 0 {
		t.Errorf("empty database: %+v", z)
	}
}

func TestHumanUnits(t *testing.T) {
	bytesCases := map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 kB", 10 << 20: "10 MB", 3 << 40: "3.0 TB", -2048: "-2.0 kB"}
	for n, want := range bytesCases {
		if got := humanBytes(n); got != want {
			t.Errorf("humanBytes(%d) = %q, want %q", n, got, want)
		}
	}
	countCases := map[int64]string{-1: "?", 0: "0", 9999: "9999", 12_345: "12.3k", 2_500_000: "2.5M", 7_000_000_000: "7.0G"}
	for n, want := range countCases {
		if got := humanCount(n); got != want {
			t.Errorf("humanCount(%d) = %q, want %q", n, got, want)
		}
	}
	durCases := map[time.Duration]string{300 * time.Millisecond: "<1s", 90 * time.Second: "1m30s", 2*time.Hour + 20*time.Second: "2h0m0s", 30 * time.Hour: "30h"}
	for d, want := range durCases {
		if got := humanDuration(d); got != want {
			t.Errorf("humanDuration(%s) = %q, want %q", d, got, want)
		}
	}
}

func TestFormats(t *testing.T) {
	f := readyFacts()
	f.Tables = append([]Table{{Schema: "public", Name: "pipe|name", Kind: "table", ReplicaIdentity: "full", UsableIdentity: true,
		RowsEstimate: 10, HeapBytes: 8192, TotalBytes: 16384, Columns: 3, CanSelect: true, OwnedByUser: true, Updates: 5}}, f.Tables...) // smallest first: Build must reorder
	rep := Build(f, EstimateCopy(EstimateInput{Jobs: 4, DataBytes: 1 << 20}), time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))

	if _, err := ParseFormat("xml"); err == nil || !strings.Contains(err.Error(), "text, json or markdown") {
		t.Errorf("bad format: %v", err)
	}
	for in, want := range map[string]Format{"TEXT": FormatText, "json": FormatJSON, "md": FormatMarkdown, "markdown": FormatMarkdown} {
		if got, err := ParseFormat(in); err != nil || got != want {
			t.Errorf("ParseFormat(%q) = %q, %v", in, got, err)
		}
	}

	var text bytes.Buffer
	if err := WriteText(&text, rep); err != nil {
		t.Fatal(err)
	}
	out := text.String()
	for _, s := range []string{"READY", "Warnings (1)", "[replica_identity_full]", "Tables, largest first", "Copy-time estimate", "assumption:"} {
		if !strings.Contains(out, s) {
			t.Errorf("text report lacks %q:\n%s", s, out)
		}
	}
	tables := out[strings.Index(out, "Tables, largest first"):]
	if strings.Index(tables, "public.orders") > strings.Index(tables, `public."pipe|name"`) {
		t.Errorf("tables must be listed largest first:\n%s", out)
	}

	var js bytes.Buffer
	if err := WriteJSON(&js, rep); err != nil {
		t.Fatal(err)
	}
	var generic map[string]any
	if err := json.Unmarshal(js.Bytes(), &generic); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"generated_at", "ready", "blockers", "warnings", "infos", "source", "target", "findings", "tables", "totals", "estimate"} {
		if _, ok := generic[key]; !ok {
			t.Errorf("JSON lacks %q", key)
		}
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Ready != rep.Ready || len(back.Findings) != len(rep.Findings) || back.Totals != rep.Totals {
		t.Errorf("JSON round trip lost data")
	}
	var empty bytes.Buffer
	if err := WriteJSON(&empty, Build(Facts{Source: readyFacts().Source}, Estimate{}, time.Now())); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(empty.String(), `"tables": []`) {
		t.Errorf("empty lists must be [] not null: %s", empty.String())
	}

	var mdOut bytes.Buffer
	if err := WriteMarkdown(&mdOut, rep); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(mdOut.String(), `pipe\|name`) || !strings.Contains(mdOut.String(), "## Warnings (1)") {
		t.Errorf("markdown:\n%s", mdOut.String())
	}
}

func TestUnusedIndexesGroupedPerSchema(t *testing.T) {
	f := readyFacts()
	for i := range 20 {
		f.Tables = append(f.Tables, Table{Schema: "many", Name: fmt.Sprintf("t%d", i), Kind: "table", ReplicaIdentity: "default",
			PrimaryKey: []string{"id"}, UsableIdentity: true, CanSelect: true, OwnedByUser: true,
			UnusedIndexes: []Index{{Name: fmt.Sprintf("t%d_v_idx", i), Bytes: 8192}}})
	}
	f.Tables[0].UnusedIndexes = []Index{{Name: "Orders By Day", Bytes: 1 << 20}}
	var got []Finding
	for _, fd := range Evaluate(f) {
		if fd.Code == CodeUnusedIndex {
			got = append(got, fd)
		}
	}
	if len(got) != 2 || got[0].Object != "schema many" || got[1].Object != "schema public" {
		t.Fatalf("want one note per schema: %+v", got)
	}
	if !strings.Contains(got[0].Message, "20 indexes") || !strings.Contains(got[0].Message, "and 12 more") || !strings.Contains(got[0].Fix, "JSON") {
		t.Errorf("many: %+v", got[0])
	}
	if !strings.Contains(got[1].Fix, `DROP INDEX "public"."Orders By Day";`) || !strings.Contains(got[1].Message, `"Orders By Day" on public.orders`) {
		t.Errorf("public: %+v", got[1])
	}
}
