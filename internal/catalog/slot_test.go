package catalog

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestSlotAcrossVersions reads a logical slot on servers with and without the columns later
// versions added: on 12 wal_status is empty and nothing fails; on 13+ it is reported, and a
// missing slot is not an error.
func TestSlotAcrossVersions(t *testing.T) {
	for _, major := range []int{12, 13, 15, 17} {
		t.Run(fmt.Sprint(major), func(t *testing.T) {
			c := pgtest.New(t, pgtest.Options{Version: major})
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, c.DSN("postgres"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(ctx)
			if _, err := conn.Exec(ctx, `SELECT pg_create_logical_replication_slot('s1', 'pgoutput')`); err != nil {
				t.Fatal(err)
			}
			if _, err := conn.Exec(ctx, `CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)`); err != nil {
				t.Fatal(err)
			}
			st, err := Slot(ctx, conn, "s1")
			if err != nil {
				t.Fatal(err)
			}
			if !st.Exists || st.Plugin != "pgoutput" || st.Database != "postgres" || st.Type != "logical" || st.Active || st.Temporary {
				t.Errorf("slot: %+v", st)
			}
			if st.ConfirmedFlush == 0 || st.RestartLSN == 0 || st.CurrentLSN <= st.RestartLSN || st.RetainedBytes != int64(st.CurrentLSN-st.RestartLSN) {
				t.Errorf("positions: %+v", st)
			}
			if v := Version(major * 10000); (st.WALStatus != "") != v.HasWALStatus() || st.Lost() {
				t.Errorf("wal_status %q on %d", st.WALStatus, major)
			}
			if st.SafeWALSize != nil {
				t.Errorf("safe_wal_size %d with max_slot_wal_keep_size unlimited", *st.SafeWALSize)
			}
			missing, err := Slot(ctx, conn, "nope")
			if err != nil || missing.Exists || missing.CurrentLSN == 0 {
				t.Errorf("missing slot: %+v %v", missing, err)
			}
			all, err := Slots(ctx, conn)
			if err != nil || len(all) != 1 || all[0].Name != "s1" {
				t.Errorf("Slots: %+v %v", all, err)
			}
		})
	}
}
