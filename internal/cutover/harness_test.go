package cutover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/copy"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/follow"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/proxy"
	"github.com/pgshift/pgshift/internal/state"
)

// env is a source and a target as `pgshift copy` leaves them, and the agent (follow, proxy,
// cutover engine) started and stopped by the test.
type env struct {
	t        *testing.T
	src, dst *pgtest.Cluster
	cfg      config.Config
	addr     string
	agent    *testAgent
}

const testSchema = `
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 20) g;
CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, writer int NOT NULL, n int NOT NULL, note text);
CREATE TABLE history (id bigserial PRIMARY KEY, account int NOT NULL, delta int NOT NULL, at timestamptz NOT NULL DEFAULT now());
CREATE MATERIALIZED VIEW balance_total AS SELECT sum(balance) AS total FROM accounts;
`

func testLog() *slog.Logger {
	if os.Getenv("PGSHIFT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newEnv(t *testing.T) *env { return newEnvWith(t, nil, nil) }

// newEnvWith is newEnv with setup run on the source after the test schema (and before the
// copy), and tune applied to the configuration before the copy.
func newEnvWith(t *testing.T, setup func(ctx context.Context, src *pgtest.Cluster), tune func(*config.Config)) *env {
	t.Helper()
	return newEnvVersions(t, 0, 0, setup, tune)
}

// newEnvVersions is newEnvWith on servers of the given majors (0: the system's).
func newEnvVersions(t *testing.T, srcMajor, dstMajor int, setup func(ctx context.Context, src *pgtest.Cluster), tune func(*config.Config)) *env {
	t.Helper()
	var src, dst *pgtest.Cluster
	var srcDSN, dstDSN string
	if srcMajor == 0 && dstMajor == 0 {
		src, dst, srcDSN, dstDSN = pgtest.Pair(t, "shop")
	} else {
		src, dst, srcDSN, dstDSN = pgtest.PairVersions(t, "shop", srcMajor, dstMajor)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := src.Psql(ctx, "shop", testSchema); err != nil {
		t.Fatalf("schema: %v %s", err, out)
	}
	if setup != nil {
		setup(ctx, src)
	}
	cfg := config.Defaults()
	cfg.Source, cfg.Target, cfg.Jobs = srcDSN, dstDSN, 2
	if tune != nil {
		tune(&cfg)
	}
	if _, err := copy.Run(ctx, cfg, copy.Options{NoProgress: true, LeaseInterval: 500 * time.Millisecond}, testLog()); err != nil {
		t.Fatalf("copy: %v", err)
	}
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
	cfg.Proxy = addr
	cfg.ProxySettings = config.ProxySettings{AuthFile: authFile, PauseTimeout: 5 * time.Second}
	no := false
	cfg.Cutover.RequireVerify = &no
	return &env{t: t, src: src, dst: dst, cfg: cfg, addr: addr}
}

// testAgent is the agent of `pgshift run --proxy` reduced to what cutover needs: the lease,
// the proxy in the live side's mode, and the engine (which follows).
type testAgent struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
	mu     sync.Mutex
	engine *Engine
	proxy  *proxy.Proxy
}

func (e *env) start(fault func(op string, step int) error) *testAgent {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	a := &testAgent{cancel: cancel, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() {
		defer close(a.done)
		target := db.Endpoint{Role: db.Target, DSN: e.cfg.Target}
		a.err = state.WithLease(ctx, target.Connect, "run", 500*time.Millisecond, testLog(), func(ctx context.Context, lease *state.Lease) error {
			live, err := Live(ctx, target, db.Endpoint{Role: db.Source, DSN: e.cfg.Source})
			if err != nil {
				return err
			}
			pc := proxy.Config{Listen: e.cfg.Proxy, Source: e.cfg.Source, Target: e.cfg.Target, AuthFile: e.cfg.ProxySettings.AuthFile,
				PauseTimeout: e.cfg.ProxySettings.PauseTimeout, Mode: proxy.ModeSource}
			if live == state.LiveTarget {
				pc.Mode = proxy.ModeTarget
			}
			m := &follow.Metrics{}
			p, err := proxy.New(pc, proxy.Options{Logger: testLog()})
			if err != nil {
				return err
			}
			eng := New(Deps{Config: e.cfg, Follow: follow.RunOptions{HeartbeatInterval: 500 * time.Millisecond, MonitorInterval: 300 * time.Millisecond,
				MaxRetryDelay: time.Second}, Lease: lease, Proxy: p, Metrics: m, Log: testLog(), Fault: fault, ReverseRetry: time.Second})
			a.mu.Lock()
			a.engine, a.proxy = eng, p
			a.mu.Unlock()
			close(ready)
			g, gctx := errgroup.WithContext(ctx)
			g.Go(func() error { return p.Serve(gctx) })
			g.Go(func() error {
				err := eng.Run(gctx)
				if err == nil && gctx.Err() == nil {
					err = errors.New("engine ended")
				}
				return err
			})
			err = g.Wait()
			if ctx.Err() != nil && !isFault(err) {
				return nil
			}
			return err
		})
	}()
	select {
	case <-ready:
	case <-a.done:
		e.t.Fatalf("agent did not start: %v", a.err)
	case <-time.After(time.Minute):
		e.t.Fatal("agent did not start in a minute")
	}
	e.agent = a
	e.t.Cleanup(func() { a.stop() })
	return a
}

func (a *testAgent) stop() error {
	a.cancel()
	<-a.done
	return a.err
}

// waitFollowing waits until the engine's forward session has measured lag once (the lag
// pre-check needs a measurement).
func (e *env) waitFollowing() {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		st := e.agent.engine.d.Metrics.LastStatus()
		e.agent.engine.mu.Lock()
		since := e.agent.engine.forwardSince
		e.agent.engine.mu.Unlock()
		if !st.MeasuredAt.IsZero() && time.Since(st.MeasuredAt) < 5*time.Second && st.MeasuredAt.After(since) {
			return
		}
		select {
		case <-e.agent.done:
			e.t.Fatalf("agent stopped: %v", e.agent.err)
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			e.t.Fatal("the agent never measured lag")
		}
	}
}

// workload writes through the proxy from n sessions until stopped: each transaction inserts
// an event (identity key handed out by the live side), moves a balance and records it in
// history. Every committed transaction is remembered; a failed one is counted.
type workload struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	failed  atomic.Int64
	mu      sync.Mutex
	ids     map[int64]string // event id → "writer/n"
	errs    []string
	commits atomic.Int64
}

func (e *env) startWorkload(n int) *workload {
	ctx, cancel := context.WithCancel(context.Background())
	w := &workload{cancel: cancel, ids: map[int64]string{}}
	dsn := fmt.Sprintf("postgres://postgres:proxy-pw@%s/shop?sslmode=disable", e.addr)
	for i := range n {
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			conn, err := pgx.Connect(ctx, dsn)
			if err != nil {
				w.fail(fmt.Sprintf("writer %d connect: %v", i, err))
				return
			}
			defer conn.Close(context.Background())
			for k := 0; ctx.Err() == nil; k++ {
				var id int64
				// A transaction is never cancelled half-way: stopping the workload must not
				// leave one committed on the server but unknown to the client.
				tctx, tcancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := pgx.BeginFunc(tctx, conn, func(tx pgx.Tx) error {
					if err := tx.QueryRow(tctx, `INSERT INTO events (writer, n, note) VALUES ($1::int, $2::int, 'w') RETURNING id`, i, k).Scan(&id); err != nil {
						return err
					}
					acct := (i*7+k)%20 + 1
					if _, err := tx.Exec(tctx, `UPDATE accounts SET balance = balance + 1 WHERE id = $1::int`, acct); err != nil {
						return err
					}
					_, err := tx.Exec(tctx, `INSERT INTO history (account, delta) VALUES ($1::int, 1)`, acct)
					return err
				})
				tcancel()
				if err != nil {
					if ctx.Err() != nil {
						return
					}
					w.fail(fmt.Sprintf("writer %d tx %d: %v", i, k, err))
					time.Sleep(50 * time.Millisecond)
					continue
				}
				w.commits.Add(1)
				w.mu.Lock()
				if prev, dup := w.ids[id]; dup {
					w.errs = append(w.errs, fmt.Sprintf("event id %d handed out twice (%s and %d/%d)", id, prev, i, k))
				}
				w.ids[id] = fmt.Sprintf("%d/%d", i, k)
				w.mu.Unlock()
				time.Sleep(2 * time.Millisecond)
			}
		}()
	}
	return w
}

