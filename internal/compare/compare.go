// Package compare times read-only queries on the source and on the target side by side
// (pgshift compare-queries): the performance comparison of a migration, done so that it means
// something — warm-up first, then runs interleaved between the servers so that neither gets the
// quieter moments, medians and tails rather than one timing, and with --explain both plans
// compared node by node with the likely cause of a difference (an index missing on the target,
// statistics never gathered, planner settings that differ).
//
// Every query runs in a READ ONLY transaction that is rolled back, with a statement timeout,
// so comparing can neither write nor leave anything open on a production server.
package compare

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
)

// Query is one named query to time.
type Query struct {
	Name string `json:"name"`
	SQL  string `json:"sql"`
}

// Parse reads queries from a SQL file: each begins at a `-- name: NAME` line and runs to the
// next one; text before the first header, comments-only bodies and a trailing semicolon are
// dropped. A file without any header is one query named "query".
func Parse(text string) ([]Query, error) {
	var out []Query
	var cur *Query
	var body strings.Builder
	finish := func() error {
		if cur == nil {
			return nil
		}
		cur.SQL = strings.TrimSuffix(strings.TrimSpace(body.String()), ";")
		if strings.TrimSpace(stripComments(cur.SQL)) == "" {
			return fmt.Errorf("query %q has no SQL", cur.Name)
		}
		out = append(out, *cur)
		return nil
	}
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		if name, ok := header(line); ok {
			if err := finish(); err != nil {
				return nil, err
			}
			if slices.ContainsFunc(out, func(q Query) bool { return q.Name == name }) {
				return nil, fmt.Errorf("query name %q appears twice", name)
			}
			cur = &Query{Name: name}
			body.Reset()
			continue
		}
		if cur == nil && strings.TrimSpace(stripComments(line)) != "" {
			cur = &Query{Name: "query"}
		}
		body.WriteString(line)
		body.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if err := finish(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, errors.New("no queries found (put each after a `-- name: NAME` line)")
	}
	return out, nil
}

func header(line string) (string, bool) {
	s := strings.TrimSpace(line)
	if !strings.HasPrefix(s, "--") {
		return "", false
	}
	s = strings.TrimSpace(strings.TrimPrefix(s, "--"))
	if !strings.HasPrefix(strings.ToLower(s), "name:") {
		return "", false
	}
	name := strings.TrimSpace(s[len("name:"):])
	return name, name != ""
}

func stripComments(sql string) string {
	var b strings.Builder
	for line := range strings.SplitSeq(sql, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.String()
}

// TopStatements returns at most n of the source's most time-consuming statements from
// pg_stat_statements that can run as they are: plain SELECTs (or WITH … SELECT) without
// parameters. It fails with the fix when the extension is not installed.
func TopStatements(ctx context.Context, q catalog.Querier, n int) ([]Query, error) {
	var schema string
	err := q.QueryRow(ctx, `SELECT n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'`).Scan(&schema)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, errors.New("pg_stat_statements is not installed on the source: pass --queries FILE, or CREATE EXTENSION pg_stat_statements (it needs shared_preload_libraries)")
	}
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_statements on the source: %w", err)
	}
	rows, err := q.Query(ctx, fmt.Sprintf(`SELECT queryid::text, query FROM %s.pg_stat_statements
		WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
		  AND query !~ '\$[0-9]' AND query ~* '^\s*(select|with)\s' AND query !~* '\m(insert|update|delete|merge|for\s+update|for\s+share|nextval|setval|pg_sleep)\M'
		ORDER BY total_exec_time DESC LIMIT $1`, pgx.Identifier{schema}.Sanitize()), n)
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_statements on the source: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Query, error) {
		var id, sql string
		err := r.Scan(&id, &sql)
		return Query{Name: "pgss " + id, SQL: sql}, err
	})
	if err != nil {
		return nil, fmt.Errorf("read pg_stat_statements on the source: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("pg_stat_statements on the source holds no SELECT without parameters: pass --queries FILE")
	}
	return out, nil
}

// Options tunes a comparison.
type Options struct {
	Runs        int           // timed runs per side (default 10)
	WarmUp      int           // untimed runs per side first (the command's default is 2)
	Explain     bool          // compare EXPLAIN ANALYZE plans too
	SlowerRatio float64       // the target is flagged slower above this median ratio (default 1.5)
	MinDelta    time.Duration // … and only when the medians differ by at least this much (default 1 ms)
	Timeout     time.Duration // statement_timeout of each run (default 60 s)
}

func (o *Options) defaults() {
	if o.Runs <= 0 {
		o.Runs = 10
	}
	o.WarmUp = max(o.WarmUp, 0)
	if o.SlowerRatio <= 1 {
		o.SlowerRatio = 1.5
	}
	if o.MinDelta <= 0 {
		o.MinDelta = time.Millisecond
	}
	if o.Timeout <= 0 {
		o.Timeout = 60 * time.Second
	}
}

