package compare

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pgshift/pgshift/internal/assess"
)

// Format is an output format of compare-queries: assess's, so every command takes the same
// --format words.
type Format = assess.Format

const (
	FormatText     = assess.FormatText
	FormatJSON     = assess.FormatJSON
	FormatMarkdown = assess.FormatMarkdown
)

// ParseFormat accepts text, json, markdown (and md), case-insensitively.
func ParseFormat(s string) (Format, error) { return assess.ParseFormat(s) }

// Report is what compare-queries prints.
type Report struct {
	Runs    int      `json:"runs"`
	Ratio   float64  `json:"slower_ratio"`
	Results []Result `json:"results"`
}

// Slower counts the queries flagged slower on the target.
func (r Report) Slower() int {
	n := 0
	for _, q := range r.Results {
		if q.Slower {
			n++
		}
	}
	return n
}

// Failed counts the queries that could not be compared.
func (r Report) Failed() int {
	n := 0
	for _, q := range r.Results {
		if q.Err != "" {
			n++
		}
	}
	return n
}

// Write renders the report.
func Write(w io.Writer, r Report, f Format) error {
	switch f {
	case FormatJSON:
		if r.Results == nil {
			r.Results = []Result{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case FormatMarkdown:
		return writeMarkdown(w, r)
	}
	return writeText(w, r)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func verdict(q Result) string {
	switch {
	case q.Err != "":
		return "ERROR"
	case q.Slower:
		return "SLOWER"
	}
	return "ok"
}

func writeText(w io.Writer, r Report) error {
	fmt.Fprintf(w, "Query comparison: %d timed runs per side, interleaved; the target is flagged slower above %.2g× the source's median\n\n", r.Runs, r.Ratio)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "QUERY\tSOURCE p50\tTARGET p50\tRATIO\tSOURCE p95/max\tTARGET p95/max\tVERDICT")
	for _, q := range r.Results {
		if q.Err != "" {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t-\t-\tERROR\n", q.Name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.2f×\t%s / %s\t%s / %s\t%s\n", q.Name, ms(q.Source.P50), ms(q.Target.P50), q.Ratio,
			ms(q.Source.P95), ms(q.Source.Max), ms(q.Target.P95), ms(q.Target.Max), verdict(q))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, q := range r.Results {
		writeDetail(w, q, "  ")
	}
	fmt.Fprintf(w, "\nResult: %d of %d queries slower on the target, %d could not be compared\n", r.Slower(), len(r.Results), r.Failed())
	return nil
}

func writeDetail(w io.Writer, q Result, indent string) {
	if q.Err == "" && !q.RowsDiffer && (q.Plans == nil || len(q.Plans.Differences) == 0) {
		return
	}
	fmt.Fprintf(w, "\n%s:\n", q.Name)
	if q.Err != "" {
		fmt.Fprintf(w, "%serror: %s\n", indent, q.Err)
	}
	if q.RowsDiffer {
		fmt.Fprintf(w, "%srows differ: %d on the source, %d on the target (different data, or a query that is not deterministic)\n", indent, q.Source.Rows, q.Target.Rows)
	}
	if q.Plans != nil {
		for _, d := range q.Plans.Differences {
			fmt.Fprintf(w, "%splan: %s\n", indent, d)
		}
		for _, c := range q.Plans.Causes {
			fmt.Fprintf(w, "%slikely cause: %s\n", indent, c)
		}
	}
}

func writeMarkdown(w io.Writer, r Report) error {
	fmt.Fprintf(w, "## Query performance: source vs target\n\n%d timed runs per side, interleaved; flagged when the target's median is above %.2g× the source's.\n\n", r.Runs, r.Ratio)
	fmt.Fprintln(w, "| query | source p50 | target p50 | ratio | source p95 / max | target p95 / max | verdict |")
	fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---|")
	for _, q := range r.Results {
		if q.Err != "" {
			fmt.Fprintf(w, "| %s | – | – | – | – | – | **ERROR** |\n", mdEscape(q.Name))
			continue
		}
		v := verdict(q)
		if q.Slower {
			v = "**SLOWER**"
		}
		fmt.Fprintf(w, "| %s | %s | %s | %.2f× | %s / %s | %s / %s | %s |\n", mdEscape(q.Name), ms(q.Source.P50), ms(q.Target.P50), q.Ratio,
			ms(q.Source.P95), ms(q.Source.Max), ms(q.Target.P95), ms(q.Target.Max), v)
	}
	for _, q := range r.Results {
		var b strings.Builder
		writeDetail(&b, q, "- ")
		if b.Len() > 0 {
			fmt.Fprintf(w, "\n### %s\n%s", mdEscape(q.Name), strings.TrimPrefix(b.String(), "\n"+q.Name+":"))
		}
	}
	fmt.Fprintf(w, "\n%d of %d queries slower on the target, %d could not be compared.\n", r.Slower(), len(r.Results), r.Failed())
	return nil
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
