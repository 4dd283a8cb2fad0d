package app

import (
	"context"
	"runtime/metrics"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestApplyMemoryBoundedByTransactionSize: a transaction that arrives whole (not streamed: the
// source's logical_decoding_work_mem is above its size, or the source is older than 14) must
// be applied in bounded memory. The pipeline was bounded by statements only, and a thousand
// 64-row INSERTs of wide rows held 150 MB: the agent's memory grew with the transaction (the
// torture harness saw 296 MiB for a 100 MiB transaction). Judged by the live heap after each
// garbage collection: a transaction four times larger must not need much more.
func TestApplyMemoryBoundedByTransactionSize(t *testing.T) {
	ctx := context.Background()
	src, dst, _, _ := pgtest.Pair(t, "unused")
	for _, sql := range []string{`ALTER SYSTEM SET logical_decoding_work_mem = '1GB'`, `SELECT pg_reload_conf()`} {
		if _, err := src.Psql(ctx, "postgres", sql); err != nil {
			t.Fatal(err)
		}
	}
	e := newFollowEnv(t, src, dst, "membound", `CREATE TABLE wide (id bigint PRIMARY KEY, n int, doc text);
ALTER TABLE wide ALTER COLUMN doc SET STORAGE EXTERNAL;`)
	// Small bounds, so that a small transaction already reaches all of them: what is read ahead
	// of the applier, what is kept for a redo, what one target transaction holds.
	opts := RunOptions{QueueBytes: 4 << 20}
	opts.Apply.MaxBytes = 4 << 20
	a := e.start(opts)
	peakLive := func(sql string) uint64 {
		var peak atomic.Uint64
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
			for {
				metrics.Read(s)
				if v := s[0].Value.Uint64(); v > peak.Load() {
					peak.Store(v)
				}
				select {
				case <-stop:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
		}()
		e.exec(sql)
		e.waitApplied(a)
		close(stop)
		<-done
		return peak.Load()
	}
	insert := func(from, to int) string {
		return `INSERT INTO wide SELECT g, g, md5(g::text) || repeat('x', 2000) FROM generate_series(` + strconv.Itoa(from) + `, ` + strconv.Itoa(to) + `) g`
	}
	small := peakLive(insert(1, 10000))     // about 20 MB
	large := peakLive(insert(10001, 50000)) // about 80 MB
	t.Logf("peak live heap: %d MiB for a 20 MB transaction, %d MiB for an 80 MB one", small>>20, large>>20)
	if large > small+small/4+(8<<20) {
		t.Errorf("peak live heap grew from %d MiB to %d MiB with a transaction four times larger: memory is not bounded", small>>20, large>>20)
	}
	e.compareOnly()
}
