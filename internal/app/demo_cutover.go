package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/sampledb"
	"github.com/pgshift/pgshift/internal/web"
)

// The demo's second half: the application reaches the database only through the agent's
// proxy; 30 % of its read sessions go to the target, then the demo cuts over under load, rolls
// back and cuts over again, checks that no client transaction failed and that both sides hold
// the same rows, and finishes the migration.

// demoProxyPassword is the one client password of the demo's proxy (its auth file is in the
// demo's own temporary directory; the clusters themselves trust local connections).
const demoProxyPassword = "demo-proxy-pw"

// demoReadShare is the percentage of read sessions the rollout step routes to the target.
const demoReadShare = 30

// demoEndpoints picks the dashboard's and the proxy's addresses and writes the proxy's auth
// file, so the dashboard URL can be printed before anything runs.
func demoEndpoints(d *Demo) error {
	if d.Opts.HTTP == "" {
		addr, err := freeLocalAddr()
		if err != nil {
			return err
		}
		d.Opts.HTTP = addr
	}
	addr, err := freeLocalAddr()
	if err != nil {
		return err
	}
	d.proxyAddr = addr
	if d.dir, err = os.MkdirTemp("", "pgshift-demo-"); err != nil {
		return err
	}
	d.authFile = filepath.Join(d.dir, "userlist.txt")
	return os.WriteFile(d.authFile, []byte(`"postgres" "`+demoProxyPassword+`"`+"\n"), 0o600)
}

func freeLocalAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free local port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// proxyConfig is the demo's configuration with the agent's proxy and dashboard: the rule
// routes demoReadShare % of application_names to the target while the proxy is in split mode.
func (d *Demo) proxyConfig() config.Config {
	cfg := d.config()
	cfg.HTTP, cfg.Proxy = d.Opts.HTTP, d.proxyAddr
	cfg.ProxySettings = config.ProxySettings{AuthFile: d.authFile, PauseTimeout: 10 * time.Second,
		Rules: []config.RouteRule{{Name: "demo-rollout", Percent: demoReadShare, Key: "application_name"}}}
	return cfg
}

// clientDSN is how the sample application reaches the database: through the proxy.
func (d *Demo) clientDSN(db, app string) string {
	u := url.URL{Scheme: "postgres", User: url.UserPassword("postgres", demoProxyPassword), Host: d.proxyAddr, Path: "/" + db}
	q := url.Values{"sslmode": {"disable"}}
	if app != "" {
		q.Set("application_name", app)
	}
	u.RawQuery = q.Encode()
	return u.String()
}

// demoLoad is the sample workload running through the proxy in the background.
type demoLoad struct {
	pool   *pgxpool.Pool
	cancel context.CancelFunc
	done   chan demoLoadResult
}

type demoLoadResult struct {
	counts sampledb.Counts
	err    error
}

// connectApp is the sample application's connection pool, through the proxy.
func (d *Demo) connectApp(ctx context.Context) (*pgxpool.Pool, error) {
	pool, err := pgxpool.New(ctx, d.clientDSN(DemoDatabase, "supply-chain-app"))
	if err != nil {
		return nil, fmt.Errorf("connect to the demo's proxy: %w", err)
	}
	return pool, nil
}

