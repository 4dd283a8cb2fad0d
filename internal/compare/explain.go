package compare

// Plan comparison: EXPLAIN (ANALYZE, FORMAT JSON) of the query on both sides, in the same
// read-only rolled-back transaction as the timings, reduced to the facts that explain a
// difference in speed — how each table is read, which join strategies are used, where the
// target's row estimates are off by ten times or more — and, for each difference, what the
// target's catalog says about its likely cause.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// Node is one plan node, as far as the comparison needs it.
type Node struct {
	Type       string  `json:"type"` // "Seq Scan", "Index Scan", "Hash Join", ...
	Relation   string  `json:"relation,omitempty"`
	Index      string  `json:"index,omitempty"`
	PlanRows   float64 `json:"plan_rows"`
	ActualRows float64 `json:"actual_rows"` // per loop, as EXPLAIN gives it
	Loops      float64 `json:"loops"`
}

// Label renders the node as EXPLAIN's text form names it.
func (n Node) Label() string {
	s := n.Type
	if n.Index != "" {
		s += " using " + n.Index
	}
	if n.Relation != "" {
		s += " on " + n.Relation
	}
	return s
}

// PlanDiff is the comparison of the two plans.
type PlanDiff struct {
	Source      []Node   `json:"source"`
	Target      []Node   `json:"target"`
	Differences []string `json:"differences"`
	Causes      []string `json:"likely_causes"`
}

type planJSON struct {
	NodeType     string     `json:"Node Type"`
	RelationName string     `json:"Relation Name"`
	Schema       string     `json:"Schema"`
	IndexName    string     `json:"Index Name"`
	PlanRows     float64    `json:"Plan Rows"`
	ActualRows   float64    `json:"Actual Rows"`
	ActualLoops  float64    `json:"Actual Loops"`
	Plans        []planJSON `json:"Plans"`
}

