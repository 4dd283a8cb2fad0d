package app

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestRunWithProxy: `run --proxy` serves clients while following; in split mode with every
// read routed, a session's read after its own write stays on the source until the agent has
// applied it, then reads go to the target, which by then has the row.
func TestRunWithProxy(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newFollowEnv(t, src, dst, "shop", `CREATE TABLE orders (id int PRIMARY KEY, note text)`)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	authFile := filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(authFile, []byte(`"postgres" "proxy-pw"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cfg.Proxy = addr
	e.cfg.ProxySettings = config.ProxySettings{Mode: "split", AuthFile: authFile, Rules: []config.RouteRule{{Name: "all", Percent: 100}}}
	a := e.start(RunOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var c *pgx.Conn
	for {
		c, err = pgx.Connect(ctx, fmt.Sprintf("postgres://postgres:proxy-pw@%s/shop?sslmode=disable", addr))
		if err == nil {
			break
		}
		select {
		case <-a.done:
			t.Fatalf("agent stopped: %v", a.err)
		case <-time.After(100 * time.Millisecond):
		}
		if ctx.Err() != nil {
			t.Fatalf("connect through run --proxy: %v", err)
		}
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, `INSERT INTO orders VALUES (1, 'first')`); err != nil {
		t.Fatal(err)
	}
	port := func() string {
		var p, note string
		if err := c.QueryRow(ctx, `SELECT (SELECT setting FROM pg_settings WHERE name = 'port'), note FROM orders WHERE id = 1`).Scan(&p, &note); err != nil {
			t.Fatalf("read after write: %v", err)
		}
		if note != "first" {
			t.Fatalf("read after write saw %q", note)
		}
		return p
	}
	for port() != fmt.Sprint(dst.Port) {
		if ctx.Err() != nil {
			t.Fatal("reads never moved to the target")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := e.query(dst, `SELECT note FROM orders WHERE id = 1`); got != "first" {
		t.Errorf("target has %q", got)
	}
	if err := a.stop(); err != nil {
		t.Errorf("agent: %v", err)
	}
}
