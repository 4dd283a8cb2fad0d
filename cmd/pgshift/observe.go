package main

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/alert"
	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/metrics"
	"github.com/pgshift/pgshift/internal/report"
)

func (c *cli) reportCommand() *cobra.Command {
	var flags connFlags
	var format, out string
	cmd := &cobra.Command{
		Use:   "report",
		Short: "Write the migration report (Markdown, HTML or JSON) from the state saved on the target",
		Long: `report writes the migration up from the state pgshift keeps on the target: the timeline with
each phase's duration, the data moved and its rates, lag over time, the validation summary of
the latest verify (tables matched, integrity %, schema consistency, discrepancies by class),
sequences, the cutover with its measured pause, rollbacks, alerts, the audit log and the
query-performance comparison when one was run. --format html writes one self-contained file
with inline SVG charts, readable offline.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := report.ParseFormat(format)
			if err != nil {
				return withCode(2, err)
			}
			cfg, err := c.config(cmd, &flags)
			if err != nil {
				return withCode(2, err)
			}
			rep, err := app.Report(cmd.Context(), cfg, time.Now())
			if err != nil {
				return withCode(2, err)
			}
			var w io.Writer = c.stdout
			if out != "" && out != "-" {
				file, err := os.Create(out)
				if err != nil {
					return withCode(2, fmt.Errorf("report: %w", err))
				}
				defer file.Close()
				w = file
			}
			if err := rep.Write(w, f); err != nil {
				return withCode(2, fmt.Errorf("write report: %w", err))
			}
			if f, ok := w.(*os.File); ok && f != os.Stdout {
				if err := f.Close(); err != nil {
					return withCode(2, fmt.Errorf("write report %s: %w", out, err))
				}
			}
			return nil
		},
	}
	addConnFlags(cmd, &flags, true)
	cmd.Flags().StringVar(&format, "format", "markdown", "markdown, html or json")
	cmd.Flags().StringVarP(&out, "output", "o", "", "write to FILE instead of standard output")
	return cmd
}

func (c *cli) alertsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "alerts",
		Short: "The agent's alert rules",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "rules",
		Short: "Print the alert rules as a Prometheus rules file",
		Long: `rules prints the alert rules of the configuration (alerts.rules in -c FILE, or the defaults:
lag over lag_warn, retained WAL, apply stalled, verify differences, a failed cutover step, an
agent restart) as a Prometheus rules file over the agent's metrics, for users who alert from
their own Prometheus and Alertmanager. Check it with: promtool check rules FILE.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.config(cmd, nil)
			if err != nil {
				return withCode(2, err)
			}
			rules, err := alert.FromConfig(cfg.AlertRules())
			if err != nil {
				return withCode(2, err)
			}
			out, err := alert.PrometheusRules(rules)
			if err != nil {
				return withCode(2, err)
			}
			_, err = c.stdout.Write(out)
			return err
		},
	})
	return cmd
}

func (c *cli) grafanaCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "grafana",
		Short: "Print a Grafana dashboard (JSON) over the agent's Prometheus metrics",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			out, err := metrics.Grafana()
			if err != nil {
				return withCode(2, err)
			}
			_, err = c.stdout.Write(out)
			return err
		},
	}
}
