package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/progress"
	"github.com/pgshift/pgshift/internal/verify"
)

func (c *cli) verifyCommand() *cobra.Command {
	var f connFlags
	var opts app.VerifyOptions
	var mode, progressMode string
	var tables []string
	var asJSON bool
	var showRows int
	cmd := &cobra.Command{
		Use:   "verify --source DSN --target DSN [--mode count|checksum|rows] [--tables PATTERN] [--json] [--repair]",
		Short: "Prove the target equals the source: data row by row, schema and sequences",
		Long: `verify compares every table's rows, the schema and the sequences of the source and target.

  count     exact row counts per table, both sides in parallel
  checksum  (default) each table is split into primary-key ranges; both sides hash each range
            server-side in one snapshot per side; differing ranges are bisected down to the rows,
            so only the differing rows' values cross the network
  rows      every row compared by its full digest (slow, exact)

Keys are compared in byte order (COLLATE "C"). Tables without a primary key are compared as
multisets, so duplicated rows are found. Every difference names the table, the key, whether
the row is missing, extra or different, the differing columns with both values, and the class
of the discrepancy (timestamp precision, encoding, float rounding, char(n) padding, NULL vs
empty string, collation, sequence drift...).

While 'pgshift run' follows the source (or, with --slot, native logical replication does),
differing rows are re-checked after the target has caught up, so rows merely not yet applied
are not reported; rows that keep changing on the source through every re-check round are
reported as unconfirmed: not differences, but not proven equal either (exit 2).

--repair rewrites the differing rows (and sequences behind) on the target from the source, one
transaction per table with session_replication_role = replica, then re-verifies them.

The result is saved in the target's pgshift.verify_runs when the target holds a pgshift
migration, unless --no-save is given; a target without one is only read, never written.

Exit status: 0 identical, every compared row confirmed (or every difference repaired),
1 differences, 2 could not run or could not confirm everything (tables not compared, rows
unconfirmed).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.config(cmd, &f)
			if err != nil {
				return withCode(2, err)
			}
			if len(tables) > 0 {
				cfg.Include = append(cfg.Include, tables...)
				if err := cfg.Validate(); err != nil {
					return withCode(2, err)
				}
			}
			log, err := c.logger()
			if err != nil {
				return withCode(2, err)
			}
			m, ok := verify.ParseMode(mode)
			if !ok {
				return withCode(2, fmt.Errorf("--mode %q: want count, checksum or rows", mode))
			}
			opts.Mode = m
			if opts.Live != "auto" && opts.Live != "off" {
				return withCode(2, fmt.Errorf("--live %q: want auto or off", opts.Live))
			}
			if opts.ChunkRows < 1 || opts.LeafRows < 1 || opts.MaxRowsPerTable < 1 || opts.RecheckRounds < 1 {
				return withCode(2, fmt.Errorf("--chunk-rows, --leaf-rows, --max-rows and --recheck-rounds must be at least 1"))
			}
			opts.FollowSlot = f.slot
			switch progressMode {
			case "auto":
				opts.Progress, opts.ProgressTTY = c.stderr, progress.IsTerminal(c.stderr)
			case "bars":
				opts.Progress, opts.ProgressTTY = c.stderr, true
			case "log":
				opts.Progress, opts.ProgressTTY = c.stderr, false
			case "none":
				opts.Progress, opts.ProgressInterval = nil, 24*time.Hour
			default:
				return withCode(2, fmt.Errorf("--progress %q: want auto, bars, log or none", progressMode))
			}
			rep, err := app.Verify(cmd.Context(), cfg, opts, log)
			if err != nil {
				return withCode(2, err)
			}
			if asJSON {
				err = rep.WriteJSON(c.stdout)
			} else {
				err = rep.WriteText(c.stdout, showRows)
			}
			if err != nil {
				return withCode(2, err)
			}
			if code := rep.ExitCode(); code != 0 {
				return withCode(code, nil)
			}
			return nil
		},
	}
	addConnFlags(cmd, &f, true)
	fs := cmd.Flags()
	fs.StringVar(&mode, "mode", "checksum", "count, checksum or rows")
	fs.StringSliceVar(&tables, "tables", nil, "only tables matching these patterns (same as --include)")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON")
	fs.BoolVar(&opts.Repair, "repair", false, "rewrite differing rows and sequences on the target from the source, then re-verify them")
	fs.BoolVar(&opts.NoSave, "no-save", false, "do not write the result into the migration state on the target")
	fs.Int64Var(&opts.ChunkRows, "chunk-rows", 100_000, "rows per first-pass chunk")
	fs.Int64Var(&opts.LeafRows, "leaf-rows", 2000, "bisect differing chunks until they hold at most this many rows")
	fs.IntVar(&opts.MaxRowsPerTable, "max-rows", 10_000, "differing rows kept (listed in JSON, re-checked, repaired) per table")
	fs.IntVar(&showRows, "show-rows", 20, "differing rows listed per table in the text output")
	fs.BoolVar(&opts.NoSchema, "no-schema", false, "skip the schema comparison")
	fs.BoolVar(&opts.NoSequences, "no-sequences", false, "skip the sequence check")
	fs.StringVar(&opts.Live, "live", "auto", "auto: re-check differing rows while the target is being followed; off: one pass")
	fs.IntVar(&opts.RecheckRounds, "recheck-rounds", 5, "live mode: re-check rounds before a still-changing row is called unstable")
	fs.DurationVar(&opts.RecheckTimeout, "recheck-timeout", 2*time.Minute, "live mode: total time allowed for re-checking")
	fs.StringVar(&progressMode, "progress", "auto", "auto, bars, log or none")
	fs.Lookup("slot").Usage = "live mode without pgshift run: the source slot of the follower (e.g. a native subscription's); " +
		"its confirmed_flush_lsn is taken as the target's applied position"
	return cmd
}
