package schema

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// TestDumpAndApply dumps a real database with the installed pg_dump and applies it to an empty
// one through the driver: pre-data atomically, post-data in parallel steps, resumable.
func TestDumpAndApply(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	srcDSN, err := c.CreateDB(ctx, "src")
	if err != nil {
		t.Fatal(err)
	}
	dstDSN, err := c.CreateDB(ctx, "dst")
	if err != nil {
		t.Fatal(err)
	}
	if out, err := c.Psql(ctx, "src", `
		CREATE SCHEMA pgshift; CREATE TABLE pgshift.state_table (x int);
		CREATE TABLE a (id int PRIMARY KEY, v text);
		CREATE TABLE b (id int PRIMARY KEY, a_id int REFERENCES a (id));
		CREATE INDEX b_a ON b (a_id);
		CREATE TABLE skipped (id int PRIMARY KEY);
		CREATE TABLE p (id int, PRIMARY KEY (id)) PARTITION BY RANGE (id);
		CREATE TABLE p1 PARTITION OF p FOR VALUES FROM (0) TO (10);
		COMMENT ON TABLE a IS E'line one\n\\! echo injected';`); err != nil {
		t.Fatal(err, out)
	}
	var version int
	conn, err := pgx.Connect(ctx, srcDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&version); err != nil {
		t.Fatal(err)
	}
	d, err := FindPgDump(ctx, "", version)
	if err != nil {
		t.Fatal(err)
	}
	skip := []pgtypes.TableID{{Schema: "public", Name: "skipped"}}
	preText, err := d.Dump(ctx, srcDSN, PreData, DumpOptions{ExcludeTables: skip})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(preText, "state_table") || strings.Contains(preText, "skipped") {
		t.Error("the pgshift schema or an excluded table was dumped")
	}
	pre, err := Parse(preText)
	if err != nil {
		t.Fatal(err)
	}
	if d.Major == 15 && d.Minor >= 14 && pre.RestrictKey == "" {
		t.Error("pg_dump 15.14+ output without \\restrict")
	}

	dst, err := pgx.Connect(ctx, dstDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close(ctx)
	// A failure anywhere leaves nothing behind.
	broken := pre
	broken.Items = append(append([]Item{}, pre.Items...), Item{Type: "TABLE", Name: "bad", Statements: []string{"CREATE TABLE public.bad (x nosuchtype);"}})
	err = ApplyPreData(ctx, dst, broken, nil)
	var se *StatementError
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "TABLE bad") || !strings.Contains(err.Error(), "nosuchtype") {
		t.Fatalf("broken pre-data: %v", err)
	}
	var n int
	if err := dst.QueryRow(ctx, `SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("failed pre-data left %d relations (%v)", n, err)
	}
	called := false
	if err := ApplyPreData(ctx, dst, pre, func(pgx.Tx) error { called = true; return nil }); err != nil || !called {
		t.Fatalf("pre-data: %v (callback %v)", err, called)
	}
	var comment string
	if err := dst.QueryRow(ctx, `SELECT obj_description('public.a'::regclass)`).Scan(&comment); err != nil || comment != "line one\n\\! echo injected" {
		t.Errorf("comment %q (%v): a backslash inside a literal is data", comment, err)
	}

	postText, err := d.Dump(ctx, srcDSN, PostData, DumpOptions{ExcludeTables: skip})
	if err != nil {
		t.Fatal(err)
	}
	post, err := Parse(postText)
	if err != nil {
		t.Fatal(err)
	}
	plan := PlanPostData(post, nil)
	if len(plan.Indexes) < 4 || len(plan.Attach) != 1 || len(plan.ForeignKeys) != 1 {
		t.Fatalf("post-data plan: %d indexes, %d attach, %d fks", len(plan.Indexes), len(plan.Attach), len(plan.ForeignKeys))
	}
	pool, err := pgxpool.New(ctx, dstDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	// First run fails at the foreign key step (a row without its parent): indexes stay done.
	if _, err := dst.Exec(ctx, `INSERT INTO b VALUES (1, 99)`); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	done := map[string]bool{}
	var applied atomic.Int32
	opts := PostDataOptions{Jobs: 3,
		Done: func(it Item) bool { mu.Lock(); defer mu.Unlock(); return done[it.Key()] },
		// Stands in for state.RecordPostData; a real one writes in tx so a rolled-back step is not recorded.
		Record: func(ctx context.Context, tx pgx.Tx, it Item) error {
			mu.Lock()
			defer mu.Unlock()
			done[it.Key()] = true
			applied.Add(1)
			return nil
		},
	}
	err = ApplyPostData(ctx, pool, plan, opts)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23503" || !strings.Contains(err.Error(), "FK CONSTRAINT") {
		t.Fatalf("want the foreign key to fail: %v", err)
	}
	firstRun := applied.Load()
	if _, err := dst.Exec(ctx, `DELETE FROM b`); err != nil {
		t.Fatal(err)
	}
	if err := ApplyPostData(ctx, pool, plan, opts); err != nil {
		t.Fatalf("resumed post-data: %v", err)
	}
	total := int32(len(plan.Indexes) + len(plan.Attach) + len(plan.ForeignKeys) + len(plan.Other))
	if applied.Load() != total || firstRun != int32(len(plan.Indexes)+len(plan.Attach)) {
		t.Errorf("applied %d steps in total (%d in the first run), want %d: steps repeated or skipped", applied.Load(), firstRun, total)
	}
	var idx int
	if err := dst.QueryRow(ctx, `SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'`).Scan(&idx); err != nil || idx != 5 {
		t.Errorf("%d indexes on the target (%v), want 5", idx, err)
	}
}
