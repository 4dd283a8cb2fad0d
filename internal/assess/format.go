package assess

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Format is an output format of the report.
type Format string

const (
	FormatText     Format = "text"
	FormatJSON     Format = "json"
	FormatMarkdown Format = "markdown"
)

// ParseFormat accepts text, json, markdown (and md), case-insensitively.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "text", "":
		return FormatText, nil
	case "json":
		return FormatJSON, nil
	case "markdown", "md":
		return FormatMarkdown, nil
	}
	return "", fmt.Errorf("--format %q: want text, json or markdown", s)
}

// Write renders the report in the given format.
func Write(w io.Writer, r Report, f Format) error {
	switch f {
	case FormatJSON:
		return WriteJSON(w, r)
	case FormatMarkdown:
		return WriteMarkdown(w, r)
	}
	return WriteText(w, r)
}

// WriteJSON writes the report as indented JSON. Empty lists are written as [], never null.
func WriteJSON(w io.Writer, r Report) error {
	if r.Findings == nil {
		r.Findings = []Finding{}
	}
	if r.Tables == nil {
		r.Tables = []Table{}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return fmt.Errorf("write JSON report: %w", err)
	}
	return nil
}

// errWriter remembers the first write error so the formatters can write freely and check once.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func verdict(r Report) string {
	if r.Ready {
		return fmt.Sprintf("READY — %d blockers, %d warnings, %d notes", r.Blockers, r.Warnings, r.Infos)
	}
	return fmt.Sprintf("NOT READY — %d blockers, %d warnings, %d notes", r.Blockers, r.Warnings, r.Infos)
}

func serverLine(s Server) string {
	return fmt.Sprintf("%s — PostgreSQL %s, %s, %s/%s, %s", s.Endpoint, s.Version, s.Encoding, s.Collate, s.Ctype, humanBytes(s.DatabaseBytes))
}

var sections = []struct {
	sev   Severity
	title string
}{{Blocker, "Blockers"}, {Warning, "Warnings"}, {Info, "Notes"}}

// withSeverity returns the findings of one severity, in report order.
func withSeverity(findings []Finding, sev Severity) []Finding {
	var out []Finding
	for _, f := range findings {
		if f.Severity == sev {
			out = append(out, f)
		}
	}
	return out
}

// WriteText writes the report for a terminal: verdict, findings grouped by severity with
// their fixes, then sizes and activity per table (largest first), then the estimate.
func WriteText(w io.Writer, r Report) error {
	ew := &errWriter{w: w}
	ew.printf("pgshift assessment\n")
	// Endpoints read "source user@host:port/db" already.
	ew.printf("  %s\n", serverLine(r.Source))
	if r.Target != nil {
		ew.printf("  %s\n", serverLine(*r.Target))
	}
	ew.printf("\nResult: %s\n", verdict(r))
	for _, sec := range sections {
		fs := withSeverity(r.Findings, sec.sev)
		if len(fs) == 0 {
			continue
		}
		ew.printf("\n%s (%d)\n", sec.title, len(fs))
		for _, f := range fs {
			ew.printf("  • [%s] %s: %s\n", f.Code, f.Object, f.Message)
			if f.Fix != "" {
				ew.printf("      fix: %s\n", f.Fix)
			}
		}
	}

	t := r.Totals
	ew.printf("\nDatabase: %s in %s (%s table data, %s TOAST, %s indexes), ~%s rows, %d sequences\n",
		humanBytes(t.TotalBytes), plural(t.Tables, "relation", "relations"), humanBytes(t.HeapBytes), humanBytes(t.ToastBytes),
		humanBytes(t.IndexBytes), humanCount(t.RowsEstimate), t.Sequences)
	ew.printf("Activity since %s: %s inserts, %s updates, %s deletes; %d indexes, %s index scans, %d unused\n",
		statsSince(r.Source.StatsReset), humanCount(t.Inserts), humanCount(t.Updates), humanCount(t.Deletes),
		t.Indexes, humanCount(t.IndexScans), t.UnusedIndexes)
	if len(r.Tables) > 0 {
		ew.printf("\nTables, largest first\n")
		tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "TABLE\tSIZE\tTOAST\tROWS\tINSERTS\tUPDATES\tDELETES\tINDEXES\tIDX SCANS\tUNUSED\tKEY\t\n")
		for _, tb := range r.Tables {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t\n", tb.ID(), humanBytes(tb.TotalBytes), humanBytes(tb.ToastBytes),
				humanCount(tb.RowsEstimate), humanCount(tb.Inserts), humanCount(tb.Updates), humanCount(tb.Deletes),
				tb.Indexes, humanCount(tb.IndexScans), len(tb.UnusedIndexes), keyLabel(tb))
		}
		if err := tw.Flush(); err != nil && ew.err == nil {
			ew.err = err
		}
	}
	e := r.Estimate
	ew.printf("\nCopy-time estimate: %s – %s with %d jobs\n", humanDuration(e.Low()), humanDuration(e.High()), e.Jobs)
	ew.printf("  assumption: %s\n", e.Assumption)
	return ew.err
}

