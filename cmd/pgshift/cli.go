package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/pgshift/pgshift/internal/config"
)

// cli is the state of one invocation: global flags, the resolved configuration's secrets (for
// scrubbing), and where output goes.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) string

	configFile string
	logLevel   string
	logFormat  string

	secrets []string
	// passwordWarned: the warning about a password on the command line is given once.
	passwordWarned bool
}

func newCLI(stdout, stderr io.Writer, getenv func(string) string) *cli {
	return &cli{stdout: stdout, stderr: stderr, getenv: getenv}
}

func (c *cli) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "pgshift",
		Short: "Move a live PostgreSQL database to another server with zero downtime",
		Long: `pgshift moves a live PostgreSQL database to another PostgreSQL server with zero downtime
and no lost rows: assess, copy in one consistent snapshot, follow changes, verify, cut over.

DSNs are libpq URLs (postgres://user@host:5432/db) or key=value strings. They can come from
flags, a YAML config file (-c FILE) or PGSHIFT_SOURCE / PGSHIFT_TARGET; flags win over the
file, the file over the environment. Passwords may also come from ~/.pgpass or PGPASSWORD.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(c.stdout)
	root.SetErr(c.stderr)
	pf := root.PersistentFlags()
	pf.StringVarP(&c.configFile, "config", "c", "", "YAML config file")
	pf.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	pf.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	// One constructor per subcommand, each in its own file.
	root.AddCommand(
		c.versionCommand(),
		c.copyCommand(),
		c.runCommand(),
		c.waitCommand(),
		c.statusCommand(),
		c.assessCommand(),
		c.compareCommand(),
		c.demoCommand(),
		c.verifyCommand(),
		c.proxyCommand(),
		c.reportCommand(),
		c.alertsCommand(),
		c.grafanaCommand(),
		c.planCommand(),
		c.cutoverCommand(),
		c.rollbackCommand(),
		c.finishCommand(),
	)
	return root
}

// connFlags are the flags shared by commands that talk to the databases.
type connFlags struct {
	source, target    string
	jobs              int
	include, exclude  []string
	slot, publication string
}

// addConnFlags registers the connection and table-selection flags on cmd.
func addConnFlags(cmd *cobra.Command, f *connFlags, withTarget bool) {
	fs := cmd.Flags()
	fs.StringVar(&f.source, "source", "", "source database DSN (or PGSHIFT_SOURCE)")
	if withTarget {
		fs.StringVar(&f.target, "target", "", "target database DSN (or PGSHIFT_TARGET)")
	}
	fs.IntVarP(&f.jobs, "jobs", "j", 0, "parallel workers (default 4)")
	fs.StringSliceVar(&f.include, "include", nil, "only tables matching these patterns (schema.table, wildcards)")
	fs.StringSliceVar(&f.exclude, "exclude", nil, "skip tables matching these patterns (schema.table, wildcards)")
	fs.StringVar(&f.slot, "slot", "", "replication slot name (default pgshift_<database>)")
	fs.StringVar(&f.publication, "publication", "", "publication name (default pgshift_<database>)")
}

// addDSNFlags registers only --source and --target, for commands that select no tables and
// start no workers (wait, status).
func addDSNFlags(cmd *cobra.Command, f *connFlags) {
	fs := cmd.Flags()
	fs.StringVar(&f.source, "source", "", "source database DSN (or PGSHIFT_SOURCE)")
	fs.StringVar(&f.target, "target", "", "target database DSN (or PGSHIFT_TARGET)")
}

// config resolves the configuration: defaults, then environment, then the config file, then
// the flags the user actually set. It remembers the DSNs' passwords for scrubbing output.
func (c *cli) config(cmd *cobra.Command, f *connFlags) (config.Config, error) {
	cfg, err := config.Load(c.configFile, c.getenv)
	if err != nil {
		return cfg, err
	}
	fs := cmd.Flags()
	set := func(name string, apply func()) {
		if fl := fs.Lookup(name); fl != nil && fl.Changed {
			apply()
		}
	}
	if f != nil {
		set("source", func() { cfg.Source = f.source })
		set("target", func() { cfg.Target = f.target })
		set("jobs", func() { cfg.Jobs = f.jobs })
		set("include", func() { cfg.Include = f.include })
		set("exclude", func() { cfg.Exclude = f.exclude })
		set("slot", func() { cfg.Slot = f.slot })
		set("publication", func() { cfg.Publication = f.publication })
	}
	c.secrets = config.Secrets(append([]string{cfg.Source, cfg.Target}, cfg.ProxySettings.TargetReplicas...)...)
	// The API token and webhook URLs (Slack's carry their token) are secrets too.
	if cfg.HTTPToken != "" {
		c.secrets = append(c.secrets, cfg.HTTPToken)
	}
	for _, w := range cfg.Alerts.Webhooks {
		if w.URL != "" {
			c.secrets = append(c.secrets, w.URL)
		}
	}
	if f != nil && !c.passwordWarned {
		for _, name := range []string{"source", "target"} {
			if changed(fs, name) && config.PasswordInDSN(fs.Lookup(name).Value.String()) {
				c.passwordWarned = true
				fmt.Fprintf(c.stderr, "warning: --%s carries a password, which other users of this machine can see in the process list (ps); "+
					"give it in PGPASSWORD, a password file (~/.pgpass or PGPASSFILE), or the config file (-c FILE) instead\n", name)
				break
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// changed reports whether the named flag was given on the command line.
func changed(fs *pflag.FlagSet, name string) bool {
	fl := fs.Lookup(name)
	return fl != nil && fl.Changed
}

// logger builds the structured logger. Every string attribute passes through scrub, so a
// password can not reach the log even if some error text carries it.
func (c *cli) logger() (*slog.Logger, error) { return c.loggerTo(c.stderr) }

// loggerTo is logger writing to w.
func (c *cli) loggerTo(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	opts := &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			switch a.Value.Kind() {
			case slog.KindString:
				a.Value = slog.StringValue(c.scrub(a.Value.String()))
			case slog.KindAny:
				if err, ok := a.Value.Any().(error); ok {
					a.Value = slog.StringValue(c.scrub(err.Error()))
				}
			}
			return a
		},
	}
	switch strings.ToLower(c.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", c.logFormat)
}

func (c *cli) scrub(s string) string { return config.Scrub(s, c.secrets) }
