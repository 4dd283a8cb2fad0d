package app

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/web"
)

// TestCutoverSIGKILL runs the real binary (`pgshift run --http --proxy`) and SIGKILLs it at
// steps of cutover and of rollback (the fault hooks of the faults build), with a writer going
// through the proxy and reconnecting. Each time the agent is started again: the proxy comes up
// on the side the durable state says is live (completed after the switch's commit, rolled
// back before it), the writer goes on there, and at the end every transaction a client saw
// commit is on both sides and the tables are equal.
func TestCutoverSIGKILL(t *testing.T) {
	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "shop")
	bin := buildBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := src.Psql(ctx, "shop", `CREATE TABLE orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, writer int, n int)`); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	dir := t.TempDir()
	authFile := filepath.Join(dir, "userlist.txt")
	if err := os.WriteFile(authFile, []byte(`"postgres" "pw"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	proxyAddr, httpAddr := freeTCPAddr(t), freeTCPAddr(t)
	cfgFile := filepath.Join(dir, "pgshift.yaml")
	yaml := fmt.Sprintf("source: %q\ntarget: %q\nhttp: %q\nproxy: %q\nproxy_settings:\n  auth_file: %q\n  pause_timeout: 5s\ncutover:\n  require_verify: false\n",
		srcDSN, dstDSN, httpAddr, proxyAddr, authFile)
	if err := os.WriteFile(cfgFile, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var logMu sync.Mutex
	agent := func(killAt string) *exec.Cmd {
		cmd := exec.Command(bin, "run", "-c", cfgFile)
		cmd.Env = append(os.Environ(), "PGSHIFT_TEST_KILL_AT="+killAt)
		cmd.Stderr = &lockedWriter{w: &logs, mu: &logMu}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	c := web.Client{Addr: httpAddr}
	// ready waits until the agent answers and, on the source side, has measured lag.
	ready := func(want string) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			var pv proxyView
			var dry CutoverResult
			if err := c.Get(ctx, "/api/proxy", &pv); err == nil && pv.Running {
				if pv.Stats.Mode != want {
					t.Fatalf("proxy came up in mode %s, want %s", pv.Stats.Mode, want)
				}
				if want == "target" {
					time.Sleep(time.Second) // reverse replication starts streaming
					return
				}
				if err := c.Post(ctx, "/api/cutover", nil, map[string]bool{"dry_run": true}, &dry); err == nil && dry.Error == "" {
					return
				}
			}
			if time.Now().After(deadline) {
				logMu.Lock()
				t.Fatalf("agent not ready (want %s):\n%s", want, logs.String())
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	// The writer: reconnects through the proxy whenever the agent is gone; remembers what committed.
	wctx, wcancel := context.WithCancel(ctx)
	var mu sync.Mutex
	committed := map[int64]bool{}
	var wg sync.WaitGroup
	for i := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn *pgx.Conn
			for k := 0; wctx.Err() == nil; k++ {
				if conn == nil {
					var err error
					if conn, err = pgx.Connect(wctx, fmt.Sprintf("postgres://postgres:pw@%s/shop?sslmode=disable&connect_timeout=2", proxyAddr)); err != nil {
						conn = nil
						time.Sleep(100 * time.Millisecond)
						continue
					}
				}
				var id int64
				if err := conn.QueryRow(wctx, `INSERT INTO orders (writer, n) VALUES ($1::int, $2::int) RETURNING id`, i, k).Scan(&id); err != nil {
					conn.Close(context.Background())
					conn = nil
					continue
				}
				mu.Lock()
				if committed[id] {
					t.Errorf("order id %d handed out twice", id)
				}
				committed[id] = true
				mu.Unlock()
				time.Sleep(5 * time.Millisecond)
			}
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
	}
	live := "source"
	cur := agent("")
	ready(live)
	for _, k := range []struct {
		at, op, after string
	}{
		{"cutover-3", "/api/cutover", "source"},
		{"cutover-70", "/api/cutover", "target"},
		{"rollback-3", "/api/rollback", "target"},
		{"rollback-50", "/api/rollback", "source"},
		{"cutover-6", "/api/cutover", "source"},
		{"cutover-8", "/api/cutover", "target"},
	} {
		// Restart with the hook, then start the operation: the agent kills itself at the step.
		_ = cur.Process.Signal(syscall.SIGTERM)
		_ = cur.Wait()
		cur = agent(k.at)
		ready(live)
		time.Sleep(300 * time.Millisecond)
		err := c.Post(ctx, k.op, nil, map[string]bool{"confirm": true}, nil)
		werr := cur.Wait()
		if ws, ok := cur.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
			logMu.Lock()
			t.Fatalf("%s: agent ended with %v (request: %v), want SIGKILL\n%s", k.at, werr, err, logs.String())
		}
		cur = agent("")
		live = k.after
		ready(live)
		time.Sleep(500 * time.Millisecond)
		t.Logf("killed at %s: restarted live on %s", k.at, live)
	}
	wcancel()
	wg.Wait()
	// Reverse replication (live on the target at the end) brings the source up to date.
	e := &followEnv{t: t, src: src, dst: dst, name: "shop"}
	mu.Lock()
	n := len(committed)
	mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for e.query(src, `SELECT count(*) FROM orders`) != e.query(dst, `SELECT count(*) FROM orders`) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	_ = cur.Process.Signal(syscall.SIGTERM)
	_ = cur.Wait()
	e.compare()
	for _, side := range []*pgtest.Cluster{src, dst} {
		var ids []int64
		for id := range committed {
			ids = append(ids, id)
		}
		conn, err := pgx.Connect(ctx, side.DSN("shop"))
		if err != nil {
			t.Fatal(err)
		}
		var have int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM orders WHERE id = ANY($1::int8[])`, ids).Scan(&have); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		if have != n {
			t.Errorf("port %d has %d of the %d orders clients saw commit", side.Port, have, n)
		}
	}
	t.Logf("%d orders committed by clients across 6 kills", n)
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
