package verify

import (
	"strings"
	"testing"
)

func reportText(t *testing.T, r *Report) string {
	t.Helper()
	r.summarize()
	var b strings.Builder
	if err := r.WriteText(&b, 5); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// TestReportUnconfirmedRowsAreNotIdentical: rows the live re-check never confirmed because they
// kept changing make the result incomplete (exit 2), never IDENTICAL, and their table is not
// counted as identical.
func TestReportUnconfirmedRowsAreNotIdentical(t *testing.T) {
	r := &Report{Mode: ModeChecksum, Live: &LiveResult{Following: true, Rounds: 5, Unstable: 2}, Tables: []TableResult{
		{Name: "public.a", Keyed: true, SourceRows: 10, TargetRows: 10},
		{Name: "public.b", Keyed: true, SourceRows: 10, TargetRows: 10},
		{Name: "public.c", Keyed: true, SourceRows: 10, TargetRows: 10},
		{Name: "public.hot", Keyed: true, SourceRows: 10, TargetRows: 10, Unstable: 2, Rows: []RowDiff{
			{Kind: KindUnstable, Key: "id=1", Class: ClassUnstable}, {Kind: KindUnstable, Key: "id=2", Class: ClassUnstable}}},
	}}
	text := reportText(t, r)
	if r.Summary.Identical || r.ExitCode() != 2 || strings.Contains(text, "IDENTICAL") {
		t.Errorf("unconfirmed rows: identical %v, exit %d:\n%s", r.Summary.Identical, r.ExitCode(), text)
	}
	if !strings.Contains(text, "Tables identical: 3/4") || !strings.Contains(text, "public.hot") {
		t.Errorf("the table with unconfirmed rows is counted as identical or not listed:\n%s", text)
	}
	if !strings.Contains(text, "unconfirmed") {
		t.Errorf("the report does not call the rows unconfirmed:\n%s", text)
	}
	if strings.Contains(text, "Row match rate: 100%") {
		t.Errorf("rows never confirmed are counted as matching:\n%s", text)
	}
}

// TestReportListsExactlyTheTablesNotIdentical: the headline count and the tables listed under it
// agree, repaired tables included.
func TestReportListsExactlyTheTablesNotIdentical(t *testing.T) {
	r := &Report{Mode: ModeChecksum, Tables: []TableResult{
		{Name: "public.a", Keyed: true, SourceRows: 10, TargetRows: 10},
		{Name: "public.b", Keyed: true, SourceRows: 10, TargetRows: 9, Differences: 1, Rows: []RowDiff{{Kind: KindMissing, Key: "id=3", Class: ClassMissingRow, Repaired: true}}},
		{Name: "public.c", Keyed: true, SourceRows: 10, TargetRows: 10, Differences: 1, Rows: []RowDiff{{Kind: KindDifferent, Key: "id=4", Class: ClassValue}}},
	}, Repair: []RepairResult{{Table: "public.b", Inserted: 1}}}
	text := reportText(t, r)
	listed := 0 // table lines of the Tables node end with "in N source rows"
	for _, l := range strings.Split(text, "\n") {
		if strings.HasSuffix(l, " source rows") {
			listed++
		}
	}
	if want := r.Summary.TablesCompared - r.Summary.TablesIdentical; listed != want {
		t.Errorf("%d tables listed beside %d/%d identical:\n%s", listed, r.Summary.TablesIdentical, r.Summary.TablesCompared, text)
	}
}

// TestReportEmptyTargetIsNoMatch: tables that could not be compared on the target (an empty
// target) count no rows as matching.
func TestReportEmptyTargetIsNoMatch(t *testing.T) {
	r := &Report{Mode: ModeChecksum, Tables: []TableResult{
		{Name: "public.a", SourceRows: 1000, Error: "missing on the target"},
		{Name: "public.b", SourceRows: 500, Error: "missing on the target"},
	}}
	text := reportText(t, r)
	if strings.Contains(text, "100%") {
		t.Errorf("an empty target reads as a 100%% match:\n%s", text)
	}
	if r.ExitCode() == 0 {
		t.Errorf("exit 0 for an empty target")
	}
}
