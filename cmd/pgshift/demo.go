package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/assess"
)

func (c *cli) demoCommand() *cobra.Command {
	opts := app.DemoOptions{Scale: 1, Warmup: 3 * time.Second, Rate: 0, FollowFor: 10 * time.Second}
	var format string
	var verbose bool
	scale := "medium"
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run pgshift on two throwaway local clusters with a sample supply-chain database",
		Long: `demo runs a whole migration on two throwaway local clusters and tells it as a story: it
starts a source and a target PostgreSQL cluster on free local ports, creates the sample
supply-chain database on the source, runs its write workload for --warmup, prints the
assessment, copies the database in the replication slot's snapshot, and starts the agent with
its dashboard (the URL is printed first) and its proxy. The sample application then reaches the
database only through the proxy: the agent follows the source while it writes for --follow-for
(printing the lag), verifies source and target with checksums, sends 30 % of read sessions to
the target (the routed share is shown), compares query performance on both sides, cuts over to
the target under load (the write pause is measured), rolls back to the source, cuts over again,
checks that no client transaction failed and that every table is equal on both sides, stops the
agent, writes the migration report (its path is printed) and finishes the migration.

Any difference or failed client transaction fails the demo. pgshift's own log lines go to a
file (its path is printed) unless --verbose. The clusters are removed when the demo ends or is
interrupted (Ctrl-C); with --keep they stay up, and their DSNs are printed, until Ctrl-C.

Needs the PostgreSQL server binaries (initdb, pg_ctl) on PATH or in /usr/lib/postgresql/*/bin.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := assess.ParseFormat(format)
			if err != nil {
				return withCode(2, err)
			}
			if opts.Scale, err = app.DemoScale(scale); err != nil {
				return withCode(2, err)
			}
			if opts.Warmup < 0 || opts.Rate < 0 {
				return withCode(2, fmt.Errorf("--warmup and --rate must not be negative"))
			}
			if opts.FollowFor <= 0 {
				return withCode(2, fmt.Errorf("--follow-for must be positive, got %s", opts.FollowFor))
			}
			logTo := c.stderr
			if !verbose {
				f, err := os.CreateTemp("", "pgshift-demo-*.log")
				if err != nil {
					return err
				}
				defer f.Close()
				logTo = f
				fmt.Fprintf(c.stdout, "pgshift's log: %s (--verbose prints it here instead)\n", f.Name())
			}
			log, err := c.loggerTo(logTo)
			if err != nil {
				return withCode(2, err)
			}
			opts.Format, opts.Out, opts.Logger = f, c.stdout, log
			err = app.RunDemo(cmd.Context(), opts, app.DemoSteps())
			if errors.Is(err, context.Canceled) && cmd.Context().Err() != nil {
				// Interrupted by the user: the clusters are already stopped and removed.
				fmt.Fprintln(c.stderr, "pgshift: demo interrupted; clusters stopped and removed")
				return nil
			}
			return err
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&scale, "scale", scale, "size of the sample database: small (a few MB), medium (≈ 60 MB, 50k orders), large, or a number (1 = medium)")
	fs.BoolVar(&verbose, "verbose", false, "print pgshift's log lines with the story instead of writing them to a file")
	fs.BoolVar(&opts.Keep, "keep", false, "keep the clusters running after the demo, print their DSNs, and wait for Ctrl-C")
	fs.DurationVar(&opts.FollowFor, "follow-for", opts.FollowFor, "how long the workload writes to the source while the agent follows it")
	fs.DurationVar(&opts.Warmup, "warmup", opts.Warmup, "how long the sample workload runs before the assessment (0 to skip)")
	fs.Float64Var(&opts.Rate, "rate", opts.Rate, "workload transactions per second (0: as fast as possible)")
	fs.StringVar(&format, "format", "text", "assessment output format: text, json or markdown")
	fs.StringVar(&opts.HTTP, "http", "", "serve the agent's dashboard on this address while the demo follows (e.g. 127.0.0.1:8080)")
	fs.StringVar(&opts.ReportFile, "report", "", "write the HTML migration report to FILE (default: a file in the temporary directory)")
	fs.StringVar(&opts.BinDir, "pg-bin", "", "directory of the PostgreSQL server binaries (default: PATH, then /usr/lib/postgresql/*/bin)")
	return cmd
}
