package app

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/schema"
	"github.com/pgshift/pgshift/internal/state"
)

//go:embed testdata/copy/hard_cases.sql
var copyHardCases string

// TestCopy runs every copy scenario against one pair of clusters, a database pair per subtest.
func TestCopy(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "copy_unused")
	t.Run("HardCasesBitExact", func(t *testing.T) { testCopyHardCases(t, src, dst) })
	t.Run("ConcurrentWrites", func(t *testing.T) { testCopyConcurrentWrites(t, src, dst) })
	t.Run("KillAndResume", func(t *testing.T) { testCopyKillResume(t, src, dst) })
	t.Run("ChunkRetry", func(t *testing.T) { testCopyChunkRetry(t, src, dst) })
	t.Run("BadInput", func(t *testing.T) { testCopyBadInput(t, src, dst) })
}

// cpDB creates database name on both clusters, runs setup on the source and returns the config.
func cpDB(t *testing.T, src, dst *pgtest.Cluster, name, setup string) config.Config {
	t.Helper()
	ctx := context.Background()
	srcDSN, err := src.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	dstDSN, err := dst.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if setup != "" {
		if out, err := src.Psql(ctx, name, setup); err != nil {
			t.Fatalf("source setup: %v\n%s", err, out)
		}
	}
	cfg := config.Defaults()
	cfg.Source, cfg.Target, cfg.Jobs = srcDSN, dstDSN, 3
	return cfg
}

