package sampledb

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"
)

// Workload is the sample application's write traffic: new orders with their items and stock
// movements, status changes of orders and shipments, corrections of ledger rows (UPDATE on the
// table without a key), and deletions of cancelled orders. Every operation is one transaction.
type Workload struct {
	Pool *pgxpool.Pool
	// Rate is the target number of transactions per second over all workers; 0 means as fast as possible.
	Rate float64
	// Workers is how many transactions run at once (default 2).
	Workers int
	// Seed makes the sequence of operations repeatable per worker (with Rate 0 and one worker,
	// entirely repeatable).
	Seed uint64
}

// Counts are the row changes and transactions a workload committed. Only committed work is
// counted, so a test can compare them with the target after replication.
type Counts struct {
	Transactions int64
	Inserts      int64
	Updates      int64
	Deletes      int64
	// Retries counts transactions that hit a deadlock or serialization failure and ran again.
	Retries int64
}

// Add returns the sum of two counts.
func (c Counts) Add(o Counts) Counts {
	return Counts{c.Transactions + o.Transactions, c.Inserts + o.Inserts, c.Updates + o.Updates, c.Deletes + o.Deletes, c.Retries + o.Retries}
}

func (c Counts) String() string {
	return fmt.Sprintf("%d transactions: %d inserts, %d updates, %d deletes", c.Transactions, c.Inserts, c.Updates, c.Deletes)
}

// txTimeout bounds one workload transaction.
const txTimeout = 30 * time.Second

// maxRetries bounds how often one operation is retried after a deadlock or serialization failure.
const maxRetries = 5

// Run drives the workload until ctx is cancelled, then returns what was committed. Cancellation
// is the normal way to stop and is not an error; any other failure stops all workers and is
// returned together with the counts so far.
func (w Workload) Run(ctx context.Context) (Counts, error) {
	if w.Pool == nil {
		return Counts{}, errors.New("workload: no connection pool")
	}
	workers := max(w.Workers, 1)
	if w.Workers == 0 {
		workers = 2
	}
	var limiter <-chan time.Time
	if w.Rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / w.Rate))
		defer t.Stop()
		limiter = t.C
	}
	var total [5]atomic.Int64
	g, gctx := errgroup.WithContext(ctx)
	for i := range workers {
		g.Go(func() error {
			rng := rand.New(rand.NewPCG(w.Seed, uint64(i)))
			for {
				if limiter != nil {
					select {
					case <-gctx.Done():
						return nil
					case <-limiter:
					}
				} else if gctx.Err() != nil {
					return nil
				}
				// A transaction once begun runs to its end even if ctx is cancelled meanwhile,
				// so the counts are exactly what committed: a commit racing a cancellation
				// would otherwise be done on the server but unknown here.
				tctx, cancel := context.WithTimeout(context.WithoutCancel(gctx), txTimeout)
				c, err := w.step(tctx, rng)
				cancel()
				if err != nil {
					return err
				}
				total[0].Add(c.Transactions)
				total[1].Add(c.Inserts)
				total[2].Add(c.Updates)
				total[3].Add(c.Deletes)
				total[4].Add(c.Retries)
			}
		})
	}
	err := g.Wait()
	c := Counts{total[0].Load(), total[1].Load(), total[2].Load(), total[3].Load(), total[4].Load()}
	return c, err
}

// op is one kind of transaction; it returns the rows it changed.
type op struct {
	name   string
	weight int
	run    func(ctx context.Context, tx pgx.Tx, rng *rand.Rand) (Counts, error)
}

var ops = []op{
	{"new order", 50, newOrder},
	{"advance order", 25, advanceOrder},
	{"deliver shipment", 10, deliverShipment},
	{"correct ledger", 10, correctLedger},
	{"delete cancelled order", 5, deleteCancelled},
}

func pick(rng *rand.Rand) op {
	total := 0
	for _, o := range ops {
		total += o.weight
	}
	n := rng.IntN(total)
	for _, o := range ops {
		if n < o.weight {
			return o
		}
		n -= o.weight
	}
	return ops[0]
}

// step runs one randomly chosen operation in its own transaction, retrying deadlocks and
// serialization failures (which roll back everything, so nothing is counted twice).
func (w Workload) step(ctx context.Context, rng *rand.Rand) (Counts, error) {
	o := pick(rng)
	for attempt := 0; ; attempt++ {
		var c Counts
		err := pgx.BeginFunc(ctx, w.Pool, func(tx pgx.Tx) error {
			var err error
			c, err = o.run(ctx, tx, rng)
			return err
		})
		if err == nil {
			c.Transactions = 1
			c.Retries = int64(attempt)
			return c, nil
		}
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) && (pgErr.Code == "40P01" || pgErr.Code == "40001") && attempt < maxRetries {
			continue
		}
		return Counts{}, fmt.Errorf("workload %s: %w", o.name, err)
	}
}

