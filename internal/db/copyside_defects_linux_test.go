package db

import (
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// sockopts reads the liveness options of a connection's TCP socket.
func sockopts(t *testing.T, c net.Conn) map[string]int {
	t.Helper()
	tc, ok := c.(*net.TCPConn)
	if !ok {
		t.Fatalf("connection is a %T, not TCP", c)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	var gerr error
	err = raw.Control(func(fd uintptr) {
		for name, opt := range map[string][2]int{
			"keepalive": {syscall.SOL_SOCKET, syscall.SO_KEEPALIVE},
			"idle":      {syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE},
			"interval":  {syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL},
			"count":     {syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT},
			"user":      {syscall.IPPROTO_TCP, tcpUserTimeout},
		} {
			v, err := syscall.GetsockoptInt(int(fd), opt[0], opt[1])
			if err != nil {
				gerr = err
				return
			}
			out[name] = v
		}
	})
	if err != nil || gerr != nil {
		t.Fatal(err, gerr)
	}
	return out
}

// TestKeepalivesOnEveryConnection checks, on real connections, that plain, pooled and
// replication sessions carry TCP keepalives and TCP_USER_TIMEOUT, that libpq's parameters
// override them (and are not sent to the server as unknown settings), and that a replication
// session is exempt from the role's idle_in_transaction_session_timeout.
func TestKeepalivesOnEveryConnection(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	dsn := c.DSN("postgres") + " sslmode=disable"
	want := map[string]int{"keepalive": 1, "idle": int(keepaliveIdle / time.Second), "interval": int(keepaliveInterval / time.Second),
		"count": keepaliveCount, "user": int(userTimeout / time.Millisecond)}
	check := func(what string, conn net.Conn, want map[string]int) {
		t.Helper()
		got := sockopts(t, conn)
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: socket option %s = %d, want %d", what, k, got[k], v)
			}
		}
	}
	e := Endpoint{Role: Source, DSN: dsn}
	conn, err := e.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check("plain", conn.PgConn().Conn(), want)
	conn.Close(ctx)

	pool, err := e.Pool(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check("pool", pc.Conn().PgConn().Conn(), want)
	pc.Release()
	pool.Close()

	if _, err := c.Psql(ctx, "postgres", `ALTER ROLE postgres SET idle_in_transaction_session_timeout = '1s'`); err != nil {
		t.Fatal(err)
	}
	defer c.Psql(ctx, "postgres", `ALTER ROLE postgres RESET idle_in_transaction_session_timeout`)
	for name, open := range map[string]func(context.Context) (*pgconn.PgConn, error){
		"replication": e.Replication,
		"replication with params": func(ctx context.Context) (*pgconn.PgConn, error) {
			return e.ReplicationWithParams(ctx, map[string]string{"DateStyle": "ISO"})
		},
	} {
		rc, err := open(ctx)
		if err != nil {
			t.Fatal(err)
		}
		check(name, rc.Conn(), want)
		res, err := rc.Exec(ctx, "SHOW idle_in_transaction_session_timeout").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		if got := string(res[0].Rows[0][0]); got != "0" {
			t.Errorf("%s: idle_in_transaction_session_timeout = %s, want 0 (the role sets 1s)", name, got)
		}
		rc.Close(ctx)
	}

	// libpq's keepalive parameters are honoured, not sent to the server.
	e2 := Endpoint{Role: Source, DSN: dsn + " keepalives_idle=7 keepalives_interval=3 keepalives_count=2 tcp_user_timeout=4500"}
	conn, err = e2.Connect(ctx)
	if err != nil {
		t.Fatalf("DSN with libpq keepalive parameters: %v", err)
	}
	check("libpq parameters", conn.PgConn().Conn(), map[string]int{"keepalive": 1, "idle": 7, "interval": 3, "count": 2, "user": 4500})
	conn.Close(ctx)
	e3 := Endpoint{Role: Source, DSN: dsn + " keepalives=0 tcp_user_timeout=0"}
	conn, err = e3.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	check("keepalives=0", conn.PgConn().Conn(), map[string]int{"keepalive": 0, "user": 0})
	conn.Close(ctx)
	_, err = Endpoint{Role: Source, DSN: dsn + " keepalives_idle=soon"}.Connect(ctx)
	if err == nil || !strings.Contains(err.Error(), "keepalives_idle") {
		t.Errorf("bad keepalives_idle: %v", err)
	}
}
