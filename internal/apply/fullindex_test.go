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

// TestFullIdentityUsesIndex applies 36,000 UPDATEs and then 36,000 DELETEs of a REPLICA
// IDENTITY FULL table (no key) of 36,000 rows whose target has an index on a NOT NULL column,
// as PostgreSQL 16's subscriber would use it, and one with NULLs in an indexed nullable column.
// Each change must find its row through the index: the time is logged (before the index was
// used, every change scanned the whole table: the UPDATEs took 7-31 s here), and the rows are
// checked with plain SQL.
func TestFullIdentityUsesIndex(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	dsn, err := cl.CreateDB(ctx, "full")
	if err != nil {
		t.Fatal(err)
	}
	const rows = 36000
	if out, err := cl.Psql(ctx, "full", `
`+state.SchemaSQL()+`
CREATE TABLE hist (tid int NOT NULL, bid int, delta int, note text);
ALTER TABLE hist REPLICA IDENTITY FULL;
CREATE INDEX hist_bid ON hist (bid);
CREATE INDEX hist_tid_bid ON hist (tid, bid);
INSERT INTO hist SELECT g, CASE WHEN g % 10 = 0 THEN NULL ELSE g % 100 END, 0, 'n' || g FROM generate_series(1, `+strconv.Itoa(rows)+`) g;
ANALYZE hist;`); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	conn, err := db.Endpoint{Role: db.Target, DSN: dsn}.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	src, err := db.Endpoint{Role: db.Source, DSN: dsn}.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close(ctx)
	a, err := New(ctx, conn, src, Options{}, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var oid uint32
	if err := src.QueryRow(ctx, `SELECT 'public.hist'::regclass::oid`).Scan(&oid); err != nil {
		t.Fatal(err)
	}
	rel := &cdc.Relation{OID: oid, Table: pgtypes.TableID{Schema: "public", Name: "hist"}, ReplicaIdentity: 'f', Columns: []cdc.Column{
		{Name: "tid", TypeOID: 23, TypeMod: -1, Key: true}, {Name: "bid", TypeOID: 23, TypeMod: -1, Key: true},
		{Name: "delta", TypeOID: 23, TypeMod: -1, Key: true}, {Name: "note", TypeOID: 25, TypeMod: -1, Key: true}}}
	row := func(g, delta int) []cdc.Value {
		bid := cdc.Value{Kind: cdc.ValueNull}
		if g%10 != 0 {
			bid = txt(strconv.Itoa(g % 100))
		}
		return []cdc.Value{txt(strconv.Itoa(g)), bid, txt(strconv.Itoa(delta)), txt("n" + strconv.Itoa(g))}
	}
	lsn := pgtypes.LSN(0x1000)
	apply := func(what string, change func(g int) *cdc.Change) time.Duration {
		start := time.Now()
		for from := 1; from <= rows; from += 1000 {
			var txs [][]*cdc.Change
			for g := from; g < from+1000; g++ {
				txs = append(txs, []*cdc.Change{change(g)})
			}
			if err := a.chunk(ctx, batch(lsn, txs...)); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			lsn += 1000 * 100
			if err := a.commit(ctx); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		took := time.Since(start)
		t.Logf("%d FULL-identity %s: %s (%.0f/s)", rows, what, took.Round(time.Millisecond), float64(rows)/took.Seconds())
		return took
	}
	apply("UPDATEs", func(g int) *cdc.Change {
		return &cdc.Change{Kind: cdc.Update, Rel: rel, OldKind: 'O', Old: row(g, 0), New: row(g, 1)}
	})
	if out, _ := cl.Psql(ctx, "full", `SELECT count(*) FILTER (WHERE delta = 1) || ' ' || count(*) FROM hist`); out != "36000 36000" {
		t.Fatalf("after the UPDATEs: %s rows updated of all", out)
	}
	apply("DELETEs", func(g int) *cdc.Change {
		return &cdc.Change{Kind: cdc.Delete, Rel: rel, OldKind: 'O', Old: row(g, 1)}
	})
	if out, _ := cl.Psql(ctx, "full", `SELECT count(*) FROM hist`); out != "0" {
		t.Fatalf("after the DELETEs: %s rows left", out)
	}
	plan := a.plans[oid]
	if plan == nil || len(plan.fullIndex) == 0 {
		t.Fatalf("the plan uses no index (plan %v)", plan)
	}
	if got := plan.rel.Columns[plan.fullIndex[0]].Name; got != "tid" {
		t.Errorf("index column %s, want tid (hist_tid_bid's leading NOT NULL column; bid is nullable)", got)
	}
}