func (w *workload) fail(s string) {
	w.failed.Add(1)
	w.mu.Lock()
	w.errs = append(w.errs, s)
	w.mu.Unlock()
}

func (w *workload) stop() { w.cancel(); w.wg.Wait() }

// check fails the test on any failed transaction or duplicate id, and checks that every
// committed event is on c.
func (w *workload) check(t *testing.T, c *pgtest.Cluster, side string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) > 0 {
		t.Errorf("%d client errors, first: %s", len(w.errs), strings.Join(w.errs[:min(5, len(w.errs))], "; "))
	}
	out, err := c.Psql(context.Background(), "shop", `SELECT count(*) FROM events`)
	if err != nil {
		t.Fatal(err)
	}
	if out != fmt.Sprint(len(w.ids)) {
		t.Errorf("%s has %s events, the clients committed %d", side, out, len(w.ids))
	}
}

// tableDigestSQL is an independent fingerprint of a table: row count and the md5 of every
// row's text form in byte order.
const tableDigestSQL = `SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\n' ORDER BY t::text COLLATE "C")), '-') FROM %s t`

// compare checks every user table on both sides with SQL of its own.
func (e *env) compare() {
	e.t.Helper()
	ctx := context.Background()
	list, err := e.src.Psql(ctx, "shop", `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pgshift') ORDER BY 1`)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, tbl := range strings.Split(list, "\n") {
		q := fmt.Sprintf(tableDigestSQL, tbl)
		s, err1 := e.src.Psql(ctx, "shop", q)
		d, err2 := e.dst.Psql(ctx, "shop", q)
		if err := errors.Join(err1, err2); err != nil {
			e.t.Fatal(err)
		}
		if s != d {
			e.t.Errorf("table %s differs: source %s, target %s", tbl, s, d)
		}
	}
}

