package state

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

func connector(dsn string) func(context.Context) (*pgx.Conn, error) {
	return func(ctx context.Context) (*pgx.Conn, error) { return pgx.Connect(ctx, dsn) }
}

func terminate(t *testing.T, conn *pgx.Conn, pid int) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), `SELECT pg_terminate_backend($1::int4)`, int32(pid)); err != nil {
		t.Fatal(err)
	}
}

// TestLease checks the lease contract against a real server: one holder, a refusal naming it,
// fencing of the holder's sessions across a lost lease session, and takeover after release.
func TestLease(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	dsn, admin := c.NewDB(t, "lease")
	if err := Ensure(ctx, admin); err != nil {
		t.Fatal(err)
	}
	connect := connector(dsn)

	a, err := AcquireLease(ctx, connect, "copy", LeaseOptions{Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if running, err := AgentRunning(ctx, admin); err != nil || !running {
		t.Fatalf("AgentRunning = %v, %v with a lease held", running, err)
	}
	_, err = AcquireLease(ctx, connect, "run", LeaseOptions{})
	var held *HeldError
	if !errors.As(err, &held) || !held.Known || held.Holder.PID != os.Getpid() || held.Holder.Command != "copy" ||
		held.Holder.LeasePID != a.Holder().LeasePID {
		t.Fatalf("second acquire: %v (%+v), want a HeldError naming the holder", err, held)
	}
	ls, err := ReadLease(ctx, admin)
	if err != nil || !ls.Alive || !ls.Recorded || ls.LockPID != a.Holder().LeasePID || ls.Holder.Command != "copy" {
		t.Fatalf("ReadLease = %+v, %v", ls, err)
	}

	// A fenced session of the holder keeps a new holder waiting, even after the old lease
	// session is gone, until that session ends.
	fenced, err := connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Fence(ctx, fenced); err != nil {
		t.Fatalf("fence a session of the holder: %v", err)
	}
	terminate(t, admin, a.Holder().LeasePID)
	type result struct {
		l   *Lease
		err error
	}
	got := make(chan result, 1)
	go func() {
		l, err := AcquireLease(ctx, connect, "run", LeaseOptions{Interval: 100 * time.Millisecond, FenceTimeout: time.Minute})
		got <- result{l, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("a new holder got the lease while the old holder's fenced session lives: %v", r.err)
	case <-time.After(1500 * time.Millisecond):
	}
	// The old holder cannot fence a new session any more: its lease session is gone.
	late, err := connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Fence(ctx, late); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("fence after the lease session was lost: %v, want ErrLeaseLost", err)
	}
	late.Close(ctx)
	fenced.Close(ctx)
	var b *Lease
	select {
	case r := <-got:
		if r.err != nil {
			t.Fatalf("new holder after the old sessions ended: %v", r.err)
		}
		b = r.l
	case <-time.After(30 * time.Second):
		t.Fatal("the new holder did not get the lease after the old fenced session ended")
	}
	s2, err := connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(ctx)
	if err := b.Fence(ctx, s2); err != nil {
		t.Fatalf("fence a session of the new holder: %v", err)
	}

	// Keep: a lost lease session cancels bound contexts, then the lease is taken again.
	keepCtx, stopKeep := context.WithCancel(ctx)
	keepDone := make(chan error, 1)
	go func() { keepDone <- b.Keep(keepCtx) }()
	bound, cancelBound := b.Bind(ctx)
	defer cancelBound()
	old := b.Holder().LeasePID
	s2.Close(ctx) // the new holder's own fenced session would block its retake
	terminate(t, admin, old)
	select {
	case <-bound.Done():
		if !errors.Is(context.Cause(bound), ErrLeaseLost) {
			t.Fatalf("bound context ended with %v, want ErrLeaseLost", context.Cause(bound))
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a bound context survived the loss of the lease session")
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := b.WaitHeld(wctx); err != nil {
		t.Fatalf("WaitHeld: %v", err)
	}
	if now := b.Holder().LeasePID; now == old || now == 0 {
		t.Fatalf("lease session pid %d after retake (was %d)", now, old)
	}
	time.Sleep(300 * time.Millisecond)
	h, ok, err := loadHolder(ctx, admin)
	if err != nil || !ok || h.LeasePID != b.Holder().LeasePID || time.Since(h.Heartbeat) > 5*time.Second {
		t.Fatalf("holder row after retake: %+v %v %v", h, ok, err)
	}
	stopKeep()
	if err := <-keepDone; err != nil {
		t.Fatalf("Keep: %v", err)
	}
	b.Release()
	if running, err := AgentRunning(ctx, admin); err != nil || running {
		t.Fatalf("AgentRunning after Release = %v, %v", running, err)
	}
	start := time.Now()
	c3, err := AcquireLease(ctx, connect, "run", LeaseOptions{})
	if err != nil {
		t.Fatalf("acquire after release: %v", err)
	}
	if d := time.Since(start); d > 400*time.Millisecond {
		t.Errorf("acquire after release took %s", d)
	}
	c3.Release()
}

// TestLeaseRetakeRefusedWhenTaken: a holder that loses its lease session while another agent
// takes the lease stops with a HeldError from Keep and WaitHeld.
func TestLeaseRetakeRefusedWhenTaken(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	dsn, admin := c.NewDB(t, "retake")
	if err := Ensure(ctx, admin); err != nil {
		t.Fatal(err)
	}
	connect := connector(dsn)
	a, err := AcquireLease(ctx, connect, "run", LeaseOptions{Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	terminate(t, admin, a.Holder().LeasePID)
	var b *Lease
	for i := 0; ; i++ {
		if b, err = AcquireLease(ctx, connect, "copy", LeaseOptions{}); err == nil {
			break
		}
		if i > 50 {
			t.Fatalf("rival could not take the lease: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	defer b.Release()
	keepDone := make(chan error, 1)
	go func() { keepDone <- a.Keep(ctx) }()
	a.Touch()
	var held *HeldError
	select {
	case err := <-keepDone:
		if !errors.As(err, &held) || held.Holder.Command != "copy" {
			t.Fatalf("Keep ended with %v, want a HeldError naming the rival", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Keep did not notice the lost lease")
	}
	if err := a.WaitHeld(ctx); !errors.As(err, &held) {
		t.Fatalf("WaitHeld: %v, want the HeldError", err)
	}
}

// TestTransitionsCompareAndSet: phase and table-state changes name the state they expect and
// change nothing when the row is in another.
func TestTransitionsCompareAndSet(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	_, conn := c.NewDB(t, "cas")
	if err := Ensure(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if err := Create(ctx, conn, Migration{SourceSystemID: "1", SourceDatabase: "d", Slot: "s", Publication: "p", Phase: pgtypes.PhaseSchema}); err != nil {
		t.Fatal(err)
	}
	a := pgtypes.TableID{Schema: "public", Name: "a"}
	if err := RegisterTables(ctx, conn, []TableProgress{{ID: a, Root: a, Kind: KindData}}, 0x100); err != nil {
		t.Fatal(err)
	}
	// Tables move only in the data phase.
	if err := StartTable(ctx, conn, a, 1, 0); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("StartTable in phase schema: %v", err)
	}
	if err := Advance(ctx, conn, pgtypes.PhaseNew, pgtypes.PhaseData); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("Advance from a phase the row is not in: %v", err)
	}
	if err := Advance(ctx, conn, pgtypes.PhaseSchema, pgtypes.PhaseData); err != nil {
		t.Fatal(err)
	}
	if err := Advance(ctx, conn, pgtypes.PhaseData, pgtypes.PhaseSchema); err == nil {
		t.Fatal("phase moved backwards")
	}
	chunk := func() error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return RecordChunk(ctx, tx, a, 0, 10, 100) })
	}
	if err := chunk(); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("RecordChunk of a pending table: %v", err)
	}
	if err := FinishTable(ctx, conn, a); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("FinishTable of a pending table: %v", err)
	}
	if err := StartTable(ctx, conn, a, 1, 0); err != nil {
		t.Fatal(err)
	}
	if err := chunk(); err != nil {
		t.Fatal(err)
	}
	if err := FinishTable(ctx, conn, a); err != nil {
		t.Fatal(err)
	}
	if err := StartTable(ctx, conn, a, 1, 0); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("StartTable of a done table: %v", err)
	}
	if err := FinishTable(ctx, conn, a); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("FinishTable twice: %v", err)
	}
	tables, err := LoadTables(ctx, conn)
	if err != nil || len(tables) != 1 || tables[0].State != TableDone || tables[0].Rows != 10 {
		t.Fatalf("tables %+v %v", tables, err)
	}
	if err := Advance(ctx, conn, pgtypes.PhaseData, pgtypes.PhasePostData); err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return ResetTables(ctx, tx, []pgtypes.TableID{a}, 0x200) })
	if !errors.Is(err, ErrStateConflict) {
		t.Fatalf("ResetTables after the data phase: %v", err)
	}

	// The applied position never moves back.
	save := func(lsn pgtypes.LSN) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return SavePosition(ctx, tx, lsn, time.Now()) })
	}
	for _, lsn := range []pgtypes.LSN{0x1000, 0x2000, 0x2000} {
		if err := save(lsn); err != nil {
			t.Fatalf("save %s: %v", lsn, err)
		}
	}
	if err := save(0x1800); !errors.Is(err, ErrStateConflict) {
		t.Fatalf("position moved back: %v", err)
	}
	if p, err := LoadPosition(ctx, conn); err != nil || p.AppliedLSN != 0x2000 {
		t.Fatalf("position %s %v", p.AppliedLSN, err)
	}
}

