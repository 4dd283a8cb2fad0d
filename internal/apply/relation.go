package apply

// Relations: how a relation message (the source table's columns as pgoutput describes them) is
// checked against the target table before any change of it is applied.
//
// pgoutput sends a table's columns in attnum order, leaving out dropped and generated columns,
// by name and type but without attnums or definitions. The target's columns are matched to them
// by name. Until DDL is followed, the only change of a relation pgshift applies by itself is
// one it can prove to be ADD COLUMN of nullable columns without default (every existing row is
// NULL there on both sides): the relation's columns start with exactly the target's non-generated
// columns in order, by name and type, the new ones come after them, and on the source each new
// one is nullable, without default or missing value, and not generated. The relation is also
// compared with the previous description of the same table in this run. A rename, a drop, a
// drop and add, a reorder or a type change stops with the table, what was seen and the DDL to
// run; nothing is guessed.
//
// Type names are compared as format_type renders them under search_path = '' on both servers
// (the apply session runs with it, like the native subscriber's apply worker), so every type
// outside pg_catalog is schema-qualified the same way whatever search_path either database has.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// Source is the session to the source that column definitions are read with (a pool or a
// connection).
type Source interface {
	catalog.Querier
	Begin(ctx context.Context) (pgx.Tx, error)
}

// WarnOnce remembers which warnings were given, so a condition is reported once per run and not
// at every reconnect. It is safe for concurrent use; the zero value is ready.
type WarnOnce struct {
	mu   sync.Mutex
	seen map[string]bool
}

// First reports whether key is seen for the first time, and remembers it.
func (w *WarnOnce) First(key string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.seen[key] {
		return false
	}
	if w.seen == nil {
		w.seen = map[string]bool{}
	}
	w.seen[key] = true
	return true
}

// targetColumn is a column of the target table.
type targetColumn struct {
	Name      string
	Attnum    int16
	Type      string // format_type under search_path = ''
	Generated bool
	Identity  string // "a", "d" or ""
	NotNull   bool
	HasDef    bool
	Default   string // the default expression (pg_get_expr), "" without one
	Missing   string // attmissingval as text when atthasmissing: the value rows older than the ADD COLUMN have
}

// targetTable is the target's table: its relkind and columns in attnum order.
type targetTable struct {
	kind byte
	cols []targetColumn
}

// sourceColumn is a column of the source table as the source's catalog describes it now.
type sourceColumn struct {
	Attnum    int16
	Type      string
	NotNull   bool
	HasDef    bool // a default, or a missing value (ADD COLUMN ... DEFAULT)
	Generated bool
	Default   string // the default expression (pg_get_expr), "" without one
	Missing   string // attmissingval as text when atthasmissing
}

// relColumn is one column of a relation message with the source's type name and the attnum
// the source's catalog gave that name when the plan was built (0: not found).
type relColumn struct {
	Name   string
	Type   string
	Attnum int16
}

// targetTableSQL reads the target table; a table without columns still gives one row.
const targetTableSQL = `
SELECT c.relkind::text, a.attnum IS NOT NULL, coalesce(a.attnum, 0), coalesce(a.attname::text, ''), coalesce(format_type(a.atttypid, a.atttypmod), ''),
       coalesce(a.attgenerated <> '', false), coalesce(a.attidentity::text, ''), coalesce(a.attnotnull, false), coalesce(a.atthasdef, false),
       coalesce(pg_get_expr(d.adbin, d.adrelid), ''), CASE WHEN a.atthasmissing THEN coalesce(a.attmissingval::text, '') ELSE '' END
FROM pg_class c LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE c.oid = to_regclass($1)
ORDER BY a.attnum`

// sourceColumnsSQL reads the source's columns of a relation, on a source of version v.
func sourceColumnsSQL(v catalog.Version) string {
	hasDef, missing := "a.atthasdef OR a.atthasmissing", "CASE WHEN a.atthasmissing THEN coalesce(a.attmissingval::text, '') ELSE '' END"
	if !v.HasMissingValues() {
		hasDef, missing = "a.atthasdef", "''"
	}
	return `
SELECT a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), a.attnotnull, ` + hasDef + `, ` + v.AttGeneratedSQL("a") + ` <> '',
       coalesce(pg_get_expr(d.adbin, d.adrelid), ''), ` + missing + `
FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attrelid = $1 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`
}

