package pgtest

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestVersions starts a server of every major the version matrix uses (fetching binaries the
// system lacks) and checks it is the version asked for, with logical decoding on.
func TestVersions(t *testing.T) {
	for _, major := range []int{12, 13, 14, 15, 17, 18} {
		t.Run(fmt.Sprint(major), func(t *testing.T) {
			c := New(t, Options{Version: major})
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, c.DSN("postgres"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			var num int
			var wal string
			if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, current_setting('wal_level')").Scan(&num, &wal); err != nil {
				t.Fatal(err)
			}
			if num/10000 != major || c.Major != major || wal != "logical" {
				t.Fatalf("asked for %d: server_version_num %d, Major %d, wal_level %s", major, num, c.Major, wal)
			}
			if out, err := c.Psql(ctx, "postgres", "SELECT 40 + 2"); err != nil || out != "42" {
				t.Fatalf("psql: %q %v", out, err)
			}
		})
	}
}
