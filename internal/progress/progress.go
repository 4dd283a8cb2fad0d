// Package progress shows how far long-running work has got: on a terminal, an overall bar and
// one bar per active task (rows, bytes, rate, ETA), redrawn in place; elsewhere (a log file, a
// pipe, CI), a plain log line at a fixed interval. Workers only bump atomic counters on their
// Task; a single Run goroutine does all drawing, so reporting never slows the work down.
package progress

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// Options configure a Tracker.
type Options struct {
	// Out is where terminal bars are drawn (usually os.Stderr).
	Out io.Writer
	// TTY selects bars (true) or periodic log lines (false); see IsTerminal.
	TTY bool
	// Interval between redraws (TTY, default 250ms) or log lines (default 10s).
	Interval time.Duration
	// Log receives the periodic lines when TTY is false.
	Log *slog.Logger
	// Title names the work in log lines and the overall bar, e.g. "copy".
	Title string
	// MaxBars bounds the per-task bars shown at once on a terminal (default 8).
	MaxBars int
}

// IsTerminal reports whether w is a terminal.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// Tracker aggregates tasks. Create tasks with Task, count with Task.Add, and run Run in the
// caller's errgroup; Stop draws the final state.
type Tracker struct {
	opts  Options
	start time.Time

	mu    sync.Mutex
	tasks []*Task
	drawn int // lines drawn by the last terminal redraw
}

// New returns a Tracker.
func New(opts Options) *Tracker {
	if opts.Interval <= 0 {
		opts.Interval = 10 * time.Second
		if opts.TTY {
			opts.Interval = 250 * time.Millisecond
		}
	}
	if opts.MaxBars <= 0 {
		opts.MaxBars = 8
	}
	if opts.Out == nil {
		opts.Out = io.Discard
	}
	if opts.Title == "" {
		opts.Title = "progress"
	}
	return &Tracker{opts: opts, start: time.Now()}
}

// Task is one named unit of work with expected totals (estimates are fine; 0 means unknown).
// Its methods are safe for concurrent use.
type Task struct {
	Name       string
	totalBytes atomic.Int64
	totalRows  atomic.Int64
	bytes      atomic.Int64
	rows       atomic.Int64
	started    atomic.Int64 // unix nanos of the first Add; 0 before
	done       atomic.Bool

	bar *progressbar.ProgressBar // terminal only; drawn only by the drawing goroutine (it locks itself)
}

// Task registers a task. Tasks appear in the order registered.
func (t *Tracker) Task(name string, totalBytes, totalRows int64) *Task {
	k := &Task{Name: name}
	if t.opts.TTY {
		k.bar = progressbar.NewOptions64(max(totalBytes, 1),
			progressbar.OptionSetWriter(io.Discard), progressbar.OptionSetDescription(truncateName(name, 32)),
			progressbar.OptionShowBytes(true), progressbar.OptionSetWidth(24), progressbar.OptionSetPredictTime(true),
			progressbar.OptionSetElapsedTime(true), progressbar.OptionThrottle(0))
	}
	k.totalBytes.Store(totalBytes)
	k.totalRows.Store(totalRows)
	t.mu.Lock()
	t.tasks = append(t.tasks, k)
	t.mu.Unlock()
	return k
}

// Add counts bytes and rows done.
func (k *Task) Add(bytes, rows int64) {
	if k == nil {
		return
	}
	if k.started.CompareAndSwap(0, time.Now().UnixNano()) && k.bar != nil {
		k.bar.StartWithoutRender() // the bar's rate and ETA count from the first byte, not from its first frame
	}
	k.bytes.Add(bytes)
	k.rows.Add(rows)
}

// Done marks the task finished; its expected totals become what was actually done.
func (k *Task) Done() {
	if k == nil {
		return
	}
	k.totalBytes.Store(k.bytes.Load())
	k.totalRows.Store(k.rows.Load())
	k.done.Store(true)
}

// Totals is a point-in-time view of a Tracker.
type Totals struct {
	Tasks, TasksDone  int
	Bytes, TotalBytes int64
	Rows, TotalRows   int64
	Elapsed           time.Duration
	BytesPerSec       float64
	ETA               time.Duration // 0 when unknown
	Active            []string      // names of started, unfinished tasks
	activeTasks       []*Task
}

