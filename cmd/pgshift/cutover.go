package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/cutover"
	"github.com/pgshift/pgshift/internal/state"
	"github.com/pgshift/pgshift/internal/web"
)

func (c *cli) cutoverCommand() *cobra.Command {
	var flags connFlags
	var httpAddr string
	var dryRun, yes bool
	cmd := &cobra.Command{
		Use:   "cutover",
		Short: "Move the application's traffic to the target through the running agent's proxy",
		Long: `cutover drives the running agent (pgshift run --http ADDR --proxy ADDR): pre-checks (lag under
cutover.max_lag, the last verify clean and recent, reverse replication possible), then it pauses
the proxy's clients at transaction boundaries, waits until the target has applied the source's
position as of the pause, sets the target's sequences from the source, refreshes materialized
views, arms reverse replication (target to source), switches the proxy to the target and resumes.
Each step is printed as it ends, with its duration, and then the measured write pause. The
configured pre hooks and smoke and health checks (cutover: pre_hooks, smoke_sql, http_checks) are
pre-checks; post_switch_hooks and the checks run again once traffic is on the target, and a
failure there is reported (rollback is your call).

--dry-run runs the pre-checks and prints the plan; nothing changes.

Exit status: 0 done, 1 aborted (traffic resumed on the source, nothing lost), 2 could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !dryRun && !yes {
				return withCode(2, errors.New("cutover moves the application's traffic to the target: run it with --yes (or --dry-run to see the plan and the pre-checks)"))
			}
			return c.driveAgent(cmd, &flags, httpAddr, "/api/cutover", map[string]bool{"confirm": !dryRun, "dry_run": dryRun})
		},
	}
	addDSNFlags(cmd, &flags)
	cmd.Flags().StringVar(&httpAddr, "http", "", "the running agent's HTTP address (pgshift run --http ADDR; config: http)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "run the pre-checks and print the plan; change nothing")
	cmd.Flags().BoolVar(&yes, "yes", false, "confirm the cutover")
	return cmd
}

func (c *cli) rollbackCommand() *cobra.Command {
	var flags connFlags
	var httpAddr string
	cmd := &cobra.Command{
		Use:   "rollback",
		Short: "Move traffic back to the source, which reverse replication kept current",
		Long: `rollback drives the running agent: it pauses the proxy's clients, waits until the source has
applied the target's position as of the pause, sets the source's sequences from the target,
switches the proxy back to the source, resumes, and re-arms forward replication, so cutover can
run again. No write made on the target is lost.

Exit status: 0 done, 1 aborted (traffic resumed on the target, nothing lost), 2 could not run.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return c.driveAgent(cmd, &flags, httpAddr, "/api/rollback", map[string]bool{})
		},
	}
	addDSNFlags(cmd, &flags)
	cmd.Flags().StringVar(&httpAddr, "http", "", "the running agent's HTTP address (pgshift run --http ADDR; config: http)")
	return cmd
}

