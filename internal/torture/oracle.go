package torture

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The oracle reads both databases with SQL of its own under fixed session settings, so the
// text form of every value is the same on both sides whatever the servers' defaults are.
var oracleSettings = map[string]string{
	"DateStyle":          "ISO, MDY",
	"extra_float_digits": "3",
	"TimeZone":           "UTC",
	"IntervalStyle":      "postgres",
	"bytea_output":       "hex",
	"row_security":       "off",
	"lc_monetary":        "C",
	"xmloption":          "content",
}

func oracleConnect(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, err
	}
	for k, v := range oracleSettings {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	// An empty search_path: every name the server prints (regclass, regtype, type names in
	// composite values) is schema-qualified unless it is in pg_catalog.
	if _, err := conn.Exec(ctx, "SELECT pg_catalog.set_config('search_path', '', false)"); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	return conn, nil
}

// userRelationsSQL lists every relation that holds rows (plain tables, leaf partitions,
// inheritance parents and children) outside the system schemas and pgshift's own.
const userRelationsSQL = `SELECT n.nspname, c.relname, c.relkind::text FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'S') AND n.nspname <> ALL ('{pg_catalog,information_schema,pgshift}')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp%'
ORDER BY n.nspname COLLATE "C", c.relname COLLATE "C"`

// dbState is what the oracle read from one side.
type dbState struct {
	tables map[string]string // "schema.name" -> "count md5"
	seqs   map[string]string // "schema.name" -> "last_value is_called"
	starts map[string]string // "schema.name" -> the same text for the sequence restarted
	ids    map[string]string // "schema.name" -> quoted identifier
}

