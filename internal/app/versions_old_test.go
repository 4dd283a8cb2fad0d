package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
	"github.com/pgshift/pgshift/internal/verify"
)

// oldVersionCases are the sources before 12 into a 15 target.
var oldVersionCases = []versionCase{{10, 15}, {11, 15}}

// TestVersionMatrixOld is TestVersionMatrix for sources of PostgreSQL 10 and 11 (copy under a
// workload, three SIGKILLs while following, wait, the test's own row-text comparison, pgshift
// verify), plus a comparison of every float by its IEEE bits: 10 and 11 print floats in other
// text than 12+ (17 digits, not the shortest exact form), so the text comparison alone is no
// proof that the bits arrived. Its regressions: assess failed on pg_attribute.attgenerated (12+);
// verify failed on plan_cache_mode (12+), then reported the edge row's largest double as a
// float rounding difference (the two servers' texts of the same bits).
func TestVersionMatrixOld(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL 10, 11 and 15 servers (skipped with -short)")
	}
	bin := buildBinary(t)
	for _, vc := range oldVersionCases {
		t.Run(fmt.Sprintf("%d_to_%d", vc.src, vc.dst), func(t *testing.T) {
			t.Parallel()
			runVersionCase(t, bin, vc)
		})
	}
}

// TestOldSourceFloatBits: the values of real and double precision columns arrive bit for bit
// from a 10 or 11 source, and pgshift verify finds no difference in them although the two
// servers print them differently.
func TestOldSourceFloatBits(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (skipped with -short)")
	}
	for _, major := range []int{10, 11} {
		t.Run(fmt.Sprint(major), func(t *testing.T) {
			src, dst, _, _ := pgtest.PairVersions(t, "unused", major, 15)
			const schema = `CREATE TABLE fl (id int PRIMARY KEY, d float8, r float4, da float8[]);
INSERT INTO fl VALUES (1, 1.7976931348623157e308, 3.4028235e38, '{0.1,NULL}'), (2, 0.1, 0.1, NULL), (3, -0.0, -0.0, '{}'),
	(4, 'NaN', 'NaN', NULL), (5, '-Infinity', 'Infinity', NULL), (6, 2.2250738585072014e-308, 1.0e-45, NULL),
	(7, 1.0/3, 1.0/3, '{1e-300}'), (8, NULL, NULL, NULL);`
			e := copiedEnv(t, src, dst, fmt.Sprintf("fl%d", major), schema)
			a := e.start(RunOptions{})
			e.exec(`INSERT INTO fl SELECT g, g / 7.0, g / 7.0, ARRAY[g / 3.0] FROM generate_series(100, 300) g; UPDATE fl SET d = d * 3 WHERE id = 2`)
			e.waitApplied(a)
			const bits = `SELECT string_agg(id || ':' || coalesce(float8send(d)::text, '-') || ':' || coalesce(float4send(r)::text, '-')
				|| ':' || coalesce((SELECT string_agg(float8send(x)::text, ',') FROM unnest(da) x), '-'), ' ' ORDER BY id) FROM fl`
			if s, d := e.query(src, bits), e.query(dst, bits); s != d {
				t.Errorf("float bits differ:\nsource %s\ntarget %s", s, d)
			}
			rep, err := Verify(context.Background(), e.cfg, VerifyOptions{Mode: verify.ModeRows, NoSave: true}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if rep.ExitCode() != 0 {
				var b strings.Builder
				_ = rep.WriteText(&b, 10)
				t.Errorf("verify from %d found differences:\n%s", major, b.String())
			}
			if err := a.stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// partitionSchema10 is partitionSchema as PostgreSQL 10 allows it: no key on a partitioned
// table (each leaf has its own), no hash partitions, no default partition.
const partitionSchema10 = `
CREATE TABLE regions (id int NOT NULL, region text NOT NULL, v int) PARTITION BY LIST (region);
CREATE TABLE regions_eu PARTITION OF regions (PRIMARY KEY (id, region)) FOR VALUES IN ('eu');
CREATE TABLE regions_us PARTITION OF regions (PRIMARY KEY (id, region)) FOR VALUES IN ('us', 'ca');
INSERT INTO regions SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 100) g;
CREATE TABLE events (id bigint NOT NULL, at date NOT NULL, payload text) PARTITION BY RANGE (at);
CREATE TABLE events_2023 PARTITION OF events (PRIMARY KEY (id, at)) FOR VALUES FROM ('2023-01-01') TO ('2024-01-01');
CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01') PARTITION BY RANGE (at);
CREATE TABLE events_2024_h1 PARTITION OF events_2024 (PRIMARY KEY (id, at)) FOR VALUES FROM ('2024-01-01') TO ('2024-07-01');
CREATE TABLE events_2024_h2 PARTITION OF events_2024 (PRIMARY KEY (id, at)) FOR VALUES FROM ('2024-07-01') TO ('2025-01-01');
INSERT INTO events SELECT i, date '2023-01-01' + (i % 700), 'e' || i FROM generate_series(1, 3000) i;
CREATE TABLE plain (id int PRIMARY KEY);
INSERT INTO plain SELECT generate_series(1, 10);`

// oldLeafCountsSQL is leafCountsSQL without pg_partition_tree (12+): the rows of every leaf.
const oldLeafCountsSQL = `SELECT string_agg(format('%s=%s', c.oid::regclass::text,
	(xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM ONLY %s', c.oid::regclass), false, true, '')))[1]::text), ' ' ORDER BY c.oid::regclass::text)
FROM pg_class c WHERE c.relispartition AND c.relkind = 'r'`

// TestOldSourcePartitions follows partition trees from 10 and 11 sources, whose publications
// hold leaves only (as on 12) and which have no pg_partition_tree or pg_partition_root (12+):
// changes and (11) TRUNCATEs of leaves arrive, and a partition created on the source during
// follow stops following with the DDL for the target; once the target has it, the next run
// publishes it and copies it.
func TestOldSourcePartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (skipped with -short)")
	}
	for _, major := range []int{10, 11} {
		t.Run(fmt.Sprint(major), func(t *testing.T) {
			src, dst, _, _ := pgtest.PairVersions(t, "unused", major, 15)
			name := fmt.Sprintf("op%d", major)
			e := copiedEnv(t, src, dst, name, partitionSchema10, ddlStop) // ddl: stop's handling of a new partition
			if got := e.query(src, fmt.Sprintf(`SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'pgshift_%s' AND schemaname = 'public'`, name)); got != "events_2023,events_2024_h1,events_2024_h2,plain,regions_eu,regions_us" {
				t.Fatalf("publication on %d holds %q, want the leaves", major, got)
			}
			var logs lockedBuffer
			a := e.startLogged(RunOptions{MonitorInterval: 200 * time.Millisecond}, &logs)
			e.exec(`INSERT INTO regions VALUES (400, 'eu', 1); DELETE FROM events WHERE id <= 100; UPDATE regions_us SET v = -v WHERE id < 50`)
			if major >= 11 {
				e.exec(`TRUNCATE events_2024_h1; UPDATE regions SET region = 'ca' WHERE id <= 20`)
			}
			e.waitApplied(a)
			e.compare()
			if s, d := e.query(src, oldLeafCountsSQL), e.query(dst, oldLeafCountsSQL); s != d {
				t.Errorf("rows per partition differ:\nsource %s\ntarget %s", s, d)
			}
			e.exec(`CREATE TABLE regions_asia PARTITION OF regions (PRIMARY KEY (id, region)) FOR VALUES IN ('asia');
INSERT INTO regions VALUES (500, 'asia', 1), (401, 'eu', 1)`)
			err := waitStopped(t, a, 60*time.Second)
			var fe *FatalError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), "public.regions_asia") || !strings.Contains(err.Error(), fmt.Sprintf("PostgreSQL %d", major)) ||
				!strings.Contains(err.Error(), `PARTITION OF "public"."regions" FOR VALUES IN ('asia')`) {
				t.Fatalf("agent stopped with %v; want a fatal error naming the new partition, why %d does not publish it, and the DDL\n%s", err, major, logs.String())
			}
			e.exec(`INSERT INTO regions VALUES (501, 'asia', 2)`)
			e.query(dst, `CREATE TABLE "public"."regions_asia" PARTITION OF "public"."regions" (PRIMARY KEY (id, region)) FOR VALUES IN ('asia')`)
			a = e.startLogged(RunOptions{}, &logs)
			e.exec(`INSERT INTO regions VALUES (502, 'asia', 3); UPDATE regions SET v = 9 WHERE id = 500`)
			e.waitApplied(a)
			e.compare()
			if got := e.query(dst, `SELECT string_agg(id || ':' || v, ',' ORDER BY id) FROM regions_asia`); got != "500:9,501:2,502:3" {
				t.Errorf("regions_asia on the target: %s", got)
			}
			if err := a.stop(); err != nil {
				t.Fatalf("follow after the adoption: %v\n%s", err, logs.String())
			}
		})
	}
}