// driveAgent posts a cutover or rollback to the agent, prints the steps of the new attempt as
// the agent records them, then the result, and returns the exit code's error.
func (c *cli) driveAgent(cmd *cobra.Command, flags *connFlags, httpAddr, path string, body any) error {
	cfg, err := c.config(cmd, flags)
	if err != nil {
		return withCode(2, err)
	}
	if httpAddr == "" {
		httpAddr = cfg.HTTP
	}
	if httpAddr == "" {
		return withCode(2, errors.New("give the running agent's address: --http ADDR (as passed to pgshift run --http)"))
	}
	token, err := cfg.HTTPTokenValue()
	if err != nil {
		return withCode(2, err)
	}
	c.secrets = append(c.secrets, token)
	client := web.Client{Addr: httpAddr, Token: token, HTTP: &http.Client{}}
	ctx := cmd.Context()
	var before app.Status
	if err := client.Get(ctx, "/api/status", &before); err != nil {
		return withCode(2, err)
	}
	printed := map[int]bool{}
	printStep := func(no int, name, st string, secs float64, detail string) {
		if printed[no] {
			return
		}
		printed[no] = true
		fmt.Fprintf(c.stdout, "%2d. %-66s %-8s %8.1f ms  %s\n", no, name, st, secs*1000, detail)
	}
	done := make(chan struct{})
	var res cutover.Result
	var perr error
	go func() {
		defer close(done)
		perr = client.Post(ctx, path, nil, body, &res)
	}()
	// The agent records each step as it ends; its status (refreshed every second) shows them.
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for running := true; running; {
		select {
		case <-done:
			running = false
		case <-tick.C:
			var st app.Status
			sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := client.Get(sctx, "/api/status", &st)
			cancel()
			if err != nil || st.Cutover.Attempt <= before.Cutover.Attempt {
				continue
			}
			for _, s := range st.Cutover.Steps {
				if s.State == state.StepDone || s.State == state.StepFailed || s.State == state.StepSkipped {
					printStep(s.No, s.Name, s.State, s.FinishedAt.Sub(s.StartedAt).Seconds(), s.Detail)
				}
			}
		}
	}
	if perr != nil {
		return withCode(2, perr)
	}
	for _, ch := range res.Checks {
		mark := "ok"
		if !ch.OK {
			mark = "FAILED"
		}
		fmt.Fprintf(c.stdout, "    pre-check %-30s %-6s %s\n", ch.Name, mark, ch.Detail)
	}
	for _, s := range res.Steps {
		printStep(s.No, s.Name, s.State, s.Seconds, s.Detail)
	}
	for _, p := range res.Plan {
		fmt.Fprintln(c.stdout, "  "+p)
	}
	switch res.Outcome {
	case cutover.OutcomeDone:
		fmt.Fprintf(c.stdout, "%s done (attempt %d): traffic is on the %s; write pause %.1f ms\n", res.Op, res.Attempt, res.Live, res.PauseSeconds*1000)
		if res.Error != "" {
			fmt.Fprintln(c.stdout, "WARNING: "+res.Error)
		}
		return nil
	case cutover.OutcomePlanned:
		if res.Error != "" {
			return withCode(1, fmt.Errorf("dry run: %s", res.Error))
		}
		fmt.Fprintln(c.stdout, "dry run: every pre-check passed; nothing was changed")
		return nil
	}
	fmt.Fprintf(c.stdout, "%s aborted (attempt %d): traffic is on the %s; write pause %.1f ms\n", res.Op, res.Attempt, res.Live, res.PauseSeconds*1000)
	return withCode(1, fmt.Errorf("%s aborted: %s", res.Op, res.Error))
}

func (c *cli) finishCommand() *cobra.Command {
	var flags connFlags
	var opts app.FinishOptions
	cmd := &cobra.Command{
		Use:   "finish",
		Short: "Remove the migration's slots, publications, reverse replication and state from both servers",
		Long: `finish ends a migration that has cut over: it saves the migration report (--report), then drops
the reverse replication slot and publication on the target, the slot, publication and replication
origin on the source, restores the replica identities pgshift set, and drops the pgshift schema on
both sides. It refuses while an agent runs, while traffic is not on the target, and while reverse
replication still holds changes the source has not applied.

Exit status: 0 done, 2 refused or failed (nothing removed when refused).`,
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
			res, err := app.Finish(cmd.Context(), cfg, opts, log)
			if err != nil {
				return withCode(2, err)
			}
			for _, r := range res.Removed {
				fmt.Fprintln(c.stdout, "removed "+r)
			}
			for _, l := range res.IdentitiesLeft {
				fmt.Fprintln(c.stdout, "left as it is: "+l)
			}
			fmt.Fprintf(c.stdout, "migration finished; the report is kept in %s\n", res.Report)
			return nil
		},
	}
	addDSNFlags(cmd, &flags)
	cmd.Flags().BoolVar(&opts.Yes, "yes", false, "confirm: without it finish refuses")
	cmd.Flags().StringVar(&opts.ReportFile, "report", "pgshift-report.md", "keep the migration report in this file (.md, .json or .html)")
	return cmd
}
