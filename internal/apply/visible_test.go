package apply

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestVisibleSQL: the visibility check says "in progress" for a transaction that is open on
// another session and "visible" once it committed, on the system's server and on the oldest
// and newest majors pgshift reads (txid_* functions before 13, pg_snapshot ones from 13), with
// the 32-bit id the stream carries.
func TestVisibleSQL(t *testing.T) {
	for _, major := range []int{0, 10, 18} {
		t.Run(fmt.Sprint("major=", major), func(t *testing.T) {
			cl := pgtest.New(t, pgtest.Options{Version: major})
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			dsn, conn := cl.NewDB(t, "vis")
			v, err := catalog.ReadVersion(ctx, conn)
			if err != nil {
				t.Fatal(err)
			}
			open, err := pgx.Connect(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer open.Close(ctx)
			if _, err := open.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			var xid int64
			if err := open.QueryRow(ctx, "SELECT txid_current() & 4294967295").Scan(&xid); err != nil {
				t.Fatal(err)
			}
			visible := func() bool {
				var ok bool
				if err := conn.QueryRow(ctx, visibleSQL(v), xid).Scan(&ok); err != nil {
					t.Fatalf("server %s: %v", v, err)
				}
				return ok
			}
			if visible() {
				t.Errorf("server %s: transaction %d is open, and the check says it is visible", v, xid)
			}
			if _, err := open.Exec(ctx, "COMMIT"); err != nil {
				t.Fatal(err)
			}
			if !visible() {
				t.Errorf("server %s: transaction %d committed, and the check says it is not visible", v, xid)
			}
		})
	}
}