// truncateSchema has what a TRUNCATE can reach: a table alone, two tables tied by a foreign key,
// a partition tree (keys on the leaves, as 10 requires), an inheritance parent with a child, and
// a table a role of its own may truncate (it has no rights on pgshift's schema).
const truncateSchema = `
CREATE TABLE solo (id int PRIMARY KEY, v text);
INSERT INTO solo SELECT g, 's' || g FROM generate_series(1, 50) g;
CREATE TABLE parent_t (id int PRIMARY KEY);
CREATE TABLE child_t (id int PRIMARY KEY, pid int REFERENCES parent_t);
INSERT INTO parent_t SELECT generate_series(1, 20);
INSERT INTO child_t SELECT g, g FROM generate_series(1, 20) g;
CREATE TABLE regions (id int NOT NULL, region text NOT NULL, v int) PARTITION BY LIST (region);
CREATE TABLE regions_eu PARTITION OF regions (PRIMARY KEY (id, region)) FOR VALUES IN ('eu');
CREATE TABLE regions_us PARTITION OF regions (PRIMARY KEY (id, region)) FOR VALUES IN ('us');
INSERT INTO regions SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 100) g;
CREATE TABLE inh_parent (id int PRIMARY KEY, v text);
CREATE TABLE inh_child (extra int) INHERITS (inh_parent);
ALTER TABLE inh_child ADD PRIMARY KEY (id);
INSERT INTO inh_parent SELECT g, 'p' FROM generate_series(1, 10) g;
INSERT INTO inh_child SELECT g, 'c', g FROM generate_series(11, 20) g;
CREATE TABLE app_owned (id int PRIMARY KEY);
INSERT INTO app_owned SELECT generate_series(1, 30);
CREATE ROLE trunc_app LOGIN;
GRANT TRUNCATE, INSERT ON app_owned TO trunc_app;`

