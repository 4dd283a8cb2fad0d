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
	var opts app.WaitOptions
	cmd := &cobra.Command{
		Use:   "wait",
		Short: "Block until the target has applied everything the source had committed when wait began",
		Long: `wait takes the source's WAL insert position (which covers every commit visible on the source,
synchronous_commit = off included) and blocks until the running agent (pgshift run) has applied
the source up to it.

When no agent is running for this migration, wait waits --agent-grace for one to start (wait is
often started a moment after run), then gives up.

Exit status: 0 caught up, 1 --timeout passed first, interrupted, or no agent is running, 2 could not
run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.Timeout < 0 {
				return withCode(2, fmt.Errorf("--timeout %s is negative: give a positive duration, or 0 to wait indefinitely", opts.Timeout))
			}
			if opts.AgentGrace <= 0 {
				return withCode(2, fmt.Errorf("--agent-grace %s: give a positive duration", opts.AgentGrace))
			}
			cfg, err := c.config(cmd, &flags)
			if err != nil {
				return withCode(2, err)
			}
			log, err := c.logger()
			if err != nil {
				return withCode(2, err)
			}
			res, err := app.WaitWith(cmd.Context(), cfg, opts, log)
			switch {
			case errors.Is(err, app.ErrWaitTimeout), errors.Is(err, app.ErrWaitInterrupted):
				return withCode(1, err)
			case errors.Is(err, app.ErrNoAgent):
				return withCode(1, err)
			case err != nil:
				return withCode(2, err)
			}
			fmt.Fprintf(c.stdout, "caught up: target applied %s (source was at %s) after %s\n", res.AppliedLSN, res.SourceLSN, res.Waited.Round(time.Millisecond))
			return nil
		},
	}
	addDSNFlags(cmd, &flags)
	cmd.Flags().DurationVar(&opts.Timeout, "timeout", 0, "give up after this long (exit 1); 0 waits indefinitely")
	cmd.Flags().DurationVar(&opts.AgentGrace, "agent-grace", app.DefaultAgentGrace, "give up (exit 1) when no agent has run for this long")
	return cmd
}
