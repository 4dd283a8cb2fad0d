package progress

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHuman(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 12 << 20: "12.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %s, want %s", n, got, want)
		}
	}
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -1234: "-1,234"} {
		if got := HumanCount(n); got != want {
			t.Errorf("HumanCount(%d) = %s, want %s", n, got, want)
		}
	}
}

func TestTotalsConcurrent(t *testing.T) {
	tr := New(Options{Title: "copy"})
	a := tr.Task("a", 1000, 10)
	b := tr.Task("b", 3000, 30)
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() { defer wg.Done(); a.Add(100, 1) }()
	}
	wg.Wait()
	a.Done()
	b.Add(500, 5)
	s := tr.Totals()
	if s.Tasks != 2 || s.TasksDone != 1 || s.Bytes != 1500 || s.TotalBytes != 4000 || s.Rows != 15 || s.TotalRows != 40 {
		t.Errorf("totals %+v", s)
	}
	if len(s.Active) != 1 || s.Active[0] != "b" {
		t.Errorf("active %v", s.Active)
	}
	// A task that turns out bigger than estimated raises the total instead of passing 100%.
	b.Add(5000, 0)
	if s := tr.Totals(); s.TotalBytes != s.Bytes {
		t.Errorf("overrun: %d of %d", s.Bytes, s.TotalBytes)
	}
	var nilTask *Task
	nilTask.Add(1, 1) // a nil task (no tracker) is a no-op
	nilTask.Done()
}

func TestLogLines(t *testing.T) {
	var buf bytes.Buffer
	tr := New(Options{Log: slog.New(slog.NewTextHandler(&buf, nil)), Interval: 10 * time.Millisecond, Title: "copy"})
	k := tr.Task("public.orders", 1<<20, 100)
	k.Add(512<<10, 50)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Millisecond)
	defer cancel()
	if err := tr.Run(ctx); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "copy progress") || !strings.Contains(out, `bytes="512.0 KiB"`) || !strings.Contains(out, "public.orders") {
		t.Errorf("log lines:\n%s", out)
	}
}

func TestBars(t *testing.T) {
	var buf bytes.Buffer
	tr := New(Options{Out: &buf, TTY: true, Title: "copy"})
	k := tr.Task("public.orders", 1<<20, 100)
	k.Add(256<<10, 25)
	tr.draw(false)
	frame := buf.String()
	if !strings.Contains(frame, "copy: 0/1 tables, 25 rows, 256.0 KiB of 1.0 MiB") || !strings.Contains(frame, "public.orders") ||
		!strings.Contains(frame, "25%") || !strings.Contains(frame, "25 rows") {
		t.Errorf("frame:\n%q", frame)
	}
	buf.Reset()
	k.Done()
	tr.Stop()
	if !strings.HasPrefix(buf.String(), "\x1b[2A") || !strings.Contains(buf.String(), "1/1 tables") {
		t.Errorf("final frame does not redraw in place: %q", buf.String())
	}
}