// TestOldSourceTruncate: a TRUNCATE on the source empties the same tables on the target, on 11
// (pgoutput sends it) and on 10, whose pgoutput sends no TRUNCATE at all: there pgshift's
// statement-level triggers record each TRUNCATE into a published table of its own, and the
// stream applies it as a TRUNCATE where it happened. Before the capture existed, a 10 source's
// TRUNCATE left every row on the target and the stream said nothing (the check of the rows
// below failed). The triggers stay out of the target's schema and of verify's schema
// comparison; a trigger disabled on the source stops following until it is on again; and
// RemoveTruncateCapture takes them off the source.
func TestOldSourceTruncate(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (skipped with -short)")
	}
	for _, major := range []int{10, 11} {
		t.Run(fmt.Sprint(major), func(t *testing.T) {
			src, dst, _, _ := pgtest.PairVersions(t, "unused", major, 15)
			name := fmt.Sprintf("tr%d", major)
			e := copiedEnv(t, src, dst, name, truncateSchema)
			const triggers = `SELECT count(*) FROM pg_trigger WHERE tgname = 'pgshift_capture_truncate'`
			wantTriggers := "0"
			if major == 10 {
				wantTriggers = "8" // every published table: the leaves, not the partitioned root
			}
			if got := e.query(src, triggers); got != wantTriggers {
				t.Fatalf("%s TRUNCATE capture triggers on the %d source, want %s", got, major, wantTriggers)
			}
			if got := e.query(dst, triggers); got != "0" {
				t.Fatalf("the target got %s of pgshift's TRUNCATE triggers", got)
			}
			a := e.start(RunOptions{MonitorInterval: 200 * time.Millisecond})
			e.exec(`TRUNCATE solo`)
			e.exec(`INSERT INTO solo VALUES (1000, 'after')`)
			e.exec(`BEGIN; INSERT INTO parent_t VALUES (500); TRUNCATE parent_t, child_t; INSERT INTO parent_t VALUES (1), (2); INSERT INTO child_t VALUES (1, 2); COMMIT`)
			e.exec(`TRUNCATE regions; INSERT INTO regions VALUES (1, 'eu', 1)`)
			e.exec(`TRUNCATE inh_parent`)
			e.exec(`INSERT INTO inh_child VALUES (99, 'c', 1)`)
			e.exec(`SET ROLE trunc_app; TRUNCATE app_owned; INSERT INTO app_owned VALUES (7)`)
			e.exec(`BEGIN; TRUNCATE parent_t CASCADE; INSERT INTO parent_t VALUES (3); COMMIT`)
			e.waitApplied(a)
			e.compare()
			for table, want := range map[string]string{"solo": "1", "parent_t": "1", "child_t": "0", "regions": "1", "inh_parent": "1", "app_owned": "1"} {
				if got := e.query(dst, "SELECT count(*) FROM "+table); got != want {
					t.Errorf("target %s has %s rows after the TRUNCATEs, want %s", table, got, want)
				}
			}
			rep, err := Verify(context.Background(), e.cfg, VerifyOptions{Mode: verify.ModeRows, NoSave: true}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			if rep.ExitCode() != 0 {
				var b strings.Builder
				_ = rep.WriteText(&b, 10)
				t.Errorf("verify found differences:\n%s", b.String())
			}
			if major == 10 {
				// A capture trigger disabled on the source stops following, naming the table and
				// the statement that turns it back on; once it is on, following goes on.
				e.exec(`ALTER TABLE solo DISABLE TRIGGER pgshift_capture_truncate`)
				err := waitStopped(t, a, 30*time.Second)
				var fe *FatalError
				if !errors.As(err, &fe) || !strings.Contains(err.Error(), "public.solo") ||
					!strings.Contains(err.Error(), `ALTER TABLE "public"."solo" ENABLE TRIGGER "pgshift_capture_truncate"`) {
					t.Fatalf("agent with a disabled capture trigger stopped with %v; want a fatal error naming the table and the fix", err)
				}
				e.exec(`ALTER TABLE solo ENABLE TRIGGER pgshift_capture_truncate`)
				a = e.start(RunOptions{MonitorInterval: 200 * time.Millisecond})
				e.exec(`TRUNCATE solo; INSERT INTO solo VALUES (2000, 'again')`)
				e.waitApplied(a)
				e.compare()
			}
			if err := a.stop(); err != nil {
				t.Fatal(err)
			}
			sc := sourceConn(t, e)
			if err := state.RemoveTruncateCapture(context.Background(), sc); err != nil {
				t.Fatal(err)
			}
			if got := e.query(src, triggers+` UNION ALL SELECT count(*) FROM (SELECT to_regclass('pgshift.truncates') AS r) l WHERE r IS NOT NULL`); got != "0\n0" {
				t.Errorf("after RemoveTruncateCapture the source still has (triggers, log): %q", got)
			}
		})
	}
}

