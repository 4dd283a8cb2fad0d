package main

import (
	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/web"
)

func (c *cli) statusCommand() *cobra.Command {
	var flags connFlags
	var asJSON bool
	var httpAddr string
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the migration's phase, per-table copy progress, applied position and lag",
		Long: `status reads the migration state from the target. With --source too, lag in bytes and the WAL
retained by the slot are measured live on the source; otherwise the running agent's last
measurement is shown. With --http ADDR it asks a running agent (pgshift run --http ADDR).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.config(cmd, &flags)
			if err != nil {
				return withCode(2, err)
			}
			log, err := c.logger()
			if err != nil {
				return withCode(2, err)
			}
			var st app.Status
			if httpAddr != "" {
				token, terr := cfg.HTTPTokenValue()
				if terr != nil {
					return withCode(2, terr)
				}
				c.secrets = append(c.secrets, token)
				err = web.FetchStatus(cmd.Context(), httpAddr, token, &st)
			} else {
				st, err = app.ReadStatus(cmd.Context(), cfg, log)
			}
			if err != nil {
				return withCode(2, err)
			}
			return app.PrintStatus(c.stdout, st, asJSON)
		},
	}
	addDSNFlags(cmd, &flags)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&httpAddr, "http", "", "ask a running agent (pgshift run --http ADDR) instead of the target")
	return cmd
}
