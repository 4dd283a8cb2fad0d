package proxy_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/proxy"
)

// TestAuthMethods: SCRAM and md5 from the proxy's auth file, SCRAM pass-through with the
// server's own verifier, a wrong password (clean error, no secret in the log).
func TestAuthMethods(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	e.exec(e.src, `CREATE ROLE alice LOGIN PASSWORD 'alice-pw'; GRANT ALL ON DATABASE app TO alice`)
	e.exec(e.src, `CREATE ROLE bob LOGIN PASSWORD 'bob-pw'`)
	verifier := e.exec(e.src, `SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'`)
	if !strings.HasPrefix(verifier, "SCRAM-SHA-256$") {
		t.Fatalf("alice's verifier: %q", verifier)
	}
	// alice: the server's SCRAM verifier (pass-through); bob: a plain password, md5 to clients.
	af := fmt.Sprintf("\"postgres\" \"%s\"\n\"alice\" \"%s\"\n; comment\n\"bob\" \"bob-pw\"\n", testPassword, verifier)
	if err := os.WriteFile(e.authFile, []byte(af), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.p.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	connect := func(user, pw string) (*pgx.Conn, error) {
		return pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=%s password=%s dbname=app sslmode=disable", e.port, user, pw))
	}
	c, err := connect("alice", "alice-pw")
	if err != nil {
		t.Fatalf("alice by SCRAM pass-through: %v", err)
	}
	var who string
	if err := c.QueryRow(ctx, `SELECT current_user`).Scan(&who); err != nil || who != "alice" {
		t.Fatalf("alice: %v %q", err, who)
	}
	c.Close(ctx)
	c, err = connect("bob", "bob-pw")
	if err != nil {
		t.Fatalf("bob: %v", err)
	}
	if err := c.QueryRow(ctx, `SELECT current_user`).Scan(&who); err != nil || who != "bob" {
		t.Fatalf("bob: %v %q", err, who)
	}
	c.Close(ctx)
	// Wrong passwords and unknown users: the same clean FATAL, nothing secret logged.
	for _, tc := range [][2]string{{"alice", "wrong-secret-1"}, {"nobody", "wrong-secret-2"}, {"postgres", "wrong-secret-3"}} {
		_, err := connect(tc[0], tc[1])
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "28P01" {
			t.Errorf("%s with a wrong password: %v, want SQLSTATE 28P01", tc[0], err)
		}
	}
	logs := e.logBuf.String()
	for _, secret := range []string{"wrong-secret", "alice-pw", "bob-pw", testPassword, verifier[20:40]} {
		if strings.Contains(logs, secret) {
			t.Errorf("the proxy log contains a secret (%q)", secret)
		}
	}
	// md5 to clients when configured.
	e2 := &env{t: t, src: e.src, srcDSN: e.srcDSN, authFile: e.authFile}
	e2.start(proxy.Config{Listen: "127.0.0.1:0", Source: e.srcDSN, AuthFile: e.authFile, AuthType: "md5"})
	c, err = pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=bob password=bob-pw dbname=app sslmode=disable", e2.port))
	if err != nil {
		t.Fatalf("md5 login: %v", err)
	}
	c.Close(ctx)
	// Clear text is refused without TLS.
	e3 := &env{t: t, src: e.src, srcDSN: e.srcDSN, authFile: e.authFile}
	e3.start(proxy.Config{Listen: "127.0.0.1:0", Source: e.srcDSN, AuthFile: e.authFile, AuthType: "password"})
	if _, err := pgx.Connect(ctx, fmt.Sprintf("host=127.0.0.1 port=%d user=bob password=bob-pw dbname=app sslmode=disable", e3.port)); err == nil {
		t.Errorf("clear-text password accepted without TLS")
	}
}

// selfSigned writes a certificate and key for 127.0.0.1.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pgshift-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return certFile, keyFile
}

