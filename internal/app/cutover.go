package app

// Wiring of internal/cutover into the agent and the commands: the engine of `pgshift run`
// (which follows, and after a cutover replicates back), the API's cutover and rollback
// actions, and `pgshift finish`.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/cutover"
	"github.com/pgshift/pgshift/internal/proxy"
	"github.com/pgshift/pgshift/internal/report"
	"github.com/pgshift/pgshift/internal/state"
	"github.com/pgshift/pgshift/internal/web"
)

// CutoverResult is what `pgshift cutover` and `pgshift rollback` print.
type CutoverResult = cutover.Result

// newEngine builds the agent's cutover engine; its audit entries go through the observer.
func newEngine(cfg config.Config, opts RunOptions, lease *state.Lease, p *proxy.Proxy, o *observer, log *slog.Logger) *cutover.Engine {
	return cutover.New(cutover.Deps{Config: cfg, Follow: opts, Lease: lease, Proxy: p, Metrics: o.fm, Log: log.With("component", "cutover"),
		Audit: o.record, Fault: opts.CutoverFault})
}

// cutoverActions serves POST /api/cutover and /api/rollback. The operation runs detached from
// the request: a client that goes away mid-cutover does not interrupt it.
func (o *observer) cutoverActions(a *web.Agent) {
	if o.cut == nil {
		return
	}
	wrap := func(r *cutover.Result, err error) (any, error) {
		if errors.Is(err, cutover.ErrCannotRun) {
			return nil, fmt.Errorf("%w: %w", web.ErrConflict, err)
		}
		if err != nil {
			return nil, err
		}
		return r, nil
	}
	a.Actions.Cutover = func(ctx context.Context, dryRun bool) (any, error) {
		return wrap(o.cut.Cutover(context.WithoutCancel(ctx), dryRun))
	}
	a.Actions.Rollback = func(ctx context.Context) (any, error) {
		return wrap(o.cut.Rollback(context.WithoutCancel(ctx)))
	}
}

// FinishOptions tune `pgshift finish`.
type FinishOptions struct {
	Yes bool
	// ReportFile receives the migration report (Markdown; .json or .html by extension) before
	// the state it is made from is dropped.
	ReportFile string
}

// FinishResult says what finish removed and where the report was kept.
type FinishResult struct {
	cutover.FinishResult
	Report string `json:"report"`
}

// Finish removes what the migration left on both servers (see cutover.Finish); the migration
// report is rendered first and kept in opts.ReportFile.
func Finish(ctx context.Context, cfg config.Config, opts FinishOptions, log *slog.Logger) (FinishResult, error) {
	var res FinishResult
	if err := cfg.RequireSource(); err != nil {
		return res, err
	}
	if err := cfg.RequireTarget(); err != nil {
		return res, err
	}
	if opts.ReportFile == "" {
		opts.ReportFile = "pgshift-report.md"
	}
	format := report.Markdown
	switch strings.ToLower(filepath.Ext(opts.ReportFile)) {
	case ".json":
		format = report.JSON
	case ".html", ".htm":
		format = report.HTML
	}
	saveReport := func(ctx context.Context) error {
		rep, err := Report(ctx, cfg, time.Now())
		if err != nil {
			return fmt.Errorf("render the migration report before finishing: %w", err)
		}
		f, err := os.Create(opts.ReportFile)
		if err != nil {
			return fmt.Errorf("keep the migration report: %w", err)
		}
		if err := rep.Write(f, format); err != nil {
			f.Close()
			return fmt.Errorf("write the migration report %s: %w", opts.ReportFile, err)
		}
		if err := f.Close(); err != nil {
			return fmt.Errorf("write the migration report %s: %w", opts.ReportFile, err)
		}
		res.Report = opts.ReportFile
		return nil
	}
	r, err := cutover.Finish(ctx, cfg, cutover.FinishOptions{Yes: opts.Yes, BeforeDrop: saveReport}, log)
	res.FinishResult = r
	return res, err
}
