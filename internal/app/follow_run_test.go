package app

import (
	"context"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestRunCopiesThenFollows is the product path end to end: `run` on an empty target copies in
// the slot's snapshot while the source keeps writing, then follows; nothing written during or
// after the copy is lost or doubled.
func TestRunCopiesThenFollows(t *testing.T) {
	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "shop")
	e := &followEnv{t: t, src: src, dst: dst, name: "shop", cfg: config.Defaults()}
	e.cfg.Source, e.cfg.Target = srcDSN, dstDSN
	e.exec(workloadSchema + `
CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, account int, total numeric(12,2), placed timestamptz DEFAULT now())
  PARTITION BY HASH (id);
CREATE TABLE orders_0 PARTITION OF orders FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE orders_1 PARTITION OF orders FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO orders (account, total) SELECT g % 200 + 1, g * 1.5 FROM generate_series(1, 20000) g;`)
	w := e.startWriter(2)
	a := e.launch(func(ctx context.Context, opts RunOptions) error { return Run(ctx, e.cfg, opts, testLogger(t)) }, RunOptions{})
	time.Sleep(3 * time.Second)
	e.exec(`INSERT INTO orders (account, total) SELECT 1, 9.99 FROM generate_series(1, 100); DELETE FROM orders WHERE id % 7 = 0`)
	w.halt()
	e.waitApplied(a)
	e.compare()
	if got := e.query(dst, `SELECT phase FROM pgshift.migration`); got != "following" {
		t.Fatalf("phase = %s, want following", got)
	}
}
