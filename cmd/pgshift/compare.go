package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/compare"
)

func (c *cli) compareCommand() *cobra.Command {
	var flags connFlags
	var opts app.CompareOptions
	var format string
	cmd := &cobra.Command{
		Use:   "compare-queries",
		Short: "Time read-only queries on the source and the target side by side",
		Long: `compare-queries runs named queries (from --queries FILE, each after a "-- name: NAME" line, or
else the source's top statements in pg_stat_statements that need no parameters) on both servers:
warm-up runs, then --runs timed runs interleaved between them, and reports the median, 95th
percentile and maximum per side with the ratio. A query whose median on the target is above
--slower-ratio times the source's is flagged. With --explain it compares both EXPLAIN ANALYZE
plans (how each table is read, join strategies, row estimates off by 10x) and names the likely
cause: an index missing on the target, statistics never gathered, planner settings that differ.
Every query runs in a READ ONLY transaction that is rolled back. With a migration on the target,
the comparison is saved for pgshift report.

Exit codes: 0 no query slower on the target, 1 some slower (or failed), 2 could not run.`,
		Example: `  pgshift compare-queries --source postgres://app@old-db/shop --target postgres://app@new-db/shop --queries checks.sql --explain
  pgshift compare-queries -c migration.yaml --runs 30 --format markdown > queries.md`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := compare.ParseFormat(format)
			if err != nil {
				return withCode(2, err)
			}
			if opts.Runs < 1 {
				return withCode(2, fmt.Errorf("--runs must be 1 or more, got %d", opts.Runs))
			}
			opts.Format = f
			cfg, err := c.config(cmd, &flags)
			if err != nil {
				return withCode(2, err)
			}
			log, err := c.logger()
			if err != nil {
				return withCode(2, err)
			}
			rep, err := app.CompareQueries(cmd.Context(), cfg, opts, c.stdout, log)
			if err != nil {
				return withCode(2, err)
			}
			if rep.Slower() > 0 || rep.Failed() > 0 {
				return withCode(1, nil)
			}
			return nil
		},
	}
	addDSNFlags(cmd, &flags)
	fs := cmd.Flags()
	fs.StringVar(&opts.QueriesFile, "queries", "", `SQL file of queries, each after a "-- name: NAME" line (default: the source's pg_stat_statements)`)
	fs.IntVar(&opts.Top, "top", 20, "statements taken from pg_stat_statements without --queries")
	fs.IntVar(&opts.Runs, "runs", 10, "timed runs per query and side")
	fs.IntVar(&opts.WarmUp, "warm-up", 2, "untimed runs per query and side first")
	fs.BoolVar(&opts.Explain, "explain", false, "compare both EXPLAIN ANALYZE plans and name the likely cause of a difference")
	fs.Float64Var(&opts.SlowerRatio, "slower-ratio", 1.5, "flag a query whose target median is above this many times the source's")
	fs.DurationVar(&opts.MinDelta, "min-delta", time.Millisecond, "… and at least this much slower")
	fs.DurationVar(&opts.Timeout, "statement-timeout", time.Minute, "statement_timeout of each run")
	fs.StringVar(&format, "format", "text", "output format: text, json or markdown")
	return cmd
}
