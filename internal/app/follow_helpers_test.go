package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// followEnv is one database pair set up the way `pgshift copy` leaves it for the follow phase:
// identical schema and data on both sides, a publication (publish_via_partition_root) and a
// pgoutput slot on the source, and the migration row on the target in phase copied.
type followEnv struct {
	t        *testing.T
	src, dst *pgtest.Cluster
	name     string
	cfg      config.Config
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("PGSHIFT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newFollowEnv creates database name on both clusters with schema, then the publication and the
// slot. Rows inserted by the schema script exist on both sides, as after a copy.
func newFollowEnv(t *testing.T, src, dst *pgtest.Cluster, name, schema string) *followEnv {
	t.Helper()
	ctx := context.Background()
	srcDSN, err := src.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	dstDSN, err := dst.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*pgtest.Cluster{src, dst} {
		if out, err := c.Psql(ctx, name, schema); err != nil {
			t.Fatalf("schema: %v %s", err, out)
		}
	}
	if _, err := src.Psql(ctx, name, `CREATE PUBLICATION pgshift_pub FOR ALL TABLES WITH (publish_via_partition_root = true)`); err != nil {
		t.Fatal(err)
	}
	lsnText, err := src.Psql(ctx, name, `SELECT lsn FROM pg_create_logical_replication_slot('pgshift_`+name+`', 'pgoutput')`)
	if err != nil {
		t.Fatal(err)
	}
	lsn, err := pgtypes.ParseLSN(lsnText)
	if err != nil {
		t.Fatal(err)
	}
	e := &followEnv{t: t, src: src, dst: dst, name: name, cfg: config.Defaults()}
	e.cfg.Source, e.cfg.Target = srcDSN, dstDSN
	sc, err := db.Endpoint{Role: db.Source, DSN: srcDSN}.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(ctx)
	info, err := catalog.Server(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := db.Endpoint{Role: db.Target, DSN: dstDSN}.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close(ctx)
	if err := state.Ensure(ctx, tc); err != nil {
		t.Fatal(err)
	}
	err = state.Create(ctx, tc, state.Migration{SourceSystemID: info.SystemID, SourceDatabase: name,
		Slot: "pgshift_" + name, Publication: "pgshift_pub", ConsistentLSN: lsn, Phase: pgtypes.PhaseCopied})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// agent is Follow running in the background of a test.
type agent struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

func (e *followEnv) start(opts RunOptions) *agent {
	return e.launch(func(ctx context.Context, opts RunOptions) error { return Follow(ctx, e.cfg, opts, testLogger(e.t)) }, opts)
}

// launch runs fn (Follow or Run) in the background with test-friendly intervals.
func (e *followEnv) launch(fn func(context.Context, RunOptions) error, opts RunOptions) *agent {
	ctx, cancel := context.WithCancel(context.Background())
	a := &agent{cancel: cancel, done: make(chan struct{})}
	if opts.HeartbeatInterval == 0 {
		opts.HeartbeatInterval = 500 * time.Millisecond
	}
	if opts.MonitorInterval == 0 {
		opts.MonitorInterval = 500 * time.Millisecond
	}
	if opts.MaxRetryDelay == 0 {
		opts.MaxRetryDelay = time.Second
	}
	go func() {
		defer close(a.done)
		a.err = fn(ctx, opts)
	}()
	e.t.Cleanup(func() { a.stop() })
	return a
}

// stop cancels the agent and returns what Follow returned.
func (a *agent) stop() error {
	a.cancel()
	<-a.done
	return a.err
}

// exec runs SQL on the source.
func (e *followEnv) exec(sql string) {
	e.t.Helper()
	if out, err := e.src.Psql(context.Background(), e.name, sql); err != nil {
		e.t.Fatalf("source SQL failed: %v\n%s", err, out)
	}
}

// waitApplied runs Wait with a deadline, failing the test if the agent stopped or did not catch up.
func (e *followEnv) waitApplied(a *agent) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { _, err := Wait(ctx, e.cfg, 0, testLogger(e.t)); errc <- err }()
	select {
	case err := <-errc:
		if err != nil {
			e.t.Fatalf("wait: %v", err)
		}
	case <-a.done:
		e.t.Fatalf("agent stopped: %v", a.err)
	}
}

// tableDigest is an independent fingerprint of a table: row count and the md5 of every row's
// text form in byte order, duplicates included.
const tableDigestSQL = `SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, E'\n' ORDER BY t::text COLLATE "C")), '-') FROM %s t`

// compare checks every user table on both sides with SQL of its own (no pgshift code).
func (e *followEnv) compare() {
	e.t.Helper()
	ctx := context.Background()
	list, err := e.src.Psql(ctx, e.name, `SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
		WHERE schemaname NOT IN ('pg_catalog', 'information_schema', 'pgshift') ORDER BY 1`)
	if err != nil {
		e.t.Fatal(err)
	}
	tables := strings.Split(list, "\n")
	if len(tables) == 0 {
		e.t.Fatal("no tables to compare")
	}
	for _, tbl := range tables {
		q := fmt.Sprintf(tableDigestSQL, tbl)
		s, err1 := e.src.Psql(ctx, e.name, q)
		d, err2 := e.dst.Psql(ctx, e.name, q)
		if err := errors.Join(err1, err2); err != nil {
			e.t.Fatal(err)
		}
		if s != d {
			sd, _ := e.src.Psql(ctx, e.name, "SELECT t::text FROM "+tbl+" t ORDER BY 1 LIMIT 20")
			dd, _ := e.dst.Psql(ctx, e.name, "SELECT t::text FROM "+tbl+" t ORDER BY 1 LIMIT 20")
			e.t.Errorf("table %s differs: source %s, target %s\nsource rows:\n%s\ntarget rows:\n%s", tbl, s, d, sd, dd)
		}
	}
}

// query runs SQL on the target or source and returns its output.
func (e *followEnv) query(c *pgtest.Cluster, sql string) string {
	e.t.Helper()
	out, err := c.Psql(context.Background(), e.name, sql)
	if err != nil {
		e.t.Fatalf("query %q: %v", sql, err)
	}
	return out
}
