package report

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"math"
	"sort"
	"strings"
	"time"
)

// Format is an output format of the report.
type Format string

const (
	Markdown Format = "markdown"
	HTML     Format = "html"
	JSON     Format = "json"
)

// ParseFormat validates a --format value.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case Markdown, HTML, JSON:
		return Format(s), nil
	case "md":
		return Markdown, nil
	}
	return "", fmt.Errorf("--format %q: want markdown, html or json", s)
}

// Write renders r in format f.
func (r *Report) Write(w io.Writer, f Format) error {
	switch f {
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case HTML:
		return r.writeHTML(w)
	}
	return r.writeMarkdown(w)
}

// --- text helpers -------------------------------------------------------------------------

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}

func count(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return s
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func dur(secs float64) string {
	if secs <= 0 {
		return "0 s"
	}
	d := time.Duration(secs * float64(time.Second))
	switch {
	case d < time.Second:
		return fmt.Sprintf("%d ms", d.Milliseconds())
	case d < time.Minute:
		return fmt.Sprintf("%.1f s", secs)
	}
	return d.Round(time.Second).String()
}

func ts(t time.Time) string {
	if t.IsZero() {
		return "–"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}

func pct(v float64) string {
	if v >= 99.995 && v < 100 {
		return "99.99%"
	}
	return strings.TrimSuffix(strings.TrimSuffix(fmt.Sprintf("%.2f", v), "0"), ".0") + "%"
}

// SummaryTree is the case study's validation summary, computed, as lines of text.
func (r *Report) SummaryTree() []string {
	v := r.Validation
	if v == nil {
		return nil
	}
	lines := []string{"Table Validation Summary:"}
	ratio := func(a, b int) string {
		if b == 0 {
			return "–"
		}
		return pct(float64(a) / float64(b) * 100)
	}
	items := []string{
		fmt.Sprintf("Tables matched: %d/%d tables (%s)", v.TablesMatched, v.TablesCompared, ratio(v.TablesMatched, v.TablesCompared)),
		fmt.Sprintf("Row count matches: %d/%d tables (%s)", v.RowCountMatches, v.TablesCompared, ratio(v.RowCountMatches, v.TablesCompared)),
		fmt.Sprintf("Data integrity: %s match rate (%s of %s rows differ, %s mode)", pct(v.IntegrityPct), count(v.RowDifferences), count(v.SourceRows), v.Mode),
	}
	if v.SchemaObjects > 0 {
		s := fmt.Sprintf("Schema consistency: %s match (%d of %d objects differ)", pct(v.SchemaPct), v.SchemaDiffs, v.SchemaObjects)
		if v.Deferred > 0 {
			s += fmt.Sprintf("; %d kept back until cutover", v.Deferred)
		}
		items = append(items, s)
	} else {
		items = append(items, "Schema consistency: not compared")
	}
	seq := fmt.Sprintf("Sequences: %d/%d in step", v.Sequences-v.SequenceDiffs, v.Sequences)
	if v.SequencesBehind && v.SequenceDiffs > 0 {
		seq += " (the others trail the source as expected until cutover syncs them)"
	}
	items = append(items, seq)
	lines = append(lines, tree(items)...)
	lines = append(lines, "", "Discrepancies Found:")
	var classes []string
	for k, n := range v.Classes {
		classes = append(classes, fmt.Sprintf("%d × %s", n, k))
	}
	sort.Strings(classes)
	if len(classes) == 0 {
		classes = []string{"none"}
	}
	return append(lines, tree(classes)...)
}

func tree(items []string) []string {
	out := make([]string, len(items))
	for i, s := range items {
		p := "├── "
		if i == len(items)-1 {
			p = "└── "
		}
		out[i] = p + s
	}
	return out
}

// --- Markdown -------------------------------------------------------------------------------

func (r *Report) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }
	m := r.Migration
	p("# Migration report: %s", m.SourceDatabase)
	p("")
	p("Generated %s. Slot `%s`, publication `%s`; phase **%s**; applied position %s (copy snapshot at %s).",
		ts(r.GeneratedAt), m.Slot, m.Publication, m.Phase, m.AppliedLSN, m.ConsistentLSN)
	for _, n := range r.Notes {
		p("")
		p("> %s", n)
	}
	p("")
	p("## Timeline")
	p("")
	p("| phase | began | duration |")
	p("|---|---|---:|")
	for _, s := range r.Timeline {
		d := dur(s.Seconds)
		if s.Current {
			d += " (so far)"
		}
		p("| %s | %s | %s |", s.Phase, ts(s.Start), d)
	}
	c := r.Copy
	p("")
	p("## Data moved")
	p("")
	p("- Copy: %d/%d tables, %s rows, %s in %s — %s/s, %s rows/s; %d post-data steps (indexes, constraints).",
		c.TablesDone, c.Tables, count(c.Rows), human(c.Bytes), dur(c.Seconds), human(int64(c.BytesPerSec)), count(int64(c.RowsPerSec)), c.PostData)
	f := r.Follow
	p("- Follow: %s of source WAL applied since the snapshot; %s transactions and %s changes measured over %d agent run(s); mean %s/s.",
		human(f.WALBytes), count(f.Transactions), count(f.Changes), f.AgentRuns, human(int64(f.MeanBytesPerSec)))
	p("- Lag: at most %s (%s); WAL retained by the slot at most %s; last measured %s / %s at %s.",
		dur(f.MaxLagSeconds), human(f.MaxLagBytes), human(f.MaxRetained), dur(f.LastLagSeconds), human(f.LastLagBytes), ts(f.LastMeasured))
	if len(c.Largest) > 0 {
		p("")
		p("| largest tables | rows | bytes | copy time |")
		p("|---|---:|---:|---:|")
		for _, t := range c.Largest {
			p("| `%s` | %s | %s | %s |", t.Table, count(t.Rows), human(t.Bytes), dur(t.Seconds))
		}
	}
	p("")
	p("## Validation")
	p("")
	if r.Validation == nil {
		p("Not run.")
	} else {
		v := r.Validation
		verdict := "IDENTICAL"
		if !v.Identical {
			verdict = "DIFFERENCES FOUND"
		}
		p("Latest verify: **%s**, %s mode, %s.", verdict, v.Mode, ts(v.RunAt))
		p("")
		p("```")
		for _, l := range r.SummaryTree() {
			p("%s", l)
		}
		p("```")
		for _, t := range v.Tables {
			p("- `%s`: %s differences (source %s rows, target %s)%s: %s", t.Table, count(t.Differences), count(t.SourceRows), count(t.TargetRows),
				errSuffix(t.Error), strings.Join(t.Keys, "; "))
		}
	}
	p("")
	p("## Cutover")
	p("")
	cu := r.Cutover
	p("State: **%s**%s.", cu.State, attempts(cu.Attempts))
	if cu.PauseSeconds > 0 {
		p("Measured pause: **%s** (%s).", dur(cu.PauseSeconds), cu.PauseSource)
	} else {
		p("Measured pause: none yet.")
	}
	p("")
	p("| # | step | state | duration |")
	p("|---:|---|---|---:|")
	for _, s := range cu.Steps {
		st := s.State
		if cu.State == "not started" {
			st = "not started"
		}
		d := "–"
		if !s.StartedAt.IsZero() {
			d = dur(s.Duration(r.GeneratedAt).Seconds())
		}
		p("| %d | %s | %s | %s |", s.No, s.Name, st, d)
	}
	p("")
	p("## Rollbacks")
	p("")
	if len(r.Rollbacks) == 0 {
		p("None.")
	}
	for _, e := range r.Rollbacks {
		p("- %s %s by %s: %s %s", ts(e.At), e.Action, e.Actor, e.Outcome, e.Detail)
	}
	p("")
	p("## Query performance")
	p("")
	if len(r.Queries) == 0 {
		p("No comparison was run (pgshift compare-queries).")
	} else {
		p("| query | source | target | change |")
		p("|---|---:|---:|---:|")
		for _, q := range r.Queries {
			p("| %s | %.1f ms | %.1f ms | %s |", q.Name, q.SourceMS, q.TargetMS, improvement(q.Improvement))
		}
	}
	p("")
	p("## Alerts")
	p("")
	if len(r.Alerts) == 0 {
		p("None fired.")
	}
	for _, e := range r.Alerts {
		p("- %s %s %s", ts(e.At), e.Action, e.Detail)
	}
	p("")
	p("## Audit log")
	p("")
	p("| time | actor | action | outcome | detail |")
	p("|---|---|---|---|---|")
	for _, e := range r.Audit {
		p("| %s | %s | %s | %s | `%s` |", ts(e.At), e.Actor, e.Action, e.Outcome, strings.ReplaceAll(string(e.Detail), "|", "\\|"))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return " — " + e
}

func attempts(n int) string {
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" (attempt %d)", n)
}