const messageTypesSQL = `SELECT format_type(t.o, t.m) FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS t(o, m, n) ORDER BY t.n`

func loadTargetTable(ctx context.Context, q catalog.Querier, t pgtypes.TableID) (*targetTable, error) {
	rows, err := q.Query(ctx, targetTableSQL, t.Sanitize())
	if err != nil {
		return nil, fmt.Errorf("read columns of %s on the target: %w", t, err)
	}
	defer rows.Close()
	var tt *targetTable
	for rows.Next() {
		var kind string
		var has bool
		var c targetColumn
		if err := rows.Scan(&kind, &has, &c.Attnum, &c.Name, &c.Type, &c.Generated, &c.Identity, &c.NotNull, &c.HasDef, &c.Default, &c.Missing); err != nil {
			return nil, fmt.Errorf("read columns of %s on the target: %w", t, err)
		}
		if tt == nil {
			tt = &targetTable{kind: kind[0]}
		}
		if has {
			tt.cols = append(tt.cols, c)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read columns of %s on the target: %w", t, err)
	}
	return tt, nil
}

// readSource renders the relation's column types from the message's type OIDs and typmods, and
// reads the source table's current columns, all under an empty search_path.
func (a *Applier) readSource(ctx context.Context, r *cdc.Relation) (types []string, cols map[string]sourceColumn, err error) {
	oids := make([]uint32, len(r.Columns))
	mods := make([]int32, len(r.Columns))
	for i, c := range r.Columns {
		oids[i], mods[i] = c.TypeOID, c.TypeMod
	}
	err = pgx.BeginFunc(ctx, a.source, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config('search_path', '', true)`); err != nil {
			return err
		}
		rows, err := tx.Query(ctx, messageTypesSQL, oids, mods)
		if err != nil {
			return err
		}
		if types, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return err
		}
		v, err := a.sourceVersion(ctx)
		if err != nil {
			return err
		}
		cols, err = scanSourceColumns(ctx, tx, v, r.OID)
		return err
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read column definitions of %s on the source: %w", r.Table, err)
	}
	if len(types) != len(r.Columns) {
		return nil, nil, fmt.Errorf("read column types of %s on the source: %d types for %d columns", r.Table, len(types), len(r.Columns))
	}
	return types, cols, nil
}

// scanSourceColumns reads the source's columns of the relation oid (v: the source's version, on
// which the query depends).
func scanSourceColumns(ctx context.Context, q catalog.Querier, v catalog.Version, oid uint32) (map[string]sourceColumn, error) {
	rows, err := q.Query(ctx, sourceColumnsSQL(v), oid)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols := map[string]sourceColumn{}
	for rows.Next() {
		var name string
		var c sourceColumn
		if err := rows.Scan(&name, &c.Attnum, &c.Type, &c.NotNull, &c.HasDef, &c.Generated, &c.Default, &c.Missing); err != nil {
			return nil, err
		}
		cols[name] = c
	}
	return cols, rows.Err()
}

// buildPlan checks a relation against the target table (and against prev, the plan of the
// previous description of the same table in this run, if any) and prepares its plan. Columns the
// source provably added are added on the target, inside the open target transaction.
func (a *Applier) buildPlan(ctx context.Context, r *cdc.Relation, prev *plan) (*plan, error) {
	tt, err := loadTargetTable(ctx, a.conn, r.Table)
	if err != nil {
		return nil, err
	}
	if tt == nil && prev != nil && prev.table != r.Table {
		fix := fmt.Sprintf("ALTER TABLE %s RENAME TO %s;", prev.table.Sanitize(), pgtypes.QuoteIdent(r.Table.Name))
		if prev.table.Schema != r.Table.Schema {
			fix = fmt.Sprintf("ALTER TABLE %s SET SCHEMA %s; (then rename it to %s if its name changed too)", prev.table.Sanitize(), pgtypes.QuoteIdent(r.Table.Schema), pgtypes.QuoteIdent(r.Table.Name))
		}
		return nil, &ErrSchema{Table: r.Table, Msg: fmt.Sprintf("the source renamed or moved table %s to %s, which the target does not have", prev.table, r.Table),
			Fix: fix + " (on the target)"}
	}
	if tt == nil {
		return nil, &ErrSchema{Table: r.Table, Msg: "the table does not exist on the target",
			Fix: "create it on the target with the source's definition (pg_dump --schema-only -t)"}
	}
	if tt.kind != catalog.KindTable && tt.kind != catalog.KindPartitioned {
		return nil, &ErrSchema{Table: r.Table, Msg: fmt.Sprintf("the relation is of kind %q on the target, not a table", tt.kind),
			Fix: "create it on the target as a table with the source's definition (pg_dump --schema-only -t)"}
	}
	types, srcCols, err := a.readSource(ctx, r)
	if err != nil {
		return nil, err
	}
	msg := make([]relColumn, len(r.Columns))
	for i, c := range r.Columns {
		msg[i] = relColumn{Name: c.Name, Type: types[i], Attnum: srcCols[c.Name].Attnum}
		if msg[i].Type != srcCols[c.Name].Type {
			msg[i].Attnum = 0 // the source's column of that name is not the one described
		}
	}
	var prevCols []relColumn
	if prev != nil {
		prevCols = prev.cols
	}
	add, targetOnly, checks, err := reconcile(r.Table, msg, prevCols, tt.cols, srcCols)
	if err != nil {
		return nil, err
	}
	ids, err := state.ColumnIdentities(ctx, a.conn, r.OID)
	if err != nil {
		return nil, err
	}
	if err := checkIdentities(r.Table, msg, tt.cols, ids); err != nil {
		return nil, err
	}
	if err := checkAdded(ctx, a.conn, r.Table, checks); err != nil {
		return nil, err
	}
	if len(add) > 0 {
		clauses := make([]string, len(add))
		names := make([]string, len(add))
		for j, i := range add {
			clauses[j] = "ADD COLUMN " + pgtypes.QuoteIdent(msg[i].Name) + " " + msg[i].Type
			names[j] = msg[i].Name
		}
		ddl := "ALTER TABLE " + r.Table.Sanitize() + " " + strings.Join(clauses, ", ")
		if _, err := a.conn.Exec(ctx, ddl); err != nil {
			return nil, fmt.Errorf("table %s: add columns on the target (%s): %w", r.Table, ddl, err)
		}
		a.log.Info("added columns the source gained (nullable, without default)", "table", r.Table.String(), "columns", strings.Join(names, ", "))
		if tt, err = loadTargetTable(ctx, a.conn, r.Table); err != nil {
			return nil, err
		}
	}
	if err := state.SaveColumnIdentities(ctx, a.conn, r.OID, pairIdentities(msg, tt.cols)); err != nil {
		return nil, err
	}
	if len(targetOnly) > 0 && a.opts.Warned.First(r.Table.Sanitize()) {
		a.log.Warn("columns exist only on the target; rows written by pgshift get their defaults there",
			"table", r.Table.String(), "column", strings.Join(targetOnly, ","))
	}

	byName := make(map[string]*targetColumn, len(tt.cols))
	for i := range tt.cols {
		byName[tt.cols[i].Name] = &tt.cols[i]
	}
	p := &plan{rel: r, table: r.Table, cols: msg, types: make([]string, len(r.Columns)), always: make([]bool, len(r.Columns)),
		full: r.ReplicaIdentity == 'f', stmts: map[string]string{}, uses: map[string]int{}, partitioned: tt.kind == catalog.KindPartitioned}
	sent := make(map[string]bool, len(r.Columns))
	for i, c := range r.Columns {
		tc := byName[c.Name]
		sent[c.Name] = true
		p.types[i] = tc.Type
		if tc.Identity == "a" {
			p.always[i] = true
		}
		if c.Key {
			p.keys = append(p.keys, i)
		}
	}
	for i := range r.Columns {
		if p.always[i] {
			p.anyAlways = true
			p.alwaysOutsideKey = p.alwaysOutsideKey || !slices.Contains(p.keys, i)
		}
	}
	for _, tc := range tt.cols {
		if !sent[tc.Name] && !tc.Generated {
			p.keep = append(p.keep, tc.Name)
		}
	}
	if p.full {
		var index string
		if index, p.fullIndex, err = fullIdentityIndex(ctx, a.conn, r.Table, p); err != nil {
			return nil, err
		}
		a.log.Debug("REPLICA IDENTITY FULL rows are looked up through an index", "table", r.Table.String(), "index", index)
	}
	return p, nil
}

// reconcile decides whether the relation msg (with prev, the previous description of the same
// table, nil if none) can be applied to the target's columns tgt, given the source's current
// columns src. It returns the indexes of msg columns to add on the target and the target's
// columns the source does not have, or an *ErrSchema saying what was seen and what to do.
func reconcile(t pgtypes.TableID, msg, prev []relColumn, tgt []targetColumn, src map[string]sourceColumn) (add []int, targetOnly []string, checks []addedCheck, err error) {
	tbl := t.Sanitize()
	q := pgtypes.QuoteIdent
	tgtByName := map[string]*targetColumn{}
	var plain []targetColumn // the target's columns a source can send: not generated
	plainIdx := map[string]int{}
	for i := range tgt {
		tgtByName[tgt[i].Name] = &tgt[i]
		if !tgt[i].Generated {
			plainIdx[tgt[i].Name] = len(plain)
			plain = append(plain, tgt[i])
		}
	}
	prevByName := map[string]relColumn{}
	for _, c := range prev {
		prevByName[c.Name] = c
	}
	var unknown []string
	for _, c := range msg {
		tc := tgtByName[c.Name]
		if tc == nil {
			unknown = append(unknown, c.Name)
			continue
		}
		if tc.Generated {
			return nil, nil, nil, &ErrSchema{Table: t, Msg: fmt.Sprintf("column %s is generated on the target but sent by the source", q(c.Name)),
				Fix: "make the target column a plain column like the source's"}
		}
		if pc, ok := prevByName[c.Name]; ok && pc.Attnum != 0 && c.Attnum != 0 && pc.Attnum != c.Attnum {
			return nil, nil, nil, droppedAndAdded(t, c.Name, c.Type, pc.Attnum, c.Attnum)
		}
	}

	if len(unknown) == 0 {
		// Every sent column exists on the target: same order and types, or stop.
		last := -1
		for i, c := range msg {
			j := plainIdx[c.Name]
			if j < last {
				return nil, nil, nil, &ErrSchema{Table: t,
					Msg: fmt.Sprintf("the source sends column %s after %s, the target has it before: a column was dropped and added again on the source (%s)",
						q(c.Name), q(msg[i-1].Name), describeColumns(msg, plain)),
					Fix: fmt.Sprintf("make the target's columns of %s the source's, in the source's order (compare pg_dump --schema-only -t on both)", tbl)}
			}
			last = j
			if c.Type != plain[j].Type {
				return nil, nil, nil, &ErrSchema{Table: t,
					Msg: fmt.Sprintf("column %s is %s on the source but %s on the target", q(c.Name), c.Type, plain[j].Type),
					Fix: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s;", tbl, q(c.Name), c.Type)}
			}
		}
		sent := map[string]bool{}
		for _, c := range msg {
			sent[c.Name] = true
		}
		for _, tc := range tgt {
			if sent[tc.Name] {
				continue
			}
			if tc.Generated {
				if s, ok := src[tc.Name]; !ok || !s.Generated {
					targetOnly = append(targetOnly, tc.Name)
				}
				continue
			}
			if _, ok := prevByName[tc.Name]; ok {
				return nil, nil, nil, &ErrSchema{Table: t,
					Msg: fmt.Sprintf("the source no longer sends column %s (dropped or renamed on the source; now %s)", q(tc.Name), describeColumns(msg, plain)),
					Fix: fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s; (on the target, if it was dropped on the source)", tbl, q(tc.Name))}
			}
			if tc.NotNull && !tc.HasDef && tc.Identity == "" {
				return nil, nil, nil, &ErrSchema{Table: t,
					Msg: fmt.Sprintf("column %s exists only on the target and is NOT NULL without a default, so new rows cannot be written", q(tc.Name)),
					Fix: fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s;", tbl, q(tc.Name))}
			}
			targetOnly = append(targetOnly, tc.Name)
		}
		if prev != nil {
			for _, c := range msg {
				if _, ok := prevByName[c.Name]; !ok {
					s, ok := src[c.Name]
					check, err := sameAddedValues(t, c, s, ok, tgtByName[c.Name])
					if err != nil {
						return nil, nil, nil, err
					}
					if check != nil {
						checks = append(checks, *check)
					}
				}
			}
		}
		return nil, targetOnly, checks, nil
	}

	// Columns the target lacks: provably ADD COLUMN, or stop.
	n := len(plain)
	provable := len(msg) > n
	for j := 0; provable && j < n; j++ {
		provable = msg[j].Name == plain[j].Name && msg[j].Type == plain[j].Type
	}
	if prev != nil && provable {
		provable = len(prev) == n
		for j := 0; provable && j < n; j++ {
			provable = prev[j].Name == msg[j].Name && prev[j].Type == msg[j].Type
		}
	}
	if !provable {
		return nil, nil, nil, notAnAdd(t, msg, plain, unknown)
	}
	for i := n; i < len(msg); i++ {
		c := msg[i]
		s, ok := src[c.Name]
		ddl := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", tbl, q(c.Name), c.Type)
		switch {
		case !ok || s.Type != c.Type:
			return nil, nil, nil, &ErrSchema{Table: t,
				Msg: fmt.Sprintf("the source sends column %s %s, which the target lacks, and the source's table no longer has it so", q(c.Name), c.Type),
				Fix: ddl + " <same DEFAULT / NOT NULL as the source had>; (on the target)"}
		case s.HasDef || s.NotNull || s.Generated:
			// Existing rows got a value on the source that no change event carries.
			return nil, nil, nil, &ErrSchema{Table: t,
				Msg: fmt.Sprintf("the source added column %s with a default or NOT NULL; existing rows' values were never streamed", q(c.Name)),
				Fix: ddl + " <same DEFAULT / NOT NULL as the source>; (for a volatile default, re-copy the table)"}
		}
		add = append(add, i)
	}
	return add, nil, nil, nil
}

// sameAddedValues decides a column the source added (since the previous relation) that the
// target has already, added there by the user before or after the source (the order
// PostgreSQL's logical replication asks for: subscriber first). The rows older than each ADD
// COLUMN got their value from that side's definition, and no change event carries it; they
// are provably equal only when both sides gave them the same value:
//   - neither side has a default nor a missing value: NULL on both;
//   - both sides stored the same missing value (ADD COLUMN with a non-volatile default keeps it
//     in attmissingval) and have the same default expression: that value on both, and rows
//     pgshift wrote between the two ADDs got the same default.
//
// Anything else (a volatile default, which rewrote the table; now(), whose missing values
// differ; a side rewritten since, which drops the missing value) stops with what was seen.
// What the definitions promise, the target's rows must still hold (someone may have written
// the column there): the returned check is run on the target before the plan is used.
func sameAddedValues(t pgtypes.TableID, c relColumn, s sourceColumn, onSource bool, tc *targetColumn) (*addedCheck, error) {
	q := pgtypes.QuoteIdent
	if tc == nil {
		return nil, nil
	}
	if !onSource || s.Type != c.Type {
		return nil, &ErrSchema{Table: t,
			Msg: fmt.Sprintf("the source sends column %s %s, which the target already has, and the source's table no longer has it so: what its older rows hold cannot be checked", q(c.Name), c.Type),
			Fix: "compare the column on both sides (pg_dump --schema-only -t), make the target's the source's, then run pgshift verify"}
	}
	srcDef, tgtDef := s.Default, tc.Default
	switch {
	case s.Generated || tc.Generated:
	case !s.HasDef && srcDef == "" && s.Missing == "" && !tc.HasDef && tc.Missing == "":
		return &addedCheck{Column: c.Name, Type: c.Type}, nil
	case s.Missing != "" && s.Missing == tc.Missing && srcDef == tgtDef:
		return &addedCheck{Column: c.Name, Type: c.Type, Missing: true}, nil
	}
	describe := func(def, missing string) string {
		d := "no default"
		if def != "" {
			d = "DEFAULT " + def
		}
		if missing != "" {
			d += ", older rows " + missing
		} else if def != "" {
			d += ", older rows written with their values"
		}
		return d
	}
	return nil, &ErrSchema{Table: t,
		Msg: fmt.Sprintf("the source added column %s (%s), which the target already has (%s): the rows older than each ADD COLUMN may not hold the same values on both sides, and no change carries them",
			q(c.Name), describe(srcDef, s.Missing), describe(tgtDef, tc.Missing)),
		Fix: fmt.Sprintf("on the target, give the column the source's definition and its rows the source's values (ALTER TABLE %s DROP COLUMN %s, ADD COLUMN %s %s <the source's DEFAULT / NOT NULL>; for a volatile default, re-copy the table), then run pgshift verify",
			t.Sanitize(), q(c.Name), q(c.Name), c.Type)}
}

// addedCheck is what the target's rows of a column added on both sides must hold before the
// source's rows are applied: NULL everywhere, or (Missing) the column's missing value.
type addedCheck struct {
	Column, Type string
	Missing      bool
}

// checkAdded runs the checks on the target, in the applier's transaction: any row holding
// something else was written there on its own, and the values would differ from the source's.
func checkAdded(ctx context.Context, q catalog.Querier, t pgtypes.TableID, checks []addedCheck) error {
	for _, c := range checks {
		col := pgtypes.QuoteIdent(c.Column)
		want := "NULL"
		cond := col + " IS NOT NULL"
		if c.Missing {
			want = "its missing value (the ADD COLUMN's default)"
			cond = fmt.Sprintf("%s IS DISTINCT FROM (SELECT (a.attmissingval::text::%s[])[1] FROM pg_catalog.pg_attribute a WHERE a.attrelid = $1::regclass AND a.attname = $2::text)", col, c.Type)
		}
		var args []any
		if c.Missing {
			args = []any{t.Sanitize(), c.Column}
		}
		var differs bool
		if err := q.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM ONLY "+t.Sanitize()+" WHERE "+cond+")", args...).Scan(&differs); err != nil {
			return fmt.Errorf("table %s: check the values of column %s, added on both sides: %w", t, col, err)
		}
		if differs {
			return &ErrSchema{Table: t,
				Msg: fmt.Sprintf("the source added column %s, which the target already has with the same definition, but rows on the target hold values other than %s there: they were written on the target, and the source's rows hold the definition's", col, want),
				Fix: fmt.Sprintf("on the target, give those rows the source's values (UPDATE %s SET %s = %s; for the rows older than the source's ADD COLUMN), or drop the column there (ALTER TABLE %s DROP COLUMN %s;)",
					t.Sanitize(), col, map[bool]string{false: "NULL", true: "DEFAULT"}[c.Missing], t.Sanitize(), col)}
		}
	}
	return nil
}

// notAnAdd explains a relation with columns the target lacks that is not columns added at the end.
func notAnAdd(t pgtypes.TableID, msg []relColumn, plain []targetColumn, unknown []string) error {
	tbl := t.Sanitize()
	q := pgtypes.QuoteIdent
	if len(msg) == len(plain) {
		// Same count: names changed in place look like renames, but could as well be a drop
		// and an add; both fixes are given, pgshift does not pick one.
		var from, to []string
		var renames, replaces []string
		sameTypes := true
		for i := range msg {
			if msg[i].Name != plain[i].Name {
				sameTypes = sameTypes && msg[i].Type == plain[i].Type
				from, to = append(from, q(plain[i].Name)), append(to, q(msg[i].Name))
				renames = append(renames, fmt.Sprintf("ALTER TABLE %s RENAME COLUMN %s TO %s;", tbl, q(plain[i].Name), q(msg[i].Name)))
				replaces = append(replaces, fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s, ADD COLUMN %s %s;", tbl, q(plain[i].Name), q(msg[i].Name), msg[i].Type))
			}
		}
		if sameTypes && len(from) > 0 {
			return &ErrSchema{Table: t,
				Msg: fmt.Sprintf("the source sends column %s where the target has %s: renamed on the source, or dropped and another column added; pgshift does not guess which",
					strings.Join(to, ", "), strings.Join(from, ", ")),
				Fix: fmt.Sprintf("on the target, if renamed: %s if dropped and added: %s", strings.Join(renames, " "), strings.Join(replaces, " "))}
		}
	}
	names := make([]string, len(unknown))
	for i, u := range unknown {
		names[i] = q(u)
	}
	return &ErrSchema{Table: t,
		Msg: fmt.Sprintf("the source sends column %s, which the target lacks, and the change is not columns added at the end (%s): a column was renamed, dropped, or dropped and added again on the source",
			strings.Join(names, ", "), describeColumns(msg, plain)),
		Fix: fmt.Sprintf("make the target's columns of %s the source's (compare pg_dump --schema-only -t on both)", tbl)}
}

// describeColumns renders both column lists for an error message.
func describeColumns(msg []relColumn, plain []targetColumn) string {
	s := make([]string, len(msg))
	for i, c := range msg {
		s[i] = pgtypes.QuoteIdent(c.Name)
	}
	d := make([]string, len(plain))
	for i, c := range plain {
		d[i] = pgtypes.QuoteIdent(c.Name)
	}
	return "source sends " + strings.Join(s, ", ") + "; target has " + strings.Join(d, ", ")
}

// checkIdentities compares the source and target attnums of the columns sent with the pairs
// recorded when the table was last planned, by this agent or an earlier one (state.ColumnIdentity):
// a source column whose attnum moved while its target column's did not was dropped and added
// again on the source, and the target's column still holds the old one's values. (Both moved:
// the target's column was dropped and added too, as the fix says.)
func checkIdentities(t pgtypes.TableID, msg []relColumn, tgt []targetColumn, ids map[string]state.ColumnIdentity) error {
	for _, c := range msg {
		old, ok := ids[c.Name]
		if !ok || c.Attnum == 0 || old.Source == c.Attnum {
			continue
		}
		i := slices.IndexFunc(tgt, func(tc targetColumn) bool { return tc.Name == c.Name })
		if i < 0 || tgt[i].Attnum != old.Target {
			continue
		}
		return droppedAndAdded(t, c.Name, c.Type, old.Source, c.Attnum)
	}
	return nil
}

// droppedAndAdded is the stop for a source column dropped and added again under the same name.
func droppedAndAdded(t pgtypes.TableID, name, typ string, was, now int16) *ErrSchema {
	q := pgtypes.QuoteIdent
	return &ErrSchema{Table: t,
		Msg: fmt.Sprintf("column %s was dropped and added again on the source (attnum %d, now %d): its rows' values on the target are the old column's",
			q(name), was, now),
		Fix: fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s, ADD COLUMN %s %s <same DEFAULT / NOT NULL as the source>; (on the target; if pgshift was behind the source when it happened, run pgshift verify afterwards)",
			t.Sanitize(), q(name), q(name), typ)}
}

// pairIdentities pairs each sent column the source catalog knows with its target column.
func pairIdentities(msg []relColumn, tgt []targetColumn) map[string]state.ColumnIdentity {
	out := make(map[string]state.ColumnIdentity, len(msg))
	for _, c := range msg {
		i := slices.IndexFunc(tgt, func(tc targetColumn) bool { return tc.Name == c.Name })
		if c.Attnum != 0 && i >= 0 {
			out[c.Name] = state.ColumnIdentity{Source: c.Attnum, Target: tgt[i].Attnum}
		}
	}
	return out
}

// checkResent checks a description sent again with the same columns as the current plan's: the
// same unless a column was dropped and added again under the same name and type, which only
// the source catalog's attnums tell.
func (a *Applier) checkResent(ctx context.Context, p *plan, r *cdc.Relation) error {
	v, err := a.sourceVersion(ctx)
	if err != nil {
		return fmt.Errorf("read column definitions of %s on the source: %w", r.Table, err)
	}
	cols, err := scanSourceColumns(ctx, a.source, v, r.OID)
	if err != nil {
		return fmt.Errorf("read column definitions of %s on the source: %w", r.Table, err)
	}
	for _, c := range p.cols {
		s, ok := cols[c.Name]
		if !ok || c.Attnum == 0 || s.Type != c.Type || s.Attnum == c.Attnum {
			continue
		}
		return droppedAndAdded(r.Table, c.Name, c.Type, c.Attnum, s.Attnum)
	}
	return nil
}

// sourceVersion is the source's server version, read once per applier (the catalog queries of
// a relation change and the visibility wait depend on it; an applier lives for one session,
// and a server's version does not change under a session).
func (a *Applier) sourceVersion(ctx context.Context) (catalog.Version, error) {
	if a.srcVersion != 0 {
		return a.srcVersion, nil
	}
	v, err := catalog.ReadVersion(ctx, a.source)
	if err != nil {
		return 0, err
	}
	a.srcVersion = v
	return v, nil
}
