package proxy_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/proxy"
)

const testPassword = "s3cret-pw"

// env is a proxy in front of one or two throwaway clusters.
type env struct {
	t        *testing.T
	src, dst *pgtest.Cluster
	srcDSN   string
	dstDSN   string
	p        *proxy.Proxy
	port     int
	authFile string
	logBuf   *syncBuffer
}

// newEnv starts source (and, with target, a target) cluster with SCRAM passwords, a database
// "app" on each, and a proxy in front with an auth file for postgres.
func newEnv(t *testing.T, target bool, tune func(*proxy.Config)) *env {
	t.Helper()
	return newEnvWith(t, target, tune, proxy.Options{})
}

// newEnvWith is newEnv with the proxy's options (e.g. a Progress).
func newEnvWith(t *testing.T, target bool, tune func(*proxy.Config), opts proxy.Options) *env {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL (skipped with -short)")
	}
	e := &env{t: t}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.src = pgtest.New(t, pgtest.Options{Password: testPassword, Name: t.Name() + "-src"})
	var err error
	if e.srcDSN, err = e.src.CreateDB(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if target {
		e.dst = pgtest.New(t, pgtest.Options{Password: testPassword, Name: t.Name() + "-dst"})
		if e.dstDSN, err = e.dst.CreateDB(ctx, "app"); err != nil {
			t.Fatal(err)
		}
	}
	e.authFile = filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(e.authFile, []byte(fmt.Sprintf("\"postgres\" \"%s\"\n", testPassword)), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := proxy.Config{Listen: "127.0.0.1:0", Source: e.srcDSN, Target: e.dstDSN, AuthFile: e.authFile, ConnectTimeout: 10 * time.Second}
	if tune != nil {
		tune(&cfg)
	}
	e.startWith(cfg, opts)
	return e
}

func (e *env) start(cfg proxy.Config) { e.startWith(cfg, proxy.Options{}) }

func (e *env) startWith(cfg proxy.Config, opts proxy.Options) {
	t := e.t
	e.logBuf = &syncBuffer{}
	log := slog.New(slog.NewTextHandler(e.logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Logger = log
	p, err := proxy.New(cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.ServeListener(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("proxy: %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("proxy did not stop within 20 s")
		}
		if t.Failed() {
			t.Logf("proxy log:\n%s", tail(e.logBuf.String(), 6000))
		}
	})
	e.p = p
	e.port = ln.Addr().(*net.TCPAddr).Port
}

// dsn is a DSN through the proxy.
func (e *env) dsn(extra string) string {
	return fmt.Sprintf("host=127.0.0.1 port=%d user=postgres password=%s dbname=app sslmode=disable %s", e.port, testPassword, extra)
}

func (e *env) connect(extra string) *pgx.Conn {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, e.dsn(extra))
	if err != nil {
		e.t.Fatalf("connect through the proxy: %v", err)
	}
	e.t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// psql runs psql through the proxy and returns its output.
func (e *env) psql(args ...string) (string, error) { return e.psqlEnv(nil, args...) }

func (e *env) psqlEnv(env []string, args ...string) (string, error) {
	bin := filepath.Join(e.src.BinDir(), "psql")
	full := append([]string{"-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", fmt.Sprint(e.port), "-U", "postgres", "-d", "app"}, args...)
	cmd := exec.Command(bin, full...)
	cmd.Env = append(append(os.Environ(), "PGPASSWORD="+testPassword, "PGSSLMODE=disable"), env...)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (e *env) exec(c *pgtest.Cluster, sql string) string {
	e.t.Helper()
	out, err := c.Psql(context.Background(), "app", sql)
	if err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return out
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
