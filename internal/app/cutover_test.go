package app

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/web"
)

// TestCutoverThroughAgent: pgshift run --http --proxy copies and follows; a writer works
// through the proxy the whole time; POST /api/cutover, /api/rollback and /api/cutover again
// move it between the sides with no failed transaction; after the agent stops, finish keeps
// the report and removes pgshift's slots, publications, origin and schemas from both sides,
// and both sides hold every committed row (independent md5 comparison).
func TestCutoverThroughAgent(t *testing.T) {
	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "shop")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if out, err := src.Psql(ctx, "shop", `CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, writer int, n int);
		CREATE TABLE totals (id int PRIMARY KEY, n bigint); INSERT INTO totals SELECT g, 0 FROM generate_series(1, 5) g;`); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	authFile := filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(authFile, []byte(`"postgres" "pw"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults()
	cfg.Source, cfg.Target, cfg.Jobs = srcDSN, dstDSN, 2
	cfg.Proxy, cfg.HTTP = freeTCPAddr(t), freeTCPAddr(t)
	cfg.ProxySettings = config.ProxySettings{AuthFile: authFile, PauseTimeout: 5 * time.Second}
	no := false
	cfg.Cutover.RequireVerify = &no
	e := &followEnv{t: t, src: src, dst: dst, name: "shop", cfg: cfg}
	a := e.launch(func(ctx context.Context, opts RunOptions) error { return Run(ctx, cfg, opts, testLogger(t)) }, RunOptions{LeaseInterval: 500 * time.Millisecond})
	c := web.Client{Addr: cfg.HTTP}
	// Wait until the agent follows and has measured lag (the lag pre-check needs it).
	deadline := time.Now().Add(time.Minute)
	for {
		var dry CutoverResult
		err := c.Post(ctx, "/api/cutover", nil, map[string]bool{"dry_run": true}, &dry)
		if err == nil && dry.Error == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready for cutover: %v %+v", err, dry)
		}
		select {
		case <-a.done:
			t.Fatalf("agent stopped: %v", a.err)
		case <-time.After(300 * time.Millisecond):
		}
	}
	// The writer: one transaction inserts an order (identity from the live side) and counts it.
	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var commits atomic.Int64
	var mu sync.Mutex
	var failures []string
	ids := map[int64]bool{}
	for i := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(wctx, fmt.Sprintf("postgres://postgres:pw@%s/shop?sslmode=disable", cfg.Proxy))
			if err != nil {
				mu.Lock()
				failures = append(failures, err.Error())
				mu.Unlock()
				return
			}
			defer conn.Close(context.Background())
			for k := 0; wctx.Err() == nil; k++ {
				var id int64
				// Never cancelled half-way: a commit the client did not see would be miscounted.
				tctx, tcancel := context.WithTimeout(context.Background(), 30*time.Second)
				err := pgx.BeginFunc(tctx, conn, func(tx pgx.Tx) error {
					if err := tx.QueryRow(tctx, `INSERT INTO orders (writer, n) VALUES ($1::int, $2::int) RETURNING id`, i, k).Scan(&id); err != nil {
						return err
					}
					_, err := tx.Exec(tctx, `UPDATE totals SET n = n + 1 WHERE id = $1::int`, k%5+1)
					return err
				})
				tcancel()
				mu.Lock()
				switch {
				case err != nil && wctx.Err() == nil:
					failures = append(failures, err.Error())
				case err == nil && ids[id]:
					failures = append(failures, fmt.Sprintf("order id %d handed out twice", id))
				case err == nil:
					ids[id] = true
					commits.Add(1)
				}
				mu.Unlock()
				time.Sleep(3 * time.Millisecond)
			}
		}()
	}
	step := func(path string, want string) {
		t.Helper()
		time.Sleep(time.Second)
		var r CutoverResult
		body := map[string]bool{"confirm": true}
		if err := c.Post(ctx, path, nil, body, &r); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if r.Outcome != "done" || r.Live != want {
			t.Fatalf("%s: %+v", path, r)
		}
		t.Logf("%s: live on %s, write pause %.1f ms, %d steps", path, r.Live, r.PauseSeconds*1000, len(r.Steps))
	}
	step("/api/cutover", "target")
	step("/api/rollback", "source")
	// Forward replication needs a lag measurement again before the next cutover's pre-check.
	time.Sleep(2 * time.Second)
	step("/api/cutover", "target")
	// Ready while reverse replication streams (there is no forward lag to measure any more).
	deadline = time.Now().Add(20 * time.Second)
	for {
		var st Status
		err := c.Get(ctx, "/readyz", nil)
		if err == nil {
			err = c.Get(ctx, "/api/status", &st)
		}
		if err == nil && st.Cutover.Live == "target" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready, or status not live on the target, after cutover: %v %q", err, st.Cutover.Live)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(time.Second)
	wcancel()
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d failed client transactions, first: %s", len(failures), failures[0])
	}
	t.Logf("%d client transactions committed", commits.Load())
	// Reverse replication brings the source up to date with the live target.
	deadline = time.Now().Add(30 * time.Second)
	for {
		s := e.query(src, `SELECT count(*) FROM orders`)
		if s == fmt.Sprint(commits.Load()) || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.compare()
	if got := e.query(dst, `SELECT count(*) FROM orders`); got != fmt.Sprint(commits.Load()) {
		t.Errorf("target has %s orders, clients committed %d", got, commits.Load())
	}
	if err := a.stop(); err != nil {
		t.Fatalf("agent: %v", err)
	}
	if _, err := Finish(ctx, cfg, FinishOptions{}, testLogger(t)); err == nil || !strings.Contains(err.Error(), "--yes") {
		t.Errorf("finish without --yes: %v", err)
	}
	// A write on the target that reverse replication has not applied yet: finish refuses.
	e.cfg = cfg
	if out, err := dst.Psql(ctx, "shop", `INSERT INTO orders (writer, n) VALUES (99, 0)`); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	if _, err := Finish(ctx, cfg, FinishOptions{Yes: true}, testLogger(t)); err == nil || !strings.Contains(err.Error(), "1 row changes") {
		t.Fatalf("finish with an unapplied reverse change: %v", err)
	}
	a = e.launch(func(ctx context.Context, opts RunOptions) error { return Run(ctx, cfg, opts, testLogger(t)) }, RunOptions{LeaseInterval: 500 * time.Millisecond})
	deadline = time.Now().Add(30 * time.Second)
	for e.query(src, `SELECT count(*) FROM orders WHERE writer = 99`) != "1" {
		if time.Now().After(deadline) {
			t.Fatal("the restarted agent did not apply the target's write to the source")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := a.stop(); err != nil {
		t.Fatalf("agent: %v", err)
	}
	report := filepath.Join(t.TempDir(), "report.md")
	res, err := Finish(ctx, cfg, FinishOptions{Yes: true, ReportFile: report}, testLogger(t))
	if err != nil {
		t.Fatalf("finish: %v", err)
	}
	t.Logf("finish removed: %s", strings.Join(res.Removed, "; "))
	if b, err := os.ReadFile(report); err != nil || !strings.Contains(string(b), "utover") {
		t.Errorf("report kept: %v (%d bytes)", err, len(b))
	}
	for _, side := range []*pgtest.Cluster{src, dst} {
		if got := e.query(side, `SELECT (SELECT count(*) FROM pg_replication_slots) || ' ' || (SELECT count(*) FROM pg_publication) || ' ' ||
			(SELECT count(*) FROM pg_replication_origin) || ' ' || (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshift')`); got != "0 0 0 0" {
			t.Errorf("left after finish (slots, publications, origins, schemas): %s", got)
		}
	}
	if _, err := Finish(ctx, cfg, FinishOptions{Yes: true, ReportFile: report}, testLogger(t)); err == nil {
		t.Error("a second finish should refuse: there is no migration left")
	} else if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	e.compare()
}
