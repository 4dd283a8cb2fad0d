package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/assess"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
)

// AssessOptions are the assess command's own settings.
type AssessOptions struct {
	Format assess.Format
	// SampleBytes caps the timed read used for the copy-time estimate; 0 skips it.
	SampleBytes int64
}

// Assess connects to the source (and the target when cfg names one), assesses them, and writes
// the report to out. An error means the assessment could not be made; a report that is not
// Ready is a successful assessment of a database with blockers.
func Assess(ctx context.Context, cfg config.Config, opts AssessOptions, out io.Writer, log *slog.Logger) (assess.Report, error) {
	if err := cfg.RequireSource(); err != nil {
		return assess.Report{}, err
	}
	srcEP := db.Endpoint{Role: db.Source, DSN: cfg.Source}
	src, err := srcEP.Connect(ctx)
	if err != nil {
		return assess.Report{}, err
	}
	defer src.Close(context.WithoutCancel(ctx))
	var dst *pgx.Conn
	dstName := ""
	if cfg.Target != "" {
		dstEP := db.Endpoint{Role: db.Target, DSN: cfg.Target}
		if dst, err = dstEP.Connect(ctx); err != nil {
			return assess.Report{}, err
		}
		defer dst.Close(context.WithoutCancel(ctx))
		dstName = dstEP.String()
	}
	log.Info("assessing", "source", srcEP.String(), "target", dstName)
	rep, err := assess.Run(ctx, src, dst, assess.Options{
		Filter:      cfg.Filter(),
		Jobs:        cfg.Jobs,
		SampleBytes: opts.SampleBytes,
		SourceName:  srcEP.String(),
		TargetName:  dstName,
		Logger:      log,
		// The copy's options that change what a rule says, so assess says what copy will.
		RecopyUnlogged:      cfg.RecopyUnlogged,
		ReplicaIdentityFull: cfg.ReplicaIdentityFull,
	})
	if err != nil {
		return rep, fmt.Errorf("assess: %w", err)
	}
	if err := assess.Write(out, rep, opts.Format); err != nil {
		return rep, err
	}
	log.Info("assessment done", "ready", rep.Ready, "blockers", rep.Blockers, "warnings", rep.Warnings)
	return rep, nil
}