// readState reads every table's digest and every sequence's position in one snapshot.
func readState(ctx context.Context, dsn string) (*dbState, error) {
	// The read locks table after table in one transaction; pgshift applying a TRUNCATE of
	// several tables at the same moment can deadlock with it, and the server then cancels one
	// of the two: the read is tried again.
	for attempt := 1; ; attempt++ {
		st, err := readStateOnce(ctx, dsn)
		var pgErr *pgconn.PgError
		if err == nil || attempt == 5 || !errors.As(err, &pgErr) || (pgErr.Code != "40P01" && pgErr.Code != "40001") {
			return st, err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func readStateOnce(ctx context.Context, dsn string) (*dbState, error) {
	conn, err := oracleConnect(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.Background())
	rows, err := tx.Query(ctx, userRelationsSQL)
	if err != nil {
		return nil, err
	}
	type rel struct{ schema, name, kind string }
	var rels []rel
	for rows.Next() {
		var r rel
		if err := rows.Scan(&r.schema, &r.name, &r.kind); err != nil {
			return nil, err
		}
		rels = append(rels, r)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	st := &dbState{tables: map[string]string{}, seqs: map[string]string{}, starts: map[string]string{}, ids: map[string]string{}}
	for _, r := range rels {
		id := qi(r.schema) + "." + qi(r.name)
		label := r.schema + "." + r.name
		st.ids[label] = id
		if r.kind == "S" {
			var last int64
			var called bool
			if err := tx.QueryRow(ctx, "SELECT last_value, is_called FROM "+id).Scan(&last, &called); err != nil {
				return nil, fmt.Errorf("sequence %s: %w", label, err)
			}
			st.seqs[label] = fmt.Sprintf("last_value=%d is_called=%v", last, called)
			var start int64
			if err := tx.QueryRow(ctx, "SELECT seqstart FROM pg_catalog.pg_sequence WHERE seqrelid = $1::text::regclass", id).Scan(&start); err != nil {
				return nil, fmt.Errorf("sequence %s: %w", label, err)
			}
			st.starts[label] = fmt.Sprintf("last_value=%d is_called=false", start)
			continue
		}
		// ONLY: an inheritance parent's digest is its own rows, its children are read apart.
		var count int64
		var sum string
		q := `SELECT count(*), coalesce(md5(string_agg(md5(torture_row::text), '' ORDER BY torture_row::text COLLATE "C")), '-') FROM ONLY ` + id + ` AS torture_row`
		if err := tx.QueryRow(ctx, q).Scan(&count, &sum); err != nil {
			return nil, fmt.Errorf("table %s: %w", label, err)
		}
		st.tables[label] = fmt.Sprintf("%d rows, md5 %s", count, sum)
	}
	return st, nil
}

// rowTexts returns the text form of every row of one table (md5 -> text, with multiplicity).
func rowTexts(ctx context.Context, dsn, id string, limit int) (map[string]int, map[string]string, error) {
	conn, err := oracleConnect(ctx, dsn)
	if err != nil {
		return nil, nil, err
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT md5(torture_row::text), left(torture_row::text, 300), length(torture_row::text) FROM ONLY `+id+` AS torture_row LIMIT $1::int8`, int64(limit))
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	counts, texts := map[string]int{}, map[string]string{}
	for rows.Next() {
		var sum, text string
		var length int
		if err := rows.Scan(&sum, &text, &length); err != nil {
			return nil, nil, err
		}
		counts[sum]++
		if length > 300 {
			text += fmt.Sprintf("… (%d chars)", length)
		}
		texts[sum] = text
	}
	return counts, texts, rows.Err()
}

// tableDiff explains how one table differs: rows only on one side (with multiplicity).
func tableDiff(ctx context.Context, srcDSN, dstDSN, srcID, dstID string) string {
	const limit = 200_000
	sc, st, err1 := rowTexts(ctx, srcDSN, srcID, limit)
	dc, dt, err2 := rowTexts(ctx, dstDSN, dstID, limit)
	if err1 != nil || err2 != nil {
		return fmt.Sprintf("    (rows not readable: source %v, target %v)", err1, err2)
	}
	var b strings.Builder
	side := func(label string, a, other map[string]int, texts map[string]string) {
		var lines []string
		for k, n := range a {
			if d := n - other[k]; d > 0 {
				lines = append(lines, fmt.Sprintf("      %s ×%d: %s", label, d, texts[k]))
			}
		}
		sort.Strings(lines)
		total := len(lines)
		if len(lines) > 6 {
			lines = append(lines[:6], fmt.Sprintf("      … %d more", total-6))
		}
		for _, l := range lines {
			b.WriteString(l + "\n")
		}
	}
	side("only on source", sc, dc, st)
	side("only on target", dc, sc, dt)
	return strings.TrimRight(b.String(), "\n")
}

// schemaDump is pg_dump --schema-only of one side, as pgshift is documented to copy it (no
// owners, privileges, publications), without pgshift's own schema and pg_dump's per-run lines.
func schemaDump(ctx context.Context, binDir, dsn string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "pg_dump"), "--schema-only", "--no-owner", "--no-privileges",
		"--no-publications", "--no-subscriptions", "--no-security-labels", "--no-tablespaces", "--exclude-schema=pgshift", "--dbname="+dsn)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		return "", fmt.Errorf("pg_dump: %v %s", err, msg)
	}
	// pgshift's own event trigger (ddl: follow) is on the source only: it is not the
	// application's schema.
	dump := captureTrigger.ReplaceAllString(string(out), "")
	var keep []string
	for _, l := range strings.Split(dump, "\n") {
		if strings.HasPrefix(l, `\restrict`) || strings.HasPrefix(l, `\unrestrict`) || l == "" {
			continue
		}
		keep = append(keep, l)
	}
	return strings.Join(keep, "\n"), nil
}

var captureTrigger = regexp.MustCompile(`(?s)--\n-- Name: pgshift_capture_ddl; Type: EVENT TRIGGER.*?pgshift\.capture_ddl\(\);\n`)

// withDeferred is the target's dump as it will be after cutover: pgshift keeps triggers and
// rules that fire in replica mode disabled on the target while it applies changes, and records
// the statements that enable them (pgshift.deferred_ddl) to run at cutover. Each recorded
// statement replaces the dump's DISABLE line of the same trigger or rule, so the comparison
// with the source's dump checks the record as well as the rest.
func withDeferred(ctx context.Context, dsn, dump string) (string, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return "", err
	}
	defer conn.Close(context.Background())
	var exists bool
	if err := conn.QueryRow(ctx, `SELECT to_regclass('pgshift.deferred_ddl') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return dump, err
	}
	rows, err := conn.Query(ctx, `SELECT statement FROM pgshift.deferred_ddl WHERE applied_at IS NULL ORDER BY id`)
	if err != nil {
		return "", err
	}
	stmts, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return "", err
	}
	enable := regexp.MustCompile(`^(ALTER TABLE (?:ONLY )?.+) ENABLE (?:ALWAYS|REPLICA) (TRIGGER|RULE) (.+);$`)
	lines := strings.Split(dump, "\n")
	for _, st := range stmts {
		m := enable.FindStringSubmatch(strings.TrimSpace(st))
		if m == nil {
			return "", fmt.Errorf("pgshift.deferred_ddl holds a statement the oracle does not know: %q", st)
		}
		disabled := m[1] + " DISABLE " + m[2] + " " + m[3] + ";"
		found := false
		for i, l := range lines {
			if l == disabled {
				lines[i], found = strings.TrimSpace(st), true
				break
			}
		}
		if !found {
			lines = append(lines, "-- deferred, but not disabled on the target: "+st)
		}
	}
	return strings.Join(lines, "\n"), nil
}

// lineDiff is a small LCS diff of two texts: the lines removed (-) and added (+), with one
// line of context, at most max lines.
func lineDiff(a, b string, max int) string {
	x, y := strings.Split(a, "\n"), strings.Split(b, "\n")
	if len(x)*len(y) > 25_000_000 {
		return "(dumps too large to diff)"
	}
	n, m := len(x), len(y)
	lcs := make([][]int32, n+1)
	for i := range lcs {
		lcs[i] = make([]int32, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else if lcs[i+1][j] >= lcs[i][j+1] {
				lcs[i][j] = lcs[i+1][j]
			} else {
				lcs[i][j] = lcs[i][j+1]
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && x[i] == y[j]:
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			out = append(out, "    + "+y[j])
			j++
		default:
			out = append(out, "    - "+x[i])
			i++
		}
		if len(out) >= max {
			out = append(out, "    …")
			break
		}
	}
	return strings.Join(out, "\n")
}
