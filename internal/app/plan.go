package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/plan"
)

// PlanOptions are the plan command's own settings.
type PlanOptions struct {
	Format    plan.Format
	Resources plan.Resources
	// SampleBytes caps the timed read the copy-time estimate rests on; 0 skips it.
	SampleBytes int64
}

// Plan connects to the source (and the target when cfg names one), plans the target, and
// writes the plan to out. It only reads.
func Plan(ctx context.Context, cfg config.Config, opts PlanOptions, out io.Writer, log *slog.Logger) (plan.Plan, error) {
	if err := cfg.RequireSource(); err != nil {
		return plan.Plan{}, err
	}
	srcEP := db.Endpoint{Role: db.Source, DSN: cfg.Source}
	src, err := srcEP.Connect(ctx)
	if err != nil {
		return plan.Plan{}, err
	}
	defer src.Close(context.WithoutCancel(ctx))
	var dst *pgx.Conn
	dstName := ""
	if cfg.Target != "" {
		dstEP := db.Endpoint{Role: db.Target, DSN: cfg.Target}
		if dst, err = dstEP.Connect(ctx); err != nil {
			return plan.Plan{}, err
		}
		defer dst.Close(context.WithoutCancel(ctx))
		dstName = dstEP.String()
	}
	log.Info("planning the target", "source", srcEP.String(), "target", dstName)
	p, err := plan.Run(ctx, src, dst, plan.Options{Filter: cfg.Filter(), Jobs: cfg.Jobs, Resources: opts.Resources,
		SampleBytes: opts.SampleBytes, SourceName: srcEP.String(), TargetName: dstName, Logger: log})
	if err != nil {
		return p, fmt.Errorf("plan: %w", err)
	}
	return p, plan.Write(out, p, opts.Format)
}