func explain(ctx context.Context, s Side, sql string, timeout time.Duration) ([]Node, error) {
	var raw []byte
	err := readOnly(ctx, s, timeout, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, "EXPLAIN (ANALYZE, VERBOSE, FORMAT JSON) "+sql, pgx.QueryExecModeSimpleProtocol).Scan(&raw)
	})
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	var doc []struct {
		Plan planJSON `json:"Plan"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc) == 0 {
		return nil, fmt.Errorf("%s: read EXPLAIN output: %v", s.Name, err)
	}
	var out []Node
	var walk func(p planJSON)
	walk = func(p planJSON) {
		n := Node{Type: p.NodeType, Index: p.IndexName, PlanRows: p.PlanRows, ActualRows: p.ActualRows, Loops: p.ActualLoops}
		if p.RelationName != "" {
			n.Relation = p.RelationName
			if p.Schema != "" {
				n.Relation = pgx.Identifier{p.Schema, p.RelationName}.Sanitize()
			}
		}
		out = append(out, n)
		for _, c := range p.Plans {
			walk(c)
		}
	}
	walk(doc[0].Plan)
	return out, nil
}

func comparePlans(ctx context.Context, src, dst Side, sql string, timeout time.Duration) (*PlanDiff, error) {
	sp, err := explain(ctx, src, sql, timeout)
	if err != nil {
		return nil, err
	}
	tp, err := explain(ctx, dst, sql, timeout)
	if err != nil {
		return nil, err
	}
	d := &PlanDiff{Source: sp, Target: tp, Differences: []string{}, Causes: []string{}}
	cause := func(s string) {
		if !slices.Contains(d.Causes, s) {
			d.Causes = append(d.Causes, s)
		}
	}
	// How each table is read.
	ss, ts := scans(sp), scans(tp)
	for _, rel := range slices.Sorted(maps.Keys(ss)) {
		s, t := ss[rel], ts[rel]
		if t == nil || slices.Equal(labels(s), labels(t)) {
			continue
		}
		d.Differences = append(d.Differences, fmt.Sprintf("%s: source %s, target %s", rel, strings.Join(labels(s), " + "), strings.Join(labels(t), " + ")))
		for _, n := range s {
			if n.Index == "" || slices.ContainsFunc(t, func(m Node) bool { return m.Index == n.Index }) {
				continue
			}
			c, err := indexCause(ctx, src, dst, rel, n.Index)
			if err != nil {
				return nil, err
			}
			cause(c)
		}
	}
	// Join strategies.
	if sj, tj := joins(sp), joins(tp); sj != tj {
		d.Differences = append(d.Differences, fmt.Sprintf("joins: source %s, target %s", sj, tj))
	}
	// Row estimates off by ten times or more on the target.
	for _, n := range tp {
		est, act := n.PlanRows, n.ActualRows
		if act == 0 && n.Loops == 0 {
			continue // never executed
		}
		if hi, lo := max(est, act), max(min(est, act), 1); hi/lo >= 10 && hi >= 100 {
			d.Differences = append(d.Differences, fmt.Sprintf("target row estimate off by %.0f× at %s (estimated %.0f, actual %.0f)", hi/lo, n.Label(), est, act))
			if n.Relation != "" {
				c, err := statsCause(ctx, dst, n.Relation)
				if err != nil {
					return nil, err
				}
				if c != "" {
					cause(c)
				}
			}
		}
	}
	if len(d.Differences) > 0 {
		s, err := settingsCause(ctx, src, dst)
		if err != nil {
			return nil, err
		}
		if s != "" {
			cause(s)
		}
	}
	return d, nil
}

// scans groups the plan's scan nodes by relation (an index scan names its table).
func scans(nodes []Node) map[string][]Node {
	out := map[string][]Node{}
	for _, n := range nodes {
		if n.Relation != "" {
			out[n.Relation] = append(out[n.Relation], n)
		}
	}
	return out
}

func labels(nodes []Node) []string {
	s := make([]string, len(nodes))
	for i, n := range nodes {
		s[i] = n.Type
		if n.Index != "" {
			s[i] += " using " + n.Index
		}
	}
	sort.Strings(s)
	return s
}

// joins renders the plan's join strategies as a sorted count, e.g. "Hash Join ×2, Nested Loop ×1".
func joins(nodes []Node) string {
	c := map[string]int{}
	for _, n := range nodes {
		if strings.HasSuffix(n.Type, "Join") || n.Type == "Nested Loop" {
			c[n.Type]++
		}
	}
	if len(c) == 0 {
		return "none"
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(c)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, c[k]))
	}
	return strings.Join(parts, ", ")
}

// indexCause says why the target did not use an index the source used.
func indexCause(ctx context.Context, src, dst Side, rel, index string) (string, error) {
	var def string
	err := src.Conn.QueryRow(ctx, `SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = to_regclass($1::text) AND c.relname = $2::text`, rel, index).Scan(&def)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return "", fmt.Errorf("source: read index %s: %w", index, err)
	}
	var valid *bool
	err = dst.Conn.QueryRow(ctx, `SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
		WHERE i.indrelid = to_regclass($1::text) AND c.relname = $2::text`, rel, index).Scan(&valid)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		if def == "" {
			return fmt.Sprintf("missing index on the target: %s (used on the source) does not exist on %s", index, rel), nil
		}
		return fmt.Sprintf("missing index on the target: %s; on the source: %s;", index, def), nil
	case err != nil:
		return "", fmt.Errorf("target: read index %s: %w", index, err)
	case valid != nil && !*valid:
		return fmt.Sprintf("index %s on %s is INVALID on the target (a failed CREATE INDEX CONCURRENTLY?): REINDEX INDEX %s", index, rel, index), nil
	}
	if c, err := statsCause(ctx, dst, rel); err != nil || c != "" {
		return c, err
	}
	return fmt.Sprintf("index %s exists on the target but the planner chose otherwise for %s: compare the planner settings and the table's statistics", index, rel), nil
}

// statsCause reports a table on the target whose statistics are missing or stale.
func statsCause(ctx context.Context, dst Side, rel string) (string, error) {
	var analyzed bool
	var mods, live int64
	err := dst.Conn.QueryRow(ctx, `SELECT coalesce(last_analyze, last_autoanalyze) IS NOT NULL, n_mod_since_analyze, n_live_tup
		FROM pg_stat_user_tables WHERE relid = to_regclass($1::text)`, rel).Scan(&analyzed, &mods, &live)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("target: read statistics of %s: %w", rel, err)
	}
	switch {
	case !analyzed:
		return fmt.Sprintf("statistics: %s was never analyzed on the target: ANALYZE %s;", rel, rel), nil
	case live > 0 && mods > live/5:
		return fmt.Sprintf("statistics: %s changed by %d rows since its last ANALYZE on the target (%d live): ANALYZE %s;", rel, mods, live, rel), nil
	}
	return "", nil
}

// plannerSettings are the settings that change plans.
var plannerSettings = []string{"work_mem", "random_page_cost", "seq_page_cost", "effective_cache_size", "effective_io_concurrency",
	"default_statistics_target", "jit", "cpu_tuple_cost", "cpu_index_tuple_cost", "cpu_operator_cost", "max_parallel_workers_per_gather",
	"enable_seqscan", "enable_indexscan", "enable_bitmapscan", "enable_hashjoin", "enable_mergejoin", "enable_nestloop", "enable_sort", "enable_hashagg"}

// settingsCause lists the planner settings that differ between the sides.
func settingsCause(ctx context.Context, src, dst Side) (string, error) {
	read := func(s Side) (map[string]string, error) {
		rows, err := s.Conn.Query(ctx, `SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY($1::text[])`, plannerSettings)
		if err != nil {
			return nil, fmt.Errorf("%s: read planner settings: %w", s.Name, err)
		}
		defer rows.Close()
		out := map[string]string{}
		for rows.Next() {
			var k, v string
			if err := rows.Scan(&k, &v); err != nil {
				return nil, fmt.Errorf("%s: read planner settings: %w", s.Name, err)
			}
			out[k] = v
		}
		return out, rows.Err()
	}
	a, err := read(src)
	if err != nil {
		return "", err
	}
	b, err := read(dst)
	if err != nil {
		return "", err
	}
	var diff []string
	for _, k := range plannerSettings {
		if a[k] != b[k] {
			diff = append(diff, fmt.Sprintf("%s %s on the source, %s on the target", k, a[k], b[k]))
		}
	}
	if len(diff) == 0 {
		return "", nil
	}
	return "planner settings differ: " + strings.Join(diff, "; "), nil
}
