package report

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/verify"
)

// TestValidationSummary: the case study's summary tree computed from a verify report with
// differences.
func TestValidationSummary(t *testing.T) {
	rep := &verify.Report{Mode: verify.ModeChecksum,
		Tables: []verify.TableResult{
			{Name: "public.a", SourceRows: 1000, TargetRows: 1000},
			{Name: "public.b", SourceRows: 3000, TargetRows: 2999, Differences: 3, Rows: []verify.RowDiff{
				{Kind: verify.KindMissing, Key: "id=7"}, {Kind: verify.KindDifferent, Key: "id=9", Cols: []verify.ColumnDiff{{Column: "placed"}}}}},
		},
		Schema:    &verify.SchemaResult{Compared: 40, Diffs: []verify.SchemaDiff{{Kind: "index", Name: "x"}}},
		Sequences: &verify.SequenceResult{Compared: 5, Diffs: []verify.SequenceDiff{{Name: "s"}, {Name: "u"}}},
		Classes:   map[string]int{verify.ClassMissingRow: 1, verify.ClassTimestamp: 2},
		Summary:   verify.Summary{TablesCompared: 2, TablesIdentical: 1, SourceRows: 4000, RowDifferences: 3, Differences: 6},
	}
	r := &Report{GeneratedAt: time.Now(), Validation: validation(rep, time.Now())}
	got := strings.Join(r.SummaryTree(), "\n")
	for _, want := range []string{
		"├── Tables matched: 1/2 tables (50%)",
		"├── Row count matches: 1/2 tables (50%)",
		"├── Data integrity: 99.92% match rate (3 of 4,000 rows differ, checksum mode)",
		"├── Schema consistency: 97.5% match (1 of 40 objects differ)",
		"└── Sequences: 3/5 in step",
		"├── 1 × missing row", "└── 2 × timestamp precision",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("summary lacks %q:\n%s", want, got)
		}
	}
	v := r.Validation
	if len(v.Tables) != 1 || v.Tables[0].Keys[0] != "missing id=7" || v.Tables[0].Keys[1] != "different id=9 (placed)" {
		t.Errorf("differing tables %+v", v.Tables)
	}
}

// TestHTMLSelfContained: the HTML report has its charts inline, escapes what it shows, and
// loads nothing.
func TestHTMLSelfContained(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	r := &Report{GeneratedAt: t0.Add(time.Hour), Migration: Migration{SourceDatabase: "<b>shop</b>"}, Rollbacks: []Event{}, Alerts: []Event{}, Audit: []Event{},
		Cutover: Cutover{State: "not started"}}
	for i := range 5 {
		r.History = append(r.History, HistoryRow{At: t0.Add(time.Duration(i) * time.Minute), LagSeconds: float64(i), LagBytes: int64(i) << 20, BytesPerSec: 1000})
	}
	var b bytes.Buffer
	if err := r.Write(&b, HTML); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.Count(out, "<svg") != 2 || strings.Count(out, "<polyline") != 4 {
		t.Errorf("charts missing:\n%s", out)
	}
	if strings.Contains(out, "<b>shop</b>") || !strings.Contains(out, "&lt;b&gt;shop&lt;/b&gt;") {
		t.Error("the database name is not escaped")
	}
	for _, bad := range []string{"<script", "<link", "src=\"http", "href=\"http"} {
		if strings.Contains(out, bad) {
			t.Errorf("the report loads something: %q", bad)
		}
	}
	var md bytes.Buffer
	if err := r.Write(&md, Markdown); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "Not run.") || !strings.Contains(md.String(), "No comparison was run") {
		t.Errorf("markdown:\n%s", md.String())
	}
}
