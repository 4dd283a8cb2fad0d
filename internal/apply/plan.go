package apply

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// targetColumn is a column of the target table.
type targetColumn struct {
	Name      string
	Type      string // format_type
	Generated bool
	Identity  string // "a", "d" or ""
	NotNull   bool
	HasDef    bool
}

// plan is how changes of one relation (as one relation message described it) become SQL on
// the target. Columns are matched by name, never by position.
type plan struct {
	rel       *cdc.Relation
	table     pgtypes.TableID
	types     []string // target type of each source column, same order as rel.Columns
	always    []bool   // target column is GENERATED ALWAYS AS IDENTITY
	keys      []int    // source column indexes of the replica identity
	full      bool     // REPLICA IDENTITY FULL: match whole old rows, one row per change
	stmts     map[string]string
	partition bool
}

// ErrSchema marks a relation that cannot be applied safely as it stands; the message says why
// and which DDL to run.
type ErrSchema struct {
	Table pgtypes.TableID
	Msg   string
	Fix   string
}

func (e *ErrSchema) Error() string {
	s := fmt.Sprintf("table %s: %s", e.Table, e.Msg)
	if e.Fix != "" {
		s += "; fix: " + e.Fix + " then run pgshift run again"
	}
	return s
}

// relKey identifies a relation description: equal keys mean the same statements apply.
func relKey(r *cdc.Relation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d|%s|%c", r.OID, r.Table.Sanitize(), r.ReplicaIdentity)
	for _, c := range r.Columns {
		fmt.Fprintf(&b, "|%s:%d:%d:%t", c.Name, c.TypeOID, c.TypeMod, c.Key)
	}
	return b.String()
}

const targetColumnsSQL = `
SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '', a.attidentity::text,
       a.attnotnull, a.atthasdef, c.relkind = 'p'
FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum`

// sourceColumnSQL describes the source column a relation message announced, to decide whether
// adding it on the target is safe.
const sourceColumnSQL = `
SELECT format_type(a.atttypid, a.atttypmod), a.atthasdef OR a.atthasmissing, a.attnotnull, a.attgenerated <> ''
FROM pg_attribute a WHERE a.attrelid = $1 AND a.attname = $2 AND NOT a.attisdropped`

