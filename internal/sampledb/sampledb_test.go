package sampledb

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgshift/pgshift/internal/pgtest"
)

func TestSizesFor(t *testing.T) {
	one := SizesFor(1)
	if one.Orders != 50_000 || one.Customers != 10_000 || one.Inventory != 100_000 {
		t.Errorf("scale 1: %+v", one)
	}
	tiny := SizesFor(0.000001)
	if tiny.Orders < 1 || tiny.Customers < 1 || tiny.Warehouses < 1 || tiny.Products < 1 || tiny.Shipments < 1 {
		t.Errorf("tiny scale must keep every table non-empty: %+v", tiny)
	}
	if ten := SizesFor(10); ten.Orders != 10*one.Orders {
		t.Errorf("scale 10 orders = %d", ten.Orders)
	}
}

// counts reads the row count of every sample table with plain SQL.
func counts(t *testing.T, ctx context.Context, conn *pgx.Conn) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, tb := range Tables {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+tb).Scan(&n); err != nil {
			t.Fatal(err)
		}
		out[tb] = n
	}
	return out
}

func TestCreateAndWorkload(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()

	t.Run("bad scale", func(t *testing.T) {
		_, conn := c.NewDB(t, "badscale")
		for _, s := range []float64{0, -1} {
			if _, err := Create(ctx, conn, s); err == nil || !strings.Contains(err.Error(), "scale") {
				t.Errorf("scale %v: %v", s, err)
			}
		}
	})

	dsn, conn := c.NewDB(t, "shop")
	start := time.Now()
	sz, err := Create(ctx, conn, 0.2)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("scale 0.2 loaded in %s", time.Since(start))

	before := counts(t, ctx, conn)
	want := map[string]int64{
		"customers": sz.Customers, "products": sz.Products, "warehouses": sz.Warehouses, "orders": sz.Orders,
		"order_items": sz.Orders * sz.ItemsPerOrder, "inventory_transactions": sz.Inventory, "shipments": sz.Shipments,
	}
	for tb, n := range want {
		if before[tb] != n {
			t.Errorf("%s: %d rows, want %d", tb, before[tb], n)
		}
	}

	var ident string
	var hasPK bool
	if err := conn.QueryRow(ctx, `SELECT relreplident::text, EXISTS (SELECT 1 FROM pg_index WHERE indrelid = c.oid AND indisprimary)
		FROM pg_class c WHERE oid = 'inventory_transactions'::regclass`).Scan(&ident, &hasPK); err != nil {
		t.Fatal(err)
	}
	if ident != "f" || hasPK {
		t.Errorf("inventory_transactions: replica identity %q, primary key %v; want FULL and none", ident, hasPK)
	}
	var reltuples float64
	if err := conn.QueryRow(ctx, `SELECT reltuples FROM pg_class WHERE oid = 'orders'::regclass`).Scan(&reltuples); err != nil {
		t.Fatal(err)
	}
	if reltuples < float64(sz.Orders)*0.9 {
		t.Errorf("orders not analyzed: reltuples %v", reltuples)
	}
	var badTotals, toasted int64
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM orders o
		WHERE total <> (SELECT sum(quantity * unit_price * (1 - discount / 100))::numeric(14,2) FROM order_items WHERE order_id = o.id)`).Scan(&badTotals); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM products WHERE pg_column_size(description) > 2000`).Scan(&toasted); err != nil {
		t.Fatal(err)
	}
	if badTotals != 0 || toasted == 0 {
		t.Errorf("order totals wrong for %d orders; %d long descriptions", badTotals, toasted)
	}
	var seqOK bool
	if err := conn.QueryRow(ctx, `SELECT nextval(pg_get_serial_sequence('orders', 'id')) > (SELECT max(id) FROM orders)`).Scan(&seqOK); err != nil || !seqOK {
		t.Errorf("orders id sequence not past the loaded ids: %v %v", seqOK, err)
	}

	// The workload's counts must match what the tables show, read independently.
	pool, err := pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	var updBefore int64
	if err := conn.QueryRow(ctx, `SELECT sum(n_tup_upd) FROM pg_stat_user_tables`).Scan(&updBefore); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	got, err := Workload{Pool: pool, Workers: 3, Seed: 7}.Run(wctx)
	cancel()
	pool.Close() // backends exit and flush their statistics
	if err != nil {
		t.Fatalf("workload: %v", err)
	}
	t.Logf("workload: %s, %d retries", got, got.Retries)
	if got.Transactions < 20 || got.Inserts == 0 || got.Updates == 0 {
		t.Fatalf("workload did too little: %+v", got)
	}
	after := counts(t, ctx, conn)
	var delta int64
	for tb := range after {
		delta += after[tb] - before[tb]
	}
	if delta != got.Inserts-got.Deletes {
		t.Errorf("rows changed by %d, workload reports %d inserts - %d deletes", delta, got.Inserts, got.Deletes)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var upd int64
		if err := conn.QueryRow(ctx, `SELECT sum(n_tup_upd) FROM pg_stat_user_tables`).Scan(&upd); err != nil {
			t.Fatal(err)
		}
		// The statistics also count the ledger row updated by ctid; nothing else updates.
		if upd-updBefore == got.Updates {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("pg_stat_user_tables shows %d updates, workload reports %d", upd-updBefore, got.Updates)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A rate limit holds: 20 tx/s for 1.5 s is about 30 transactions, never much more.
	pool, err = pgxpool.New(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	wctx, cancel = context.WithTimeout(ctx, 1500*time.Millisecond)
	limited, err := Workload{Pool: pool, Rate: 20, Workers: 4}.Run(wctx)
	cancel()
	if err != nil {
		t.Fatal(err)
	}
	if limited.Transactions < 10 || limited.Transactions > 32 {
		t.Errorf("rate 20/s for 1.5s ran %d transactions", limited.Transactions)
	}
}