func cpConnect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	c, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// cpTableDigests returns, for every user table that holds rows (plain tables and leaf
// partitions, never pgshift's own), its row count and an md5 of all its rows' text in byte
// order. Written here in plain SQL so the comparison does not trust pgshift's code.
func cpTableDigests(t *testing.T, conn *pgx.Conn) map[string]string {
	t.Helper()
	ctx := context.Background()
	rows, err := conn.Query(ctx, `SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
		  AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, n := range names {
		var count int64
		var digest string
		err := conn.QueryRow(ctx, `SELECT count(*), md5(coalesce(string_agg(t::text, E'\n' ORDER BY t::text COLLATE "C"), ''))
			FROM ONLY `+n+` t`).Scan(&count, &digest)
		if err != nil {
			t.Fatalf("digest %s: %v", n, err)
		}
		out[n] = fmt.Sprintf("%d rows md5 %s", count, digest)
	}
	return out
}

func cpCompareDigests(t *testing.T, src, dst map[string]string, skip ...string) {
	t.Helper()
	skipped := map[string]bool{}
	for _, s := range skip {
		skipped[s] = true
	}
	for name, d := range src {
		if skipped[name] {
			continue
		}
		if dst[name] != d {
			t.Errorf("table %s differs: source %s, target %q", name, d, dst[name])
		}
	}
	for name := range dst {
		if _, ok := src[name]; !ok {
			t.Errorf("table %s on the target is not on the source", name)
		}
	}
}

func cpQuery(t *testing.T, conn *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	var s string
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

func testCopyHardCases(t *testing.T, src, dst *pgtest.Cluster) {
	ctx := context.Background()
	cfg := cpDB(t, src, dst, "hard", copyHardCases)
	sum, err := Copy(ctx, cfg, CopyOptions{ChunkBytes: 512 << 10}, testLogger(t))
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	sc, tc := cpConnect(t, cfg.Source), cpConnect(t, cfg.Target)
	cpCompareDigests(t, cpTableDigests(t, sc), cpTableDigests(t, tc))

	// Partitions: each row is in the same partition on both sides (compared above per leaf),
	// and the root sees them all.
	if got := cpQuery(t, tc, `SELECT count(*)::text FROM events`); got != "3000" {
		t.Errorf("events on the target: %s rows, want 3000", got)
	}
	// Generated columns computed by the target, identity values kept, identity sequence set.
	if got := cpQuery(t, tc, `SELECT string_agg(id || ':' || doubled, ',' ORDER BY id) FROM holes WHERE id < 5`); got != "1:2,2:4,3:6,4:8" {
		t.Errorf("holes on the target: %s", got)
	}
	if got := cpQuery(t, tc, `INSERT INTO holes (keep, total) VALUES ('new', 1) RETURNING id::text`); got != "51" {
		t.Errorf("identity after copy gave id %s, want 51 (sequence not set?)", got)
	}
	// Sequences.
	for _, seq := range []string{"free_seq", "unused_seq", "child_id_seq"} {
		q := `SELECT last_value || '/' || is_called FROM ` + seq
		if s, d := cpQuery(t, sc, q), cpQuery(t, tc, q); s != d {
			t.Errorf("sequence %s: source %s, target %s", seq, s, d)
		}
	}
	// Post-data: every index, constraint and trigger of the source exists on the target.
	objects := `SELECT string_agg(x, ', ' ORDER BY x) FROM (
		SELECT 'index ' || indexname AS x FROM pg_indexes WHERE schemaname NOT IN ('pg_catalog', 'pgshift')
		UNION ALL SELECT 'constraint ' || conname || ' ' || convalidated FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname NOT IN ('pg_catalog', 'pgshift')
		UNION ALL SELECT 'trigger ' || tgname FROM pg_trigger g JOIN pg_class r ON r.oid = g.tgrelid JOIN pg_namespace n ON n.oid = r.relnamespace WHERE NOT tgisinternal AND n.nspname <> 'pgshift') s`
	if s, d := cpQuery(t, sc, objects), cpQuery(t, tc, objects); s != d {
		t.Errorf("post-data objects differ:\nsource %s\ntarget %s", s, d)
	}
	// The trigger did not fire during the copy (compared above) and the materialized view is populated.
	if s, d := cpQuery(t, sc, `SELECT sum(n)::text FROM big_groups`), cpQuery(t, tc, `SELECT sum(n)::text FROM big_groups`); s != d {
		t.Errorf("materialized view: source %s, target %s", s, d)
	}
	// The big table was split into several chunks.
	if got := cpQuery(t, tc, `SELECT count(*)::text FROM pgshift.chunks WHERE table_name = 'big'`); got == "1" || got == "0" {
		t.Errorf("big was copied in %s chunk(s); want it split", got)
	}
	// State for follow: phase copied, every table at the slot's consistent point.
	m, err := state.Load(ctx, tc)
	if err != nil {
		t.Fatal(err)
	}
	if m.Phase != pgtypes.PhaseCopied || m.ConsistentLSN == 0 || m.ConsistentLSN != sum.ConsistentLSN {
		t.Errorf("migration state: %+v, summary LSN %s", m, sum.ConsistentLSN)
	}
	snaps, err := state.TableSnapshots(ctx, tc)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"public.events", "public.events_2024", "public.events_2024_h0", "public.big", `"Odd Schema"."Order"`, "public.scratch"} {
		found := false
		for id, lsn := range snaps {
			if id.String() == want {
				found = true
				if lsn != m.ConsistentLSN {
					t.Errorf("%s snapshot_lsn %s, want %s", want, lsn, m.ConsistentLSN)
				}
			}
		}
		if !found {
			t.Errorf("%s missing from pgshift.tables", want)
		}
	}
	// Source objects: slot and publication. The publication names partition trees by their root
	// and publishes the leaves as themselves (not via the root); unlogged tables are left out.
	if got := cpQuery(t, sc, `SELECT plugin FROM pg_replication_slots WHERE slot_name = 'pgshift_hard'`); got != "pgoutput" {
		t.Errorf("slot plugin %q", got)
	}
	named := cpQuery(t, sc, `SELECT string_agg(pr.prrelid::regclass::text, ',' ORDER BY 1) || ' ' || bool_and(p.pubviaroot)
		FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid WHERE p.pubname = 'pgshift_hard'`)
	if !strings.Contains(named, "events,") || strings.Contains(named, "events_2023") || strings.Contains(named, "scratch") || !strings.HasSuffix(named, " false") {
		t.Errorf("publication names: %s", named)
	}
	published := cpQuery(t, sc, `SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY 1) FROM pg_publication_tables WHERE pubname = 'pgshift_hard'`)
	for _, leaf := range []string{"public.events_2023,", "public.events_2024_h0,", "public.events_2024_h1,", "public.events_other,"} {
		if !strings.Contains(published+",", leaf) {
			t.Errorf("leaf %s not published as itself: %s", strings.TrimSuffix(leaf, ","), published)
		}
	}
	if strings.Contains(published+",", "public.events,") || strings.Contains(published+",", "public.events_2024,") {
		t.Errorf("a partitioned table is published itself: %s", published)
	}
	if got := cpQuery(t, tc, `SELECT relkind::text FROM pg_class WHERE oid = 'public.remote_things'::regclass`); got != "f" {
		t.Errorf("foreign table on the target: relkind %s", got)
	}
	if w := strings.Join(sum.Warnings, "\n"); !strings.Contains(w, "public.scratch: unlogged table") || !strings.Contains(w, "1 large object") ||
		!strings.Contains(w, "public.remote_things: foreign table") {
		t.Errorf("warnings about the unlogged table and the large object missing: %q", sum.Warnings)
	}

	// Running it again does nothing.
	again, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t))
	if err != nil || !again.AlreadyCopied {
		t.Errorf("second copy: %+v, %v", again, err)
	}
}

// slotInserts decodes the slot's pending changes with pglogrepl (not pgshift's own decoder) and
// returns, per relation name, the first column of every inserted row with its transaction's
// commit LSN.
func slotInserts(t *testing.T, conn *pgx.Conn, slot, pub string) map[string][]slotInsert {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT data FROM pg_logical_slot_peek_binary_changes($1, NULL, NULL,
		'proto_version', '1', 'publication_names', $2)`, slot, pub)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	rels := map[uint32]string{}
	var commit pgtypes.LSN
	out := map[string][]slotInsert{}
	for rows.Next() {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			t.Fatal(err)
		}
		msg, err := pglogrepl.Parse(data)
		if err != nil {
			t.Fatalf("decode pgoutput: %v", err)
		}
		switch m := msg.(type) {
		case *pglogrepl.BeginMessage:
			commit = pgtypes.LSN(m.FinalLSN)
		case *pglogrepl.RelationMessage:
			rels[m.RelationID] = m.Namespace + "." + m.RelationName
		case *pglogrepl.InsertMessage:
			out[rels[m.RelationID]] = append(out[rels[m.RelationID]], slotInsert{id: string(m.Tuple.Columns[0].Data), commit: commit})
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

type slotInsert struct {
	id     string
	commit pgtypes.LSN
}

// writer inserts rows into table (id bigint, ...) on the source, one transaction each, until
// stopped; it returns how many it committed.
type writer struct {
	stop  chan struct{}
	wg    sync.WaitGroup
	count atomic.Int64
	err   error
}

func startWriter(t *testing.T, dsn, insert string) *writer {
	t.Helper()
	w := &writer{stop: make(chan struct{})}
	conn := cpConnect(t, dsn)
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			if _, err := conn.Exec(context.Background(), insert); err != nil {
				w.err = err
				return
			}
			w.count.Add(1)
		}
	}()
	return w
}