// TestOldSourceAssess: assess reads a 10 and an 11 source (it refused both before) and names
// their limits: no streaming of large transactions, leaves-only publications, on 10 the
// TRUNCATE capture and what escapes it, and what the 15 target gains.
func TestOldSourceAssess(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (skipped with -short)")
	}
	for _, major := range []int{10, 11} {
		t.Run(fmt.Sprint(major), func(t *testing.T) {
			src, dst, _, _ := pgtest.PairVersions(t, "unused", major, 15)
			e := emptyTargetEnv(t, src, dst, fmt.Sprintf("as%d", major), partitionSchema10)
			var out strings.Builder
			if _, err := Assess(context.Background(), e.cfg, AssessOptions{}, &out, testLogger(t)); err != nil {
				t.Fatalf("assess of a %d source: %v\n%s", major, err, out.String())
			}
			text := out.String()
			if testing.Verbose() {
				t.Log(text)
			}
			want := []string{"cannot stream transactions", "leaf partitions only", "no max_slot_wal_keep_size", "streaming of large transactions in progress", "publications of partitioned tables"}
			if major == 10 {
				want = append(want, "does not replicate TRUNCATE", "pgshift_capture_truncate", "session_replication_role = replica", "TRUNCATE in logical replication")
			}
			for _, w := range want {
				if !strings.Contains(text, w) {
					t.Errorf("assess of a %d source does not say %q:\n%s", major, w, text)
				}
			}
			if major == 11 && strings.Contains(text, "does not replicate TRUNCATE") {
				t.Errorf("assess of an 11 source says TRUNCATE is not replicated:\n%s", text)
			}
		})
	}
}

