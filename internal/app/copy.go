// Package app is pgshift's composition root: it builds each command's pieces from the
// configuration and runs them (internal/copy, internal/follow, internal/verify, ...); the
// phases themselves live in those packages.
package app

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/copy"
	"github.com/pgshift/pgshift/internal/progress"
)

// CopyOptions are the copy phase's settings beyond config.Config (see copy.Options).
type CopyOptions = copy.Options

// CopySummary is what a copy did (see copy.Summary).
type CopySummary = copy.Summary

// ErrCopyInterrupted is the error of a copy stopped before it finished (see copy.ErrInterrupted).
var ErrCopyInterrupted = copy.ErrInterrupted

// CopyStep is one numbered step of the copy (see copy.Step).
type CopyStep = copy.Step

// ParseCopyStep reads a step name as the command line gives it (see copy.ParseStep).
func ParseCopyStep(name string) (CopyStep, error) { return copy.ParseStep(name) }

// Copy runs phase 2 of a migration under the migration's lease: see copy.Run.
func Copy(ctx context.Context, cfg config.Config, opts CopyOptions, log *slog.Logger) (CopySummary, error) {
	return copy.Run(ctx, cfg, opts, log)
}

// CopyDemoStep is the demo's copy stage: the sample database copied in the slot's snapshot,
// with its summary printed.
func CopyDemoStep() DemoStep {
	return DemoStep{Name: "copy the database in the replication slot's snapshot", Run: copyDemo}
}

func copyDemo(ctx context.Context, d *Demo) error {
	cfg := config.Defaults()
	cfg.Source, cfg.Target = d.SourceDSN, d.TargetDSN
	opts := CopyOptions{Progress: d.Opts.Out, ProgressTTY: progress.IsTerminal(d.Opts.Out), ProgressInterval: 2 * time.Second}
	sum, err := Copy(ctx, cfg, opts, d.Opts.Logger)
	if err != nil {
		return err
	}
	sum.WriteSummary(newIndent(d.Opts.Out))
	return nil
}

// indent prefixes every line written through it with four spaces, like the demo's other output.
type indent struct {
	w   io.Writer
	mid bool // the last write ended inside a line
}

// newIndent prefixes every line written through it, whatever pieces the lines arrive in (a
// tabwriter writes cell by cell).
func newIndent(w io.Writer) *indent { return &indent{w: w} }

func (i *indent) Write(p []byte) (int, error) {
	var b strings.Builder
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line == "" {
			continue
		}
		if !i.mid {
			b.WriteString("    ")
		}
		b.WriteString(line)
		i.mid = !strings.HasSuffix(line, "\n")
	}
	if _, err := io.WriteString(i.w, b.String()); err != nil {
		return 0, err
	}
	return len(p), nil
}