// waitProxy waits until the agent's proxy takes connections.
func (d *Demo) waitProxy(ctx context.Context) error {
	deadline := time.Now().Add(time.Minute)
	for {
		conn, err := pgx.Connect(ctx, d.clientDSN(DemoDatabase, ""))
		if err == nil {
			return conn.Close(ctx)
		}
		select {
		case aerr := <-d.agent.done:
			d.agent.done <- aerr // kept for stop()
			return fmt.Errorf("the agent stopped before its proxy took connections: %w", aerr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the agent's proxy at %s took no connection within a minute: %w", d.proxyAddr, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (d *Demo) startLoad(ctx context.Context, seed uint64) error {
	pool, err := d.connectApp(ctx)
	if err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	d.load = &demoLoad{pool: pool, cancel: cancel, done: make(chan demoLoadResult, 1)}
	go func() {
		c, err := sampledb.Workload{Pool: pool, Rate: d.Opts.Rate, Workers: 2, Seed: seed}.Run(lctx)
		d.load.done <- demoLoadResult{c, err}
	}()
	return nil
}

// stopLoad ends the background workload and returns what it committed; a transaction that
// failed is its error (the workload stops at the first one).
func (d *Demo) stopLoad() (sampledb.Counts, error) {
	if d.load == nil {
		return sampledb.Counts{}, nil
	}
	d.load.cancel()
	r := <-d.load.done
	d.load.pool.Close()
	d.load = nil
	return r.counts, r.err
}

// loadFailed reports a workload that stopped by itself (a failed client transaction).
func (d *Demo) loadFailed() error {
	if d.load == nil {
		return nil
	}
	select {
	case r := <-d.load.done:
		d.load.done <- r
		return fmt.Errorf("a client transaction failed through the proxy: %w", r.err)
	default:
		return nil
	}
}

// readRolloutDemo sends demoReadShare % of read sessions to the target: the proxy goes to
// split mode (its admin console, as a user would with psql), many sessions with their own
// application_name run the sample queries, and SHOW ROUTES tells how many went where.
func readRolloutDemo(ctx context.Context, d *Demo) error {
	admin, err := pgx.Connect(ctx, d.clientDSN("pgshift", ""))
	if err != nil {
		return fmt.Errorf("connect to the proxy's admin console: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if _, err := admin.PgConn().Exec(ctx, "MODE split").ReadAll(); err != nil {
		return fmt.Errorf("proxy console MODE split: %w", err)
	}
	fmt.Fprintf(d.Opts.Out, "    proxy console: MODE split (rule demo-rollout: %d %% of application_names read from the target)\n", demoReadShare)
	const sessions, reads = 40, 5
	var sessionsOnTarget int
	for i := range sessions {
		conn, err := pgx.Connect(ctx, d.clientDSN(DemoDatabase, fmt.Sprintf("storefront-%02d", i)))
		if err != nil {
			return fmt.Errorf("reader %d through the proxy: %w", i, err)
		}
		onTarget := false
		for k := range reads {
			var n int64
			var port int
			err := conn.QueryRow(ctx, `SELECT count(*), current_setting('port')::int FROM orders WHERE customer_id = $1::bigint`, int64(i*reads+k+1)).Scan(&n, &port)
			if err != nil {
				conn.Close(ctx)
				return fmt.Errorf("reader %d through the proxy: %w", i, err)
			}
			onTarget = port == d.Target.Port
		}
		conn.Close(ctx)
		if onTarget {
			sessionsOnTarget++
		}
	}
	res, err := admin.PgConn().Exec(ctx, "SHOW ROUTES").ReadAll()
	if err != nil {
		return fmt.Errorf("proxy console SHOW ROUTES: %w", err)
	}
	var toTarget, toSource int64
	for _, r := range res {
		col := map[string]int{}
		for i, f := range r.FieldDescriptions {
			col[f.Name] = i
		}
		for _, row := range r.Rows {
			if string(row[col["rule"]]) == "demo-rollout" {
				toTarget, _ = strconv.ParseInt(string(row[col["to_target"]]), 10, 64)
				toSource, _ = strconv.ParseInt(string(row[col["to_source"]]), 10, 64)
			}
		}
	}
	if toTarget+toSource == 0 {
		return errors.New("SHOW ROUTES counted no read of the rollout rule")
	}
	fmt.Fprintf(d.Opts.Out, "    %d reader sessions × %d reads: %d of them (%.0f %%) were answered by the target; SHOW ROUTES: rule demo-rollout sent %d reads to the target, %d to the source\n",
		sessions, reads, sessionsOnTarget, 100*float64(sessionsOnTarget)/sessions, toTarget, toSource)
	d.routedSessions = sessionsOnTarget
	fmt.Fprintln(d.Opts.Out, "    writes, and reads in write transactions, stay on the source until the cutover")
	return nil
}

// cutoverDemo, rollbackDemo and cutoverAgainDemo switch the live side while the sample
// application writes through the proxy, printing the write pause each switch cost.
func cutoverDemo(ctx context.Context, d *Demo) error {
	if err := d.startLoad(ctx, 3); err != nil {
		return err
	}
	fmt.Fprintln(d.Opts.Out, "    the sample application writes through the proxy from now on, without a break")
	if err := d.waitCutoverReady(ctx); err != nil {
		return err
	}
	return d.switchSides(ctx, "/api/cutover", "target")
}

func rollbackDemo(ctx context.Context, d *Demo) error {
	return d.switchSides(ctx, "/api/rollback", "source")
}

func cutoverAgainDemo(ctx context.Context, d *Demo) error {
	// Forward replication measures its lag again before the cutover's pre-checks accept it.
	if err := d.waitCutoverReady(ctx); err != nil {
		return err
	}
	return d.switchSides(ctx, "/api/cutover", "target")
}

// waitCutoverReady waits until a dry run of the cutover passes its pre-checks.
func (d *Demo) waitCutoverReady(ctx context.Context) error {
	c := web.Client{Addr: d.Opts.HTTP}
	deadline := time.Now().Add(time.Minute)
	for {
		var dry CutoverResult
		err := c.Post(ctx, "/api/cutover", nil, map[string]bool{"dry_run": true}, &dry)
		if err == nil && dry.Error == "" {
			return nil
		}
		if err := d.loadFailed(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New(dry.Error)
			}
			return fmt.Errorf("the cutover's pre-checks did not pass within a minute: %w", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// switchSides runs one cutover or rollback through the agent's API and shows the live side
// taking the application's writes.
func (d *Demo) switchSides(ctx context.Context, path, live string) error {
	c := web.Client{Addr: d.Opts.HTTP}
	var r CutoverResult
	if err := c.Post(ctx, path, nil, map[string]bool{"confirm": true}, &r); err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	if r.Outcome != "done" || r.Live != live {
		return fmt.Errorf("%s %s: outcome %s, live on %s: %s", r.Op, path, r.Outcome, r.Live, r.Error)
	}
	d.pauses = append(d.pauses, r.PauseSeconds)
	fmt.Fprintf(d.Opts.Out, "    %s done in %d steps: traffic is on the %s; writes were held for %.0f ms\n", r.Op, len(r.Steps), r.Live, r.PauseSeconds*1000)
	side, other := d.Target, d.Source
	if live == "source" {
		side, other = d.Source, d.Target
	}
	before, err := demoCount(ctx, side.DSN(DemoDatabase), "orders")
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second)
	if err := d.loadFailed(); err != nil {
		return err
	}
	after, err := demoCount(ctx, side.DSN(DemoDatabase), "orders")
	if err != nil {
		return err
	}
	mirrored, err := demoCount(ctx, other.DSN(DemoDatabase), "orders")
	if err != nil {
		return err
	}
	direction := "reverse replication keeps the source current"
	if live == "source" {
		direction = "forward replication keeps the target current"
	}
	fmt.Fprintf(d.Opts.Out, "    the %s took %d new orders in 2 s (%d in all; %s: %d there)\n", live, after-before, after, direction, mirrored)
	return nil
}

func demoCount(ctx context.Context, dsn, table string) (int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return 0, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var n int64
	err = conn.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n)
	return n, err
}

// demoDigestSQL is the demo's own comparison, independent of verify: each table's row count
// and the md5 of its rows' text in byte order.
const demoDigestSQL = `SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\n' ORDER BY t::text COLLATE "C")), '-') FROM %s t`

// settleDemo stops the application, then waits until reverse replication has brought the
// source level with the live target and compares every table on both sides.
func settleDemo(ctx context.Context, d *Demo) error {
	counts, err := d.stopLoad()
	if err != nil {
		return fmt.Errorf("a client transaction failed through the proxy: %w", err)
	}
	d.clientTxs = counts.Transactions
	fmt.Fprintf(d.Opts.Out, "    through the proxy the application committed %s; 0 failed\n", counts)
	tables, err := demoTables(ctx, d.TargetDSN)
	if err != nil {
		return err
	}
	var conns [2]*pgx.Conn
	for i, dsn := range []string{d.SourceDSN, d.TargetDSN} {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer c.Close(context.WithoutCancel(ctx))
		conns[i] = c
	}
	deadline := time.Now().Add(time.Minute)
	for {
		diff, err := demoDiff(ctx, conns, tables)
		if err != nil {
			return err
		}
		if diff == "" {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the source is not level with the target a minute after the writes stopped: %s", diff)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
	d.lossless = true
	fmt.Fprintf(d.Opts.Out, "    every one of the %d tables is equal on both sides (row counts and md5 of all rows): the rollback lost nothing, and the source can take traffic back\n", len(tables))
	return nil
}

func demoTables(ctx context.Context, dsn string) ([]string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pgshift') ORDER BY 1`)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// demoDiff names the first table whose digest differs between the sides (source, target; ""
// when none does).
func demoDiff(ctx context.Context, conns [2]*pgx.Conn, tables []string) (string, error) {
	for _, t := range tables {
		var dg [2]string
		for i, c := range conns {
			if err := c.QueryRow(ctx, fmt.Sprintf(demoDigestSQL, t)).Scan(&dg[i]); err != nil {
				return "", fmt.Errorf("digest of %s: %w", t, err)
			}
		}
		if dg[0] != dg[1] {
			return fmt.Sprintf("%s: source %s, target %s", t, dg[0], dg[1]), nil
		}
	}
	return "", nil
}

// finishDemo removes what the migration left on both servers, as `pgshift finish --yes` does.
// The report finish keeps goes where the report step wrote it (not into the working
// directory, finish's default).
func finishDemo(ctx context.Context, d *Demo) error {
	file := d.reportFile
	if file == "" {
		file = filepath.Join(d.dir, "pgshift-report.md")
	}
	res, err := Finish(ctx, d.config(), FinishOptions{Yes: true, ReportFile: file}, d.Opts.Logger)
	if err != nil {
		return err
	}
	fmt.Fprintf(d.Opts.Out, "    removed: %s\n", strings.Join(res.Removed, "; "))
	fmt.Fprintln(d.Opts.Out, "    the target is now an ordinary database: no slot, publication or pgshift schema is left on either side")
	return nil
}
