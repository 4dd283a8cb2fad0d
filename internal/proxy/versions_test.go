package proxy_test

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/proxy"
)

// TestProtocol32WithPostgres18 puts the proxy in front of a PostgreSQL 18 server, the first to
// speak wire protocol 3.2 (cancel keys of up to 256 bytes). A client asking for 3.2 gets it
// from the proxy with a 32-byte key, a 3.0 client a 4-byte one, a client asking for a newer
// minor is told 3.2 (NegotiateProtocolVersion); queries work either way, and a cancel sent with
// the long key reaches the query on the server (which the proxy speaks 3.0 to).
func TestProtocol32WithPostgres18(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL 18 (skipped with -short)")
	}
	e := &env{t: t}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e.src = pgtest.New(t, pgtest.Options{Password: testPassword, Name: t.Name(), Version: 18})
	var err error
	if e.srcDSN, err = e.src.CreateDB(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	e.authFile = filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(e.authFile, []byte(fmt.Sprintf("\"postgres\" \"%s\"\n", testPassword)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.start(proxy.Config{Listen: "127.0.0.1:0", Source: e.srcDSN, AuthFile: e.authFile, ConnectTimeout: 10 * time.Second})

	// The server itself speaks 3.2: the test is about a real 3.2 peer.
	direct, err := pgx.Connect(ctx, e.srcDSN+" max_protocol_version=3.2")
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close(ctx)
	if n := len(direct.PgConn().SecretKey()); n <= 4 {
		t.Fatalf("PostgreSQL 18 gave a 3.2 client a %d-byte cancel key; the test needs a 3.2 server", n)
	}

	for _, c := range []struct {
		opt    string
		keyLen int
	}{{"", 4}, {"max_protocol_version=3.2", 32}, {"min_protocol_version=3.2 max_protocol_version=3.2", 32}} {
		conn := e.connect(c.opt)
		if n := len(conn.PgConn().SecretKey()); n != c.keyLen {
			t.Errorf("%q: the proxy gave a %d-byte cancel key, want %d", c.opt, n, c.keyLen)
		}
		var v int
		if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&v); err != nil || v/10000 != 18 {
			t.Fatalf("%q: query through the proxy: %d %v", c.opt, v, err)
		}
		// A cancel with the proxy's key ends the query on the server.
		qctx, qcancel := context.WithTimeout(ctx, 300*time.Millisecond)
		_, err := conn.Exec(qctx, `SELECT pg_sleep(30) /* cancel me */`)
		qcancel()
		if err == nil {
			t.Fatalf("%q: the sleep was not interrupted", c.opt)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			var n int
			if err := direct.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%cancel me%' AND pid <> pg_backend_pid() AND state = 'active'`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%q: the cancel request did not reach the server's query", c.opt)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	// A client asking for 3.9 is told the newest the proxy speaks: 3.2.
	nc, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", e.port))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	sm := &pgproto3.StartupMessage{ProtocolVersion: 3<<16 | 9, Parameters: map[string]string{"user": "postgres", "database": "app"}}
	raw, err := sm.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(br, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
	if _, err := io.ReadFull(br, body); err != nil {
		t.Fatal(err)
	}
	if hdr[0] != 'v' || binary.BigEndian.Uint32(body[:4]) != 2 {
		t.Fatalf("asked for 3.9, the proxy answered %q %v; want NegotiateProtocolVersion with minor 2", hdr[0], body)
	}
}
