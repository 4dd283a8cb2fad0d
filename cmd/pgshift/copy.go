package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/progress"
)

// maxChunkMB bounds --chunk-size: a chunk is one worker's unit of work and of redo after a
// failure, so one bigger than 64 GiB only stops big tables from being split.
const maxChunkMB = 64 << 10

func (c *cli) copyCommand() *cobra.Command {
	var f connFlags
	var cf copyFlags
	var opts app.CopyOptions
	var chunkMB int64
	var progressMode string
	cmd := &cobra.Command{
		Use:   "copy [schema|data|indexes|sequences] --source DSN --target DSN [--jobs N] [--replica-identity-full] [--no-owner] [--no-privileges] [--no-roles]",
		Short: "Copy schema and data in the replication slot's snapshot, then indexes and sequences",
		Long: `copy moves the schema (pg_dump pre-data), every table's rows in ONE consistent snapshot
exported by the migration's logical replication slot, then indexes and constraints (built in
parallel), sequences and materialized views. The slot then holds every change made since the
snapshot, for 'pgshift run' to follow.

The work is four numbered steps, each resumable, and each can run alone once the steps before it
are done: 1 schema (publication, slot, pre-data), 2 data (every table's rows), 3 indexes
(post-data built in parallel, then ANALYZE of every table), 4 sequences (and materialized
views; run alone after the copy, it sets the sequences again). Without a step, copy runs every
step not done yet. A schema step run alone leaves the slot's snapshot unused: the data step
copies the tables in a snapshot of its own, and follow skips the changes that snapshot holds.

Roles, owners and privileges come along: the roles the database's objects name (owners,
grantees, policy roles, members) are created on the target when it lacks them, from
pg_dumpall --roles-only (with their password verifiers where the source lets pgshift read
pg_authid); roles the target already has are left as they are. Every object keeps its owner and
its GRANTs/REVOKEs (schema public's included), default privileges, comments and security labels;
the database keeps its owner, settings (ALTER DATABASE ... SET, ALTER ROLE ... IN DATABASE ...
SET) and privileges. --no-owner, --no-privileges and --no-roles opt out, as with pg_restore.
Large objects are copied in the snapshot too.

Tables without a key and without a usable replica identity are refused unless
--replica-identity-full lets pgshift set REPLICA IDENTITY FULL on them on the source (recorded
there, and restored by 'pgshift finish'). Tables set to REPLICA IDENTITY NOTHING are taken as
insert-only, with a warning.

Run it again after an interruption and it resumes: finished tables are kept, unfinished ones are
copied again in a new snapshot (never mixing two snapshots in one table). Once the copy is done,
running it again does nothing.

The target database must be empty of user tables. --force starts over: it drops pgshift's state
on the target, the migration's slot and publication on the source, every table it is about to
copy on the target (CASCADE), and re-creates the source's objects with pg_dump --clean --if-exists.

One agent per migration: copy holds the migration's lease on the target while it runs and refuses
to start (with --force too) while another copy or run holds it, naming that agent.

Exit status: 0 done, 2 failed (or another agent holds the migration).`,
		Args:      cobra.MaximumNArgs(1),
		ValidArgs: []string{"schema", "data", "indexes", "sequences"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				step, err := app.ParseCopyStep(args[0])
				if err != nil {
					return withCode(2, err)
				}
				opts.Step = step
			}
			cfg, err := c.config(cmd, &f)
			if err != nil {
				return withCode(2, err)
			}
			if err := cf.apply(cmd, &cfg); err != nil {
				return withCode(2, err)
			}
			log, err := c.logger()
			if err != nil {
				return withCode(2, err)
			}
			if chunkMB < 1 || chunkMB > maxChunkMB {
				return withCode(2, fmt.Errorf("--chunk-size %d: give a size in MiB between 1 and %d (default 256)", chunkMB, maxChunkMB))
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
				opts.NoProgress = true
			default:
				return withCode(2, fmt.Errorf("--progress %q: want auto, bars, log or none", progressMode))
			}
			sum, err := app.Copy(cmd.Context(), cfg, opts, log)
			if err != nil {
				return withCode(2, err)
			}
			sum.WriteSummary(c.stdout)
			return nil
		},
	}
	addConnFlags(cmd, &f, true)
	addCopyFlags(cmd, &cf)
	fs := cmd.Flags()
	fs.BoolVar(&opts.Force, "force", false, "start over: drop previous pgshift state, slot and publication, and the target's copies of the source's objects")
	fs.StringVar(&opts.PgDump, "pg-dump", "", "pg_dump binary to use (default: one at least as new as the source server)")
	fs.Int64Var(&chunkMB, "chunk-size", 256, "target size of one copy chunk in MiB; bigger tables are split so several workers copy them")
	fs.StringVar(&opts.IndexMemory, "index-memory", "512MB", "maintenance_work_mem of each index-building session on the target")
	fs.StringVar(&progressMode, "progress", "auto", "progress display: auto (bars on a terminal, log lines otherwise), bars, log, none")
	return cmd
}
