package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/assess"
	"github.com/pgshift/pgshift/internal/plan"
)

func (c *cli) planCommand() *cobra.Command {
	var flags connFlags
	var format, memory string
	var cpus int
	var sampleMB int64
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Design the target: storage, IOPS and settings, each with its reason",
		Long: `plan reads the source (and the target, when given) and designs the target before a byte
moves: storage (the source's size × 1.5 plus the WAL the copy may hold), IOPS from the source's
measured write rate, and the settings the target should have, each with a one-line reason —
shared_buffers, effective_cache_size, work_mem and maintenance_work_mem (with --target-memory),
max_wal_size and checkpoint_timeout from the WAL the copy will write, the replication limits,
shared_preload_libraries, wal_level for reverse replication. With --target it says what the
target has and what to change.

--format sql prints ALTER SYSTEM statements (only the changes, with --target), terraform an
aws_db_parameter_group resource, rds-json the list that aws rds modify-db-parameter-group
--parameters takes. It changes nothing on either server.

Exit codes: 0 planned, 2 could not run (connection, flags, config).`,
		Example: `  pgshift plan --source postgres://app@old-db/shop --target-memory 16GB --target-cpus 4
  pgshift plan --source postgres://app@old-db/shop --target postgres://admin@new-db/shop --format sql | psql -h new-db`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			f, err := plan.ParseFormat(format)
			if err != nil {
				return withCode(2, err)
			}
			var res plan.Resources
			if memory != "" {
				if res.MemoryBytes, err = plan.ParseMemory(memory); err != nil {
					return withCode(2, fmt.Errorf("--target-memory: %w", err))
				}
			}
			if cpus < 0 {
				return withCode(2, fmt.Errorf("--target-cpus must be 1 or more, got %d", cpus))
			}
			res.CPUs = cpus
			if sampleMB < 0 {
				return withCode(2, fmt.Errorf("--sample-mb must be 0 (no measurement) or more, got %d", sampleMB))
			}
			cfg, err := c.config(cmd, &flags)
			if err != nil {
				return withCode(2, err)
			}
			log, err := c.logger()
			if err != nil {
				return withCode(2, err)
			}
			if _, err := app.Plan(cmd.Context(), cfg, app.PlanOptions{Format: f, Resources: res, SampleBytes: sampleMB << 20}, c.stdout, log); err != nil {
				return withCode(2, err)
			}
			return nil
		},
	}
	addConnFlags(cmd, &flags, true)
	fs := cmd.Flags()
	fs.StringVar(&format, "format", "text", "output format: text, json, markdown, sql, terraform or rds-json")
	fs.StringVar(&memory, "target-memory", "", "the target's memory, e.g. 16GB (plans shared_buffers, effective_cache_size, work_mem, maintenance_work_mem)")
	fs.IntVar(&cpus, "target-cpus", 0, "the target's cores (plans max_worker_processes and the parallel-worker settings)")
	fs.Int64Var(&sampleMB, "sample-mb", assess.DefaultSampleBytes>>20,
		"MB of the largest table to read once, timed, for the copy-time estimate the WAL sizing rests on (0: stated default rates)")
	return cmd
}
