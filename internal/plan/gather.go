package plan

import (
	"cmp"
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/assess"
	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// plannedSettings are the target settings the plan may recommend, read to say what changes.
var plannedSettings = []string{
	"shared_buffers", "effective_cache_size", "work_mem", "maintenance_work_mem", "max_wal_size",
	"checkpoint_timeout", "checkpoint_completion_target", "max_worker_processes", "max_parallel_workers",
	"max_parallel_workers_per_gather", "max_parallel_maintenance_workers", "wal_level", "max_replication_slots",
	"max_wal_senders", "max_logical_replication_workers", "shared_preload_libraries",
}

// Gather reads the facts a plan rests on. The servers, tables, sizes and the copy-time
// estimate are assess's (assess.Run, the same reads `pgshift assess` makes); only what assess
// does not read is queried here: the write and read counters, connections, the largest index,
// preload libraries, and the target's current values of the planned settings.
func Gather(ctx context.Context, src, dst *pgx.Conn, opts Options) (Facts, error) {
	srcName, dstName := cmp.Or(opts.SourceName, "source"), cmp.Or(opts.TargetName, "target")
	rep, err := assess.Run(ctx, src, dst, assess.Options{Filter: opts.Filter, Jobs: opts.Jobs, SampleBytes: opts.SampleBytes,
		SourceName: opts.SourceName, TargetName: opts.TargetName, Logger: opts.Logger, Now: opts.Now})
	if err != nil {
		return Facts{}, err
	}
	f := Facts{Source: rep.Source, Target: rep.Target, Resources: opts.Resources, CopySeconds: rep.Estimate.LowSeconds,
		CopySecondsSlow: rep.Estimate.HighSeconds,
		DataBytes:       rep.Estimate.DataBytes, IndexBytes: rep.Estimate.IndexBytes}
	if err := readSource(ctx, src, &f, rep.Tables); err != nil {
		return f, fmt.Errorf("%s: %w", srcName, err)
	}
	if dst != nil {
		if err := readTarget(ctx, dst, &f); err != nil {
			return f, fmt.Errorf("%s: %w", dstName, err)
		}
	}
	return f, nil
}

// walSQL and bgwriterSQL read the cumulative write counters and their age. A view whose
// stats_reset is NULL has counted since the server started at the latest (from 15 the
// counters survive a clean restart, so the age is then understated and the rate overstated,
// the safe side for IOPS). pg_stat_bgwriter's buffers_checkpoint and buffers_backend exist
// before 17; it is read only where pg_stat_wal is missing (before 14).
const (
	walSQL      = `SELECT wal_bytes::int8, extract(epoch FROM now() - coalesce(stats_reset, pg_postmaster_start_time()))::float8 FROM pg_stat_wal`
	bgwriterSQL = `SELECT ((buffers_checkpoint + buffers_clean + buffers_backend) * current_setting('block_size')::int8)::int8,
       extract(epoch FROM now() - coalesce(stats_reset, pg_postmaster_start_time()))::float8 FROM pg_stat_bgwriter`
	readsSQL = `SELECT (blks_read * current_setting('block_size')::int8)::int8,
       extract(epoch FROM now() - coalesce(stats_reset, pg_postmaster_start_time()))::float8
FROM pg_stat_database WHERE datname = current_database()`
	connectionsSQL = `SELECT current_setting('max_connections')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')::int,
       current_setting('max_logical_replication_workers')::int, current_setting('shared_preload_libraries')`
	// largestIndexSQL finds the largest index of the given tables (parallel arrays of schema
	// and table names).
	largestIndexSQL = `SELECT n.nspname, ic.relname, pg_relation_size(i.indexrelid)
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_class ic ON ic.oid = i.indexrelid
WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest($1::text[], $2::text[]))
ORDER BY 3 DESC, 1, 2 LIMIT 1`
)

func readSource(ctx context.Context, q catalog.Querier, f *Facts, tables []assess.Table) error {
	w := &f.Writes
	if catalog.Version(f.Source.VersionNum).HasStatWAL() {
		w.From = "pg_stat_wal"
		if err := q.QueryRow(ctx, walSQL).Scan(&w.Bytes, &w.Seconds); err != nil {
			return fmt.Errorf("read the WAL write counters (pg_stat_wal): %w", err)
		}
	} else {
		w.From = "pg_stat_bgwriter"
		if err := q.QueryRow(ctx, bgwriterSQL).Scan(&w.Bytes, &w.Seconds); err != nil {
			return fmt.Errorf("read the page write counters (pg_stat_bgwriter): %w", err)
		}
	}
	if err := q.QueryRow(ctx, readsSQL).Scan(&w.ReadBytes, &w.ReadSeconds); err != nil {
		return fmt.Errorf("read the block read counters (pg_stat_database): %w", err)
	}
	var preload string
	if err := q.QueryRow(ctx, connectionsSQL).Scan(&f.MaxConnections, &f.Connections, &f.MaxLogicalWorkers, &preload); err != nil {
		return fmt.Errorf("read connection settings: %w", err)
	}
	f.PreloadLibraries = splitList(preload)

	var schemas, names []string
	for _, t := range tables {
		if t.Kind == "table" || t.Kind == "materialized_view" {
			schemas, names = append(schemas, t.Schema), append(names, t.Name)
		}
	}
	if len(names) == 0 {
		return nil
	}
	var schema, name string
	err := q.QueryRow(ctx, largestIndexSQL, schemas, names).Scan(&schema, &name, &f.LargestIndex.Bytes)
	switch {
	case err == pgx.ErrNoRows:
		return nil
	case err != nil:
		return fmt.Errorf("find the largest index: %w", err)
	}
	f.LargestIndex.Name = pgtypes.TableID{Schema: schema, Name: name}.String()
	return nil
}

func readTarget(ctx context.Context, q catalog.Querier, f *Facts) error {
	rows, err := q.Query(ctx, `SELECT name, setting, coalesce(unit, '') FROM pg_settings WHERE name = ANY($1::text[])`, plannedSettings)
	if err != nil {
		return fmt.Errorf("read settings: %w", err)
	}
	defer rows.Close()
	f.TargetSettings = map[string]Current{}
	for rows.Next() {
		var name string
		var c Current
		if err := rows.Scan(&name, &c.Setting, &c.Unit); err != nil {
			return fmt.Errorf("read settings: %w", err)
		}
		f.TargetSettings[name] = c
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read settings: %w", err)
	}
	rows.Close()
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = $1::text)`, "pg_stat_statements").
		Scan(&f.TargetHasContrib); err != nil {
		return fmt.Errorf("look for pg_stat_statements: %w", err)
	}
	return nil
}
