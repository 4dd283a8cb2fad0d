package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/assess"
)

func (c *cli) assessCommand() *cobra.Command {
	var flags connFlags
	var format string
	var sampleMB int64
	cmd := &cobra.Command{
		Use:   "assess",
		Short: "Readiness and sizing report of the source (and target)",
		Long: `assess reads the source (and the target, when given) and reports whether pgshift can
migrate it: blockers, warnings and notes, each with the object it concerns and the fix; sizes
and activity per table, largest first; and a copy-time estimate with its assumption.
It changes nothing on either server.

Exit codes: 0 ready, 1 blockers found, 2 could not run (connection, flags, config).`,
		Example: `  pgshift assess --source postgres://app@old-db/shop --target postgres://app@new-db/shop
  pgshift assess -c migration.yaml --format json > assessment.json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := assess.ParseFormat(format)
			if err != nil {
				return withCode(2, err)
			}
			if sampleMB < 0 {
				return withCode(2, fmt.Errorf("--sample-mb must be 0 (no measurement) or more, got %d", sampleMB))
			}
			cfg, err := c.config(cmd, &flags)
			if err != nil {
				return withCode(2, err)
			}
			log, err := c.logger()
			if err != nil {
				return withCode(2, err)
			}
			rep, err := app.Assess(cmd.Context(), cfg, app.AssessOptions{Format: f, SampleBytes: sampleMB << 20}, c.stdout, log)
			if err != nil {
				return withCode(2, err)
			}
			if !rep.Ready {
				return withCode(1, nil)
			}
			return nil
		},
	}
	addConnFlags(cmd, &flags, true)
	fs := cmd.Flags()
	fs.StringVar(&format, "format", "text", "output format: text, json or markdown")
	fs.Int64Var(&sampleMB, "sample-mb", assess.DefaultSampleBytes>>20,
		"MB of the largest table to read once, timed, for the copy-time estimate (0: use stated default rates)")
	return cmd
}