// TestLeaseKeptForLiveHolderOnThisHost: the lock is free because the holder's lease session
// was lost (a target restart), but the holder still runs on this host and is taking it back:
// a new agent refuses instead of taking over (found by the torture harness: a second agent
// started during a target restart took the migration from the running one).
func TestLeaseKeptForLiveHolderOnThisHost(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	dsn, admin := c.NewDB(t, "livehold")
	if err := Ensure(ctx, admin); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	// A process standing in for the running agent: its command line names pgshift.
	holder := exec.Command("/bin/sleep", "60")
	holder.Args[0] = "pgshift-agent-stand-in"
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = holder.Process.Kill(); _ = holder.Wait() }()
	if _, err := admin.Exec(ctx, `INSERT INTO pgshift.agent (host, pid, command, started_at, lease_pid, heartbeat_at)
		VALUES ($1::text, $2::int4, 'run', now(), 0, now())`, host, int32(holder.Process.Pid)); err != nil {
		t.Fatal(err)
	}
	_, err := AcquireLease(ctx, connector(dsn), "run", LeaseOptions{})
	var held *HeldError
	if !errors.As(err, &held) || !held.Reconnecting || !strings.Contains(err.Error(), "still alive") {
		t.Fatalf("got %v, want a refusal naming the live holder", err)
	}
	// Once that process is gone, the migration is free.
	_ = holder.Process.Kill()
	_ = holder.Wait()
	l, err := AcquireLease(ctx, connector(dsn), "run", LeaseOptions{})
	if err != nil {
		t.Fatalf("after the holder ended: %v", err)
	}
	l.Release()
}

