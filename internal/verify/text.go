package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// summarize fills Summary and Classes from the parts of the report.
func (r *Report) summarize() {
	s := Summary{}
	r.Classes = map[string]int{}
	for _, t := range r.Tables {
		s.TablesCompared++
		s.SourceRows += t.SourceRows
		if t.Error != "" {
			s.TablesFailed++
			continue
		}
		s.RowsCompared += t.SourceRows
		diffs := r.tableDiffs(t)
		if r.Mode == ModeCount && t.SourceRows != t.TargetRows {
			r.Classes["row count"]++
		}
		s.RowDifferences += diffs
		s.RowsUnstable += t.Unstable
		for _, row := range t.Rows {
			if row.Class == ClassLagging {
				s.RowsUnconfirmed++
			}
		}
		if r.tableIdentical(t) {
			s.TablesIdentical++
		}
		for c, n := range t.Classes {
			r.Classes[c] += n
		}
	}
	if r.Schema != nil {
		s.SchemaDiffs = len(r.Schema.Diffs)
		for _, d := range r.Schema.Diffs {
			r.Classes[d.Class]++
		}
	}
	if r.Sequences != nil {
		for _, d := range r.Sequences.Diffs {
			if d.counts(r.Sequences.Expected) {
				s.SequenceDiffs++
			}
			if d.counts(r.Sequences.Expected) || d.Repaired {
				r.Classes[ClassSequence]++
			}
		}
	}
	s.Differences = s.RowDifferences + int64(s.SchemaDiffs) + int64(s.SequenceDiffs)
	s.Identical = s.Differences == 0 && s.TablesFailed == 0 && s.RowsUnconfirmed == 0 && s.RowsUnstable == 0
	r.Summary = s
}

// tableDiffs are the differences of one compared table that count: in count mode the row
// count difference, otherwise the differing rows not repaired.
func (r *Report) tableDiffs(t TableResult) int64 {
	diffs := t.Differences
	if r.Mode == ModeCount && t.SourceRows != t.TargetRows {
		diffs = abs(t.SourceRows - t.TargetRows)
	}
	for _, row := range t.Rows {
		if row.Repaired {
			diffs--
		}
	}
	return diffs
}

// tableIdentical is the one verdict of a table, for the headline count and for the listing:
// compared, no difference left, and every row confirmed (none still changing, none the target
// was too far behind to re-check).
func (r *Report) tableIdentical(t TableResult) bool {
	if t.Error != "" || t.Unstable > 0 || r.tableDiffs(t) != 0 {
		return false
	}
	for _, row := range t.Rows {
		if row.Class == ClassLagging {
			return false
		}
	}
	// Row counts come from the first pass; while the target is followed they differ by the
	// lag, and the re-check has settled every row that differed.
	live := r.Live != nil && r.Live.Following && r.Mode != ModeCount
	return t.SourceRows == t.TargetRows || live || r.repairedAll(t)
}