// waitSame waits until every table is the same on both sides (replication caught up) or fails.
func (e *env) waitSame() {
	e.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		same := true
		for _, tbl := range []string{"accounts", "events", "history"} {
			q := fmt.Sprintf(tableDigestSQL, tbl)
			s, _ := e.src.Psql(ctx, "shop", q)
			d, _ := e.dst.Psql(ctx, "shop", q)
			same = same && s == d
		}
		if same || time.Now().After(deadline) {
			e.compare()
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (e *env) q(c *pgtest.Cluster, sql string) string {
	e.t.Helper()
	out, err := c.Psql(context.Background(), "shop", sql)
	if err != nil {
		e.t.Fatalf("%s: %v", sql, err)
	}
	return out
}

func logResult(t *testing.T, r *Result) {
	t.Helper()
	for _, s := range r.Steps {
		t.Logf("  %s step %d %-60s %-8s %7.1f ms %s", r.Op, s.No, s.Name, s.State, s.Seconds*1000, s.Detail)
	}
	t.Logf("  %s attempt %d: %s, live on %s, write pause %.1f ms %s", r.Op, r.Attempt, r.Outcome, r.Live, r.PauseSeconds*1000, r.Error)
}

var _ = pgtypes.LSN(0)

func pgxConnect(ctx context.Context, dsn string) (*pgx.Conn, error) { return pgx.Connect(ctx, dsn) }

func pgxRow(ctx context.Context, e *env, sql string, dest ...any) error {
	c, err := pgx.Connect(ctx, e.cfg.Target)
	if err != nil {
		return err
	}
	defer c.Close(ctx)
	return c.QueryRow(ctx, sql).Scan(dest...)
}