// TestTLS: TLS from clients (pgx and psql with sslmode=require), clear-text passwords over it.
func TestTLS(t *testing.T) {
	cert, key := "", ""
	e := newEnv(t, false, func(c *proxy.Config) {
		cert, key = selfSigned(t)
		c.TLSCertFile, c.TLSKeyFile, c.AuthType = cert, key, "password"
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := pgx.Connect(ctx, strings.Replace(e.dsn(""), "sslmode=disable", "sslmode=require", 1))
	if err != nil {
		t.Fatalf("TLS connect: %v", err)
	}
	defer c.Close(ctx)
	var one int
	if err := c.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
		t.Fatal(err)
	}
	out, err := e.psqlEnv([]string{"PGSSLMODE=require"}, "-c", "SELECT 42")
	if err != nil || out != "42" {
		t.Fatalf("psql over TLS: %v %s", err, out)
	}
	if _, err := pgx.Connect(ctx, e.dsn("")); err == nil {
		t.Errorf("clear-text password over a plain connection accepted")
	}
}

// TestCancelAndGarbage: a cancel reaches the client's own query (also after a switch) and no
// other; a client sending garbage gets a clean error while others keep working; a server that
// dies gives its clients an error, not a hang.
func TestCancelAndGarbage(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	victim := e.connect("")
	bystander := e.connect("")
	cancelOnce := func() {
		t.Helper()
		var wg sync.WaitGroup
		wg.Add(1)
		var byErr error
		go func() {
			defer wg.Done()
			_, byErr = bystander.Exec(ctx, `SELECT pg_sleep(1.5)`)
		}()
		qctx, qcancel := context.WithTimeout(ctx, 300*time.Millisecond) // pgx sends a CancelRequest
		defer qcancel()
		start := time.Now()
		_, err := victim.Exec(qctx, `SELECT pg_sleep(20)`)
		var pgErr *pgconn.PgError
		if err == nil || time.Since(start) > 10*time.Second {
			t.Fatalf("cancelled query: %v after %s", err, time.Since(start))
		}
		if errors.As(err, &pgErr) && pgErr.Code != "57014" {
			t.Errorf("cancel: SQLSTATE %s, want 57014", pgErr.Code)
		}
		wg.Wait()
		if byErr != nil {
			t.Errorf("the cancel reached another client's query: %v", byErr)
		}
	}
	// pgx closes a connection whose context expired mid-query; reconnect after each.
	cancelOnce()
	victim = e.connect("")
	if _, err := victim.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	if err := e.p.SwitchNow(ctx, proxy.Target, 5*time.Second); err != nil {
		t.Fatalf("switch: %v", err)
	}
	cancelOnce()

	// Garbage on a fresh connection: a clean protocol error.
	raw, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", e.port))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = raw.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, _ := raw.Read(buf)
	raw.Close()
	if n == 0 || buf[0] != 'E' {
		t.Errorf("garbage startup: got %q, want an ErrorResponse", buf[:n])
	}
	// Garbage after login: a clean error too, and the other sessions keep working.
	g := e.connect("")
	if _, err := g.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	conn := g.PgConn().Conn()
	_, _ = conn.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0, 1, 2, 3})
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ = conn.Read(buf)
	if n == 0 || buf[0] != 'E' || !strings.Contains(string(buf[:n]), "protocol violation") {
		t.Errorf("garbage after login: got %q, want a protocol-violation ErrorResponse", buf[:n])
	}
	var one int
	if err := bystander.QueryRow(ctx, `SELECT 1`).Scan(&one); err != nil {
		t.Errorf("another client after the garbage: %v", err)
	}
	// The server dies: the client gets an error promptly.
	doomed := e.connect("")
	if _, err := doomed.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	e.exec(e.dst, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'postgres' AND pid <> pg_backend_pid() AND backend_type = 'client backend'`)
	qctx, qcancel := context.WithTimeout(ctx, 10*time.Second)
	defer qcancel()
	if _, err := doomed.Exec(qctx, `SELECT 1`); err == nil || qctx.Err() != nil {
		t.Errorf("query on a dead server: %v (context %v), want a prompt error", err, qctx.Err())
	}
}

// TestThousandIdleClients: 1000 logged-in idle clients cost no server connection, and a busy
// client beside them works normally.
func TestThousandIdleClients(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	busy := e.connect("")
	if _, err := busy.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	conns := make([]*pgconn.PgConn, 1000)
	var g sync.WaitGroup
	errs := make(chan error, len(conns))
	sem := make(chan struct{}, 16)
	for i := range conns {
		g.Add(1)
		go func() {
			defer g.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			c, err := pgconn.Connect(ctx, e.dsn(fmt.Sprintf("application_name=idle%d", i)))
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
		}()
	}
	g.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("idle client: %v", err)
	}
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	st := e.p.Stats()
	if st.Clients < 1001 {
		t.Errorf("proxy counts %d clients, want 1001", st.Clients)
	}
	backends := e.exec(e.src, `SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend' AND datname = 'app'`)
	t.Logf("1001 clients, %d+%d server connections, %s backends on the source", st.ServerConns[0], st.ServerConns[1], backends)
	if st.ServerConns[0] > 5 {
		t.Errorf("idle clients hold %d server connections", st.ServerConns[0])
	}
	start := time.Now()
	for i := 0; i < 200; i++ {
		if _, err := busy.Exec(ctx, `SELECT 1`); err != nil {
			t.Fatal(err)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("200 queries beside 1000 idle clients took %s", d)
	}
	// One of them wakes up and works.
	if _, err := conns[500].Exec(ctx, `SELECT 1`).ReadAll(); err != nil {
		t.Errorf("an idle client's first query: %v", err)
	}
}

// TestLimitsAndConsole: max_client_conn refuses the connection over the limit with 53300;
// max_server_conn makes a request wait for a server connection and fail cleanly after the
// connect timeout; the console's SHOW commands describe the sessions.
func TestLimitsAndConsole(t *testing.T) {
	e := newEnv(t, false, func(c *proxy.Config) {
		c.MaxClientConn, c.MaxServerConn, c.ConnectTimeout = 3, 1, 2*time.Second
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := e.connect("application_name=first")
	if _, err := a.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	b := e.connect("application_name=second")
	_, err := b.Exec(ctx, `SELECT 1`)
	if err == nil || !strings.Contains(err.Error(), "max_server_conn") {
		t.Errorf("a second server connection over max_server_conn: %v", err)
	}
	// The failed session was closed (its client sees FATAL 08006); a, the console and one more
	// make three clients.
	adm := e.admin()
	e.connect("application_name=third")
	var pgErr *pgconn.PgError
	if _, err := pgx.Connect(ctx, e.dsn("")); err == nil {
		t.Errorf("a fourth client over max_client_conn was accepted")
	} else if !errors.As(err, &pgErr) || pgErr.Code != "53300" {
		t.Errorf("over max_client_conn: %v, want SQLSTATE 53300", err)
	}
	count := func(cmd string) int {
		rows, err := adm.Query(ctx, cmd)
		if err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
		defer rows.Close()
		n := 0
		for rows.Next() {
			n++
		}
		return n
	}
	if n := count("SHOW CLIENTS"); n < 1 {
		t.Errorf("SHOW CLIENTS: %d rows", n)
	}
	if n := count("SHOW SERVERS"); n != 1 {
		t.Errorf("SHOW SERVERS: %d rows, want 1", n)
	}
	if n := count("SHOW STATS"); n < 5 {
		t.Errorf("SHOW STATS: %d rows", n)
	}
	if _, err := adm.Exec(ctx, "SHOW NONSENSE"); err == nil {
		t.Errorf("an unknown SHOW was accepted")
	}
}
