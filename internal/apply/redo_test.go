package apply

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// redoEnv is a source and a target database on one server, with an applier on the target whose
// relation messages describe the source's tables (their real OIDs).
type redoEnv struct {
	t        *testing.T
	cl       *pgtest.Cluster
	src, dst *pgx.Conn
	a        *Applier
}

func newRedoEnv(t *testing.T, cl *pgtest.Cluster, name, srcSchema, dstSchema string) *redoEnv {
	t.Helper()
	ctx := context.Background()
	e := &redoEnv{t: t, cl: cl}
	for _, side := range []struct {
		db     string
		schema string
		conn   **pgx.Conn
		role   db.Role
	}{{name + "_src", srcSchema, &e.src, db.Source}, {name + "_dst", `` + state.SchemaSQL() + `` + dstSchema, &e.dst, db.Target}} {
		dsn, err := cl.CreateDB(ctx, side.db)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := cl.Psql(ctx, side.db, side.schema); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		c, err := db.Endpoint{Role: side.role, DSN: dsn}.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(context.Background()) })
		*side.conn = c
	}
	a, err := New(ctx, e.dst, e.src, Options{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e.a = a
	return e
}

// rel describes a source table as a relation message would, with its real OID on the source.
func (e *redoEnv) rel(table string, ident byte, cols ...cdc.Column) *cdc.Relation {
	e.t.Helper()
	var oid uint32
	if err := e.src.QueryRow(context.Background(), `SELECT $1::regclass::oid`, table).Scan(&oid); err != nil {
		e.t.Fatal(err)
	}
	return &cdc.Relation{OID: oid, Table: pgtypes.TableID{Schema: "public", Name: table}, ReplicaIdentity: ident, Columns: cols}
}

func (e *redoEnv) target(sql string) string {
	e.t.Helper()
	var out string
	if err := e.a.conn.QueryRow(context.Background(), sql).Scan(&out); err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return out
}

var (
	colID   = cdc.Column{Name: "id", TypeOID: 23, TypeMod: -1, Key: true}
	colText = func(name string) cdc.Column { return cdc.Column{Name: name, TypeOID: 25, TypeMod: -1} }
	colInt  = func(name string) cdc.Column { return cdc.Column{Name: name, TypeOID: 23, TypeMod: -1} }
)

// TestRedo covers the redo of a compacted batch (a unique conflict the reordering caused): it
// must apply every change exactly once, and it must not keep anything of the rolled-back target
// transaction (columns added in it, statements prepared for them).
func TestRedo(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	const uSchema = `CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE, n int); INSERT INTO u VALUES (1, 'x', 0), (2, 'y', 0);`
	swap := func(relU *cdc.Relation) [][]*cdc.Change {
		upd := func(vals ...cdc.Value) []*cdc.Change {
			return []*cdc.Change{{Kind: cdc.Update, Rel: relU, New: vals}}
		}
		// Merged and written in the order of each row's last change, row 2 takes 'x' while
		// row 1 still holds it.
		return [][]*cdc.Change{upd(txt("1"), txt("tmp"), txt("1")), upd(txt("2"), txt("x"), txt("2")), upd(txt("1"), txt("y"), txt("3"))}
	}

	t.Run("KeyChangeAppliedOnce", func(t *testing.T) {
		e := newRedoEnv(t, cl, "keychange", uSchema, uSchema)
		relU := e.rel("u", 'd', colID, colText("email"), colInt("n"))
		txs := swap(relU)
		txs = append(txs,
			[]*cdc.Change{{Kind: cdc.Insert, Rel: relU, New: []cdc.Value{txt("3"), txt("z"), txt("0")}}},
			// A key change after merged rows of its table: they are written first (barrier),
			// which is where the conflict surfaces.
			[]*cdc.Change{{Kind: cdc.Update, Rel: relU, OldKind: 'K', Old: []cdc.Value{txt("3"), {Kind: 'n'}, {Kind: 'n'}}, New: []cdc.Value{txt("30"), txt("z"), txt("5")}}},
			[]*cdc.Change{{Kind: cdc.Update, Rel: relU, New: []cdc.Value{txt("2"), txt("x"), txt("6")}}})
		gen := e.a.gen
		err := e.a.chunk(ctx, batch(0x1000, txs...))
		if err == nil {
			err = e.a.commit(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		if e.a.gen == gen {
			t.Fatal("the batch was not redone; the test did not provoke the conflict")
		}
		if got := e.target(`SELECT string_agg(id || ':' || email || ':' || n, ' ' ORDER BY id) FROM public.u`); got != "1:y:3 2:x:6 30:z:5" {
			t.Fatalf("u = %q", got)
		}
	})

	t.Run("TruncateAndCompactDefaultAppliedOnce", func(t *testing.T) {
		schema := uSchema + `CREATE TABLE l (id int PRIMARY KEY, v int); INSERT INTO l VALUES (1, 1);`
		e := newRedoEnv(t, cl, "trunconce", schema, schema)
		relU := e.rel("u", 'd', colID, colText("email"), colInt("n"))
		relL := e.rel("l", 'd', colID, colInt("v"))
		txs := swap(relU)
		txs = append(txs,
			[]*cdc.Change{{Kind: cdc.Insert, Rel: relU, New: []cdc.Value{txt("3"), txt("z"), txt("0")}}},
			[]*cdc.Change{{Kind: cdc.Insert, Rel: relL, New: []cdc.Value{txt("2"), txt("2")}}},
			[]*cdc.Change{{Kind: cdc.Trunc, Truncated: []*cdc.Relation{relL}}},
			[]*cdc.Change{{Kind: cdc.Insert, Rel: relL, New: []cdc.Value{txt("5"), txt("5")}}},
			[]*cdc.Change{{Kind: cdc.Update, Rel: relL, New: []cdc.Value{txt("5"), txt("6")}}})
		err := e.a.chunk(ctx, batch(0x1000, txs...))
		if err == nil {
			err = e.a.commit(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := e.target(`SELECT string_agg(id || ':' || email || ':' || n, ' ' ORDER BY id) FROM public.u`) + " / " + e.target(`SELECT string_agg(id || ':' || v, ' ' ORDER BY id) FROM public.l`); got != "1:y:3 2:x:2 3:z:0 / 5:6" {
			t.Fatalf("u / l = %q", got)
		}
	})

	t.Run("ColumnAddedInRolledBackTransaction", func(t *testing.T) {
		e := newRedoEnv(t, cl, "addcol", uSchema+`CREATE TABLE aw (id int PRIMARY KEY, a text, c text);`,
			uSchema+`CREATE TABLE aw (id int PRIMARY KEY, a text);`)
		relU := e.rel("u", 'd', colID, colText("email"), colInt("n"))
		relW := e.rel("aw", 'd', colID, colText("a"), colText("c"))
		txs := swap(relU)
		txs = append(txs, []*cdc.Change{{Kind: cdc.Insert, Rel: relW, New: []cdc.Value{txt("1"), txt("a"), txt("c value")}}})
		err := e.a.chunk(ctx, batch(0x1000, txs...))
		if err == nil {
			err = e.a.commit(ctx)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := e.target(`SELECT string_agg(id || ':' || a || ':' || c, ' ') FROM public.aw`); got != "1:a:c value" {
			t.Fatalf("aw = %q", got)
		}
		// aw sorts before u, so its INSERT was prepared before the conflict: the statements of
		// the discarded plan are gone from the session; the live ones remain.
		if got := e.target(`SELECT count(*)::text FROM pg_prepared_statements WHERE statement LIKE 'INSERT INTO "public"."aw"%'`); got != "1" {
			t.Fatalf("%s statements for aw prepared in the session, want 1", got)
		}
		for i := 2; i < 5; i++ {
			err := e.a.chunk(ctx, batch(pgtypes.LSN(0x10000*i), []*cdc.Change{{Kind: cdc.Insert, Rel: relW, New: []cdc.Value{txt(strconv.Itoa(i)), txt("a"), txt("c")}}}))
			if err == nil {
				err = e.a.commit(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	})
}