// TestWithLeaseThroughRestart: the session taking the lease is terminated right after it
// connected (what a fast shutdown or restart of the target does to an agent starting at that
// moment); WithLease connects again and runs fn instead of failing the agent's start. A
// server that is down (no connection) still fails at once.
func TestWithLeaseThroughRestart(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn, admin := c.NewDB(t, "leaserestart")
	if err := Ensure(ctx, admin); err != nil {
		t.Fatal(err)
	}
	calls := 0
	connect := func(ctx context.Context) (*pgx.Conn, error) {
		conn, err := pgx.Connect(ctx, dsn)
		calls++
		if err == nil && calls == 1 {
			terminate(t, admin, int(conn.PgConn().PID()))
			time.Sleep(200 * time.Millisecond) // gone, its FATAL waiting in the socket
		}
		return conn, err
	}
	ran := false
	err := WithLease(ctx, connect, "run", 100*time.Millisecond, slog.New(slog.DiscardHandler), func(ctx context.Context, lease *Lease) error {
		ran = true
		return nil
	})
	if err != nil || !ran || calls < 2 {
		t.Fatalf("WithLease after its first session was terminated: err %v, ran %v, %d connects", err, ran, calls)
	}
	start := time.Now()
	err = WithLease(ctx, connector("host=127.0.0.1 port=1 user=postgres dbname=x sslmode=disable connect_timeout=2"), "run", time.Second,
		slog.New(slog.DiscardHandler), func(context.Context, *Lease) error { return nil })
	if err == nil || time.Since(start) > 10*time.Second {
		t.Fatalf("a server that is down: %v after %s, want an error at once", err, time.Since(start))
	}
}