func improvement(p float64) string {
	if p >= 0 {
		return fmt.Sprintf("%.0f%% faster", p)
	}
	return fmt.Sprintf("%.0f%% slower", -p)
}

// --- HTML -----------------------------------------------------------------------------------

// svgChart draws one or two series over time as an inline SVG line chart. Values are numbers
// and labels are escaped, so the result is safe to embed.
func svgChart(title string, times []time.Time, a []float64, aLabel string, aFmt func(float64) string, b []float64, bLabel string, bFmt func(float64) string) template.HTML {
	const W, H, L, R, T, B = 760.0, 220.0, 70.0, 70.0, 28.0, 30.0
	var s strings.Builder
	esc := template.HTMLEscapeString
	fmt.Fprintf(&s, `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" role="img" aria-label="%s">`, W, H, W, H, esc(title))
	fmt.Fprintf(&s, `<text x="%.0f" y="16" font-size="13" font-weight="600">%s</text>`, L, esc(title))
	if len(times) < 2 {
		fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" font-size="12" fill="#666">not enough measurements for a chart</text></svg>`, L, H/2)
		return template.HTML(s.String())
	}
	t0, t1 := times[0], times[len(times)-1]
	span := t1.Sub(t0).Seconds()
	if span <= 0 {
		span = 1
	}
	x := func(t time.Time) float64 { return L + (W-L-R)*t.Sub(t0).Seconds()/span }
	scale := func(v []float64) float64 {
		m := 0.0
		for _, f := range v {
			if f > m && !math.IsInf(f, 0) {
				m = f
			}
		}
		if m == 0 {
			m = 1
		}
		return m
	}
	fmt.Fprintf(&s, `<rect x="%.0f" y="%.0f" width="%.0f" height="%.0f" fill="none" stroke="#ccc"/>`, L, T, W-L-R, H-T-B)
	line := func(v []float64, color string, axisX float64, anchor string, f func(float64) string, label string) {
		if v == nil {
			return
		}
		m := scale(v)
		var pts []string
		for i, f := range v {
			if f < 0 || i >= len(times) {
				continue
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(times[i]), H-B-(H-T-B)*f/m))
		}
		fmt.Fprintf(&s, `<polyline fill="none" stroke="%s" stroke-width="1.6" points="%s"/>`, color, strings.Join(pts, " "))
		fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" font-size="11" fill="%s" text-anchor="%s">%s</text>`, axisX, T+10, color, anchor, esc(f(m)))
		fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" font-size="11" fill="%s" text-anchor="%s">0</text>`, axisX, H-B, color, anchor)
		lx := L + 8
		if anchor == "start" {
			lx = W - R - 150
		}
		fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" font-size="11" fill="%s">%s</text>`, lx, T+14, color, esc(label))
	}
	line(a, "#2b6cb0", L-6, "end", aFmt, aLabel)
	line(b, "#c05621", W-R+6, "start", bFmt, bLabel)
	fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" font-size="11" fill="#666">%s</text>`, L, H-10, esc(ts(t0)))
	fmt.Fprintf(&s, `<text x="%.0f" y="%.0f" font-size="11" fill="#666" text-anchor="end">%s</text>`, W-R, H-10, esc(ts(t1)))
	s.WriteString(`</svg>`)
	return template.HTML(s.String())
}

