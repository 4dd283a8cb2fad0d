package main

import (
	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
)

// killHookEnv names a fault-injection point for pgshift's own crash tests: when set to
// "after-target-commit", the process kills itself with SIGKILL right after a target commit and
// before the position is confirmed to the source; with "after-ddl", right after a captured
// schema change ran on the target, before its transaction commits. Only a binary built with the
// tag faults has the hooks (faults.go); a release binary refuses to run with the variable set
// (nofaults.go).
const killHookEnv = "PGSHIFT_TEST_KILL_AT"

func (c *cli) runCommand() *cobra.Command {
	var flags connFlags
	var cf copyFlags
	var pf proxyFlags
	var httpAddr, httpTokenFile, httpCert, httpKey string
	cmd := &cobra.Command{
		Use:   "run",
		Short: "The migration agent: copy if not done, then follow the source's changes until stopped",
		Long: `run copies the source if the copy is not complete, then streams the replication slot and
applies every change to the target in commit order, exactly once. SIGINT or SIGTERM stop it
cleanly; running it again resumes from the position stored on the target.

One agent per migration: run holds the migration's lease on the target for its whole life, and
refuses to start while another agent (a run or a copy) holds it, naming that agent. pgshift
status shows the holder and whether it is alive.

Exit status: 0 stopped cleanly, 2 could not run (another agent holds the migration, or a fatal error).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.config(cmd, &flags)
			if err != nil {
				return withCode(2, err)
			}
			if err := cf.apply(cmd, &cfg); err != nil {
				return withCode(2, err)
			}
			if changed(cmd.Flags(), "http") {
				cfg.HTTP = httpAddr
			}
			if changed(cmd.Flags(), "http-token-file") {
				cfg.HTTPSettings.TokenFile = httpTokenFile
			}
			if changed(cmd.Flags(), "http-tls-cert") {
				cfg.HTTPSettings.TLSCertFile = httpCert
			}
			if changed(cmd.Flags(), "http-tls-key") {
				cfg.HTTPSettings.TLSKeyFile = httpKey
			}
			pf.apply(cmd, &cfg, "proxy")
			if err := cfg.Validate(); err != nil {
				return withCode(2, err)
			}
			log, err := c.logger()
			if err != nil {
				return withCode(2, err)
			}
			var opts app.RunOptions
			if err := faultHooks(c.getenv(killHookEnv), &opts); err != nil {
				return withCode(2, err)
			}
			if err := app.Run(cmd.Context(), cfg, opts, log); err != nil {
				return withCode(2, err)
			}
			return nil
		},
	}
	addConnFlags(cmd, &flags, true)
	addCopyFlags(cmd, &cf)
	cmd.Flags().StringVar(&httpAddr, "http", "", "serve the dashboard, the JSON API and /metrics on this address (loopback unless a token is set)")
	cmd.Flags().StringVar(&httpTokenFile, "http-token-file", "", "file holding the API's bearer token (or PGSHIFT_HTTP_TOKEN); required unless --http is a loopback address")
	cmd.Flags().StringVar(&httpCert, "http-tls-cert", "", "serve the API over HTTPS with this certificate file")
	cmd.Flags().StringVar(&httpKey, "http-tls-key", "", "the certificate's private key file")
	addProxyFlags(cmd, &pf, "proxy") // --proxy ADDR runs the routing proxy inside the agent
	return cmd
}
