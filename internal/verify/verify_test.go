package verify

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// typesSchema has a column of every type family, a keyless table, a text-keyed table big
// enough to need bisection, a composite key, and a sequence. Run on both sides, it gives
// identical databases; the tests then change the target directly.
const typesSchema = `
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE types (
  id int PRIMARY KEY,
  i bigint, n numeric(20,6), f float8, r real, t text, v varchar(40), pad text, b bytea, j jsonb,
  ok bool, d date, ts timestamp, tz timestamptz, iv interval, u uuid, arr int[], m mood, ip inet,
  gen bigint GENERATED ALWAYS AS (i * 2) STORED
);
INSERT INTO types (id, i, n, f, r, t, v, pad, b, j, ok, d, ts, tz, iv, u, arr, m, ip)
SELECT g, g * 1000, g / 7.0, g / 3.0, g / 9.0, 'text ' || g, 'v' || g, 'p' || g, decode(md5(g::text), 'hex'),
       jsonb_build_object('k', g, 'a', jsonb_build_array(g, 'x')), g % 2 = 0, date '2020-01-01' + g,
       timestamp '2024-01-01 10:00:00.123456' + g * interval '1 minute 0.000333 s',
       timestamptz '2024-01-01 10:00:00.654321+00' + g * interval '1 hour 0.000777 s', g * interval '1 day 3 s',
       md5(g::text)::uuid, ARRAY[g, NULL, g + 1], (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood, '10.0.0.1'::inet + g
FROM generate_series(1, 3000) g;
UPDATE types SET t = '' WHERE id = 6;
UPDATE types SET pad = 'ab   ' WHERE id = 8;
UPDATE types SET t = 'café crème' WHERE id = 9;
UPDATE types SET n = 12.345678 WHERE id = 3;

CREATE TABLE events (kind text, payload text, at timestamptz);
INSERT INTO events SELECT 'k' || (g % 5), 'same', timestamptz '2024-01-01' FROM generate_series(1, 40) g;
INSERT INTO events SELECT 'k', 'p' || g, timestamptz '2024-01-01' + g * interval '1 s' FROM generate_series(1, 2000) g;

CREATE TABLE words (w text PRIMARY KEY, n int);
INSERT INTO words SELECT CASE g % 3 WHEN 0 THEN 'Word' WHEN 1 THEN 'word' ELSE 'WORD' END || lpad(g::text, 6, '0'), g
FROM generate_series(1, 20000) g;
INSERT INTO words VALUES ('abc', 1);

CREATE TABLE pairs (a text, b int, c text, PRIMARY KEY (a, b));
INSERT INTO pairs SELECT 'k' || (g % 50), g, 'c' FROM generate_series(1, 5000) g;

CREATE TABLE parts (id int, region text, v int, PRIMARY KEY (id, region)) PARTITION BY LIST (region);
CREATE TABLE parts_eu PARTITION OF parts FOR VALUES IN ('eu');
CREATE TABLE parts_us PARTITION OF parts FOR VALUES IN ('us');
INSERT INTO parts SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g FROM generate_series(1, 1000) g;

CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Order" ("select" int PRIMARY KEY, "Value" text, dropped int, "from" date);
ALTER TABLE "My Schema"."Order" DROP COLUMN dropped;
INSERT INTO "My Schema"."Order" SELECT g, 'v' || g, date '2024-01-01' + g FROM generate_series(1, 100) g;

CREATE TABLE orders (id serial PRIMARY KEY, note text);
INSERT INTO orders (note) SELECT 'o' FROM generate_series(1, 10) g;
ANALYZE;`

