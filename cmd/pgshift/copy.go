package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/progress"
)

func (c *cli) copyCommand() *cobra.Command {
	var f connFlags
	var opts app.CopyOptions
	var chunkMB int64
	var progressMode string
	cmd := &cobra.Command{
		Use:   "copy --source DSN --target DSN [--jobs N]",
		Short: "Copy schema and data in the replication slot's snapshot, then indexes and sequences",
		Long: `copy moves the schema (pg_dump pre-data), every table's rows in ONE consistent snapshot
exported by the migration's logical replication slot, then indexes and constraints (built in
parallel), sequences and materialized views. The slot then holds every change made since the
snapshot, for 'pgshift run' to follow.

Run it again after an interruption and it resumes: finished tables are kept, unfinished ones are
copied again in a new snapshot (never mixing two snapshots in one table). Once the copy is done,
running it again does nothing.

The target database must be empty of user tables. --force starts over: it drops pgshift's state
on the target, the migration's slot and publication on the source, every table it is about to
copy on the target (CASCADE), and re-creates the source's objects with pg_dump --clean --if-exists.

Exit status: 0 done, 2 failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := c.config(cmd, &f)
			if err != nil {
				return withCode(2, err)
			}
			log, err := c.logger()
			if err != nil {
				return withCode(2, err)
			}
			opts.ChunkBytes = chunkMB << 20
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
			sum, err := app.Copy(cmd.Context(), cfg, opts, log)
			if err != nil {
				return withCode(2, err)
			}
			printCopySummary(c.stdout, sum)
			return nil
		},
	}
	addConnFlags(cmd, &f, true)
	fs := cmd.Flags()
	fs.BoolVar(&opts.Force, "force", false, "start over: drop previous pgshift state, slot and publication, and the target's copies of the source's objects")
	fs.StringVar(&opts.PgDump, "pg-dump", "", "pg_dump binary to use (default: one at least as new as the source server)")
	fs.Int64Var(&chunkMB, "chunk-size", 256, "target size of one copy chunk in MiB; bigger tables are split so several workers copy them")
	fs.StringVar(&opts.IndexMemory, "index-memory", "512MB", "maintenance_work_mem of each index-building session on the target")
	fs.StringVar(&progressMode, "progress", "auto", "progress display: auto (bars on a terminal, log lines otherwise), bars, log, none")
	return cmd
}

// printCopySummary writes the human summary of a copy.
func printCopySummary(w io.Writer, s app.CopySummary) {
	if s.AlreadyCopied {
		fmt.Fprintf(w, "copy already complete (slot %s, consistent at %s); nothing to do — run `pgshift run` to follow changes\n",
			s.Slot, s.ConsistentLSN)
		return
	}
	var b strings.Builder
	verb := "copied"
	if s.Resumed {
		verb = "copied (resumed)"
	}
	fmt.Fprintf(&b, "%s %d tables, %s rows, %s in %s (%s/s during the data phase)\n", verb, s.Tables,
		progress.HumanCount(s.Rows), progress.HumanBytes(s.Bytes), s.Total.Round(time.Millisecond), progress.HumanBytes(int64(s.Throughput())))
	fmt.Fprintf(&b, "  schema %s · data %s · indexes and constraints %s (%d steps) · sequences %s (%d) · materialized views %s (%d)\n",
		s.Schema.Round(time.Millisecond), s.Data.Round(time.Millisecond), s.PostData.Round(time.Millisecond), s.Indexes,
		s.SequenceTime.Round(time.Millisecond), s.Sequences, s.MatViewTime.Round(time.Millisecond), s.MatViews)
	fmt.Fprintf(&b, "  slot %s and publication %s hold every change since %s\n", s.Slot, s.Publication, s.ConsistentLSN)
	if len(s.Recopied) > 0 {
		fmt.Fprintf(&b, "  %d unfinished table(s) were copied again in a new snapshot consistent at %s\n", len(s.Recopied), s.RecopyLSN)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(&b, "  warning: %s\n", warn)
	}
	_, _ = io.WriteString(w, b.String())
}
