package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/pgshift/pgshift/internal/compare"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/state"
)

// CompareOptions are compare-queries' settings.
type CompareOptions struct {
	QueriesFile string // queries with -- name: headers; empty: the source's pg_stat_statements
	Top         int    // statements taken from pg_stat_statements (default 20)
	Format      compare.Format
	compare.Options
}

// CompareQueries times the queries on both sides, writes the comparison to w, and saves it in
// the target's migration state when there is one (the report shows it).
func CompareQueries(ctx context.Context, cfg config.Config, opts CompareOptions, w io.Writer, log *slog.Logger) (compare.Report, error) {
	if err := cfg.RequireSource(); err != nil {
		return compare.Report{}, err
	}
	if err := cfg.RequireTarget(); err != nil {
		return compare.Report{}, err
	}
	src, dst := db.Endpoint{Role: db.Source, DSN: cfg.Source}, db.Endpoint{Role: db.Target, DSN: cfg.Target}
	sc, err := src.Connect(ctx)
	if err != nil {
		return compare.Report{}, err
	}
	defer sc.Close(context.WithoutCancel(ctx))
	tc, err := dst.Connect(ctx)
	if err != nil {
		return compare.Report{}, err
	}
	defer tc.Close(context.WithoutCancel(ctx))

	var queries []compare.Query
	if opts.QueriesFile != "" {
		text, err := os.ReadFile(opts.QueriesFile)
		if err != nil {
			return compare.Report{}, fmt.Errorf("--queries: %w", err)
		}
		if queries, err = compare.Parse(string(text)); err != nil {
			return compare.Report{}, fmt.Errorf("--queries %s: %w", opts.QueriesFile, err)
		}
	} else {
		top := opts.Top
		if top <= 0 {
			top = 20
		}
		if queries, err = compare.TopStatements(ctx, sc, top); err != nil {
			return compare.Report{}, src.Describe(err)
		}
	}
	log.Info("comparing queries", "queries", len(queries), "runs", opts.Runs, "explain", opts.Explain)
	results, err := compare.Run(ctx, compare.Side{Name: "source", Conn: sc}, compare.Side{Name: "target", Conn: tc}, queries, opts.Options)
	if err != nil {
		return compare.Report{}, err
	}
	rep := compare.Report{Runs: opts.Runs, Ratio: opts.SlowerRatio, Results: results}
	if rep.Runs <= 0 {
		rep.Runs = 10
	}
	if rep.Ratio <= 1 {
		rep.Ratio = 1.5
	}
	if err := compare.Write(w, rep, opts.Format); err != nil {
		return rep, err
	}
	if _, err := state.Load(ctx, tc); err == nil {
		for _, r := range results {
			if r.Err != "" {
				continue
			}
			c := state.QueryComparison{Name: r.Name, Runs: rep.Runs,
				SourceMS: float64(r.Source.P50) / float64(time.Millisecond), TargetMS: float64(r.Target.P50) / float64(time.Millisecond)}
			if err := state.SaveQueryComparison(ctx, tc, c); err != nil {
				return rep, dst.Describe(err)
			}
		}
	}
	return rep, nil
}
