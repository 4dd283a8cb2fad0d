package main

import (
	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/config"
)

// proxyFlags are the flags `pgshift proxy` and `pgshift run --proxy` share.
type proxyFlags struct {
	listen     string
	mode       string
	authFile   string
	adminUsers []string
	tlsCert    string
	tlsKey     string
}

func addProxyFlags(cmd *cobra.Command, f *proxyFlags, listenName string) {
	fs := cmd.Flags()
	fs.StringVar(&f.listen, listenName, "", "address the proxy listens on (host:port)")
	fs.StringVar(&f.mode, "mode", "", "proxy mode: source (default), split or target")
	fs.StringVar(&f.authFile, "auth-file", "", "PgBouncer-style userlist.txt the proxy authenticates clients against")
	fs.StringSliceVar(&f.adminUsers, "admin-users", nil, "users allowed on the admin console (default: the source DSN's user)")
	fs.StringVar(&f.tlsCert, "tls-cert", "", "certificate for TLS to clients")
	fs.StringVar(&f.tlsKey, "tls-key", "", "private key for TLS to clients")
}

// apply puts the flags the user set over cfg.
func (f *proxyFlags) apply(cmd *cobra.Command, cfg *config.Config, listenName string) {
	fs := cmd.Flags()
	if changed(fs, listenName) {
		cfg.Proxy = f.listen
	}
	if changed(fs, "mode") {
		cfg.ProxySettings.Mode = f.mode
	}
	if changed(fs, "auth-file") {
		cfg.ProxySettings.AuthFile = f.authFile
	}
	if changed(fs, "admin-users") {
		cfg.ProxySettings.AdminUsers = f.adminUsers
	}
	if changed(fs, "tls-cert") {
		cfg.ProxySettings.TLSCertFile = f.tlsCert
	}
	if changed(fs, "tls-key") {
		cfg.ProxySettings.TLSKeyFile = f.tlsKey
	}
}

func (c *cli) proxyCommand() *cobra.Command {
	var flags connFlags
	var pf proxyFlags
	var httpAddr string
	cmd := &cobra.Command{
		Use:   "proxy",
		Short: "The routing proxy alone: clients connect to it instead of the database",
		Long: `proxy is a PostgreSQL wire-protocol proxy. Clients connect to it with their usual driver and
credentials (checked against --auth-file, PgBouncer's userlist.txt format); it logs into the servers
as the same user. --mode source sends everything to the source, target everything to the target,
split sends certainly-read-only statements of the sessions the routing rules pick (config file,
proxy_settings.rules) to the target while its lag is under the limit.

The admin console is on the same port: psql -h HOST -p PORT -U ADMIN pgshift, with SHOW CLIENTS,
SHOW SERVERS, SHOW ROUTES, SHOW STATS, PAUSE [timeout], RESUME, SWITCH source|target,
MODE source|split|target and RELOAD. SIGINT or SIGTERM stop it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.config(cmd, &flags)
			if err != nil {
				return withCode(2, err)
			}
			pf.apply(cmd, &cfg, "listen")
			if changed(cmd.Flags(), "http") {
				cfg.HTTP = httpAddr
			}
			if cfg.Proxy == "" {
				cfg.Proxy = "127.0.0.1:6432"
			}
			if err := cfg.Validate(); err != nil {
				return withCode(2, err)
			}
			if err := cfg.RequireSource(); err != nil {
				return withCode(2, err)
			}
			log, err := c.logger()
			if err != nil {
				return withCode(2, err)
			}
			reload := func() (config.Config, error) {
				next, err := c.config(cmd, &flags)
				if err != nil {
					return next, err
				}
				pf.apply(cmd, &next, "listen")
				return next, next.Validate()
			}
			if err := app.RunProxy(cmd.Context(), cfg, reload, log); err != nil {
				return withCode(2, err)
			}
			return nil
		},
	}
	addConnFlags(cmd, &flags, true)
	addProxyFlags(cmd, &pf, "listen")
	cmd.Flags().StringVar(&httpAddr, "http", "", "serve /metrics, /status and the /proxy/ actions on this address")
	return cmd
}