// repairedAll reports whether --repair fixed every difference of the table.
func (r *Report) repairedAll(t TableResult) bool {
	for _, rr := range r.Repair {
		if rr.Table == t.Name {
			return rr.Error == "" && rr.Remaining == 0 && int64(len(t.Rows)) >= t.Differences
		}
	}
	return false
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// ExitCode is the command's exit status: 1 when any difference was found (even if some
// tables could not be compared), 2 when nothing differs but something could not be confirmed
// (a table not compared, rows the re-check could not confirm because the target lagged, or
// rows still changing on the source after every re-check), 0 only when every compared row
// was confirmed equal.
func (r *Report) ExitCode() int {
	switch {
	case r.Summary.Differences > 0:
		return 1
	case r.Summary.TablesFailed > 0 || r.Summary.RowsUnconfirmed > 0 || r.Summary.RowsUnstable > 0:
		return 2
	}
	return 0
}

// WriteJSON writes the report as indented JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// tree writes an indented tree (├── / └──): each node is a line and its children.
type tree struct {
	w   io.Writer
	err error
}

type node struct {
	text     string
	children []node
}

func (t *tree) write(nodes []node, indent string) {
	for i, n := range nodes {
		last := i == len(nodes)-1
		branch, next := "├── ", "│   "
		if last {
			branch, next = "└── ", "    "
		}
		if _, err := fmt.Fprintln(t.w, indent+branch+n.text); err != nil && t.err == nil {
			t.err = err
		}
		t.write(n.children, indent+next)
	}
}

// WriteText writes the summary tree: tables, schema, sequences, live re-check, repairs, and
// the discrepancy classes found. rowsPerTable caps the rows listed under each table.
func (r *Report) WriteText(w io.Writer, rowsPerTable int) error {
	s := r.Summary
	verdict := "IDENTICAL"
	if len(r.Repair) > 0 {
		verdict = "IDENTICAL AFTER REPAIR"
	}
	switch r.ExitCode() {
	case 1:
		verdict = "DIFFERENCES FOUND"
	case 2:
		verdict = "INCOMPLETE"
	}
	fmt.Fprintf(w, "Verify (%s mode): %s → %s, %.1f s\n\n", r.Mode, r.Source, r.Target, float64(r.Duration)/1e9)
	fmt.Fprintln(w, "Table Validation Summary:")
	top := []node{}
	tables := node{text: fmt.Sprintf("Tables identical: %d/%d (%s)", s.TablesIdentical, s.TablesCompared, pct(int64(s.TablesIdentical), int64(s.TablesCompared)))}
	for _, t := range r.Tables {
		if r.tableIdentical(t) {
			continue
		}
		tables.children = append(tables.children, tableNode(t, rowsPerTable, r.Mode))
	}
	top = append(top, tables)
	// Matching rows are rows of compared tables confirmed equal: not differing, not
	// unconfirmed. Rows of tables that could not be compared are no match.
	unsure := s.RowsUnstable + s.RowsUnconfirmed
	rowsMatch := max(s.RowsCompared-s.RowDifferences-unsure, 0)
	rate := fmt.Sprintf("Row match rate: %s (%d rows compared, %d differing", pctPrecise(rowsMatch, s.RowsCompared), s.RowsCompared, s.RowDifferences)
	if unsure > 0 {
		rate += fmt.Sprintf(", %d unconfirmed", unsure)
	}
	if s.SourceRows > s.RowsCompared {
		rate += fmt.Sprintf("; %d source rows in tables not compared", s.SourceRows-s.RowsCompared)
	}
	top = append(top, node{text: rate + ")"})
	if r.Schema != nil {
		n := node{text: fmt.Sprintf("Schema consistency: %s (%d objects, %d differing)", pct(int64(r.Schema.Compared-len(r.Schema.Diffs)), int64(r.Schema.Compared)), r.Schema.Compared, len(r.Schema.Diffs))}
		for _, d := range r.Schema.Diffs {
			n.children = append(n.children, node{text: schemaLine(d)})
		}
		for _, d := range r.Schema.Deferred {
			n.children = append(n.children, node{text: fmt.Sprintf("%s %s: deferred — %s (source %s, target %s)", d.Kind, d.Name, d.Issue, d.Source, d.Target)})
		}
		top = append(top, n)
	}
	if r.Sequences != nil {
		text := fmt.Sprintf("Sequences: %d/%d in step", r.Sequences.Compared-len(r.Sequences.Diffs), r.Sequences.Compared)
		if r.Sequences.Expected && len(r.Sequences.Diffs) > 0 {
			text += " (expected while following: sequences are synced at cutover; a target ahead means the source's went back, or the target's was used)"
		}
		n := node{text: text}
		for _, d := range r.Sequences.Diffs {
			where := fmt.Sprintf("%d behind", d.Behind)
			if d.Behind < 0 {
				where = fmt.Sprintf("%d ahead", -d.Behind)
			}
			state := func(v int64, called bool) string {
				if called {
					return strconv.FormatInt(v, 10)
				}
				return strconv.FormatInt(v, 10) + " (is_called false: next value " + strconv.FormatInt(v, 10) + ")"
			}
			line := fmt.Sprintf("%s: source %s, target %s (%s) [%s]", d.Name, state(d.Source, d.SourceCalled),
				state(d.Target, d.TargetCalled), where, d.Class)
			if d.Repaired {
				line += " — repaired"
			}
			n.children = append(n.children, node{text: line})
		}
		top = append(top, n)
	}
	if r.Live != nil {
		l := r.Live
		n := node{text: fmt.Sprintf("Live re-check: %d rounds; %d lag resolved, %d confirmed, %d unconfirmed (still changing on the source)",
			l.Rounds, l.Resolved, l.Confirmed, l.Unstable)}
		if l.Note != "" {
			n.children = append(n.children, node{text: l.Note})
		}
		top = append(top, n)
	}
	if len(r.Repair) > 0 {
		n := node{text: "Repair:"}
		for _, rr := range r.Repair {
			line := fmt.Sprintf("%s: %d deleted, %d inserted, %d still different", rr.Table, rr.Deleted, rr.Inserted, rr.Remaining)
			if rr.Error != "" {
				line = rr.Table + ": FAILED: " + rr.Error
			}
			n.children = append(n.children, node{text: line})
		}
		top = append(top, n)
	}
	t := &tree{w: w}
	t.write(top, "")
	if len(r.Classes) > 0 {
		fmt.Fprintln(w, "\nDiscrepancies Found:")
		t.write(classNodes(r), "")
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes:")
		for _, n := range r.Notes {
			fmt.Fprintln(w, "  - "+n)
		}
	}
	_, err := fmt.Fprintf(w, "\nResult: %s (exit %d)\n", verdict, r.ExitCode())
	if t.err != nil {
		return t.err
	}
	return err
}

func tableNode(t TableResult, limit int, mode Mode) node {
	if t.Error != "" {
		return node{text: fmt.Sprintf("%s: NOT COMPARED: %s", t.Name, t.Error)}
	}
	var parts []string
	kinds := map[Kind]int{}
	for _, r := range t.Rows {
		kinds[r.Kind]++
	}
	for _, k := range []Kind{KindMissing, KindExtra, KindDifferent, KindDuplicate} {
		if kinds[k] > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", kinds[k], k))
		}
	}
	text := fmt.Sprintf("%s: %d differences", t.Name, t.Differences)
	if mode == ModeCount {
		text = fmt.Sprintf("%s: row count source %d, target %d", t.Name, t.SourceRows, t.TargetRows)
	}
	if len(parts) > 0 {
		text += " (" + strings.Join(parts, ", ") + ")"
	}
	if t.Unstable > 0 {
		text += fmt.Sprintf(", %d unconfirmed (still changing on the source)", t.Unstable)
	}
	if mode != ModeCount {
		text += fmt.Sprintf(" in %d source rows", t.SourceRows)
	}
	n := node{text: text}
	for i, r := range t.Rows {
		if i == limit {
			n.children = append(n.children, node{text: fmt.Sprintf("… %d more (see --json)", len(t.Rows)-limit)})
			break
		}
		n.children = append(n.children, rowNode(r))
	}
	return n
}