func (r *Report) charts() (lag, tput template.HTML) {
	var times []time.Time
	var lagS, lagB, rate, retained []float64
	for _, h := range r.History {
		times = append(times, h.At)
		lagS = append(lagS, h.LagSeconds)
		lagB = append(lagB, float64(h.LagBytes))
		rate = append(rate, h.BytesPerSec)
		retained = append(retained, float64(h.RetainedBytes))
	}
	bytesF := func(v float64) string { return human(int64(v)) }
	lag = svgChart("Replication lag over time (maximum per interval)", times, lagS, "lag (seconds)", func(v float64) string { return dur(v) }, lagB, "lag (bytes)", bytesF)
	tput = svgChart("Apply throughput and WAL retained by the slot", times, rate, "applied WAL per second", func(v float64) string { return human(int64(v)) + "/s" }, retained, "retained WAL", bytesF)
	return lag, tput
}

var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"int64": func(f float64) int64 { return int64(f) },
	"ts":    ts, "dur": dur, "human": human, "count": count, "pct": pct, "improvement": improvement,
	"str": func(b json.RawMessage) string { return string(b) },
	"stepDur": func(r *Report, i int) string {
		if r.Cutover.Steps[i].StartedAt.IsZero() {
			return "–"
		}
		return dur(r.Cutover.Steps[i].Duration(r.GeneratedAt).Seconds())
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Migration report: {{.R.Migration.SourceDatabase}}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1d2330;max-width:1000px;margin:2em auto;padding:0 1em}
h1{font-size:1.6em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;width:100%;margin:.6em 0}th,td{text-align:left;padding:.25em .5em;border-bottom:1px solid #eee;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}pre{background:#f5f6f8;padding:.8em;border-radius:4px}
.ok{color:#1f8a4c}.bad{color:#c53030}.muted{color:#6b7385}.note{background:#fff3cd;padding:.5em .8em;border-radius:4px}
code{font-size:.92em}
</style></head><body>
{{$r := .R}}
<h1>Migration report: {{$r.Migration.SourceDatabase}}</h1>
<p>Generated {{ts $r.GeneratedAt}}. Slot <code>{{$r.Migration.Slot}}</code>, publication <code>{{$r.Migration.Publication}}</code>; phase <b>{{$r.Migration.Phase}}</b>; applied position {{$r.Migration.AppliedLSN}} (copy snapshot at {{$r.Migration.ConsistentLSN}}).</p>
{{range $r.Notes}}<p class="note">{{.}}</p>{{end}}
<h2>Timeline</h2>
<table><tr><th>phase</th><th>began</th><th class="n">duration</th></tr>
{{range $r.Timeline}}<tr><td>{{.Phase}}</td><td>{{ts .Start}}</td><td class="n">{{dur .Seconds}}{{if .Current}} (so far){{end}}</td></tr>{{end}}</table>
<h2>Data moved</h2>
{{with $r.Copy}}<p>Copy: {{.TablesDone}}/{{.Tables}} tables, {{count .Rows}} rows, {{human .Bytes}} in {{dur .Seconds}} — {{human (int64 .BytesPerSec)}}/s, {{count (int64 .RowsPerSec)}} rows/s; {{.PostData}} post-data steps.</p>{{end}}
{{with $r.Follow}}<p>Follow: {{human .WALBytes}} of source WAL applied since the snapshot; {{count .Transactions}} transactions and {{count .Changes}} changes measured over {{.AgentRuns}} agent run(s); mean {{human (int64 .MeanBytesPerSec)}}/s.
Lag at most {{dur .MaxLagSeconds}} ({{human .MaxLagBytes}}); retained WAL at most {{human .MaxRetained}}; last {{dur .LastLagSeconds}} / {{human .LastLagBytes}} at {{ts .LastMeasured}}.</p>{{end}}
{{.Lag}}
{{.Tput}}
{{if $r.Copy.Largest}}<table><tr><th>largest tables</th><th class="n">rows</th><th class="n">bytes</th><th class="n">copy time</th></tr>
{{range $r.Copy.Largest}}<tr><td><code>{{.Table}}</code></td><td class="n">{{count .Rows}}</td><td class="n">{{human .Bytes}}</td><td class="n">{{dur .Seconds}}</td></tr>{{end}}</table>{{end}}
<h2>Validation</h2>
{{with $r.Validation}}<p>Latest verify: <b class="{{if .Identical}}ok{{else}}bad{{end}}">{{if .Identical}}IDENTICAL{{else}}DIFFERENCES FOUND{{end}}</b>, {{.Mode}} mode, {{ts .RunAt}}.</p>
<pre>{{range $.Tree}}{{.}}
{{end}}</pre>
{{range .Tables}}<p class="bad"><code>{{.Table}}</code>: {{count .Differences}} differences (source {{count .SourceRows}} rows, target {{count .TargetRows}}){{if .Error}} — {{.Error}}{{end}}: {{range $i, $k := .Keys}}{{if $i}}; {{end}}<code>{{$k}}</code>{{end}}</p>{{end}}
{{else}}<p>Not run.</p>{{end}}
<h2>Cutover</h2>
<p>State: <b>{{$r.Cutover.State}}</b>{{if $r.Cutover.Attempts}} (attempt {{$r.Cutover.Attempts}}){{end}}. Measured pause: {{if $r.Cutover.PauseSeconds}}<b>{{dur $r.Cutover.PauseSeconds}}</b> ({{$r.Cutover.PauseSource}}){{else}}none yet{{end}}.</p>
<table><tr><th class="n">#</th><th>step</th><th>state</th><th class="n">duration</th></tr>
{{range $i, $s := $r.Cutover.Steps}}<tr><td class="n">{{$s.No}}</td><td>{{$s.Name}}</td><td>{{if eq $r.Cutover.State "not started"}}not started{{else}}{{$s.State}}{{end}}</td><td class="n">{{stepDur $r $i}}</td></tr>{{end}}</table>
<h2>Rollbacks</h2>
{{if $r.Rollbacks}}<ul>{{range $r.Rollbacks}}<li>{{ts .At}} {{.Action}} by {{.Actor}}: {{.Outcome}} <code>{{str .Detail}}</code></li>{{end}}</ul>{{else}}<p>None.</p>{{end}}
<h2>Query performance</h2>
{{if $r.Queries}}<table><tr><th>query</th><th class="n">source</th><th class="n">target</th><th class="n">change</th></tr>
{{range $r.Queries}}<tr><td>{{.Name}}</td><td class="n">{{printf "%.1f" .SourceMS}} ms</td><td class="n">{{printf "%.1f" .TargetMS}} ms</td><td class="n">{{improvement .Improvement}}</td></tr>{{end}}</table>
{{else}}<p class="muted">No comparison was run (pgshift compare-queries).</p>{{end}}
<h2>Alerts</h2>
{{if $r.Alerts}}<ul>{{range $r.Alerts}}<li>{{ts .At}} {{.Action}} <code>{{str .Detail}}</code></li>{{end}}</ul>{{else}}<p>None fired.</p>{{end}}
<h2>Audit log</h2>
<table><tr><th>time</th><th>actor</th><th>action</th><th>outcome</th><th>detail</th></tr>
{{range $r.Audit}}<tr><td>{{ts .At}}</td><td>{{.Actor}}</td><td>{{.Action}}</td><td>{{.Outcome}}</td><td><code>{{str .Detail}}</code></td></tr>{{end}}</table>
</body></html>
`))

func (r *Report) writeHTML(w io.Writer) error {
	lag, tput := r.charts()
	return htmlTemplate.Execute(w, map[string]any{"R": r, "Lag": lag, "Tput": tput, "Tree": r.SummaryTree()})
}
