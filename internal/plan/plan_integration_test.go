package plan

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestGatherAndApplySQL reads a real source and target, checks the facts against SQL of the
// test's own, then runs the plan's ALTER SYSTEM script on the target through psql, restarts
// it and checks with SHOW that the server took every setting, preload libraries included.
func TestGatherAndApplySQL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	src := pgtest.New(t, pgtest.Options{Name: "plan-src"})
	dst := pgtest.New(t, pgtest.Options{Name: "plan-dst", Settings: map[string]string{"max_wal_size": "'1GB'", "wal_level": "replica"}})
	_, srcConn := src.NewDB(t, "shop")
	dstDSN, dstConn := dst.NewDB(t, "shop")
	for _, q := range []string{
		`CREATE TABLE items (id int PRIMARY KEY, label text NOT NULL)`,
		`INSERT INTO items SELECT g, repeat(md5(g::text), 3) FROM generate_series(1, 100000) g`,
		`CREATE INDEX items_label ON items (label)`, // wider than the key: the largest index
		`CREATE TABLE small (id int PRIMARY KEY)`,
		`INSERT INTO small SELECT generate_series(1, 10)`,
		`ANALYZE`,
	} {
		if _, err := srcConn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	f, err := Gather(ctx, srcConn, dstConn, Options{Jobs: 2, SampleBytes: 0})
	if err != nil {
		t.Fatal(err)
	}
	var labelBytes, dataBytes int64
	// The copy moves each table's main fork and its TOAST table (free-space and visibility maps
	// are rebuilt, not copied).
	if err := srcConn.QueryRow(ctx, `SELECT pg_relation_size('items_label'),
		(SELECT sum(pg_relation_size(oid) + coalesce(pg_total_relation_size(nullif(reltoastrelid, 0)), 0))::int8
		 FROM pg_class WHERE oid IN ('items'::regclass, 'small'::regclass))`).Scan(&labelBytes, &dataBytes); err != nil {
		t.Fatal(err)
	}
	if f.LargestIndex.Name != "public.items_label" || f.LargestIndex.Bytes != labelBytes {
		t.Errorf("largest index = %+v, want public.items_label of %d bytes", f.LargestIndex, labelBytes)
	}
	if f.DataBytes != dataBytes {
		t.Errorf("data bytes = %d, want %d (main forks and TOAST of the two tables)", f.DataBytes, dataBytes)
	}
	if f.Writes.From != "pg_stat_wal" || f.Writes.Bytes <= 0 || f.Writes.Seconds <= 0 {
		t.Errorf("write counters = %+v, want pg_stat_wal with the WAL the inserts wrote", f.Writes)
	}
	if f.MaxConnections != 200 || f.MaxLogicalWorkers != 8 || len(f.PreloadLibraries) != 0 || f.CopySeconds <= 0 {
		t.Errorf("source facts = conns %d, logical workers %d, preload %q, copy %gs; want pgtest's 200, 8, none, > 0",
			f.MaxConnections, f.MaxLogicalWorkers, f.PreloadLibraries, f.CopySeconds)
	}
	if c := f.TargetSettings["shared_buffers"]; c != (Current{"16384", "8kB"}) || !f.TargetHasContrib {
		t.Errorf("target shared_buffers = %+v, contrib %v; want pgtest's 128MB as 16384 × 8kB, and contrib", c, f.TargetHasContrib)
	}

	f.Resources = Resources{MemoryBytes: 1 << 30, CPUs: 2}
	p := Build(f)
	if s, _ := settingByName(p.Settings, "max_replication_slots"); s.Change {
		t.Errorf("max_replication_slots: the target's 32 covers the plan's %s, but it is marked to change", s.Value)
	}
	var script bytes.Buffer
	if err := WriteSQL(&script, p); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "plan.sql")
	if err := os.WriteFile(file, script.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(dst.ClientBinDir(), "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-f", file, dstDSN).CombinedOutput()
	if err != nil {
		t.Fatalf("psql -f plan.sql: %v\n%s\nscript:\n%s", err, out, script.String())
	}
	if err := dst.Restart(ctx, false); err != nil {
		t.Fatalf("the target does not restart with the plan's settings: %v\nscript:\n%s", err, script.String())
	}
	conn, err := pgx.Connect(ctx, dstDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	for name, want := range map[string]string{
		"shared_buffers": "256MB", "effective_cache_size": "768MB", "work_mem": "4MB", "maintenance_work_mem": "64MB",
		"max_wal_size": "1GB", "checkpoint_timeout": "15min", "wal_level": "logical",
		"shared_preload_libraries": "pg_stat_statements, auto_explain", "max_parallel_workers": "2",
	} {
		var got string
		if err := conn.QueryRow(ctx, "SELECT current_setting($1::text)", name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("after the plan and a restart, %s = %s, want %s", name, got, want)
		}
	}
	// The preloaded library works: pg_stat_statements' view can be read only when it is loaded.
	if _, err := conn.Exec(ctx, "CREATE EXTENSION pg_stat_statements"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT count(*) FROM pg_stat_statements"); err != nil {
		t.Fatalf("pg_stat_statements is not preloaded: %v", err)
	}
	// Planned again, the target needs nothing.
	f2, err := Gather(ctx, srcConn, conn, Options{Jobs: 2})
	if err != nil {
		t.Fatal(err)
	}
	f2.Resources = f.Resources
	if ch := Build(f2).Changes(); len(ch) != 0 {
		t.Errorf("after applying the plan, it still asks to change %d settings: %+v", len(ch), ch)
	}
}

// TestGatherAcrossVersions reads the write counters where each version keeps them:
// pg_stat_bgwriter before 14 (no pg_stat_wal), pg_stat_wal from 14 (18 moved other columns out
// of it, not wal_bytes).
func TestGatherAcrossVersions(t *testing.T) {
	for _, tc := range []struct {
		major int
		from  string
	}{{13, "pg_stat_bgwriter"}, {18, "pg_stat_wal"}} {
		t.Run(strconv.Itoa(tc.major), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			c := pgtest.New(t, pgtest.Options{Version: tc.major, Name: "plan-v" + strconv.Itoa(tc.major)})
			_, conn := c.NewDB(t, "shop")
			for _, q := range []string{
				`CREATE TABLE t (id int PRIMARY KEY, pad text)`,
				`INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g`,
				`CHECKPOINT`, // writes the new pages: the bgwriter counters see them
			} {
				if _, err := conn.Exec(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			// Before 15 the checkpointer's counters reach the views through the statistics
			// collector, a moment after CHECKPOINT returns.
			var written int64
			for deadline := time.Now().Add(10 * time.Second); tc.major < 15 && written == 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				if err := conn.QueryRow(ctx, `SELECT buffers_checkpoint FROM pg_stat_bgwriter, pg_stat_clear_snapshot()`).Scan(&written); err != nil {
					t.Fatal(err)
				}
			}
			f, err := Gather(ctx, conn, nil, Options{Jobs: 2})
			if err != nil {
				t.Fatal(err)
			}
			if f.Writes.From != tc.from || f.Writes.Bytes <= 0 || f.Writes.Seconds <= 0 {
				t.Fatalf("PostgreSQL %d: write counters = %+v, want bytes from %s", tc.major, f.Writes, tc.from)
			}
			if f.LargestIndex.Name != "public.t_pkey" {
				t.Errorf("largest index = %+v, want public.t_pkey", f.LargestIndex)
			}
			p := Build(f)
			if p.Family != "postgres"+strconv.Itoa(tc.major) || len(p.Settings) == 0 {
				t.Errorf("plan for PostgreSQL %d: family %s, %d settings", tc.major, p.Family, len(p.Settings))
			}
		})
	}
}
