package app

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// TestOldSourceFollowAndHeartbeat is the regression test of the two failures: on a 12
// source, follow read pg_replication_slots.wal_status (13+) and stopped; on a 13 source,
// START_REPLICATION asked pgoutput for the messages option (14+) and was refused. On both, with
// the published tables idle, the heartbeat (a logical message, which pgoutput before 14 does not
// send) must still move the slot: its transaction arrives as an empty one, so the applied and
// confirmed positions pass a WAL position taken while idle.
func TestOldSourceFollowAndHeartbeat(t *testing.T) {
	for _, major := range []int{12, 13} {
		t.Run(fmt.Sprint(major), func(t *testing.T) {
			src, dst, _, _ := pgtest.PairVersions(t, "unused", major, 15)
			e := newFollowEnvPub(t, src, dst, "oldsrc", workloadSchema, `CREATE PUBLICATION pgshift_pub FOR ALL TABLES`)
			a := e.start(RunOptions{HeartbeatInterval: 200 * time.Millisecond})
			e.exec(`UPDATE accounts SET balance = 5 WHERE id = 1`)
			e.waitApplied(a)
			e.compare()
			// Idle now: only heartbeats are written on the source.
			ctx := context.Background()
			sc := sourceConn(t, e)
			var idle pgtypes.LSN
			{
				st, err := catalog.Slot(ctx, sc, "pgshift_oldsrc")
				if err != nil {
					t.Fatal(err)
				}
				if !st.Exists || (st.WALStatus == "") != (major < 13) {
					t.Fatalf("slot on %d: %+v", major, st)
				}
				idle = st.CurrentLSN
			}
			until(t, 20*time.Second, "the slot's confirmed position to pass the idle WAL position", func() bool {
				st, err := catalog.Slot(ctx, sc, "pgshift_oldsrc")
				if err != nil {
					t.Fatal(err)
				}
				select {
				case <-a.done:
					t.Fatalf("agent stopped: %v", a.err)
				default:
				}
				return st.ConfirmedFlush > idle
			})
			if err := a.stop(); err != nil {
				t.Fatalf("follow on a %d source: %v", major, err)
			}
		})
	}
}

// newFollowEnvPub is newFollowEnv with the publication made by pubSQL (PostgreSQL 12 has no
// publish_via_partition_root, which newFollowEnv's publication sets).
func newFollowEnvPub(t *testing.T, src, dst *pgtest.Cluster, name, schema, pubSQL string) *followEnv {
	t.Helper()
	e := emptyTargetEnv(t, src, dst, name, schema)
	ctx := context.Background()
	if out, err := dst.Psql(ctx, name, schema); err != nil {
		t.Fatalf("schema on the target: %v %s", err, out)
	}
	if _, err := src.Psql(ctx, name, pubSQL); err != nil {
		t.Fatal(err)
	}
	lsnText, err := src.Psql(ctx, name, `SELECT lsn FROM pg_create_logical_replication_slot('pgshift_`+name+`', 'pgoutput')`)
	if err != nil {
		t.Fatal(err)
	}
	lsn, err := pgtypes.ParseLSN(lsnText)
	if err != nil {
		t.Fatal(err)
	}
	sysid, err := src.Psql(ctx, name, `SELECT system_identifier FROM pg_control_system()`)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := db.Endpoint{Role: db.Target, DSN: e.cfg.Target}.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close(ctx)
	if err := state.Ensure(ctx, tc); err != nil {
		t.Fatal(err)
	}
	err = state.Create(ctx, tc, state.Migration{SourceSystemID: sysid, SourceDatabase: name,
		Slot: "pgshift_" + name, Publication: "pgshift_pub", ConsistentLSN: lsn, Phase: pgtypes.PhaseCopied})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// sourceConn connects to the environment's source database for the test's own reads.
func sourceConn(t *testing.T, e *followEnv) *pgx.Conn {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, e.cfg.Source)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}
