package proxy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/proxy"
	"github.com/pgshift/pgshift/internal/proxy/route"
	"github.com/pgshift/pgshift/internal/state"
)

// TestReadsOverTargetReplicas: the target has a physical standby (pg_basebackup, streaming).
// In split mode the routed reads of 10 sessions are spread over the target and the standby,
// 5 and 5, each session staying on its endpoint; with the standby's replay paused its lag
// counts against the lag guard (its sessions read from the source; the target's do not); a
// stopped standby is taken out within seconds and its sessions read from the target, with no
// client error.
func TestReadsOverTargetReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL (skipped with -short)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	e := &env{t: t}
	e.src = pgtest.New(t, pgtest.Options{Password: testPassword, Name: t.Name() + "-src"})
	e.dst = pgtest.New(t, pgtest.Options{Password: testPassword, Name: t.Name() + "-dst"})
	var err error
	if e.srcDSN, err = e.src.CreateDB(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if e.dstDSN, err = e.dst.CreateDB(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	// The target's pgshift.position, which an agent keeps and the standby replays: here a
	// writer sets it to the source's position every 20 ms, so the target counts as caught up.
	dconn, err := pgx.Connect(ctx, e.dstDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer dconn.Close(context.Background())
	if err := state.Ensure(ctx, dconn); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	standby, err := e.dst.StartStandby(ctx, t.Name()+"-standby")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("standby started in %s", time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() { standby.Stop() })
	sconn, err := pgx.Connect(ctx, e.srcDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer sconn.Close(context.Background())
	wctx, wcancel := context.WithCancel(ctx)
	written := make(chan struct{})
	go func() {
		defer close(written)
		for wctx.Err() == nil {
			var s string
			if err := sconn.QueryRow(wctx, `SELECT pg_catalog.pg_logical_emit_message(false, 'test', 'tick')::text`).Scan(&s); err != nil {
				return
			}
			lsn, _ := pgtypes.ParseLSN(s)
			if err := pgx.BeginFunc(wctx, dconn, func(tx pgx.Tx) error { return state.SavePosition(wctx, tx, lsn, time.Now()) }); err != nil {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	defer func() { wcancel(); <-written }()
	// The tracker's goroutine only. Closed by a cleanup registered before the proxy's own, so
	// it runs after the proxy has stopped.
	var pconn *pgx.Conn
	t.Cleanup(func() {
		if pconn != nil {
			pconn.Close(context.Background())
		}
	})
	progress := proxy.ProgressFunc(func(ctx context.Context) (pgtypes.LSN, time.Duration, bool, error) {
		if pconn == nil || pconn.IsClosed() {
			c, err := pgx.Connect(ctx, e.dstDSN)
			if err != nil {
				return 0, 0, false, err
			}
			pconn = c
		}
		pos, err := state.LoadPosition(ctx, pconn)
		return pos.AppliedLSN, 0, err == nil, err
	})
	reg := prometheus.NewRegistry()
	e.authFile = filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(e.authFile, []byte(fmt.Sprintf("\"postgres\" \"%s\"\n", testPassword)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.startWith(proxy.Config{Listen: "127.0.0.1:0", Source: e.srcDSN, Target: e.dstDSN, AuthFile: e.authFile, ConnectTimeout: 5 * time.Second,
		Mode: proxy.ModeSplit, Rules: []route.Rule{{Name: "all", Percent: 100}}, LagLimit: 3 * time.Second,
		TargetReplicas: []string{standby.DSN("app")}, ReplicaCheckInterval: 200 * time.Millisecond},
		proxy.Options{Progress: progress, Registerer: reg})

	servedBy := func(c *pgx.Conn) string {
		t.Helper()
		var port string
		if err := c.QueryRow(ctx, portQuery).Scan(&port); err != nil {
			t.Fatalf("read through the proxy: %v", err)
		}
		switch port {
		case fmt.Sprint(e.src.Port):
			return "source"
		case fmt.Sprint(e.dst.Port):
			return "target"
		case fmt.Sprint(standby.Port):
			return "standby"
		}
		t.Fatalf("port %s is no server's", port)
		return ""
	}
	until := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 20 s", what)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	admin := e.connect("dbname=pgshift")
	replicas := func() string {
		t.Helper()
		res, err := admin.PgConn().Exec(ctx, "SHOW REPLICAS").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		var lines []string
		for _, row := range res[0].Rows {
			lines = append(lines, fmt.Sprintf("%s healthy=%s sessions=%s", row[0], row[1], row[2]))
		}
		return strings.Join(lines, "; ")
	}
	lagKnown := func() bool {
		res, err := admin.PgConn().Exec(ctx, "SHOW STATS").ReadAll()
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range res[0].Rows {
			if string(row[0]) == "lag_seconds" {
				return string(row[1]) != "unknown"
			}
		}
		return false
	}
	until("the standby checked healthy and the lag measured", func() bool {
		return strings.Contains(replicas(), fmt.Sprintf("replica 127.0.0.1:%d healthy=true", standby.Port)) && lagKnown()
	})

	t.Logf("proxy up, standby healthy, %s after the start", time.Since(began).Round(time.Millisecond))
	// Ten sessions: five on each endpoint, and each stays where it is.
	conns := make([]*pgx.Conn, 10)
	first := map[int]string{}
	count := map[string]int{}
	for i := range conns {
		conns[i] = e.connect(fmt.Sprintf("application_name=reader%d", i))
		first[i] = servedBy(conns[i])
		count[first[i]]++
	}
	if count["target"] != 5 || count["standby"] != 5 {
		se := &splitEnv{env: e, reg: reg}
		t.Fatalf("reads of 10 sessions: %v, want 5 on the target and 5 on the standby (SHOW REPLICAS: %s; statements %v)", count, replicas(), se.statementCounts(ctx))
	}
	for round := range 3 {
		for i, c := range conns {
			if got := servedBy(c); got != first[i] {
				t.Fatalf("round %d: session %d read from the %s, first from the %s: a session keeps its endpoint", round, i, got, first[i])
			}
		}
	}

	// Replay paused: the standby falls behind the target, past the 3 s lag limit.
	if _, err := standby.Psql(ctx, "app", `SELECT pg_catalog.pg_wal_replay_pause()`); err != nil {
		t.Fatal(err)
	}
	until("the standby's sessions reading from the source while its replay is paused", func() bool {
		for i, c := range conns {
			if first[i] == "standby" && servedBy(c) != "source" {
				return false
			}
		}
		return true
	})
	for i, c := range conns {
		if first[i] == "target" {
			if got := servedBy(c); got != "target" {
				t.Errorf("session %d on the target read from the %s while only the standby lagged", i, got)
			}
		}
	}
	if _, err := standby.Psql(ctx, "app", `SELECT pg_catalog.pg_wal_replay_resume()`); err != nil {
		t.Fatal(err)
	}
	until("the standby's sessions back on it after replay resumed", func() bool {
		for i, c := range conns {
			if first[i] == "standby" && servedBy(c) != "standby" {
				return false
			}
		}
		return true
	})

	// Stopped: out within seconds; its sessions read from the target, without an error.
	if err := standby.StopServer(ctx); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	until("the stopped standby taken out", func() bool { return strings.Contains(replicas(), "healthy=false") })
	if took := time.Since(stopped); took > 5*time.Second {
		t.Errorf("the stopped standby was taken out after %s", took)
	}
	for i, c := range conns {
		if got := servedBy(c); got != "target" {
			t.Errorf("session %d read from the %s after the standby stopped, want the target", i, got)
		}
	}
	t.Logf("SHOW REPLICAS after the stop: %s", replicas())
}