// injectSQL changes the target: one difference of each kind, each on its own row.
const injectSQL = `
DELETE FROM types WHERE id = 1;
INSERT INTO types (id, i, t) VALUES (100001, 1, 'extra');
UPDATE types SET i = i + 1 WHERE id = 2;
UPDATE types SET n = round(n, 2) WHERE id = 3;
UPDATE types SET f = f::real::float8 WHERE id = 4;
UPDATE types SET t = 'changed' WHERE id = 5;
UPDATE types SET t = NULL WHERE id = 6;
UPDATE types SET ts = date_trunc('milliseconds', ts), tz = date_trunc('milliseconds', tz) WHERE id = 7;
UPDATE types SET pad = rtrim(pad) WHERE id = 8;
UPDATE types SET t = convert_from(convert_to(t, 'UTF8'), 'LATIN1') WHERE id = 9;
UPDATE types SET b = '\x00ff'::bytea WHERE id = 10;
UPDATE types SET j = '{"k": 2}' WHERE id = 11;
UPDATE types SET ok = NOT ok WHERE id = 12;
UPDATE types SET d = d + 1 WHERE id = 13;
UPDATE types SET arr = ARRAY[1, 2] WHERE id = 14;
UPDATE types SET u = '00000000-0000-0000-0000-000000000000' WHERE id = 15;
UPDATE types SET iv = iv + interval '1 s' WHERE id = 16;
UPDATE types SET m = 'happy' WHERE id = 17 AND m <> 'happy';
UPDATE types SET m = 'sad' WHERE id = 17 AND m = 'happy';
UPDATE types SET t = repeat('long ', 2000) WHERE id = 18;
UPDATE parts SET v = -v WHERE id = 4;
UPDATE "My Schema"."Order" SET "from" = 'infinity' WHERE "select" = 5;
INSERT INTO events SELECT * FROM events WHERE payload = 'p7';
DELETE FROM events WHERE payload = 'p8';
INSERT INTO events VALUES ('new', 'extra', now());
DELETE FROM words WHERE w = 'abc';
INSERT INTO words VALUES ('ABC', 1);
UPDATE words SET n = -1 WHERE w IN ('Word000003', 'word019999');
DELETE FROM words WHERE w = 'WORD010001';
UPDATE pairs SET c = 'd' WHERE a = 'k7' AND b = 7;
DELETE FROM pairs WHERE a = 'k8' AND b = 8;
SELECT setval('orders_id_seq', 3);`

type expectation struct {
	table, key string
	kind       Kind
	class      string
}

var expected = []expectation{
	{"public.types", "id=1", KindMissing, ClassMissingRow},
	{"public.types", "id=100001", KindExtra, ClassExtraRow},
	{"public.types", "id=2", KindDifferent, ClassValue},
	{"public.types", "id=3", KindDifferent, ClassNumeric},
	{"public.types", "id=4", KindDifferent, ClassFloat},
	{"public.types", "id=5", KindDifferent, ClassValue},
	{"public.types", "id=6", KindDifferent, ClassNullEmpty},
	{"public.types", "id=7", KindDifferent, ClassTimestamp},
	{"public.types", "id=8", KindDifferent, ClassCharPadding},
	{"public.types", "id=9", KindDifferent, ClassEncoding},
	{"public.types", "id=10", KindDifferent, ClassValue},
	{"public.types", "id=11", KindDifferent, ClassValue},
	{"public.types", "id=12", KindDifferent, ClassValue},
	{"public.types", "id=13", KindDifferent, ClassValue},
	{"public.types", "id=14", KindDifferent, ClassValue},
	{"public.types", "id=15", KindDifferent, ClassValue},
	{"public.types", "id=16", KindDifferent, ClassValue},
	{"public.types", "id=17", KindDifferent, ClassValue},
	{"public.types", "id=18", KindDifferent, ClassValue},
	{"public.parts_eu", "(id, region)=(4, eu)", KindDifferent, ClassValue},
	{`"My Schema"."Order"`, "select=5", KindDifferent, ClassValue},
	{"public.events", "(k, p7, 2024-01-01 00:00:07+00)", KindDuplicate, ClassDuplicateRow},
	{"public.events", "(k, p8, 2024-01-01 00:00:08+00)", KindMissing, ClassMissingRow},
	{"public.words", "w=abc", KindMissing, ClassCollation},
	{"public.words", "w=ABC", KindExtra, ClassCollation},
	{"public.words", "w=Word000003", KindDifferent, ClassValue},
	{"public.words", "w=word019999", KindDifferent, ClassValue},
	{"public.words", "w=WORD010001", KindMissing, ClassMissingRow},
	{"public.pairs", "(a, b)=(k7, 7)", KindDifferent, ClassValue},
	{"public.pairs", "(a, b)=(k8, 8)", KindMissing, ClassMissingRow},
}

type pairEnv struct {
	t        *testing.T
	src, dst *pgtest.Cluster
	name     string
	srcSide  Side
	dstSide  Side
}

