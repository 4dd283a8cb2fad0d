package verify

import (
	"context"
	"math"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// hardSchema holds what users' databases have and verify got wrong: a composite-type key,
// text keys in ICU and nondeterministic collations with case variants, a table without
// columns, a primary key with NULLs in an INCLUDE column, numeric NaN and ±Infinity, -0.0
// floats, ±infinity timestamps as values and keys, and reg* values.
const hardSchema = `
CREATE TYPE pair AS (a int, b text);
CREATE TABLE comp_key (k pair PRIMARY KEY, v int);
INSERT INTO comp_key SELECT ROW(g % 50, CASE g % 3 WHEN 0 THEN 'x' WHEN 1 THEN 'X' ELSE 'é' END || g)::pair, g FROM generate_series(1, 3000) g;

CREATE TABLE words_icu (w text COLLATE "und-x-icu" PRIMARY KEY, n int);
INSERT INTO words_icu SELECT CASE g % 3 WHEN 0 THEN 'Word' WHEN 1 THEN 'word' ELSE 'WORD' END || lpad(g::text, 6, '0'), g
FROM generate_series(1, 5000) g;
INSERT INTO words_icu VALUES ('a', 1), ('A', 2), ('b', 3), ('B', 4), ('ä', 5), ('Ä', 6);

CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE words_ci (w text COLLATE nocase PRIMARY KEY, n int);
INSERT INTO words_ci SELECT 'Key' || g, g FROM generate_series(1, 3000) g;
INSERT INTO words_ci VALUES ('abc', 1);

CREATE TABLE nocols ();
INSERT INTO nocols SELECT FROM generate_series(1, 5);

CREATE TABLE inc (id int, note text, v text, PRIMARY KEY (id) INCLUDE (note));
INSERT INTO inc SELECT g, CASE WHEN g % 2 = 0 THEN NULL ELSE 'n' END, 'v' || g FROM generate_series(1, 3000) g;

CREATE TABLE nums (id int PRIMARY KEY, n numeric, f float8, r real, ts timestamp, tz timestamptz, d date);
INSERT INTO nums VALUES
  (1, 'NaN', '-0', '-0', 'infinity', 'infinity', 'infinity'),
  (2, 'Infinity', 0, 0, '-infinity', '-infinity', '-infinity'),
  (3, '-Infinity', 'NaN', 'NaN', '2024-01-01', '2024-01-01', '2024-01-01'),
  (4, 1.50, 'Infinity', '-Infinity', NULL, NULL, NULL);

CREATE TABLE num_key (n numeric PRIMARY KEY, v int);
INSERT INTO num_key VALUES ('NaN', 1), ('Infinity', 2), ('-Infinity', 3), (1.5, 4), (-0.0, 5);
CREATE TABLE float_key (f float8 PRIMARY KEY, v int);
INSERT INTO float_key VALUES ('NaN', 1), ('Infinity', 2), ('-Infinity', 3), ('-0', 4), (1e-300, 5);
CREATE TABLE ts_key (t timestamptz PRIMARY KEY, v int);
INSERT INTO ts_key VALUES ('infinity', 1), ('-infinity', 2), ('2024-01-01', 3);

CREATE SCHEMA app;
CREATE TABLE app.thing (id int PRIMARY KEY);
CREATE TYPE app.kind AS ENUM ('a', 'b');
CREATE TABLE regs (id int PRIMARY KEY, c regclass, ty regtype, k app.kind, ka app.kind[]);
INSERT INTO regs VALUES (1, 'app.thing', 'app.kind', 'a', '{a,b}'), (2, 'pg_class', 'int4', 'b', '{}');
CREATE TABLE kind_key (k app.kind PRIMARY KEY);
INSERT INTO kind_key VALUES ('a'), ('b');
ANALYZE;`

// hardMutations each change the target in one way; verify must report each (exit 1), in the
// table named, and be identical again after the undo.
var hardMutations = []struct {
	table, change, undo string
}{
	{"public.comp_key", `UPDATE comp_key SET v = -v WHERE k = ROW(1, 'X1')::pair`, `UPDATE comp_key SET v = -v WHERE k = ROW(1, 'X1')::pair`},
	{"public.comp_key", `DELETE FROM comp_key WHERE k = ROW(2, 'é2')::pair`, `INSERT INTO comp_key VALUES (ROW(2, 'é2')::pair, 2)`},
	{"public.words_icu", `UPDATE words_icu SET w = 'WORD000003' WHERE w = 'Word000003'`, `UPDATE words_icu SET w = 'Word000003' WHERE w = 'WORD000003'`},
	{"public.words_icu", `UPDATE words_icu SET n = -n WHERE w = 'Ä'`, `UPDATE words_icu SET n = -n WHERE w = 'Ä'`},
	{"public.words_ci", `UPDATE words_ci SET w = 'ABC' WHERE w = 'abc'`, `UPDATE words_ci SET w = 'abc' WHERE w = 'ABC'`},
	{"public.nocols", `INSERT INTO nocols DEFAULT VALUES`, `DELETE FROM nocols WHERE ctid = (SELECT max(ctid) FROM nocols)`},
	{"public.inc", `UPDATE inc SET note = 'x' WHERE id = 2`, `UPDATE inc SET note = NULL WHERE id = 2`},
	{"public.inc", `UPDATE inc SET v = NULL WHERE id = 4`, `UPDATE inc SET v = 'v4' WHERE id = 4`},
	{"public.nums", `UPDATE nums SET n = 'Infinity' WHERE id = 1`, `UPDATE nums SET n = 'NaN' WHERE id = 1`},
	{"public.nums", `UPDATE nums SET n = 'Infinity' WHERE id = 3`, `UPDATE nums SET n = '-Infinity' WHERE id = 3`},
	{"public.nums", `UPDATE nums SET f = 0 WHERE id = 1`, `UPDATE nums SET f = '-0' WHERE id = 1`},
	{"public.nums", `UPDATE nums SET r = 0 WHERE id = 1`, `UPDATE nums SET r = '-0' WHERE id = 1`},
	{"public.nums", `UPDATE nums SET ts = '-infinity' WHERE id = 1`, `UPDATE nums SET ts = 'infinity' WHERE id = 1`},
	{"public.nums", `UPDATE nums SET tz = 'infinity' WHERE id = 2`, `UPDATE nums SET tz = '-infinity' WHERE id = 2`},
	{"public.nums", `UPDATE nums SET d = 'infinity' WHERE id = 2`, `UPDATE nums SET d = '-infinity' WHERE id = 2`},
	{"public.nums", `UPDATE nums SET n = 1.5 WHERE id = 4`, `UPDATE nums SET n = 1.50 WHERE id = 4`},
	{"public.num_key", `DELETE FROM num_key WHERE n = 'NaN'`, `INSERT INTO num_key VALUES ('NaN', 1)`},
	{"public.num_key", `UPDATE num_key SET v = 0 WHERE n = '-Infinity'`, `UPDATE num_key SET v = 3 WHERE n = '-Infinity'`},
	{"public.float_key", `UPDATE float_key SET f = 0 WHERE v = 4`, `UPDATE float_key SET f = '-0' WHERE v = 4`},
	{"public.float_key", `DELETE FROM float_key WHERE f = 'NaN'`, `INSERT INTO float_key VALUES ('NaN', 1)`},
	{"public.ts_key", `UPDATE ts_key SET v = 0 WHERE t = 'infinity'`, `UPDATE ts_key SET v = 1 WHERE t = 'infinity'`},
	{"public.ts_key", `DELETE FROM ts_key WHERE t = '-infinity'`, `INSERT INTO ts_key VALUES ('-infinity', 2)`},
	{"public.regs", `UPDATE regs SET c = 'pg_class' WHERE id = 1`, `UPDATE regs SET c = 'app.thing' WHERE id = 1`},
	{"public.kind_key", `DELETE FROM kind_key WHERE k = 'b'`, `INSERT INTO kind_key VALUES ('b')`},
}

// TestCopysideVerifyHardCases: identical databases with the hard cases are IDENTICAL, even
// when the target's search_path differs; each single change on the target is found.
func TestCopysideVerifyHardCases(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newPairEnv(t, src, dst, "hard", hardSchema)
	// The target's sessions resolve names differently: values and types must not print
	// differently. The setting itself is a schema difference (verify compares database
	// settings), and the only one.
	if _, err := dst.Psql(context.Background(), "postgres", `ALTER DATABASE hard SET search_path = app, public`); err != nil {
		t.Fatal(err)
	}
	e.dstSide.Pool.Reset()
	opts := Options{ChunkRows: 500, LeafRows: 20, Schema: true, Sequences: true}
	for _, mode := range []Mode{ModeChecksum, ModeRows} {
		opts.Mode = mode
		rep := e.run(opts)
		onlySetting := rep.Schema != nil && len(rep.Schema.Diffs) == 1 && rep.Schema.Diffs[0].Kind == "setting"
		if rep.Summary.RowDifferences != 0 || rep.Summary.TablesIdentical != rep.Summary.TablesCompared || !onlySetting {
			t.Fatalf("%s mode: identical data, only the target's database setting differs: exit %d\n%s", mode, rep.ExitCode(), text(rep))
		}
		if rep.Summary.TablesCompared != 12 {
			t.Errorf("%s mode: %d tables compared, want 12", mode, rep.Summary.TablesCompared)
		}
	}
	for _, m := range hardMutations {
		e.target(m.change)
		for _, mode := range []Mode{ModeCount, ModeChecksum, ModeRows} {
			if mode == ModeCount && m.table != "public.nocols" && !strings.HasPrefix(m.change, "DELETE") {
				continue // counts see only rows gone or added
			}
			opts.Mode = mode
			rep := e.run(opts)
			if rep.ExitCode() != 1 {
				t.Errorf("%s mode, target changed by %q: exit %d, want 1\n%s", mode, m.change, rep.ExitCode(), text(rep))
				continue
			}
			for _, tr := range rep.Tables {
				if differs := !tr.Identical(); differs != (tr.Name == m.table) {
					t.Errorf("%s mode, target changed by %q: table %s differs=%v (error %q)", mode, m.change, tr.Name, differs, tr.Error)
				}
			}
		}
		e.target(m.undo)
	}
	opts.Mode = ModeChecksum
	if _, err := dst.Psql(context.Background(), "postgres", `ALTER DATABASE hard RESET search_path`); err != nil {
		t.Fatal(err)
	}
	e.dstSide.Pool.Reset()
	if rep := e.run(opts); rep.ExitCode() != 0 {
		t.Errorf("after undoing every change and the setting: exit %d\n%s", rep.ExitCode(), text(rep))
	}
}

func text(rep *Report) string {
	var b strings.Builder
	_ = rep.WriteText(&b, 20)
	return b.String()
}

// TestCopysideSequenceNextValue: sequences are compared by the value nextval() returns next,
// so a difference only in is_called is found, either way round, with the right step count.
func TestCopysideSequenceNextValue(t *testing.T) {
	id := func(n string) pgtypes.TableID { return pgtypes.TableID{Schema: "public", Name: n} }
	seq := func(n string, last int64, called bool) catalog.Sequence {
		return catalog.Sequence{ID: id(n), LastValue: last, IsCalled: called}
	}
	src := []catalog.Sequence{seq("same", 101, false), seq("tgt_called", 101, false), seq("tgt_not_called", 50, true),
		seq("desc", -20, false), seq("edge", math.MaxInt64, true), seq("eq_next", 10, true)}
	tgt := []catalog.Sequence{seq("same", 101, false), seq("tgt_called", 101, true), seq("tgt_not_called", 50, false),
		seq("desc", -20, true), seq("edge", math.MinInt64, false), seq("eq_next", 11, false)}
	res := compareSequences(src, tgt, map[pgtypes.TableID]int64{id("desc"): -1, id("edge"): 1}, false)
	got := map[string]int64{}
	for _, d := range res.Diffs {
		got[d.Name] = d.Behind
	}
	want := map[string]int64{"public.tgt_called": -1, "public.tgt_not_called": 1, "public.desc": -1, "public.edge": math.MaxInt64}
	if res.Compared != 6 || len(got) != len(want) {
		t.Fatalf("compareSequences = %+v", res)
	}
	for n, b := range want {
		if got[n] != b {
			t.Errorf("%s: behind %d, want %d", n, got[n], b)
		}
	}
	// While following, sequences out of step either way are expected (synced at cutover): a
	// source whose sequence went back (RESTART) leaves the target ahead. Not following, each counts.
	rep := &Report{Sequences: compareSequences(src, tgt, map[pgtypes.TableID]int64{id("desc"): -1}, true)}
	rep.summarize()
	if rep.Summary.SequenceDiffs != 0 {
		t.Errorf("following: %d counted sequence differences, want 0: %+v", rep.Summary.SequenceDiffs, rep.Sequences.Diffs)
	}
	rep = &Report{Sequences: compareSequences(src, tgt, map[pgtypes.TableID]int64{id("desc"): -1}, false)}
	rep.summarize()
	if rep.Summary.SequenceDiffs != len(want) {
		t.Errorf("not following: %d counted sequence differences, want %d: %+v", rep.Summary.SequenceDiffs, len(want), rep.Sequences.Diffs)
	}
}

// TestCopysideRepairWithoutColumns: --repair of a table without columns, or with only
// generated columns, restores the source's row count (it inserts rows without values).
func TestCopysideRepairWithoutColumns(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newPairEnv(t, src, dst, "repairnocols", `
		CREATE TABLE nocols (); INSERT INTO nocols SELECT FROM generate_series(1, 5);
		CREATE TABLE gen_only (g int GENERATED ALWAYS AS (7) STORED); INSERT INTO gen_only SELECT FROM generate_series(1, 3);`)
	for _, change := range []string{
		`INSERT INTO nocols DEFAULT VALUES; INSERT INTO gen_only DEFAULT VALUES`,
		`DELETE FROM nocols WHERE ctid IN (SELECT ctid FROM nocols LIMIT 2); DELETE FROM gen_only WHERE ctid IN (SELECT ctid FROM gen_only LIMIT 1)`,
	} {
		e.target(change)
		rep := e.run(Options{Repair: true})
		if len(rep.Repair) != 2 {
			t.Errorf("after %q: repair results %+v\n%s", change, rep.Repair, text(rep))
		}
		sd, td := digests(t, src, "repairnocols"), digests(t, dst, "repairnocols")
		for table, d := range sd {
			if td[table] != d {
				t.Errorf("after %q and --repair: %s is %s on the target, %s on the source", change, table, td[table], d)
			}
		}
		if rep := e.run(Options{}); rep.ExitCode() != 0 {
			t.Errorf("after %q and --repair: verify exit %d\n%s", change, rep.ExitCode(), text(rep))
		}
	}
}
