package apply

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// BenchmarkApplyPgbench applies pgbench's TPC-B-like transactions (three UPDATEs and an INSERT
// each) in batches of 1000 source transactions, as a backlog replay does. One op is one batch.
func BenchmarkApplyPgbench(b *testing.B) {
	cl := pgtest.New(b, pgtest.Options{})
	ctx := context.Background()
	dsn, err := cl.CreateDB(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	if out, err := cl.Psql(ctx, "bench", `
`+state.SchemaSQL()+`
CREATE TABLE accounts (aid int PRIMARY KEY, bid int, abalance int, filler character(84));
CREATE TABLE tellers (tid int PRIMARY KEY, bid int, tbalance int, filler character(84));
CREATE TABLE branches (bid int PRIMARY KEY, bbalance int, filler character(88));
CREATE TABLE history (tid int, bid int, aid int, delta int, mtime timestamp, filler character(22));
INSERT INTO accounts SELECT g, 1, 0, '' FROM generate_series(1, 100000) g;
INSERT INTO tellers SELECT g, 1, 0, '' FROM generate_series(1, 10) g;
INSERT INTO branches VALUES (1, 0, '');`); err != nil {
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
	rel := func(name string, cols ...cdc.Column) *cdc.Relation {
		var o uint32
		if err := src.QueryRow(ctx, `SELECT $1::regclass::oid`, "public."+name).Scan(&o); err != nil {
			b.Fatal(err)
		}
		return &cdc.Relation{OID: o, Table: pgtypes.TableID{Schema: "public", Name: name}, ReplicaIdentity: 'd', Columns: cols}
	}
	i4 := func(n string, key bool) cdc.Column { return cdc.Column{Name: n, TypeOID: 23, TypeMod: -1, Key: key} }
	ch := func(n string, mod int32) cdc.Column { return cdc.Column{Name: n, TypeOID: 1042, TypeMod: mod} }
	accounts := rel("accounts", i4("aid", true), i4("bid", false), i4("abalance", false), ch("filler", 88))
	tellers := rel("tellers", i4("tid", true), i4("bid", false), i4("tbalance", false), ch("filler", 88))
	branches := rel("branches", i4("bid", true), i4("bbalance", false), ch("filler", 92))
	history := rel("history", i4("tid", false), i4("bid", false), i4("aid", false), i4("delta", false),
		cdc.Column{Name: "mtime", TypeOID: 1114, TypeMod: -1}, ch("filler", 26))
	rng := rand.New(rand.NewPCG(1, 2))
	pad := func(n int) cdc.Value { return txt(fmtPad(n)) }
	lsn := pgtypes.LSN(0x1000)
	var backend int
	if err := conn.QueryRow(ctx, `SELECT pg_backend_pid()`).Scan(&backend); err != nil {
		b.Fatal(err)
	}
	cpu0 := cpuTime(b, backend)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var txs [][]*cdc.Change
		for j := 0; j < 1000; j++ {
			aid, tid, delta := strconv.Itoa(rng.IntN(100000)+1), strconv.Itoa(rng.IntN(10)+1), strconv.Itoa(rng.IntN(10000)-5000)
			txs = append(txs, []*cdc.Change{
				{Kind: cdc.Update, Rel: accounts, New: []cdc.Value{txt(aid), txt("1"), txt(delta), pad(84)}},
				{Kind: cdc.Update, Rel: tellers, New: []cdc.Value{txt(tid), txt("1"), txt(delta), pad(84)}},
				{Kind: cdc.Update, Rel: branches, New: []cdc.Value{txt("1"), txt(delta), pad(88)}},
				{Kind: cdc.Insert, Rel: history, New: []cdc.Value{txt(tid), txt("1"), txt(aid), txt(delta), txt("2024-01-01 00:00:00"), {Kind: 'n'}}},
			})
		}
		if err := a.chunk(ctx, batch(lsn, txs...)); err != nil {
			b.Fatal(err)
		}
		lsn += 1000 * 100
		if err := a.commit(ctx); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*4000)/b.Elapsed().Seconds(), "changes/s")
	// CPU time of this process and of the target backend per change: the work applying costs,
	// which (unlike elapsed time) does not depend on what else the machine runs.
	b.ReportMetric(float64((cpuTime(b, backend)-cpu0).Microseconds())/float64(b.N*4000), "cpu-µs/change")
}

// cpuTime is the CPU time (user and system) used so far by this process and by process pid.
func cpuTime(b *testing.B, pid int) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	self := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which is in parentheses): utime and stime are the 12th and
	// 13th, in clock ticks (100 per second on Linux).
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return self + time.Duration(ut+st)*10*time.Millisecond
}

func fmtPad(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = ' '
	}
	return string(b)
}