// Totals sums the tasks.
func (t *Tracker) Totals() Totals {
	t.mu.Lock()
	tasks := append([]*Task(nil), t.tasks...)
	t.mu.Unlock()
	s := Totals{Tasks: len(tasks), Elapsed: time.Since(t.start)}
	for _, k := range tasks {
		b, tb := k.bytes.Load(), k.totalBytes.Load()
		s.Bytes += b
		s.Rows += k.rows.Load()
		s.TotalRows += max(k.totalRows.Load(), k.rows.Load())
		s.TotalBytes += max(tb, b)
		if k.done.Load() {
			s.TasksDone++
		} else if k.started.Load() != 0 {
			s.Active = append(s.Active, k.Name)
			s.activeTasks = append(s.activeTasks, k)
		}
	}
	if secs := s.Elapsed.Seconds(); secs > 0 {
		s.BytesPerSec = float64(s.Bytes) / secs
	}
	if s.BytesPerSec > 0 && s.TotalBytes > s.Bytes {
		s.ETA = time.Duration(float64(s.TotalBytes-s.Bytes) / s.BytesPerSec * float64(time.Second))
	}
	return s
}

// Run redraws (or logs) every Interval until ctx is cancelled. It always returns nil, so it
// can run in the errgroup of the work it reports on without ever failing it.
func (t *Tracker) Run(ctx context.Context) error {
	tick := time.NewTicker(t.opts.Interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			t.draw(false)
		}
	}
}

// Stop draws the final state once (a last bar, or a last log line).
func (t *Tracker) Stop() { t.draw(true) }

func (t *Tracker) draw(final bool) {
	s := t.Totals()
	if !t.opts.TTY {
		if t.opts.Log != nil && (s.Bytes > 0 || final) {
			t.opts.Log.Info(t.opts.Title+" progress",
				"tasks_done", fmt.Sprintf("%d/%d", s.TasksDone, s.Tasks),
				"rows", s.Rows, "bytes", HumanBytes(s.Bytes), "of_bytes", HumanBytes(s.TotalBytes),
				"rate", HumanBytes(int64(s.BytesPerSec))+"/s", "eta", s.ETA.Round(time.Second).String(),
				"active", strings.Join(limit(s.Active, 5), ", "))
		}
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var b strings.Builder
	if t.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", t.drawn) // back to the first line of the previous frame
	}
	lines := []string{fmt.Sprintf("%s: %d/%d tables, %s rows, %s of %s, %s/s, ETA %s, elapsed %s",
		t.opts.Title, s.TasksDone, s.Tasks, HumanCount(s.Rows), HumanBytes(s.Bytes), HumanBytes(s.TotalBytes),
		HumanBytes(int64(s.BytesPerSec)), s.ETA.Round(time.Second), s.Elapsed.Round(time.Second))}
	active := s.activeTasks
	sort.SliceStable(active, func(i, j int) bool { return active[i].totalBytes.Load() > active[j].totalBytes.Load() })
	if final {
		active = nil
	}
	for i, k := range active {
		if i == t.opts.MaxBars {
			lines = append(lines, fmt.Sprintf("  … and %d more", len(active)-i))
			break
		}
		lines = append(lines, "  "+k.render())
	}
	for _, l := range lines {
		b.WriteString("\x1b[2K\r")
		b.WriteString(l)
		b.WriteByte('\n')
	}
	for i := len(lines); i < t.drawn; i++ { // clear lines left over from a taller frame
		b.WriteString("\x1b[2K\n")
	}
	if extra := t.drawn - len(lines); extra > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", extra)
	}
	t.drawn = len(lines)
	if final {
		t.drawn = 0
	}
	_, _ = io.WriteString(t.opts.Out, b.String())
}

// render formats one task as a progress bar with bytes, rate, ETA and rows.
func (k *Task) render() string {
	total := max(k.totalBytes.Load(), k.bytes.Load(), 1)
	if k.bar == nil {
		return k.Name
	}
	k.bar.ChangeMax64(total)
	_ = k.bar.Set64(k.bytes.Load())
	return strings.TrimLeft(k.bar.String(), "\r") + " " + HumanCount(k.rows.Load()) + " rows"
}

func truncateName(s string, n int) string {
	if len(s) <= n {
		return s + strings.Repeat(" ", n-len(s))
	}
	return s[:n-1] + "…"
}

func limit(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("+%d", len(s)-n))
	}
	return s
}

// HumanBytes formats a byte count with a binary unit: 0 B, 1.5 KiB, 12.0 MiB, 1.2 GiB.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// HumanCount formats a count with thousands separators: 1,234,567.
func HumanCount(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
