package apply

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

func txt(s string) cdc.Value { return cdc.Value{Kind: cdc.ValueText, Data: []byte(s)} }

var unchanged = cdc.Value{Kind: cdc.ValueUnchanged}

// batch builds one chunk holding one source transaction per change list, so the applier puts
// them all in one target transaction.
func batch(start pgtypes.LSN, txs ...[]*cdc.Change) *cdc.Chunk {
	c := &cdc.Chunk{}
	for i, chs := range txs {
		lsn := start + pgtypes.LSN(i*100)
		tx := &cdc.Tx{Xid: uint32(1000 + i), CommitLSN: lsn, EndLSN: lsn + 8, CommitTime: time.Now()}
		c.Events = append(c.Events, cdc.Event{Begin: tx})
		for _, ch := range chs {
			c.Events = append(c.Events, cdc.Event{Change: ch})
		}
		c.Events = append(c.Events, cdc.Event{Commit: tx})
	}
	return c
}

// TestCompactionOnTarget feeds the applier batches that exercise row compaction and its redo in
// source order, on a real server, and checks the final rows with plain SQL.
func TestCompactionOnTarget(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	dsn, err := cl.CreateDB(ctx, "apply")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Psql(ctx, "apply", `
`+state.SchemaSQL()+`
CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE, n int);
CREATE TABLE hot (id int PRIMARY KEY, v int, doc text);
INSERT INTO u VALUES (1, 'x', 0), (2, 'y', 0);
CREATE TABLE log (a int, b text);
INSERT INTO hot VALUES (1, 0, repeat('d', 10));`); err != nil {
		t.Fatal(err)
	}
	conn, err := db.Endpoint{Role: db.Target, DSN: dsn}.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The "source" for type names is the same server: the relation messages below use its OIDs.
	src, err := db.Endpoint{Role: db.Source, DSN: dsn}.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(ctx)
	a, err := New(ctx, conn, src, Options{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	relU := &cdc.Relation{OID: 1, Table: pgtypes.TableID{Schema: "public", Name: "u"}, ReplicaIdentity: 'd',
		Columns: []cdc.Column{{Name: "id", TypeOID: 23, TypeMod: -1, Key: true}, {Name: "email", TypeOID: 25, TypeMod: -1}, {Name: "n", TypeOID: 23, TypeMod: -1}}}
	relHot := &cdc.Relation{OID: 2, Table: pgtypes.TableID{Schema: "public", Name: "hot"}, ReplicaIdentity: 'd',
		Columns: []cdc.Column{{Name: "id", TypeOID: 23, TypeMod: -1, Key: true}, {Name: "v", TypeOID: 23, TypeMod: -1}, {Name: "doc", TypeOID: 25, TypeMod: -1}}}
	relLog := &cdc.Relation{OID: 3, Table: pgtypes.TableID{Schema: "public", Name: "log"}, ReplicaIdentity: 'd',
		Columns: []cdc.Column{{Name: "a", TypeOID: 23, TypeMod: -1}, {Name: "b", TypeOID: 25, TypeMod: -1}}}
	upd := func(r *cdc.Relation, vals ...cdc.Value) *cdc.Change {
		return &cdc.Change{Kind: cdc.Update, Rel: r, New: vals}
	}
	ins := func(r *cdc.Relation, vals ...cdc.Value) *cdc.Change {
		return &cdc.Change{Kind: cdc.Insert, Rel: r, New: vals}
	}
	del := func(r *cdc.Relation, key string) *cdc.Change {
		return &cdc.Change{Kind: cdc.Delete, Rel: r, OldKind: 'K', Old: []cdc.Value{txt(key), {Kind: 'n'}, {Kind: 'n'}}}
	}
	query := func(sql string) string {
		out, err := cl.Psql(ctx, "apply", sql)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}

	t.Run("HotRowMergedIntoOneUpdate", func(t *testing.T) {
		var txs [][]*cdc.Change
		for i := 1; i <= 500; i++ {
			v := unchanged // the TOASTed column is not resent; the target must keep it
			if i == 250 {
				v = txt("rewritten")
			}
			txs = append(txs, []*cdc.Change{upd(relHot, txt("1"), txt(strconv.Itoa(i)), v)})
		}
		txs = append(txs, []*cdc.Change{ins(relHot, txt("2"), txt("1"), txt("a")), upd(relHot, txt("2"), txt("2"), unchanged), del(relHot, "2")})
		txs = append(txs, []*cdc.Change{del(relHot, "1"), ins(relHot, txt("1"), txt("-1"), txt("again")), upd(relHot, txt("1"), txt("-2"), unchanged)})
		txs = append(txs, []*cdc.Change{ins(relHot, txt("3"), txt("3"), txt("c")), upd(relHot, txt("3"), txt("4"), unchanged)})
		if err := a.chunk(ctx, batch(0x1000, txs...)); err != nil {
			t.Fatal(err)
		}
		if err := a.flushEntries(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.flush(ctx); err != nil {
			t.Fatal(err)
		}
		var updates int64
		if err := a.tx.QueryRow(ctx, `SELECT pg_stat_get_xact_tuples_updated('public.hot'::regclass)`).Scan(&updates); err != nil {
			t.Fatal(err)
		}
		if err := a.commit(ctx); err != nil {
			t.Fatal(err)
		}
		if updates > 1 {
			t.Errorf("%d UPDATEs reached the target for 500 updates of one row, want them merged", updates)
		}
		if got := query(`SELECT string_agg(id || ':' || v || ':' || doc, ' ' ORDER BY id) FROM hot`); got != "1:-2:again 3:4:c" {
			t.Fatalf("hot = %q", got)
		}
		if got := query(`SELECT applied_lsn FROM pgshift.position`); got == "" {
			t.Fatal("position not saved")
		}
	})

	t.Run("UniqueSwapRedoneInSourceOrder", func(t *testing.T) {
		// Row 1 gives up 'x' to row 2 via a temporary value; merged and reordered by last
		// change, row 2 would take 'x' while row 1 still holds it.
		gen := a.gen
		err := a.chunk(ctx, batch(0x100000,
			[]*cdc.Change{upd(relU, txt("1"), txt("tmp"), txt("1"))},
			[]*cdc.Change{upd(relU, txt("2"), txt("x"), txt("2"))},
			[]*cdc.Change{upd(relU, txt("1"), txt("y"), txt("3"))}))
		if err == nil {
			err = a.commit(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		if a.gen == gen {
			t.Fatal("the batch was not redone; the test did not provoke the conflict")
		}
		if got := query(`SELECT string_agg(id || ':' || email || ':' || n, ' ' ORDER BY id) FROM u`); got != "1:y:3 2:x:2" {
			t.Fatalf("u = %q", got)
		}
	})

	t.Run("ManyRowsInMultiRowStatements", func(t *testing.T) {
		var ins, upds []*cdc.Change
		for i := 10; i < 110; i++ {
			ins = append(ins, &cdc.Change{Kind: cdc.Insert, Rel: relHot, New: []cdc.Value{txt(strconv.Itoa(i)), txt("0"), txt("doc" + strconv.Itoa(i))}})
			ins = append(ins, &cdc.Change{Kind: cdc.Insert, Rel: relLog, New: []cdc.Value{txt(strconv.Itoa(i)), {Kind: 'n'}}})
			doc := unchanged // two shapes of UPDATE: with and without the TOASTed column
			if i < 80 {
				doc = txt("new" + strconv.Itoa(i))
			}
			upds = append(upds, upd(relHot, txt(strconv.Itoa(i)), txt(strconv.Itoa(i*2)), doc))
		}
		for _, b := range []*cdc.Chunk{batch(0x150000, ins), batch(0x160000, upds)} {
			if err := a.chunk(ctx, b); err != nil {
				t.Fatal(err)
			}
			if err := a.commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		shapes := map[string]bool{}
		for shape := range a.byRel[relHot].stmts {
			shapes[shape[:min(len(shape), 4)]] = true
		}
		for _, want := range []string{"I64", "UM64"} {
			if !shapes[want] {
				t.Errorf("no %s statement was prepared for hot (shapes %v): runs were not merged into multi-row statements", want, shapes)
			}
		}
		want := query(`SELECT count(*) || ' ' || sum(v) FROM generate_series(10, 109) g(i), LATERAL (SELECT i * 2 AS v) x`)
		if got := query(`SELECT count(*) || ' ' || sum(v) FROM hot WHERE id BETWEEN 10 AND 109`); got != want {
			t.Fatalf("hot rows 10..109: %s, want %s", got, want)
		}
		if got := query(`SELECT count(*) FROM hot WHERE id BETWEEN 10 AND 109 AND doc = CASE WHEN id < 80 THEN 'new' ELSE 'doc' END || id`); got != "100" {
			t.Fatalf("%s of 100 rows have the right doc", got)
		}
		if got := query(`SELECT count(*) || ' ' || sum(a) || ' ' || count(b) FROM log`); got != "100 5950 0" {
			t.Fatalf("log = %s", got)
		}
	})

	t.Run("MissingRowIsAnError", func(t *testing.T) {
		err := a.chunk(ctx, batch(0x200000, []*cdc.Change{upd(relU, txt("99"), txt("z"), txt("0"))}))
		if err == nil {
			err = a.commit(ctx)
		}
		if err == nil {
			t.Fatal("an UPDATE of a row missing on the target was accepted")
		}
	})
}
