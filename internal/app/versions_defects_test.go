package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
// START_REPLICATION asked pgoutput for the messages option (14+) and was refused. On both, and
// on 10 and 11, with the published tables idle, the heartbeat (a logical message, which pgoutput
// before 14 does not send) must still move the slot: its transaction arrives as an empty one, so
// the applied and confirmed positions pass a WAL position taken while idle.
func TestOldSourceFollowAndHeartbeat(t *testing.T) {
	for _, major := range []int{10, 11, 12, 13} {
		t.Run(fmt.Sprint(major), func(t *testing.T) {
			src, dst, _, _ := pgtest.PairVersions(t, "unused", major, 15)
			e := newFollowEnvPub(t, src, dst, "oldsrc", workloadSchema, `CREATE PUBLICATION pgshift_pub FOR ALL TABLES`)
			if major < 11 {
				// pgshift's TRUNCATE capture, as copy makes it there (the follow session insists).
				tables, err := src.Psql(context.Background(), "oldsrc", `SELECT string_agg(format('%s.%s', schemaname, tablename), ',') FROM pg_tables WHERE schemaname = 'public'`)
				if err != nil {
					t.Fatal(err)
				}
				var ids []pgtypes.TableID
				for _, n := range strings.Split(tables, ",") {
					schema, name, _ := strings.Cut(n, ".")
					ids = append(ids, pgtypes.TableID{Schema: schema, Name: name})
				}
				if err := state.CaptureTruncates(context.Background(), sourceConn(t, e), ids); err != nil {
					t.Fatal(err)
				}
			}
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

// TestPG12Partitions follows partition trees from a PostgreSQL 12 source, whose publications
// can hold leaf partitions only (FOR TABLE root fails there): copy names the leaves, TRUNCATEs
// and rows moving between partitions arrive under the leaves' names, and a partition created
// on the source during follow — which 12 never publishes by itself — stops following with the
// DDL for the target instead of silently missing its rows; once the target has it, the next
// run adds it to the publication and copies it in a new snapshot.
func TestPG12Partitions(t *testing.T) {
	src, dst, _, _ := pgtest.PairVersions(t, "unused", 12, 15)

	t.Run("TruncateAndMoves", func(t *testing.T) {
		e := copiedEnv(t, src, dst, "p12moves", partitionSchema)
		if got := e.query(src, `SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'pgshift_p12moves' AND tablename LIKE 'regions%'`); got != "regions_eu,regions_us" {
			t.Fatalf("publication on 12 holds %q of the regions tree, want its leaves", got)
		}
		a := e.start(RunOptions{})
		e.exec(`TRUNCATE events_2023`)
		e.exec(`TRUNCATE events_2024`)
		e.exec(`BEGIN; TRUNCATE ONLY regions_eu, plain; INSERT INTO regions VALUES (1000, 'eu', 1); INSERT INTO plain VALUES (42); COMMIT`)
		e.exec(`UPDATE events SET at = '2030-01-01' WHERE id BETWEEN 51 AND 60`)
		e.exec(`UPDATE regions SET region = 'ca' WHERE id <= 20; UPDATE buckets SET id = id + 1000 WHERE id <= 30`)
		e.exec(`TRUNCATE buckets; INSERT INTO buckets VALUES (1, 'again')`)
		e.waitApplied(a)
		e.compare()
		if s, d := e.query(src, leafCountsSQL), e.query(dst, leafCountsSQL); s != d {
			t.Errorf("rows per partition differ:\nsource %s\ntarget %s", s, d)
		}
	})

	t.Run("PartitionCreatedDuringFollow", func(t *testing.T) { // ddl: stop's handling (ddl: follow: TestDDLFollowVersions)
		e := copiedEnv(t, src, dst, "p12new", partitionSchema, ddlStop)
		var logs lockedBuffer
		a := e.startLogged(RunOptions{MonitorInterval: 200 * time.Millisecond}, &logs)
		e.exec(`INSERT INTO regions VALUES (400, 'eu', 1)`)
		e.waitApplied(a)
		e.exec(`CREATE TABLE regions_asia PARTITION OF regions FOR VALUES IN ('asia');
INSERT INTO regions VALUES (500, 'asia', 1), (401, 'eu', 1)`)
		err := waitStopped(t, a, 60*time.Second)
		var fe *FatalError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), "public.regions_asia") || !strings.Contains(err.Error(), "PostgreSQL 12") ||
			!strings.Contains(err.Error(), `CREATE TABLE "public"."regions_asia" PARTITION OF "public"."regions" FOR VALUES IN ('asia')`) {
			t.Fatalf("agent stopped with %v; want a fatal error naming the new partition, why 12 does not publish it, and the DDL\n%s", err, logs.String())
		}
		e.exec(`INSERT INTO regions VALUES (501, 'asia', 2)`)
		e.query(dst, `CREATE TABLE "public"."regions_asia" PARTITION OF "public"."regions" FOR VALUES IN ('asia')`)
		a = e.startLogged(RunOptions{}, &logs)
		e.exec(`INSERT INTO regions VALUES (502, 'asia', 3); UPDATE regions SET v = 9 WHERE id = 500`)
		e.waitApplied(a)
		e.compare()
		if got := e.query(dst, `SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM regions_asia`); got != "500:9,501:2,502:3" {
			t.Errorf("regions_asia on the target: %s", got)
		}
		if got := e.query(src, `SELECT count(*) FROM pg_publication_tables WHERE pubname = 'pgshift_p12new' AND tablename = 'regions_asia'`); got != "1" {
			t.Errorf("the new partition was not added to the publication (%s)", got)
		}
	})
}
