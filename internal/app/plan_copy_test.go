package app

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestCopyWarnsOfFrequentCheckpoints: a copy into a target whose max_wal_size is far below the
// WAL the copy writes warns before the data moves, naming the setting and the number plan
// gives; a target with room enough gets no such warning.
func TestCopyWarnsOfFrequentCheckpoints(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	src := pgtest.New(t, pgtest.Options{Name: "ckpt-src"})
	small := pgtest.New(t, pgtest.Options{Name: "ckpt-small", Settings: map[string]string{"max_wal_size": "'32MB'", "min_wal_size": "'32MB'"}})
	roomy := pgtest.New(t, pgtest.Options{Name: "ckpt-roomy"}) // pgtest's 2GB
	srcDSN, err := src.CreateDB(ctx, "load")
	if err != nil {
		t.Fatal(err)
	}
	// About 60MB of rows and 20MB of index: more than a 32MB max_wal_size lets pass between checkpoints.
	if out, err := src.Psql(ctx, "load", `CREATE TABLE rows (id int PRIMARY KEY, pad text);
		INSERT INTO rows SELECT g, repeat('x', 400) FROM generate_series(1, 130000) g; ANALYZE rows`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, tc := range []struct {
		name   string
		dst    *pgtest.Cluster
		slot   string
		warned bool
	}{{"32MB", small, "pgshift_small", true}, {"2GB", roomy, "pgshift_roomy", false}} {
		t.Run(tc.name, func(t *testing.T) {
			dstDSN, err := tc.dst.CreateDB(ctx, "load")
			if err != nil {
				t.Fatal(err)
			}
			cfg := config.Defaults()
			cfg.Source, cfg.Target, cfg.Jobs = srcDSN, dstDSN, 2
			cfg.Slot, cfg.Publication = tc.slot, tc.slot // one source database, two migrations
			sum, err := Copy(ctx, cfg, CopyOptions{NoProgress: true}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			var got string
			for _, w := range sum.Warnings {
				if strings.Contains(w, "max_wal_size") {
					got = w
				}
			}
			if tc.warned {
				if !strings.Contains(got, "max_wal_size is 32MB") || !strings.Contains(got, "ALTER SYSTEM SET max_wal_size = '1GB'") {
					t.Fatalf("no checkpoint warning with the number to set; warnings: %q", sum.Warnings)
				}
			} else if got != "" {
				t.Fatalf("a 2GB max_wal_size is enough for this copy, but it warned: %s", got)
			}
			// The rows arrived (the warning stops nothing): counted with SQL of the test's own.
			if n := cpQuery(t, cpConnect(t, dstDSN), "SELECT count(*) FROM rows"); n != "130000" {
				t.Fatalf("target has %s rows, want 130000", n)
			}
		})
	}
}