// buildPlan checks a relation against the target table and prepares its plan. A column the
// source added is added on the target when that is provably safe (nullable, no default: every
// existing row is NULL on both sides); anything else stops with the DDL to run.
func (a *Applier) buildPlan(ctx context.Context, r *cdc.Relation) (*plan, error) {
	cols, partitioned, err := loadTargetColumns(ctx, a.conn, r.Table)
	if err != nil {
		return nil, err
	}
	if cols == nil {
		return nil, &ErrSchema{Table: r.Table, Msg: "the table does not exist on the target",
			Fix: "create it on the target with the source's definition (pg_dump --schema-only -t)"}
	}
	byName := map[string]*targetColumn{}
	for i := range cols {
		byName[cols[i].Name] = &cols[i]
	}
	p := &plan{rel: r, table: r.Table, types: make([]string, len(r.Columns)), always: make([]bool, len(r.Columns)),
		full: r.ReplicaIdentity == 'f', stmts: map[string]string{}, partition: partitioned}
	var srcTypes []string
	for i, c := range r.Columns {
		tc := byName[c.Name]
		if tc == nil {
			if tc, err = a.addColumn(ctx, r, c); err != nil {
				return nil, err
			}
		}
		if tc.Generated {
			return nil, &ErrSchema{Table: r.Table, Msg: fmt.Sprintf("column %s is generated on the target but sent by the source", pgtypes.QuoteIdent(c.Name)),
				Fix: "make the target column a plain column like the source's"}
		}
		if srcTypes == nil {
			if srcTypes, err = a.sourceTypes(ctx, r); err != nil {
				return nil, err
			}
		}
		if srcTypes[i] != tc.Type {
			return nil, &ErrSchema{Table: r.Table,
				Msg: fmt.Sprintf("column %s is %s on the source but %s on the target", pgtypes.QuoteIdent(c.Name), srcTypes[i], tc.Type),
				Fix: fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE %s;", r.Table.Sanitize(), pgtypes.QuoteIdent(c.Name), srcTypes[i])}
		}
		p.types[i] = tc.Type
		p.always[i] = tc.Identity == "a"
		if c.Key {
			p.keys = append(p.keys, i)
		}
		delete(byName, c.Name)
	}
	for _, tc := range cols {
		if byName[tc.Name] == nil {
			continue
		}
		// The source no longer has this column (dropped, or never had it).
		if tc.NotNull && !tc.HasDef && !tc.Generated && tc.Identity == "" {
			return nil, &ErrSchema{Table: r.Table,
				Msg: fmt.Sprintf("column %s exists only on the target and is NOT NULL without a default, so new rows cannot be written", pgtypes.QuoteIdent(tc.Name)),
				Fix: fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s;", r.Table.Sanitize(), pgtypes.QuoteIdent(tc.Name))}
		}
		a.log.Warn("column exists only on the target; new rows get its default there",
			"table", r.Table.String(), "column", tc.Name,
			"fix", fmt.Sprintf("ALTER TABLE %s DROP COLUMN %s;", r.Table.Sanitize(), pgtypes.QuoteIdent(tc.Name)))
	}
	return p, nil
}

func loadTargetColumns(ctx context.Context, q catalog.Querier, t pgtypes.TableID) ([]targetColumn, bool, error) {
	rows, err := q.Query(ctx, targetColumnsSQL, t.Sanitize())
	if err != nil {
		return nil, false, fmt.Errorf("read columns of %s on the target: %w", t, err)
	}
	defer rows.Close()
	var cols []targetColumn
	var partitioned bool
	for rows.Next() {
		var c targetColumn
		if err := rows.Scan(&c.Name, &c.Type, &c.Generated, &c.Identity, &c.NotNull, &c.HasDef, &partitioned); err != nil {
			return nil, false, fmt.Errorf("read columns of %s on the target: %w", t, err)
		}
		cols = append(cols, c)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("read columns of %s on the target: %w", t, err)
	}
	return cols, partitioned, nil
}

// sourceTypes renders each relation column's type as the source names it.
func (a *Applier) sourceTypes(ctx context.Context, r *cdc.Relation) ([]string, error) {
	oids := make([]uint32, len(r.Columns))
	mods := make([]int32, len(r.Columns))
	for i, c := range r.Columns {
		oids[i], mods[i] = c.TypeOID, c.TypeMod
	}
	rows, err := a.source.Query(ctx, `SELECT format_type(t.o, t.m) FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY AS t(o, m, n) ORDER BY t.n`, oids, mods)
	if err != nil {
		return nil, fmt.Errorf("read column types of %s on the source: %w", r.Table, err)
	}
	defer rows.Close()
	out := make([]string, 0, len(oids))
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, fmt.Errorf("read column types of %s on the source: %w", r.Table, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read column types of %s on the source: %w", r.Table, err)
	}
	return out, nil
}

// addColumn adds a column the source gained while pgshift followed it, when safe.
func (a *Applier) addColumn(ctx context.Context, r *cdc.Relation, c cdc.Column) (*targetColumn, error) {
	var typ string
	var hasDefault, notNull, generated bool
	err := a.source.QueryRow(ctx, sourceColumnSQL, r.OID, c.Name).Scan(&typ, &hasDefault, &notNull, &generated)
	if err != nil {
		return nil, &ErrSchema{Table: r.Table,
			Msg: fmt.Sprintf("the source sends column %s, which the target lacks, and its definition could not be read from the source (%v)", pgtypes.QuoteIdent(c.Name), err),
			Fix: fmt.Sprintf("add the column on the target with the source's definition: ALTER TABLE %s ADD COLUMN %s <type>;", r.Table.Sanitize(), pgtypes.QuoteIdent(c.Name))}
	}
	ddl := fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s %s", r.Table.Sanitize(), pgtypes.QuoteIdent(c.Name), typ)
	if hasDefault || notNull || generated {
		// Existing rows got a value on the source that no change event carries.
		return nil, &ErrSchema{Table: r.Table,
			Msg: fmt.Sprintf("the source added column %s with a default or NOT NULL; existing rows' values were never streamed", pgtypes.QuoteIdent(c.Name)),
			Fix: ddl + " <same DEFAULT / NOT NULL as the source>; (for a volatile default, re-copy the table)"}
	}
	if _, err := a.conn.Exec(ctx, ddl); err != nil {
		return nil, fmt.Errorf("table %s: add column %s on the target: %w", r.Table, pgtypes.QuoteIdent(c.Name), err)
	}
	a.log.Info("added column the source gained", "table", r.Table.String(), "column", c.Name, "type", typ)
	return &targetColumn{Name: c.Name, Type: typ}, nil
}

// insertSQL inserts rows rows of all sent columns; identity ALWAYS columns take the source's value.
func (p *plan) insertSQL(rows int) string {
	ncol := len(p.rel.Columns)
	names := make([]string, ncol)
	override := ""
	for i, c := range p.rel.Columns {
		names[i] = pgtypes.QuoteIdent(c.Name)
		if p.always[i] {
			override = " OVERRIDING SYSTEM VALUE"
		}
	}
	tuples := make([]string, rows)
	params := make([]string, ncol)
	for r := range tuples {
		for i := range params {
			params[i] = "$" + strconv.Itoa(r*ncol+i+1)
		}
		tuples[r] = "(" + strings.Join(params, ", ") + ")"
	}
	return fmt.Sprintf("INSERT INTO %s (%s)%s VALUES %s", p.table.Sanitize(), strings.Join(names, ", "), override, strings.Join(tuples, ", "))
}

// whereSQL matches the old row: by key columns, or under REPLICA IDENTITY FULL by every sent
// column's exact text form (which also works for types without an equality operator), one row.
// where lists the source column indexes compared; params are numbered from first.
func (p *plan) whereSQL(where []int, first int) string {
	conds := make([]string, len(where))
	for j, i := range where {
		col := pgtypes.QuoteIdent(p.rel.Columns[i].Name)
		n := "$" + strconv.Itoa(first+j)
		if p.full {
			conds[j] = fmt.Sprintf("%s::text IS NOT DISTINCT FROM (%s::%s)::text", col, n, p.types[i])
		} else {
			conds[j] = fmt.Sprintf("%s = %s", col, n)
		}
	}
	if len(conds) == 0 {
		return "false"
	}
	return strings.Join(conds, " AND ")
}

// updateSQL sets the columns in set (unchanged TOAST values and identity ALWAYS columns left
// out) on the row matched by where.
func (p *plan) updateSQL(set, where []int) string {
	assign := make([]string, len(set))
	for j, i := range set {
		assign[j] = fmt.Sprintf("%s = $%d", pgtypes.QuoteIdent(p.rel.Columns[i].Name), j+1)
	}
	t := p.table.Sanitize()
	if !p.full {
		return fmt.Sprintf("UPDATE %s SET %s WHERE %s", t, strings.Join(assign, ", "), p.whereSQL(where, len(set)+1))
	}
	return fmt.Sprintf("UPDATE %s AS t SET %s FROM (SELECT tableoid AS pgshift_oid, ctid AS pgshift_ctid FROM %s WHERE %s LIMIT 1) AS m WHERE t.tableoid = m.pgshift_oid AND t.ctid = m.pgshift_ctid",
		t, strings.Join(assign, ", "), t, p.whereSQL(where, len(set)+1))
}

func (p *plan) deleteSQL(where []int) string {
	t := p.table.Sanitize()
	if !p.full {
		return fmt.Sprintf("DELETE FROM %s WHERE %s", t, p.whereSQL(where, 1))
	}
	return fmt.Sprintf("DELETE FROM %s AS t USING (SELECT tableoid AS pgshift_oid, ctid AS pgshift_ctid FROM %s WHERE %s LIMIT 1) AS m WHERE t.tableoid = m.pgshift_oid AND t.ctid = m.pgshift_ctid",
		t, t, p.whereSQL(where, 1))
}

// updateManySQL updates rows distinct rows by key in one statement: each VALUES row carries the
// new values of the columns in set, then the key. Parameters are cast to the column types, as
// a single-row UPDATE's would be by assignment.
func (p *plan) updateManySQL(set []int, rows int) string {
	cols := make([]string, 0, len(set)+len(p.keys))
	assign := make([]string, len(set))
	for j, i := range set {
		assign[j] = fmt.Sprintf("%s = v.s%d", pgtypes.QuoteIdent(p.rel.Columns[i].Name), j)
		cols = append(cols, fmt.Sprintf("s%d", j))
	}
	match := make([]string, len(p.keys))
	for j, i := range p.keys {
		match[j] = fmt.Sprintf("pgshift_t.%s = v.k%d", pgtypes.QuoteIdent(p.rel.Columns[i].Name), j)
		cols = append(cols, fmt.Sprintf("k%d", j))
	}
	types := make([]string, 0, len(cols))
	for _, i := range set {
		types = append(types, p.types[i])
	}
	for _, i := range p.keys {
		types = append(types, p.types[i])
	}
	tuples := make([]string, rows)
	params := make([]string, len(types))
	for r := range tuples {
		for c, t := range types {
			params[c] = fmt.Sprintf("$%d::%s", r*len(types)+c+1, t)
		}
		tuples[r] = "(" + strings.Join(params, ", ") + ")"
	}
	return fmt.Sprintf("UPDATE %s AS pgshift_t SET %s FROM (VALUES %s) AS v(%s) WHERE %s",
		p.table.Sanitize(), strings.Join(assign, ", "), strings.Join(tuples, ", "), strings.Join(cols, ", "), strings.Join(match, " AND "))
}
