package db

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// TestDescribeKeepsTheChain: an error on an open connection keeps the context of every wrap
// (which object, which step), gains the endpoint and the fix, and stays matchable.
func TestDescribeKeepsTheChain(t *testing.T) {
	e := Endpoint{Role: Source, DSN: "postgres://app:s3cret-pw@db.example:5433/prod"}
	pgErr := &pgconn.PgError{Severity: "ERROR", Code: "42501", Message: "permission denied for table orders"}
	err := e.Describe(fmt.Errorf("read replication slot pgshift_prod: %w", fmt.Errorf("count rows of public.orders: %w", pgErr)))
	msg := err.Error()
	for _, want := range []string{"source app@db.example:5433/prod", "read replication slot pgshift_prod", "count rows of public.orders",
		"permission denied for table orders", "42501", "grant the missing privilege"} {
		if !strings.Contains(msg, want) {
			t.Errorf("message lacks %q: %s", want, msg)
		}
	}
	var got *pgconn.PgError
	if !errors.As(err, &got) || got != pgErr {
		t.Errorf("the server error is no longer reachable with errors.As: %v", err)
	}
	// Describing again (a caller up the stack) does not repeat the endpoint.
	again := e.Describe(fmt.Errorf("preflight: %w", err))
	if n := strings.Count(again.Error(), "source app@db.example"); n != 1 {
		t.Errorf("endpoint named %d times: %s", n, again)
	}
	if !strings.Contains(again.Error(), "preflight") {
		t.Errorf("outer context lost: %s", again)
	}
}

// TestDescribeDeadlineIsNotAConnectTimeout: a query that runs past its deadline on an open
// connection is not "timed out connecting".
func TestDescribeDeadlineIsNotAConnectTimeout(t *testing.T) {
	e := Endpoint{Role: Target, DSN: "postgres://app@db.example/prod"}
	err := e.Describe(fmt.Errorf("build index orders_pkey: %w", context.DeadlineExceeded))
	if strings.Contains(err.Error(), "connecting") {
		t.Errorf("a query deadline reads as a connect timeout: %s", err)
	}
	if !strings.Contains(err.Error(), "build index orders_pkey") {
		t.Errorf("context lost: %s", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("errors.Is lost: %v", err)
	}
}

// TestConnectTimeoutNamesTheFix: a real connect that times out says so, with the fix.
func TestConnectTimeoutNamesTheFix(t *testing.T) {
	// A listener that never answers the startup message: the connect times out.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	e := Endpoint{Role: Source, DSN: fmt.Sprintf("postgres://u@%s/db?connect_timeout=1&sslmode=disable", l.Addr())}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = e.Connect(ctx)
	if err == nil {
		t.Fatal("connected to a silent server")
	}
	if !strings.Contains(err.Error(), "timed out connecting") || !strings.Contains(err.Error(), "connect_timeout") {
		t.Errorf("connect timeout not explained: %v", err)
	}
}