// Timing summarises one side's runs of a query.
type Timing struct {
	P50  time.Duration `json:"p50_ns"`
	P95  time.Duration `json:"p95_ns"`
	Max  time.Duration `json:"max_ns"`
	Rows int64         `json:"rows"` // rows the query returned (last run)
}

// Result is one query compared.
type Result struct {
	Query
	Source Timing  `json:"source"`
	Target Timing  `json:"target"`
	Ratio  float64 `json:"ratio"`  // target median / source median
	Slower bool    `json:"slower"` // beyond Options.SlowerRatio and MinDelta
	// RowsDiffer: the sides returned different row counts — the data differ, or the query is
	// not deterministic; the timings then compare different work.
	RowsDiffer bool      `json:"rows_differ,omitempty"`
	Plans      *PlanDiff `json:"plans,omitempty"`
	Err        string    `json:"error,omitempty"`
}

// Side is one server to run queries on.
type Side struct {
	Name string // "source" or "target"
	Conn *pgx.Conn
}

// Run compares every query. A query that fails on either side is reported with its error and
// the others go on; only a session lost on either side ends the run.
func Run(ctx context.Context, src, dst Side, queries []Query, opts Options) ([]Result, error) {
	opts.defaults()
	out := make([]Result, 0, len(queries))
	for _, q := range queries {
		r, err := compareOne(ctx, src, dst, q, opts)
		if err != nil {
			if src.Conn.IsClosed() || dst.Conn.IsClosed() || ctx.Err() != nil {
				return out, err
			}
			r.Err = err.Error()
		}
		out = append(out, r)
	}
	return out, nil
}

func compareOne(ctx context.Context, src, dst Side, q Query, opts Options) (Result, error) {
	r := Result{Query: q}
	for range opts.WarmUp {
		for _, s := range []Side{src, dst} {
			if _, _, err := timeOnce(ctx, s, q.SQL, opts.Timeout); err != nil {
				return r, err
			}
		}
	}
	var st, dt []time.Duration
	for i := range opts.Runs {
		// Interleaved, each side first in turn: neither gets the warmer moment every time.
		order := []Side{src, dst}
		if i%2 == 1 {
			order = []Side{dst, src}
		}
		for _, s := range order {
			d, rows, err := timeOnce(ctx, s, q.SQL, opts.Timeout)
			if err != nil {
				return r, err
			}
			if s.Name == src.Name {
				st, r.Source.Rows = append(st, d), rows
			} else {
				dt, r.Target.Rows = append(dt, d), rows
			}
		}
	}
	r.Source.P50, r.Source.P95, r.Source.Max = summarise(st)
	r.Target.P50, r.Target.P95, r.Target.Max = summarise(dt)
	r.Ratio = float64(r.Target.P50) / float64(max(r.Source.P50, time.Microsecond))
	r.Slower = r.Ratio > opts.SlowerRatio && r.Target.P50-r.Source.P50 >= opts.MinDelta
	r.RowsDiffer = r.Source.Rows != r.Target.Rows
	if opts.Explain {
		p, err := comparePlans(ctx, src, dst, q.SQL, opts.Timeout)
		if err != nil {
			return r, err
		}
		r.Plans = p
	}
	return r, nil
}

// readOnly runs fn in a READ ONLY transaction with a statement timeout and rolls it back.
func readOnly(ctx context.Context, s Side, timeout time.Duration, fn func(tx pgx.Tx) error) error {
	tx, err := s.Conn.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		return fmt.Errorf("%s: begin a read-only transaction: %w", s.Name, err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config('statement_timeout', $1::text, true)`, fmt.Sprint(timeout.Milliseconds())); err != nil {
		return fmt.Errorf("%s: set statement_timeout: %w", s.Name, err)
	}
	if err := fn(tx); err != nil {
		return fmt.Errorf("%s: %w", s.Name, err)
	}
	return nil
}

// timeOnce runs sql once, reading every row, and returns how long the server took to answer
// it all (the transaction's begin and rollback are not counted).
func timeOnce(ctx context.Context, s Side, sql string, timeout time.Duration) (d time.Duration, n int64, err error) {
	err = readOnly(ctx, s, timeout, func(tx pgx.Tx) error {
		start := time.Now()
		rows, err := tx.Query(ctx, sql, pgx.QueryExecModeSimpleProtocol)
		if err != nil {
			return err
		}
		for rows.Next() {
			n++
		}
		rows.Close()
		d = time.Since(start)
		return rows.Err()
	})
	return d, n, err
}

// summarise returns the median, the 95th percentile (nearest rank) and the maximum.
func summarise(ds []time.Duration) (p50, p95, mx time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	if len(s)%2 == 1 {
		p50 = s[len(s)/2]
	} else {
		p50 = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return p50, rank(0.95), s[len(s)-1]
}