func (w *writer) halt(t *testing.T) int64 {
	t.Helper()
	close(w.stop)
	w.wg.Wait()
	if w.err != nil {
		t.Fatalf("concurrent writer: %v", w.err)
	}
	return w.count.Load()
}

// idSets reads the ids of a table on both sides.
func idSet(t *testing.T, conn *pgx.Conn, table string) map[string]int {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT id::text FROM `+table)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, id := range ids {
		out[id]++
	}
	return out
}

// checkSnapshotSplit proves, for table (published under pubName as relName), that the target's
// rows plus the slot's inserts committed at or after the table's snapshot_lsn are exactly the
// source's rows, with no row in both: nothing lost, nothing doubled.
func checkSnapshotSplit(t *testing.T, sc, tc *pgx.Conn, slot, pub, table, relName string, snapLSN pgtypes.LSN) {
	t.Helper()
	srcIDs, dstIDs := idSet(t, sc, table), idSet(t, tc, table)
	for id, n := range dstIDs {
		if n > 1 {
			t.Errorf("%s: id %s is %d times on the target", table, id, n)
		}
		if srcIDs[id] == 0 {
			t.Errorf("%s: id %s on the target but not on the source", table, id)
		}
	}
	streamed := map[string]bool{}
	for _, ins := range slotInserts(t, sc, slot, pub)[relName] {
		if ins.commit < snapLSN {
			continue // committed before the table's snapshot: follow skips it, the copy has it
		}
		if dstIDs[ins.id] > 0 {
			t.Errorf("%s: id %s is in the copy AND in the slot after snapshot_lsn %s (commit %s): it would be applied twice", table, ins.id, snapLSN, ins.commit)
		}
		streamed[ins.id] = true
	}
	missing := 0
	for id := range srcIDs {
		if dstIDs[id] == 0 && !streamed[id] {
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("%s: %d source rows are neither in the copy nor in the slot after %s: lost", table, missing, snapLSN)
	}
	t.Logf("%s: %d rows on the source, %d copied, %d streamed after %s", table, len(srcIDs), len(dstIDs), len(streamed), snapLSN)
}

func testCopyConcurrentWrites(t *testing.T, src, dst *pgtest.Cluster) {
	ctx := context.Background()
	cfg := cpDB(t, src, dst, "live", `
		CREATE TABLE feed (id bigserial PRIMARY KEY, v text NOT NULL);
		INSERT INTO feed (v) SELECT repeat('x', 200) FROM generate_series(1, 200000);
		CREATE TABLE quiet (id int PRIMARY KEY);
		INSERT INTO quiet SELECT generate_series(1, 1000);`)
	w := startWriter(t, cfg.Source, `INSERT INTO feed (v) VALUES ('live')`)
	time.Sleep(100 * time.Millisecond)
	sum, err := Copy(ctx, cfg, CopyOptions{ChunkBytes: 4 << 20}, testLogger(t))
	n := w.halt(t)
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	if n == 0 {
		t.Fatal("the writer committed nothing during the copy")
	}
	sc, tc := cpConnect(t, cfg.Source), cpConnect(t, cfg.Target)
	if got := cpQuery(t, tc, `SELECT count(*)::text FROM feed WHERE v = 'live'`); got == "0" {
		t.Log("no concurrent row was inside the snapshot (possible, not an error)")
	}
	checkSnapshotSplit(t, sc, tc, sum.Slot, sum.Publication, "feed", "public.feed", sum.ConsistentLSN)
	// The writer's rows after the snapshot must not be on the target.
	if got := cpQuery(t, tc, `SELECT count(*)::text FROM feed`); got == cpQuery(t, sc, `SELECT count(*)::text FROM feed`) {
		t.Errorf("target has every source row (%s): the writes after the snapshot leaked into the copy", got)
	}
}

// TestCopyChildProcess is not a test: testCopyKillResume runs the test binary with it selected
// and PGSHIFT_COPY_CHILD set, to have a copy in another process it can SIGKILL.
func TestCopyChildProcess(t *testing.T) {
	if os.Getenv("PGSHIFT_COPY_CHILD") == "" {
		t.Skip("helper process for TestCopy/KillAndResume")
	}
	cfg := config.Defaults()
	cfg.Source, cfg.Target, cfg.Jobs = os.Getenv("PGSHIFT_COPY_SOURCE"), os.Getenv("PGSHIFT_COPY_TARGET"), 2
	_, err := Copy(context.Background(), cfg, CopyOptions{ChunkBytes: 1 << 20}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
}

func testCopyKillResume(t *testing.T, src, dst *pgtest.Cluster) {
	ctx := context.Background()
	cfg := cpDB(t, src, dst, "killed", `
		CREATE TABLE feed (id bigserial PRIMARY KEY, v text NOT NULL);
		INSERT INTO feed (v) SELECT repeat(md5(i::text), 8) FROM generate_series(1, 250000) i;
		CREATE TABLE steady (id int PRIMARY KEY, v text);
		INSERT INTO steady SELECT i, md5(i::text) FROM generate_series(1, 20000) i;
		CREATE TABLE parts (id int NOT NULL, v text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
		CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM (0) TO (100000);
		CREATE TABLE parts_b PARTITION OF parts FOR VALUES FROM (100000) TO (1000000);
		INSERT INTO parts SELECT i, repeat('p', 100) FROM generate_series(1, 200000) i;`)
	w := startWriter(t, cfg.Source, `INSERT INTO feed (v) VALUES ('live')`)
	defer func() {
		select {
		case <-w.stop:
		default:
			w.halt(t)
		}
	}()

	// Run the copy in a child process and SIGKILL it mid-data.
	child := exec.Command(os.Args[0], "-test.run=^TestCopyChildProcess$", "-test.count=1")
	child.Env = append(os.Environ(), "PGSHIFT_COPY_CHILD=1", "PGSHIFT_COPY_SOURCE="+cfg.Source, "PGSHIFT_COPY_TARGET="+cfg.Target)
	child.Stdout, child.Stderr = os.Stderr, os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	tc := cpConnect(t, cfg.Target)
	deadline := time.Now().Add(90 * time.Second)
	killed := false
	for time.Now().Before(deadline) {
		// Kill when a table is finished, feed is part-copied, and some work is left.
		var chunks, done, feedDone int
		err := tc.QueryRow(ctx, `SELECT (SELECT count(*) FROM pgshift.chunks WHERE table_name = 'feed'),
			(SELECT count(*) FROM pgshift.tables WHERE state = 'done' AND kind = 'table'),
			(SELECT count(*) FROM pgshift.tables WHERE state = 'done' AND table_name = 'feed')`).Scan(&chunks, &done, &feedDone)
		if err == nil && chunks >= 2 && done >= 1 && feedDone == 0 {
			if err := child.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = child.Wait()
	if !killed {
		t.Fatal("the child copy was not caught mid-data (finished too fast or never started)")
	}
	before, err := state.LoadTables(ctx, tc)
	if err != nil {
		t.Fatal(err)
	}
	// A table keeps its first snapshot only if its whole unit (partition tree) was done.
	unitDone := map[pgtypes.TableID]bool{}
	for _, tp := range before {
		if _, seen := unitDone[tp.Root]; !seen {
			unitDone[tp.Root] = true
		}
		if tp.Kind == state.KindData && tp.State != state.TableDone {
			unitDone[tp.Root] = false
		}
	}
	doneBefore := map[string]bool{}
	for _, tp := range before {
		if unitDone[tp.Root] {
			doneBefore[tp.ID.String()] = true
		}
	}
	t.Logf("killed with tables done: %v", doneBefore)
	if doneBefore["public.feed"] || len(doneBefore) == 0 {
		t.Fatalf("at the kill, finished units were %v; the test needs feed unfinished and some other table finished", doneBefore)
	}

	// Resume (the writer keeps writing).
	sum, err := Copy(ctx, cfg, CopyOptions{ChunkBytes: 1 << 20}, testLogger(t))
	w.halt(t)
	if err != nil {
		t.Fatalf("resumed copy: %v", err)
	}
	if !sum.Resumed || sum.RecopyLSN <= sum.ConsistentLSN {
		t.Errorf("summary: resumed %v, recopy LSN %s, consistent LSN %s", sum.Resumed, sum.RecopyLSN, sum.ConsistentLSN)
	}
	sc := cpConnect(t, cfg.Source)
	// Tables nobody writes to: identical.
	sd, td := cpTableDigests(t, sc), cpTableDigests(t, tc)
	cpCompareDigests(t, sd, td, "public.feed")
	// Snapshot LSNs: tables done before the kill keep the slot's consistent point, the others
	// (and a partition tree as a whole) moved to the new snapshot's.
	snaps, err := state.TableSnapshots(ctx, tc)
	if err != nil {
		t.Fatal(err)
	}
	for id, lsn := range snaps {
		want := sum.RecopyLSN
		if doneBefore[id.String()] {
			want = sum.ConsistentLSN
		}
		if lsn != want {
			t.Errorf("%s snapshot_lsn %s, want %s", id, lsn, want)
		}
	}
	if snaps[pgtypes.TableID{Schema: "public", Name: "parts"}] != snaps[pgtypes.TableID{Schema: "public", Name: "parts_a"}] ||
		snaps[pgtypes.TableID{Schema: "public", Name: "parts_a"}] != snaps[pgtypes.TableID{Schema: "public", Name: "parts_b"}] {
		t.Errorf("partition tree with mixed snapshots: %v", snaps)
	}
	// feed was recopied in the new snapshot: rows committed between the two snapshots are in the
	// copy and must be skipped by follow (commit < snapshot_lsn), later ones are in the slot.
	checkSnapshotSplit(t, sc, tc, sum.Slot, sum.Publication, "feed", "public.feed", snaps[pgtypes.TableID{Schema: "public", Name: "feed"}])
	between := 0
	for _, ins := range slotInserts(t, sc, sum.Slot, sum.Publication)["public.feed"] {
		if ins.commit >= sum.ConsistentLSN && ins.commit < sum.RecopyLSN {
			between++
		}
	}
	if between == 0 {
		t.Error("no write committed between the two snapshots: the test did not exercise the recopy rule")
	}
	if got := cpQuery(t, tc, `SELECT count(*)::text FROM pgshift.migration WHERE phase = 'copied'`); got != "1" {
		t.Errorf("phase not copied after resume")
	}
}

func testCopyBadInput(t *testing.T, src, dst *pgtest.Cluster) {
	ctx := context.Background()
	log := testLogger(t)
	cfg := cpDB(t, src, dst, "bad", `CREATE TABLE a (id int PRIMARY KEY); INSERT INTO a VALUES (1);`)

	t.Run("NoSuchSource", func(t *testing.T) {
		c := cfg
		c.Source = "host=127.0.0.1 port=1 user=postgres dbname=bad password=hunter2secret connect_timeout=2"
		_, err := Copy(ctx, c, CopyOptions{}, log)
		if err == nil || !strings.Contains(err.Error(), "source") || strings.Contains(err.Error(), "hunter2secret") {
			t.Errorf("error %v: want one naming the source, without the password", err)
		}
		c.Source = strings.Replace(cfg.Source, "dbname=bad", "dbname=nosuchdb", 1)
		_, err = Copy(ctx, c, CopyOptions{}, log)
		if err == nil || !strings.Contains(err.Error(), "nosuchdb") || !strings.Contains(err.Error(), "create the database") {
			t.Errorf("error %v: want one naming the missing database and the fix", err)
		}
	})
	t.Run("PgDumpMissing", func(t *testing.T) {
		_, err := Copy(ctx, cfg, CopyOptions{PgDump: "/nonexistent/pg_dump"}, log)
		if !errors.Is(err, schema.ErrPgDumpMissing) || !strings.Contains(err.Error(), "--pg-dump") {
			t.Errorf("error %v: want pg_dump missing with the fix", err)
		}
		old := filepath.Join(t.TempDir(), "pg_dump")
		if err := os.WriteFile(old, []byte("#!/bin/sh\necho 'pg_dump (PostgreSQL) 9.6.24'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err = Copy(ctx, cfg, CopyOptions{PgDump: old}, log)
		if !errors.Is(err, schema.ErrPgDumpTooOld) || !strings.Contains(err.Error(), "9.6") {
			t.Errorf("error %v: want pg_dump too old", err)
		}
		// Nothing was created on either side.
		tc := cpConnect(t, cfg.Target)
		if got := cpQuery(t, tc, `SELECT (to_regclass('pgshift.migration') IS NULL)::text`); got != "true" {
			t.Error("a failed pre-flight left pgshift state on the target")
		}
	})
	t.Run("MissingPrivilege", func(t *testing.T) {
		if _, err := src.Psql(ctx, "bad", `CREATE ROLE weak LOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO weak`); err != nil {
			t.Fatal(err)
		}
		c := cfg
		c.Source = strings.Replace(cfg.Source, "user=postgres", "user=weak", 1)
		_, err := Copy(ctx, c, CopyOptions{}, log)
		if err == nil || !strings.Contains(err.Error(), "REPLICATION") || !strings.Contains(err.Error(), "weak") {
			t.Errorf("error %v: want one naming the role and the REPLICATION grant", err)
		}
	})
	t.Run("NoReplicaIdentity", func(t *testing.T) {
		c := cpDB(t, src, dst, "nokey", `CREATE TABLE "Log Lines" (msg text); CREATE TABLE fine (id int PRIMARY KEY);`)
		_, err := Copy(ctx, c, CopyOptions{}, log)
		if err == nil || !strings.Contains(err.Error(), `"Log Lines"`) || !strings.Contains(err.Error(), "REPLICA IDENTITY FULL") {
			t.Errorf("error %v: want one naming the table and the fix", err)
		}
		c.Exclude = []string{"Log Lines"}
		if _, err := Copy(ctx, c, CopyOptions{}, log); err != nil {
			t.Errorf("copy with the table excluded: %v", err)
		}
		tc := cpConnect(t, c.Target)
		if got := cpQuery(t, tc, `SELECT (to_regclass('public."Log Lines"') IS NULL)::text`); got != "true" {
			t.Error("an excluded table was created on the target")
		}
	})
	t.Run("TargetNotEmpty", func(t *testing.T) {
		if _, err := dst.Psql(ctx, "bad", `CREATE TABLE a (id int PRIMARY KEY, old text); INSERT INTO a VALUES (42, 'stale');`); err != nil {
			t.Fatal(err)
		}
		_, err := Copy(ctx, cfg, CopyOptions{}, log)
		if err == nil || !strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), "public.a") || !strings.Contains(err.Error(), "--force") {
			t.Fatalf("error %v: want target not empty naming the table and --force", err)
		}
		sum, err := Copy(ctx, cfg, CopyOptions{Force: true}, log)
		if err != nil {
			t.Fatalf("copy --force: %v", err)
		}
		tc := cpConnect(t, cfg.Target)
		if got := cpQuery(t, tc, `SELECT string_agg(id::text, ',') FROM a`); got != "1" {
			t.Errorf("after --force the target has ids %s, want 1", got)
		}
		// A second --force starts over again: new slot, new consistent point.
		sum2, err := Copy(ctx, cfg, CopyOptions{Force: true}, log)
		if err != nil || sum2.ConsistentLSN <= sum.ConsistentLSN {
			t.Errorf("second --force: %v, LSN %s then %s", err, sum.ConsistentLSN, sum2.ConsistentLSN)
		}
		// A target holding another source's migration is refused.
		if _, err := tc.Exec(ctx, `UPDATE pgshift.migration SET source_system_id = '1'`); err != nil {
			t.Fatal(err)
		}
		_, err = Copy(ctx, cfg, CopyOptions{}, log)
		if err == nil || !strings.Contains(err.Error(), "another source") {
			t.Errorf("error %v: want another source refused", err)
		}
	})
}

// testCopyChunkRetry kills a copy session on the target mid-chunk: the chunk is rolled back and
// redone alone in the same snapshot, and the result is still exact.
func testCopyChunkRetry(t *testing.T, src, dst *pgtest.Cluster) {
	ctx := context.Background()
	cfg := cpDB(t, src, dst, "retry", `
		CREATE TABLE wide (id int PRIMARY KEY, v text);
		INSERT INTO wide SELECT i, repeat(md5(i::text), 10) FROM generate_series(1, 150000) i;`)
	cfg.Jobs = 2
	tc := cpConnect(t, cfg.Target)
	done := make(chan struct{})
	var killed atomic.Int32
	go func() {
		defer close(done)
		for i := 0; i < 4000 && killed.Load() == 0; i++ {
			var n int
			// Terminate a data session only once a chunk has committed, so the kill lands mid-copy.
			err := tc.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid))::int FROM pg_stat_activity
				WHERE datname = 'retry' AND query LIKE 'COPY %FROM STDIN%' AND state = 'active'
				  AND to_regclass('pgshift.chunks') IS NOT NULL AND pid <> pg_backend_pid()
				  AND EXISTS (SELECT 1 FROM pgshift.chunks)`).Scan(&n)
			if err == nil && n > 0 {
				killed.Add(int32(n))
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	_, err := Copy(ctx, cfg, CopyOptions{ChunkBytes: 1 << 20}, testLogger(t))
	<-done
	if err != nil {
		t.Fatalf("copy with a killed session: %v", err)
	}
	if killed.Load() == 0 {
		t.Skip("no copy session was caught to terminate (copy too fast on this machine)")
	}
	sc := cpConnect(t, cfg.Source)
	cpCompareDigests(t, cpTableDigests(t, sc), cpTableDigests(t, tc))
	if got := cpQuery(t, tc, `SELECT (sum(rows_copied) = 150000 AND count(*) = count(DISTINCT chunk_no))::text FROM pgshift.chunks`); got != "true" {
		t.Errorf("chunk records do not add up to the table: %s", got)
	}
}

func TestCopyDemoStep(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL (skipped with -short)")
	}
	var out strings.Builder
	steps := []DemoStep{{"start", startClusters}, {"sample", createSample}, CopyDemoStep(),
		{"check", func(ctx context.Context, d *Demo) error {
			sc, tc := cpConnect(t, d.SourceDSN), cpConnect(t, d.TargetDSN)
			cpCompareDigests(t, cpTableDigests(t, sc), cpTableDigests(t, tc))
			return nil
		}}}
	if err := RunDemo(context.Background(), DemoOptions{Scale: 0.02, Out: &out, Logger: testLogger(t)}, steps); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	if testing.Verbose() {
		t.Log(out.String())
	}
	if s := out.String(); !strings.Contains(s, "    copied 7 tables") || !strings.Contains(s, "MiB/s during the data phase") {
		t.Errorf("demo output:\n%s", s)
	}
}