func newOrder(ctx context.Context, tx pgx.Tx, rng *rand.Rand) (Counts, error) {
	var c Counts
	var orderID int64
	err := tx.QueryRow(ctx, `
INSERT INTO orders (customer_id, status, ordered_at, total, currency, shipping_address, notes)
SELECT id, 'new', now(), 0, 'EUR', jsonb_build_object('street', $2::text, 'city', 'Rotterdam'), NULL
FROM customers WHERE id >= (SELECT max(id) FROM customers) * $1::float8 ORDER BY id LIMIT 1
RETURNING id`, rng.Float64(), fmt.Sprintf("%d Quay Street", rng.IntN(999)+1)).Scan(&orderID)
	if err != nil {
		return c, err
	}
	c.Inserts++
	lines := 1 + rng.IntN(4)
	tag, err := tx.Exec(ctx, `
INSERT INTO order_items (order_id, line_no, product_id, quantity, unit_price, discount)
SELECT $1, l, p.id, $3, p.price, 0
FROM generate_series(1, $2::int) l
CROSS JOIN LATERAL (SELECT id, price FROM products
                    WHERE id >= (SELECT max(id) FROM products) * $4::float8 + l ORDER BY id LIMIT 1) p`,
		orderID, lines, 1+rng.IntN(10), rng.Float64()*0.99)
	if err != nil {
		return c, err
	}
	c.Inserts += tag.RowsAffected()
	if _, err := tx.Exec(ctx, `UPDATE orders SET total = (SELECT coalesce(sum(quantity * unit_price), 0) FROM order_items WHERE order_id = $1) WHERE id = $1`, orderID); err != nil {
		return c, err
	}
	c.Updates++
	tag, err = tx.Exec(ctx, `
INSERT INTO inventory_transactions (warehouse_id, product_id, kind, quantity, unit_cost, occurred_at, reference)
SELECT (SELECT min(id) FROM warehouses), product_id, 'pick', -quantity, NULL, now(), 'order ' || order_id
FROM order_items WHERE order_id = $1`, orderID)
	if err != nil {
		return c, err
	}
	c.Inserts += tag.RowsAffected()
	return c, nil
}

func advanceOrder(ctx context.Context, tx pgx.Tx, rng *rand.Rand) (Counts, error) {
	tag, err := tx.Exec(ctx, `
UPDATE orders SET status = CASE status WHEN 'new' THEN 'paid' WHEN 'paid' THEN 'shipped' ELSE 'delivered' END
WHERE id = (SELECT id FROM orders WHERE status IN ('new', 'paid', 'shipped')
            AND id >= (SELECT max(id) FROM orders) * $1::float8 ORDER BY id LIMIT 1)`,
		rng.Float64())
	if err != nil {
		return Counts{}, err
	}
	return Counts{Updates: tag.RowsAffected()}, nil
}

func deliverShipment(ctx context.Context, tx pgx.Tx, rng *rand.Rand) (Counts, error) {
	tag, err := tx.Exec(ctx, `
UPDATE shipments SET status = 'delivered', delivered_at = now(),
       events = events || jsonb_build_array(jsonb_build_object('at', now(), 'event', 'delivered'))
WHERE id = (SELECT id FROM shipments WHERE status = 'in_transit'
            AND id >= (SELECT max(id) FROM shipments) * $1::float8 ORDER BY id LIMIT 1)`,
		rng.Float64())
	if err != nil {
		return Counts{}, err
	}
	return Counts{Updates: tag.RowsAffected()}, nil
}

// correctLedger updates one row of the keyless ledger, located by ctid as an application
// would by its own columns: the change reaches the WAL with the whole old row (REPLICA IDENTITY FULL).
func correctLedger(ctx context.Context, tx pgx.Tx, rng *rand.Rand) (Counts, error) {
	tag, err := tx.Exec(ctx, `
UPDATE inventory_transactions SET quantity = quantity + 1, reference = coalesce(reference, '') || ' (corrected)'
WHERE ctid = (SELECT ctid FROM inventory_transactions WHERE product_id >= (SELECT max(id) FROM products) * $1::float8
               AND kind = 'adjustment' ORDER BY product_id LIMIT 1)`,
		rng.Float64())
	if err != nil {
		return Counts{}, err
	}
	return Counts{Updates: tag.RowsAffected()}, nil
}

// deleteCancelled removes one cancelled order; its items and shipments go with it (ON DELETE CASCADE).
func deleteCancelled(ctx context.Context, tx pgx.Tx, rng *rand.Rand) (Counts, error) {
	var id int64
	err := tx.QueryRow(ctx, `SELECT id FROM orders WHERE status = 'cancelled' AND id >= (SELECT max(id) FROM orders) * $1::float8
ORDER BY id LIMIT 1 FOR UPDATE`, rng.Float64()).Scan(&id)
	if errors.Is(err, pgx.ErrNoRows) {
		return Counts{}, nil
	}
	if err != nil {
		return Counts{}, err
	}
	var c Counts
	for _, stmt := range []string{
		`DELETE FROM shipments WHERE order_id = $1`,
		`DELETE FROM order_items WHERE order_id = $1`,
		`DELETE FROM orders WHERE id = $1`,
	} {
		tag, err := tx.Exec(ctx, stmt, id)
		if err != nil {
			return c, err
		}
		c.Deletes += tag.RowsAffected()
	}
	return c, nil
}