// WriteMarkdown writes the report as a Markdown document, e.g. for a migration ticket.
func WriteMarkdown(w io.Writer, r Report) error {
	ew := &errWriter{w: w}
	ew.printf("# pgshift assessment\n\n")
	ew.printf("- %s\n", md(serverLine(r.Source)))
	if r.Target != nil {
		ew.printf("- %s\n", md(serverLine(*r.Target)))
	}
	ew.printf("- **Result:** %s\n", verdict(r))
	ew.printf("- **Generated:** %s\n", r.GeneratedAt.UTC().Format(time.RFC3339))
	for _, sec := range sections {
		fs := withSeverity(r.Findings, sec.sev)
		if len(fs) == 0 {
			continue
		}
		ew.printf("\n## %s (%d)\n\n| code | object | finding | fix |\n|---|---|---|---|\n", sec.title, len(fs))
		for _, f := range fs {
			ew.printf("| `%s` | %s | %s | %s |\n", f.Code, md(f.Object), md(f.Message), md(f.Fix))
		}
	}
	t := r.Totals
	ew.printf("\n## Size and activity\n\n")
	ew.printf("%s in %s (%s table data, %s TOAST, %s indexes), ~%s rows, %d sequences. ",
		humanBytes(t.TotalBytes), plural(t.Tables, "relation", "relations"), humanBytes(t.HeapBytes), humanBytes(t.ToastBytes),
		humanBytes(t.IndexBytes), humanCount(t.RowsEstimate), t.Sequences)
	ew.printf("Since %s: %s inserts, %s updates, %s deletes; %d indexes, %s index scans, %d unused.\n\n",
		statsSince(r.Source.StatsReset), humanCount(t.Inserts), humanCount(t.Updates), humanCount(t.Deletes),
		t.Indexes, humanCount(t.IndexScans), t.UnusedIndexes)
	if len(r.Tables) > 0 {
		ew.printf("| table | size | TOAST | rows | inserts | updates | deletes | indexes | index scans | unused indexes | key |\n")
		ew.printf("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|\n")
		for _, tb := range r.Tables {
			ew.printf("| %s | %s | %s | %s | %s | %s | %s | %d | %s | %d | %s |\n", md(tb.ID()), humanBytes(tb.TotalBytes), humanBytes(tb.ToastBytes),
				humanCount(tb.RowsEstimate), humanCount(tb.Inserts), humanCount(tb.Updates), humanCount(tb.Deletes),
				tb.Indexes, humanCount(tb.IndexScans), len(tb.UnusedIndexes), md(keyLabel(tb)))
		}
	}
	e := r.Estimate
	ew.printf("\n## Copy-time estimate\n\n**%s – %s** with %d jobs. %s.\n", humanDuration(e.Low()), humanDuration(e.High()), e.Jobs, md(e.Assumption))
	return ew.err
}

// keyLabel says how rows of the table are identified for UPDATE/DELETE.
func keyLabel(t Table) string {
	switch t.Kind {
	case "foreign":
		return "foreign"
	case "materialized_view":
		return "matview"
	case "partitioned":
		return "partitioned"
	}
	if t.Unlogged {
		return "UNLOGGED"
	}
	switch {
	case t.ReplicaIdentity == "full":
		return "FULL"
	case t.ReplicaIdentity == "index" && t.UsableIdentity:
		return "index"
	case len(t.PrimaryKey) > 0 && t.ReplicaIdentity == "default" && t.UsableIdentity:
		return "PK"
	}
	return "NONE"
}

// md escapes text for a Markdown table cell.
func md(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, "|", `\|`)
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}

func statsSince(t *time.Time) string {
	if t == nil {
		return "statistics began"
	}
	return "stats reset at " + t.UTC().Format("2006-01-02 15:04 UTC")
}

// humanBytes formats a byte count in binary units: 0 B, 912 B, 1.5 kB, 23 MB, 1.2 GB, 3.4 TB.
func humanBytes(n int64) string {
	if n < 0 {
		return "-" + humanBytes(-n)
	}
	if n < 1024 {
		return fmt.Sprintf("%d B", n)
	}
	units := []string{"kB", "MB", "GB", "TB", "PB", "EB"}
	v := float64(n) / 1024
	i := 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	if v < 10 {
		return fmt.Sprintf("%.1f %s", v, units[i])
	}
	return fmt.Sprintf("%.0f %s", v, units[i])
}

// humanCount formats a count with k/M/G suffixes above ten thousand; -1 (never analyzed) is "?".
func humanCount(n int64) string {
	switch {
	case n < 0:
		return "?"
	case n < 10_000:
		return fmt.Sprintf("%d", n)
	case n < 1_000_000:
		return fmt.Sprintf("%.1fk", float64(n)/1e3)
	case n < 1_000_000_000:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	}
	return fmt.Sprintf("%.1fG", float64(n)/1e9)
}

// humanDuration rounds to what matters for planning: seconds under ten minutes, minutes under
// ten hours, then hours.
func humanDuration(d time.Duration) string {
	switch {
	case d < time.Second:
		return "<1s"
	case d < 10*time.Minute:
		return d.Round(time.Second).String()
	case d < 10*time.Hour:
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%.0fh", d.Hours())
}
