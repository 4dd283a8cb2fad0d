package apply

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"testing"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// BenchmarkApplyUpdates measures ordinary UPDATEs (no key change, distinct rows) of a table with
// a plain key, one with an identity ALWAYS key, and one with an identity ALWAYS column outside
// its key, merged in a batch and change by change (as in a streamed transaction). One op is one
// target transaction of 1000 source transactions of one UPDATE each.
func BenchmarkApplyUpdates(b *testing.B) {
	cl := pgtest.New(b, pgtest.Options{})
	ctx := context.Background()
	dsn, err := cl.CreateDB(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	if out, err := cl.Psql(ctx, "bench", `
`+state.SchemaSQL()+`
CREATE TABLE plain (id int PRIMARY KEY, v int, doc text);
CREATE TABLE ident (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int, doc text);
CREATE TABLE tick (id int PRIMARY KEY, v int, doc text, n int GENERATED ALWAYS AS IDENTITY);
INSERT INTO plain SELECT g, 0, 'doc' FROM generate_series(1, 10000) g;
INSERT INTO ident (v, doc) SELECT 0, 'doc' FROM generate_series(1, 10000) g;
INSERT INTO tick (id, v, doc) SELECT g, 0, 'doc' FROM generate_series(1, 10000) g;`); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	if out, err := cl.Psql(ctx, "bench", `VACUUM ANALYZE`); err != nil {
		b.Fatalf("%v: %s", err, out)
	}
	conn, err := db.Endpoint{Role: db.Target, DSN: dsn}.Connect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	src, err := db.Endpoint{Role: db.Source, DSN: dsn}.Connect(ctx)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close(ctx)
	a, err := New(ctx, conn, src, Options{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	oid := func(name string) uint32 {
		var o uint32
		if err := src.QueryRow(ctx, `SELECT $1::regclass::oid`, "public."+name).Scan(&o); err != nil {
			b.Fatal(err)
		}
		return o
	}
	cols := []cdc.Column{{Name: "id", TypeOID: 23, TypeMod: -1, Key: true}, {Name: "v", TypeOID: 23, TypeMod: -1}, {Name: "doc", TypeOID: 25, TypeMod: -1}}
	rels := map[string]*cdc.Relation{}
	for _, name := range []string{"plain", "ident"} {
		rels[name] = &cdc.Relation{OID: oid(name), Table: pgtypes.TableID{Schema: "public", Name: name}, ReplicaIdentity: 'd', Columns: cols}
	}
	rels["tick"] = &cdc.Relation{OID: oid("tick"), Table: pgtypes.TableID{Schema: "public", Name: "tick"}, ReplicaIdentity: 'd',
		Columns: append(append([]cdc.Column(nil), cols...), cdc.Column{Name: "n", TypeOID: 23, TypeMod: -1})}
	lsn := pgtypes.LSN(0x1000)
	round := 0
	for _, name := range []string{"plain", "ident", "tick"} {
		for _, streamed := range []bool{false, true} {
			mode := "merged"
			if streamed {
				mode = "direct"
			}
			b.Run(name+"/"+mode, func(b *testing.B) {
				rel := rels[name]
				for i := 0; i < b.N; i++ {
					round++
					var txs [][]*cdc.Change
					for j := 0; j < 1000; j++ {
						id := strconv.Itoa((round*1000+j)%10000 + 1)
						vals := []cdc.Value{txt(id), txt(strconv.Itoa(round)), unchanged}
						if name == "tick" {
							// The identity column's value as the row has it: the copy gave both
							// sides the same values (n = id).
							vals = append(vals, txt(id))
						}
						txs = append(txs, []*cdc.Change{{Kind: cdc.Update, Rel: rel, New: vals}})
					}
					c := batch(lsn, txs...)
					lsn += 1000 * 100
					if streamed {
						// One large transaction applied change by change, as a streamed one is.
						c = &cdc.Chunk{}
						tx := &cdc.Tx{Xid: uint32(round), CommitLSN: lsn, EndLSN: lsn + 8, Streamed: true}
						c.Events = append(c.Events, cdc.Event{Begin: tx})
						for _, t := range txs {
							c.Events = append(c.Events, cdc.Event{Change: t[0]})
						}
						c.Events = append(c.Events, cdc.Event{Commit: tx})
						lsn += 100
					}
					if err := a.chunk(ctx, c); err != nil {
						b.Fatal(err)
					}
					if err := a.commit(ctx); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "updates/s")
			})
		}
	}
}