// objectsSchema10 is a database of the objects a 10 source can hold beyond plain tables: an
// identity column, serial and standalone sequences, enum, domain, composite and range types, a
// view, a materialized view, a function and its trigger, a rule-free view over a join, row-level
// security, comments, grants to a role, an unlogged table and a large object.
const objectsSchema10 = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TYPE pair AS (a int, b text);
CREATE TYPE floatrange AS RANGE (subtype = float8);
CREATE SEQUENCE standalone_seq START 100;
CREATE TABLE things (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, m mood, p posint, c pair, r floatrange, s serial, note text);
INSERT INTO things (m, p, c, r, note) SELECT 'ok', g, ROW(g, 't' || g)::pair, floatrange(g, g + 0.5), 'n' || g FROM generate_series(1, 200) g;
SELECT nextval('standalone_seq');
CREATE TABLE audit (id bigserial PRIMARY KEY, thing int, at timestamptz DEFAULT now());
CREATE FUNCTION log_thing() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO audit (thing) VALUES (NEW.id); RETURN NEW; END $$;
CREATE TRIGGER things_log AFTER INSERT ON things FOR EACH ROW EXECUTE PROCEDURE log_thing();
CREATE VIEW happy_things AS SELECT id, note FROM things WHERE m = 'happy';
CREATE MATERIALIZED VIEW thing_counts AS SELECT m, count(*) FROM things GROUP BY m;
CREATE TABLE secrets (id int PRIMARY KEY, owner_name text, v text);
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON secrets USING (owner_name = current_user);
INSERT INTO secrets VALUES (1, 'x', 'a'), (2, 'y', 'b');
CREATE UNLOGGED TABLE scratch (id int PRIMARY KEY);
INSERT INTO scratch VALUES (1);
COMMENT ON TABLE things IS 'things, with comments';
CREATE ROLE obj_reader;
GRANT SELECT ON things, happy_things TO obj_reader;
SELECT lo_from_bytea(424242, 'large object bytes');`

// TestOldSourceObjects copies and follows a database with the objects of objectsSchema10 from
// 10 and 11 and runs pgshift verify in full (rows, schema with privileges and roles, sequences,
// large objects), which reads every catalog it compares on the old server.
func TestOldSourceObjects(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (skipped with -short)")
	}
	for _, major := range []int{10, 11} {
		t.Run(fmt.Sprint(major), func(t *testing.T) {
			src, dst, _, _ := pgtest.PairVersions(t, "unused", major, 15)
			e := copiedEnv(t, src, dst, fmt.Sprintf("ob%d", major), objectsSchema10)
			a := e.start(RunOptions{})
			e.exec(`INSERT INTO things (m, p, c, r, note) VALUES ('happy', 7, ROW(7, 'x'), floatrange(1, 2), 'new'); UPDATE things SET c = ROW(0, 'z') WHERE id = 3; DELETE FROM secrets WHERE id = 2`)
			e.waitApplied(a)
			e.compare()
			if got := e.query(dst, `SELECT count(*) FROM audit`); got != e.query(src, `SELECT count(*) FROM audit`) {
				t.Errorf("audit rows: target %s (the trigger must not fire on apply; its rows are replicated)", got)
			}
			if got := e.query(dst, `SELECT convert_from(lo_get(424242), 'UTF8')`); got != "large object bytes" {
				t.Errorf("large object on the target: %q", got)
			}
			rep, err := Verify(context.Background(), e.cfg, VerifyOptions{Mode: verify.ModeRows, NoSave: true}, testLogger(t))
			if err != nil {
				t.Fatal(err)
			}
			// Sequences move without row changes and are synced at cutover: while following they
			// may be behind; everything else must be identical.
			if sm := rep.Summary; sm.Differences != int64(sm.SequenceDiffs) || sm.TablesIdentical != sm.TablesCompared || sm.SchemaDiffs != 0 {
				var b strings.Builder
				_ = rep.WriteText(&b, 10)
				t.Errorf("verify from %d found differences:\n%s", major, b.String())
			}
			if err := a.stop(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestTruncateCaptureUnderLoad installs and removes pgshift's TRUNCATE capture on a 10 source
// while transactions write to several of its tables, as copy does on a live source. It took
// every table's trigger lock in one transaction, so a writer holding one table and waiting for
// another deadlocked with it, and the copy failed (the version matrix's 10 → 17 run hit it).
func TestTruncateCaptureUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test (skipped with -short)")
	}
	src, dst, _, _ := pgtest.PairVersions(t, "unused", 10, 15)
	e := emptyTargetEnv(t, src, dst, "capload", workloadSchema)
	w := e.startWriter(2)
	defer func() {
		select {
		case <-w.stop:
		default:
			w.halt()
		}
	}()
	ctx := context.Background()
	sc := sourceConn(t, e)
	ids := []pgtypes.TableID{{Schema: "public", Name: "accounts"}, {Schema: "public", Name: "history"}}
	for round := range 30 {
		if err := state.CaptureTruncates(ctx, sc, ids); err != nil {
			t.Fatalf("round %d: install the capture under load: %v", round, err)
		}
		if err := state.RemoveTruncateCapture(ctx, sc); err != nil {
			t.Fatalf("round %d: remove the capture under load: %v", round, err)
		}
	}
	if n := w.halt(); n < 20 {
		t.Fatalf("only %d source transactions during the test", n)
	}
}
