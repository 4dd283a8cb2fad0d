package db

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// fakeServer answers the first refusals startups with the given SQLSTATE, as a server in
// crash recovery or shutting down does, then accepts every later one (trust authentication).
func fakeServer(t *testing.T, code string, refusals int32) (addr string, startups *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	startups = &atomic.Int32{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				be := pgproto3.NewBackend(c, c)
				msg, err := be.ReceiveStartupMessage()
				if err != nil {
					return
				}
				if _, ok := msg.(*pgproto3.SSLRequest); ok {
					c.Write([]byte{'N'})
					if _, err := be.ReceiveStartupMessage(); err != nil {
						return
					}
				}
				if startups.Add(1) <= refusals {
					be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", Code: code, Message: "the database system is not yet accepting connections"})
					be.Flush()
					return
				}
				be.Send(&pgproto3.AuthenticationOk{})
				be.Send(&pgproto3.BackendKeyData{ProcessID: 1, SecretKey: []byte{0, 0, 0, 2}})
				be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
				be.Flush()
				be.Receive() // until the client goes
			}(c)
		}
	}()
	return ln.Addr().String(), startups
}

// TestConnectWhenUp: an agent started while the target is in crash recovery (57P03) waits for
// it and starts (the torture harness found it exiting at once); any other refusal, and a
// server that stays down past the wait, still fail at once with the server's error.
func TestConnectWhenUp(t *testing.T) {
	ctx := context.Background()
	log := slog.New(slog.DiscardHandler)
	endpoint := func(addr string) Endpoint {
		host, port, _ := net.SplitHostPort(addr)
		return Endpoint{Role: Target, DSN: "host=" + host + " port=" + port + " user=u dbname=d sslmode=disable connect_timeout=5"}
	}

	addr, startups := fakeServer(t, "57P03", 3)
	conn, err := endpoint(addr).ConnectWhenUp(ctx, 30*time.Second, log)
	if err != nil {
		t.Fatalf("ConnectWhenUp during recovery: %v", err)
	}
	conn.Close(ctx)
	if n := startups.Load(); n != 4 {
		t.Errorf("startups = %d, want 4 (three refused, then accepted)", n)
	}

	addr, startups = fakeServer(t, "28P01", 100)
	_, err = endpoint(addr).ConnectWhenUp(ctx, 30*time.Second, log)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
		t.Fatalf("error = %v, want the server's 28P01", err)
	}
	if n := startups.Load(); n != 1 {
		t.Errorf("a failed authentication was tried %d times, want once", n)
	}

	addr, _ = fakeServer(t, "57P03", 1000)
	began := time.Now()
	_, err = endpoint(addr).ConnectWhenUp(ctx, time.Second, log)
	if !errors.As(err, &pgErr) || pgErr.Code != "57P03" {
		t.Fatalf("a server that stays in recovery: error = %v, want its 57P03", err)
	}
	if d := time.Since(began); d > 5*time.Second {
		t.Errorf("gave up after %s, want about the 1 s wait", d)
	}
}

// TestSessionsOutliveIdleTimeout: a database whose idle_in_transaction_session_timeout is
// short (the torture harness draws one on the source, and the copy brings the source's
// database settings to the target) ended an apply batch that stalled for a moment, and the
// agent stopped. pgshift's sessions are exempt; a DSN that asks for the timeout keeps it.
func TestSessionsOutliveIdleTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL (skipped with -short)")
	}
	ctx := context.Background()
	cl, err := pgtest.Start(ctx, pgtest.Options{Name: t.Name()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Stop()
	dsn, err := cl.CreateDB(ctx, "idle")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cl.Psql(ctx, "idle", `ALTER DATABASE idle SET idle_in_transaction_session_timeout = '100ms'`); err != nil {
		t.Fatal(err)
	}
	idle := func(dsn string) error {
		conn, err := Endpoint{Role: Target, DSN: dsn}.Connect(ctx)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
			return err
		}
		time.Sleep(400 * time.Millisecond)
		_, err = conn.Exec(ctx, "SELECT 1")
		return err
	}
	if err := idle(dsn); err != nil {
		t.Errorf("a pgshift session idle in a transaction for 400 ms under a 100 ms timeout: %v", err)
	}
	if err := idle(dsn + " idle_in_transaction_session_timeout=100"); err == nil {
		t.Error("a DSN that sets the timeout lost it")
	}
}
