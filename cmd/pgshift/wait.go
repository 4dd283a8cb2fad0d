package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
)

func (c *cli) waitCommand() *cobra.Command {
	var flags connFlags
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait",
		Short: "Block until the target has applied everything the source had committed when wait began",
		Long: `wait reads the source's current WAL position and blocks until the running agent (pgshift run)
has applied the source up to it. Exit 0 when caught up, 1 when --timeout passes first.`,
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
			res, err := app.Wait(cmd.Context(), cfg, timeout, log)
			if errors.Is(err, app.ErrWaitTimeout) {
				return withCode(1, fmt.Errorf("target applied %s, source was at %s when wait began: %w", res.AppliedLSN, res.SourceLSN, err))
			}
			if err != nil {
				return withCode(2, err)
			}
			fmt.Fprintf(c.stdout, "caught up: target applied %s (source was at %s) after %s\n", res.AppliedLSN, res.SourceLSN, res.Waited.Round(time.Millisecond))
			return nil
		},
	}
	addConnFlags(cmd, &flags, true)
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up after this long (exit 1); 0 waits indefinitely")
	return cmd
}