func newPairEnv(t *testing.T, src, dst *pgtest.Cluster, name, schema string) *pairEnv {
	t.Helper()
	ctx := context.Background()
	e := &pairEnv{t: t, src: src, dst: dst, name: name}
	for i, c := range []*pgtest.Cluster{src, dst} {
		dsn, err := c.CreateDB(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := c.Psql(ctx, name, schema); err != nil {
			t.Fatalf("schema: %v %s", err, out)
		}
		role := db.Source
		if i == 1 {
			role = db.Target
		}
		ep := db.Endpoint{Role: role, DSN: dsn}
		pool, err := ep.Pool(ctx, 8)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		if i == 0 {
			e.srcSide = Side{Endpoint: ep, Pool: pool}
		} else {
			e.dstSide = Side{Endpoint: ep, Pool: pool}
		}
	}
	return e
}

func (e *pairEnv) target(sql string) {
	e.t.Helper()
	if out, err := e.dst.Psql(context.Background(), e.name, sql); err != nil {
		e.t.Fatalf("target SQL: %v %s", err, out)
	}
}

func testLog() *slog.Logger {
	if os.Getenv("PGSHIFT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (e *pairEnv) run(opts Options) *Report {
	e.t.Helper()
	if opts.Jobs == 0 {
		opts.Jobs = 3
	}
	rep, err := Run(context.Background(), e.srcSide, e.dstSide, opts, testLog())
	if err != nil {
		e.t.Fatalf("verify: %v", err)
	}
	return rep
}

// smallChunks makes even these small tables go through chunking and several bisection levels.
var smallChunks = Options{ChunkRows: 1000, LeafRows: 50, Schema: true, Sequences: true}

// digests fingerprints every user table on one side with SQL of its own: count and the md5 of
// all row texts in byte order (duplicates included).
func digests(t *testing.T, c *pgtest.Cluster, dbname string) map[string]string {
	t.Helper()
	ctx := context.Background()
	list, err := c.Psql(ctx, dbname, `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pgshift') ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tbl := range strings.Split(list, "\n") {
		d, err := c.Psql(ctx, dbname, fmt.Sprintf(`SET TimeZone = 'UTC'; SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\n' ORDER BY t::text COLLATE "C")), '-') FROM %s t`, tbl))
		if err != nil {
			t.Fatal(err)
		}
		out[tbl] = d
	}
	return out
}

func findRow(rep *Report, table, key string) (RowDiff, bool) {
	for _, t := range rep.Tables {
		if t.Name != table {
			continue
		}
		for _, r := range t.Rows {
			if r.Key == key {
				return r, true
			}
		}
	}
	return RowDiff{}, false
}

func TestVerify(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")

	t.Run("IdenticalDatabasesExitZero", func(t *testing.T) {
		e := newPairEnv(t, src, dst, "same", typesSchema)
		for _, mode := range []Mode{ModeCount, ModeChecksum, ModeRows} {
			opts := smallChunks
			opts.Mode = mode
			rep := e.run(opts)
			if rep.ExitCode() != 0 || !rep.Summary.Identical {
				var b strings.Builder
				_ = rep.WriteText(&b, 10)
				t.Fatalf("%s mode: identical databases reported different:\n%s", mode, b.String())
			}
			if rep.Summary.TablesCompared != 8 || rep.Summary.SourceRows != 3000+2040+20001+5000+1000+100+10 {
				t.Errorf("%s mode: compared %d tables, %d rows", mode, rep.Summary.TablesCompared, rep.Summary.SourceRows)
			}
			if rep.Schema == nil || rep.Schema.Compared < 40 || len(rep.Schema.Diffs) != 0 {
				t.Errorf("%s mode: schema result %+v", mode, rep.Schema)
			}
		}
	})

	t.Run("InjectedDifferencesFoundNamedAndRepaired", func(t *testing.T) {
		e := newPairEnv(t, src, dst, "diff", typesSchema)
		e.target(injectSQL)
		for _, mode := range []Mode{ModeChecksum, ModeRows} {
			opts := smallChunks
			opts.Mode = mode
			rep := e.run(opts)
			if rep.ExitCode() != 1 {
				t.Fatalf("%s mode: exit code %d, want 1", mode, rep.ExitCode())
			}
			var b strings.Builder
			_ = rep.WriteText(&b, 100)
			for _, x := range expected {
				r, ok := findRow(rep, x.table, x.key)
				if !ok {
					t.Errorf("%s mode: %s %s not reported\n%s", mode, x.table, x.key, b.String())
					continue
				}
				if r.Kind != x.kind || r.Class != x.class {
					t.Errorf("%s mode: %s %s: got %s [%s], want %s [%s] %+v", mode, x.table, x.key, r.Kind, r.Class, x.kind, x.class, r.Cols)
				}
			}
			// Exactly the injected rows, nothing else (events: one duplicate, one missing, one extra).
			if got, want := rep.Summary.RowDifferences, int64(len(expected)+1); got != want {
				t.Errorf("%s mode: %d row differences, want %d\n%s", mode, got, want, b.String())
			}
			if rep.Sequences == nil || len(rep.Sequences.Diffs) != 1 || rep.Sequences.Diffs[0].Name != "public.orders_id_seq" ||
				rep.Sequences.Diffs[0].Behind != 7 || rep.Classes[ClassSequence] != 1 {
				t.Errorf("%s mode: sequence drift not found: %+v", mode, rep.Sequences)
			}
			// Differing columns carry both values; the timestamp row names both columns.
			if r, _ := findRow(rep, "public.types", "id=7"); len(r.Cols) != 2 || r.Cols[0].Column != "ts" ||
				*r.Cols[0].Source != "2024-01-01 10:07:00.125787" || *r.Cols[0].Target != "2024-01-01 10:07:00.125" {
				t.Errorf("%s mode: timestamp columns: %+v", mode, r.Cols)
			}
			if r, _ := findRow(rep, "public.types", "id=18"); len(r.Cols) != 1 || !strings.HasSuffix(*r.Cols[0].Target, "…(10000 bytes)") ||
				len(*r.Cols[0].Target) > 250 {
				t.Errorf("%s mode: long value not truncated: %+v", mode, r.Cols)
			}
			if r, _ := findRow(rep, "public.types", "id=6"); len(r.Cols) != 1 || r.Cols[0].Source == nil || *r.Cols[0].Source != "" || r.Cols[0].Target != nil {
				t.Errorf("%s mode: NULL vs empty columns: %+v", mode, r.Cols)
			}
			if mode == ModeChecksum {
				if tr := tableResult(rep, "public.words"); tr.Chunks < 10 || tr.ChunksDiff == 0 || tr.ChunksDiff >= tr.Chunks {
					t.Errorf("words: %d chunks, %d differing: bisection did not narrow", tr.Chunks, tr.ChunksDiff)
				}
				if _, err := json.Marshal(rep); err != nil {
					t.Fatal(err)
				}
			}
		}

		count := smallChunks
		count.Mode = ModeCount
		rep := e.run(count)
		if rep.ExitCode() != 1 || tableResult(rep, "public.events").TargetRows != 2041 || tableResult(rep, "public.words").TargetRows != 20000 {
			t.Errorf("count mode: exit %d, %+v", rep.ExitCode(), rep.Tables)
		}

		repair := smallChunks
		repair.Repair = true
		rep = e.run(repair)
		for _, r := range rep.Repair {
			if r.Error != "" || r.Remaining != 0 {
				t.Errorf("repair %s: %+v", r.Table, r)
			}
		}
		if len(rep.Repair) != 6 || rep.ExitCode() != 0 || !rep.Sequences.Diffs[0].Repaired {
			t.Errorf("repair: %d tables, exit %d, sequences %+v", len(rep.Repair), rep.ExitCode(), rep.Sequences)
		}
		// Independent proof: every table's fingerprint is now the same on both sides.
		sd, dd := digests(t, src, "diff"), digests(t, dst, "diff")
		for tbl, d := range sd {
			if dd[tbl] != d {
				t.Errorf("after repair %s: source %s, target %s", tbl, d, dd[tbl])
			}
		}
		if got, _ := dst.Psql(context.Background(), "diff", `SELECT last_value FROM orders_id_seq`); got != "10" {
			t.Errorf("orders_id_seq on target after repair: %s, want 10", got)
		}
		rep = e.run(smallChunks)
		if rep.ExitCode() != 0 {
			var b strings.Builder
			_ = rep.WriteText(&b, 10)
			t.Errorf("after repair: exit %d\n%s", rep.ExitCode(), b.String())
		}
	})

	t.Run("SchemaDifferences", func(t *testing.T) {
		e := newPairEnv(t, src, dst, "schema", typesSchema+`
CREATE INDEX words_n ON words (n);
CREATE FUNCTION f(x int) RETURNS int LANGUAGE sql AS 'SELECT x + 1';
CREATE VIEW big_words AS SELECT w FROM words WHERE n > 100;
CREATE TABLE stamps (id int PRIMARY KEY, at timestamp, name text COLLATE "C");`)
		e.target(`DROP INDEX words_n;
CREATE OR REPLACE FUNCTION f(x int) RETURNS int LANGUAGE sql AS 'SELECT x + 2';
CREATE OR REPLACE VIEW big_words AS SELECT w FROM words WHERE n > 200;
ALTER TABLE stamps ALTER COLUMN at TYPE timestamp(3), ALTER COLUMN name TYPE text COLLATE "POSIX";
CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
CREATE TRIGGER t BEFORE INSERT ON words FOR EACH ROW EXECUTE FUNCTION trg();
ALTER TABLE orders ADD CONSTRAINT note_check CHECK (note <> '');`)
		rep := e.run(Options{Schema: true, Sequences: true})
		want := map[string]string{ // kind name → issue/class
			"index public.words_n":                "missing on target/" + ClassSchema,
			"function public.f(x integer)":        "different/" + ClassSchema,
			"view public.big_words":               "different/" + ClassSchema,
			"column public.stamps.at":             "different/" + ClassTimestamp,
			"column public.stamps.name":           "different/" + ClassCollation,
			"trigger public.words.t":              "extra on target/" + ClassSchema,
			"function public.trg()":               "extra on target/" + ClassSchema,
			"constraint public.orders.note_check": "extra on target/" + ClassSchema,
		}
		got := map[string]string{}
		for _, d := range rep.Schema.Diffs {
			got[d.Kind+" "+d.Name] = d.Issue + "/" + d.Class
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("schema diff %s: got %q, want %q", k, got[k], w)
			}
		}
		if len(got) != len(want) {
			t.Errorf("schema diffs: got %v, want %v", got, want)
		}
		if rep.ExitCode() != 1 || rep.Summary.RowDifferences != 0 {
			t.Errorf("exit %d, row differences %d", rep.ExitCode(), rep.Summary.RowDifferences)
		}
	})

	t.Run("LiveRecheckConfirmsUnstableAndLagging", func(t *testing.T) {
		e := newPairEnv(t, src, dst, "live", `CREATE TABLE hot (id int PRIMARY KEY, v int);
INSERT INTO hot SELECT g, 0 FROM generate_series(1, 100) g;`)
		e.target(`UPDATE hot SET v = -1 WHERE id IN (1, 2)`)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		writer := make(chan struct{})
		go func() { // row 1 keeps changing on the source
			defer close(writer)
			for ctx.Err() == nil {
				_, _ = e.srcSide.Pool.Exec(ctx, `UPDATE hot SET v = v + 1 WHERE id = 1`)
				time.Sleep(2 * time.Millisecond)
			}
		}()
		defer func() { cancel(); <-writer }()
		// A follower that is always caught up, and takes a while to say so: every round spans
		// many writes to row 1, while row 2 stays put and keeps differing.
		caughtUp := func(ctx context.Context) (pgtypes.LSN, error) {
			time.Sleep(50 * time.Millisecond)
			return pgtypes.LSN(1 << 62), nil
		}
		rep := e.run(Options{Applied: caughtUp, Following: true, RecheckRounds: 3, RecheckTimeout: 30 * time.Second})
		hot, _ := findRow(rep, "public.hot", "id=1")
		static, _ := findRow(rep, "public.hot", "id=2")
		if hot.Kind != KindUnstable || hot.Class != ClassUnstable || static.Kind != KindDifferent ||
			rep.Live.Rounds != 3 || rep.Live.Confirmed != 1 || rep.Live.Unstable != 1 || rep.ExitCode() != 1 || rep.Summary.RowsUnstable != 1 {
			t.Errorf("re-check: hot %+v, static %+v, live %+v, exit %d", hot, static, rep.Live, rep.ExitCode())
		}
		// A follower that never catches up: nothing can be confirmed, and verify says it is incomplete.
		stuck := func(context.Context) (pgtypes.LSN, error) { return 0, nil }
		rep = e.run(Options{Applied: stuck, Following: true, RecheckTimeout: time.Second})
		if !rep.Live.Lagging || rep.Summary.RowsUnconfirmed != 2 || rep.Summary.RowDifferences != 0 || rep.ExitCode() != 2 {
			t.Errorf("lagging follower: live %+v, summary %+v, exit %d", rep.Live, rep.Summary, rep.ExitCode())
		}
	})

	t.Run("MissingTableCannotBeCompared", func(t *testing.T) {
		e := newPairEnv(t, src, dst, "missing", `CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY);`)
		e.target(`DROP TABLE b`)
		rep := e.run(Options{Schema: true})
		if tr := tableResult(rep, "public.b"); !strings.Contains(tr.Error, "does not exist on the target") {
			t.Errorf("missing table: %+v", tr)
		}
		if rep.ExitCode() != 1 { // the schema difference
			t.Errorf("exit %d", rep.ExitCode())
		}
		rep = e.run(Options{})
		if rep.ExitCode() != 2 {
			t.Errorf("without the schema diff, a table that cannot be compared must exit 2, got %d", rep.ExitCode())
		}
	})
}

func tableResult(rep *Report, name string) TableResult {
	for _, t := range rep.Tables {
		if t.Name == name {
			return t
		}
	}
	return TableResult{}
}