func rowNode(r RowDiff) node {
	text := fmt.Sprintf("%s: %s [%s]", r.Key, r.Kind, r.Class)
	if r.SourceCount > 0 || r.TargetCount > 0 {
		text = fmt.Sprintf("%s: %s — %d on source, %d on target [%s]", r.Key, r.Kind, r.SourceCount, r.TargetCount, r.Class)
	}
	if r.Repaired {
		text += " — repaired"
	}
	n := node{text: text}
	for _, c := range r.Cols {
		n.children = append(n.children, node{text: fmt.Sprintf("%s: source %s, target %s [%s]", c.Column, show(c.Source), show(c.Target), c.Class)})
	}
	return n
}

func show(v *string) string {
	if v == nil {
		return "NULL"
	}
	return fmt.Sprintf("%q", *v)
}

func schemaLine(d SchemaDiff) string {
	switch d.Issue {
	case "different":
		return fmt.Sprintf("%s %s: source %q, target %q [%s]", d.Kind, d.Name, d.Source, d.Target, d.Class)
	default:
		return fmt.Sprintf("%s %s: %s", d.Kind, d.Name, d.Issue)
	}
}

// classNodes lists classes like the case study: "3 tables with timestamp precision differences".
func classNodes(r *Report) []node {
	tablesBy := map[string]int{}
	for _, t := range r.Tables {
		for c := range t.Classes {
			tablesBy[c]++
		}
	}
	classes := make([]string, 0, len(r.Classes))
	for c := range r.Classes {
		classes = append(classes, c)
	}
	sort.Strings(classes)
	var out []node
	for _, c := range classes {
		n := r.Classes[c]
		switch {
		case c == ClassSequence:
			out = append(out, node{text: fmt.Sprintf("%d sequences out of sync (%s)", n, c)})
		case tablesBy[c] > 0:
			out = append(out, node{text: fmt.Sprintf("%d tables with %s differences (%d rows)", tablesBy[c], c, n)})
		default:
			out = append(out, node{text: fmt.Sprintf("%d %s differences", n, c)})
		}
	}
	return out
}

func pct(a, b int64) string {
	if b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%d%%", a*100/b)
}

func pctPrecise(a, b int64) string {
	switch {
	case b == 0:
		return "n/a"
	case a == b:
		return "100%"
	case a*10000/b == 10000: // not all: never rounded up to 100%
		return "99.99%"
	}
	return fmt.Sprintf("%.2f%%", float64(a)*100/float64(b))
}
