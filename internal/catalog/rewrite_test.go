package catalog

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestTablesAfterRewriteInSnapshot: the copy lists tables in its snapshot, whose catalog rows
// may name a TOAST table a rewrite has replaced since; the size functions then return NULL,
// and the listing failed with "cannot scan NULL into *int64" (found by the torture harness).
func TestTablesAfterRewriteInSnapshot(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	dsn, admin := c.NewDB(t, "rewritesnap")
	if _, err := admin.Exec(ctx, `CREATE TABLE t (id int PRIMARY KEY, doc text); INSERT INTO t VALUES (1, repeat('x', 10000))`); err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead})
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT 1`); err != nil { // takes the snapshot
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, `ALTER TABLE t ALTER COLUMN doc TYPE text USING doc || ''`); err != nil {
		t.Fatal(err)
	}
	tables, err := Tables(ctx, tx, config.TableFilter{})
	if err != nil {
		t.Fatalf("list tables in a snapshot older than a rewrite: %v", err)
	}
	if len(tables) != 1 || tables[0].ID.Name != "t" {
		t.Fatalf("tables %+v", tables)
	}
}
