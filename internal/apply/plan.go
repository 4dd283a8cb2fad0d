package apply

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// plan is how changes of one relation (as one relation message described it) become SQL on
// the target. Columns are matched by name, never by position. Every parameter carries its
// target column's type, so no statement depends on the server inferring one (composite and
// other types that cannot be inferred from an operator work the same as the rest).
type plan struct {
	rel    *cdc.Relation
	table  pgtypes.TableID
	cols   []relColumn // the relation's columns, as checked when the plan was built
	types  []string    // target type of each source column, same order as rel.Columns
	always []bool      // target column is GENERATED ALWAYS AS IDENTITY
	keys   []int       // source column indexes of the replica identity
	full   bool        // REPLICA IDENTITY FULL: match whole old rows, one row per change
	// fullIndex are the source column indexes of the target index a FULL change finds its
	// row through (see fullindex.go); empty: none, every change scans the table.
	fullIndex []int
	stmts     map[string]string
	uses      map[string]int // executions of each prepared statement since it was prepared
	// partitioned: the target table is a partitioned table, whose changes route through it to
	// its partitions; every other table is written with ONLY, so an inheritance parent's
	// changes never reach its children (which send their own).
	partitioned bool
	// alwaysOutsideKey: an identity ALWAYS column is not part of the replica identity, so an
	// UPDATE does not tell whether its value changed.
	alwaysOutsideKey bool
	anyAlways        bool     // some sent column is an identity ALWAYS column
	keep             []string // target columns the source does not send (not generated): kept when a row is replaced
	prev             *plan    // the plan of the previous description of the same table
	stale            bool     // built in a target transaction that was rolled back, or before a schema change
	// keyPrefix is the table's part of rowKey (its quoted name), built on first use: once per
	// change it cost a tenth of the applier's CPU in a backlog replay.
	keyPrefix []byte
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

// only is the ONLY keyword for UPDATE and DELETE of this table: a partitioned table routes
// rows to its partitions and has none of its own, so it is written without ONLY.
func (p *plan) only() string {
	if p.partitioned {
		return ""
	}
	return "ONLY "
}

// param renders parameter n cast to the type of source column i.
func (p *plan) param(n, i int) string {
	return "$" + strconv.Itoa(n) + "::" + p.types[i]
}

// insertSQL inserts rows rows of all sent columns; identity ALWAYS columns take the source's
// value. A relation without columns (a table without any, or whose only columns are generated)
// inserts one row of defaults.
func (p *plan) insertSQL(rows int) string {
	ncol := len(p.rel.Columns)
	if ncol == 0 {
		return "INSERT INTO " + p.table.Sanitize() + " DEFAULT VALUES"
	}
	names := make([]string, ncol)
	for i, c := range p.rel.Columns {
		names[i] = pgtypes.QuoteIdent(c.Name)
	}
	tuples := make([]string, rows)
	params := make([]string, ncol)
	for r := range tuples {
		for i := range params {
			params[i] = p.param(r*ncol+i+1, i)
		}
		tuples[r] = "(" + strings.Join(params, ", ") + ")"
	}
	return fmt.Sprintf("INSERT INTO %s (%s)%s VALUES %s", p.table.Sanitize(), strings.Join(names, ", "), p.override(), strings.Join(tuples, ", "))
}

// override is OVERRIDING SYSTEM VALUE when a sent column is an identity ALWAYS column.
func (p *plan) override() string {
	for _, a := range p.always {
		if a {
			return " OVERRIDING SYSTEM VALUE"
		}
	}
	return ""
}

// whereSQL matches the old row: by key columns, or under REPLICA IDENTITY FULL by every sent
// column's exact text form (which also works for types without an equality operator), one row.
// where lists the source column indexes compared; params are numbered from first.
func (p *plan) whereSQL(where []int, first int) string {
	conds := make([]string, len(where))
	for j, i := range where {
		col := pgtypes.QuoteIdent(p.rel.Columns[i].Name)
		if p.full {
			conds[j] = fmt.Sprintf("%s::text IS NOT DISTINCT FROM (%s)::text", col, p.param(first+j, i))
			if p.indexed(i) {
				// Narrows the scan through the index; the text comparison still decides.
				conds[j] = fmt.Sprintf("%s = %s AND %s", col, p.param(first+j, i), conds[j])
			}
		} else {
			conds[j] = fmt.Sprintf("%s = %s", col, p.param(first+j, i))
		}
	}
	if len(conds) == 0 {
		if p.full {
			return "true" // a table without columns: its rows are all alike, any one will do
		}
		return "false"
	}
	return strings.Join(conds, " AND ")
}

// matchFull selects the one row a REPLICA IDENTITY FULL change is about: the first whose sent
// columns have the old values (rows identical in them are interchangeable).
func (p *plan) matchFull(where []int, first int) string {
	return fmt.Sprintf("SELECT tableoid AS pgshift_oid, ctid AS pgshift_ctid FROM %s%s WHERE %s LIMIT 1",
		p.only(), p.table.Sanitize(), p.whereSQL(where, first))
}

// assignSQL renders "col = $n::type" for the columns in set, parameters numbered from first.
func (p *plan) assignSQL(set []int, first int) string {
	assign := make([]string, len(set))
	for j, i := range set {
		assign[j] = pgtypes.QuoteIdent(p.rel.Columns[i].Name) + " = " + p.param(first+j, i)
	}
	return strings.Join(assign, ", ")
}

// updateSQL sets the columns in set (unchanged TOAST values and identity ALWAYS columns left
// out) on the row matched by where.
func (p *plan) updateSQL(set, where []int) string {
	t := p.table.Sanitize()
	if !p.full {
		return fmt.Sprintf("UPDATE %s%s SET %s WHERE %s", p.only(), t, p.assignSQL(set, 1), p.whereSQL(where, len(set)+1))
	}
	return fmt.Sprintf("UPDATE %s%s AS t SET %s FROM (%s) AS m WHERE t.tableoid = m.pgshift_oid AND t.ctid = m.pgshift_ctid",
		p.only(), t, p.assignSQL(set, 1), p.matchFull(where, len(set)+1))
}

func (p *plan) deleteSQL(where []int) string {
	t := p.table.Sanitize()
	if !p.full {
		return fmt.Sprintf("DELETE FROM %s%s WHERE %s", p.only(), t, p.whereSQL(where, 1))
	}
	return fmt.Sprintf("DELETE FROM %s%s AS t USING (%s) AS m WHERE t.tableoid = m.pgshift_oid AND t.ctid = m.pgshift_ctid",
		p.only(), t, p.matchFull(where, 1))
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
	idx := append(slices.Clone(set), p.keys...)
	tuples := make([]string, rows)
	params := make([]string, len(idx))
	for r := range tuples {
		for c, i := range idx {
			params[c] = p.param(r*len(idx)+c+1, i)
		}
		tuples[r] = "(" + strings.Join(params, ", ") + ")"
	}
	return fmt.Sprintf("UPDATE %s%s AS pgshift_t SET %s FROM (VALUES %s) AS v(%s) WHERE %s",
		p.only(), p.table.Sanitize(), strings.Join(assign, ", "), strings.Join(tuples, ", "), strings.Join(cols, ", "), strings.Join(match, " AND "))
}

// replaceSQL replaces the row matched by where with a new one in one statement: the old row is
// deleted and the new one inserted with OVERRIDING SYSTEM VALUE, which is how an identity ALWAYS
// column takes the source's new value (an UPDATE may not set it). sent are the columns whose new
// values are parameters $1..; every other column (unchanged TOAST values, columns only the
// target has) keeps the deleted row's value. The command tag counts the inserted row.
func (p *plan) replaceSQL(sent, where []int) string {
	return fmt.Sprintf("WITH pgshift_d AS (%s RETURNING pgshift_t.*) %s", p.deleteOneSQL(where, len(sent)+1, ""), p.insertFromSQL(sent))
}

// deleteOneSQL deletes the row matched by where (parameters from first) as pgshift_t, with an
// extra condition cond on it ("" for none).
func (p *plan) deleteOneSQL(where []int, first int, cond string) string {
	t := p.table.Sanitize()
	if cond != "" {
		cond = " AND " + cond
	}
	if !p.full {
		return fmt.Sprintf("DELETE FROM %s%s AS pgshift_t WHERE %s%s", p.only(), t, p.whereSQL(where, first), cond)
	}
	return fmt.Sprintf("DELETE FROM %s%s AS pgshift_t USING (%s) AS m WHERE pgshift_t.tableoid = m.pgshift_oid AND pgshift_t.ctid = m.pgshift_ctid%s",
		p.only(), t, p.matchFull(where, first), cond)
}

// insertFromSQL inserts, for each row of pgshift_d, the new row: sent columns from parameters
// $1.., the rest from pgshift_d.
func (p *plan) insertFromSQL(sent []int) string {
	var names, exprs []string
	j := 0
	for i, c := range p.rel.Columns {
		names = append(names, pgtypes.QuoteIdent(c.Name))
		if j < len(sent) && sent[j] == i {
			exprs = append(exprs, p.param(j+1, i))
			j++
		} else {
			exprs = append(exprs, "pgshift_d."+pgtypes.QuoteIdent(c.Name))
		}
	}
	for _, k := range p.keep {
		names = append(names, pgtypes.QuoteIdent(k))
		exprs = append(exprs, "pgshift_d."+pgtypes.QuoteIdent(k))
	}
	if len(names) == 0 {
		return "INSERT INTO " + p.table.Sanitize() + " SELECT FROM pgshift_d"
	}
	return fmt.Sprintf("INSERT INTO %s (%s) OVERRIDING SYSTEM VALUE SELECT %s FROM pgshift_d",
		p.table.Sanitize(), strings.Join(names, ", "), strings.Join(exprs, ", "))
}

// updateOrReplaceSQL applies an UPDATE whose identity ALWAYS columns (outside the replica
// identity, so their old values were not sent) may or may not have changed: the row matched by
// where is updated in place when those columns already have the new values, and replaced
// (replaceSQL) when they do not. sent are the columns with new values ($1..), set the ones an
// UPDATE may write, alw the identity ALWAYS ones; where's parameters follow. Exactly one of the
// two happens to an existing row; the statement returns one row per row written, so its tag
// counts them.
func (p *plan) updateOrReplaceSQL(sent, set, alw, where []int) string {
	t := p.table.Sanitize()
	pos := make(map[int]int, len(sent)) // column index -> parameter number
	for j, i := range sent {
		pos[i] = j + 1
	}
	first := len(sent) + 1
	same := make([]string, len(alw))
	for j, i := range alw {
		same[j] = fmt.Sprintf("pgshift_t.%s IS NOT DISTINCT FROM %s", pgtypes.QuoteIdent(p.rel.Columns[i].Name), p.param(pos[i], i))
	}
	unchanged := strings.Join(same, " AND ")
	var u string
	if len(set) == 0 {
		u = fmt.Sprintf("SELECT 1 FROM %s%s AS pgshift_t WHERE %s AND %s", p.only(), t, p.whereSQL(where, first), unchanged)
	} else {
		assign := make([]string, len(set))
		for j, i := range set {
			assign[j] = pgtypes.QuoteIdent(p.rel.Columns[i].Name) + " = " + p.param(pos[i], i)
		}
		u = fmt.Sprintf("UPDATE %s%s AS pgshift_t SET %s WHERE %s AND %s RETURNING 1", p.only(), t, strings.Join(assign, ", "), p.whereSQL(where, first), unchanged)
	}
	d := p.deleteOneSQL(where, first, "NOT ("+unchanged+")")
	return fmt.Sprintf("WITH pgshift_u AS (%s), pgshift_d AS (%s RETURNING pgshift_t.*), pgshift_i AS (%s RETURNING 1) SELECT 1 FROM pgshift_u UNION ALL SELECT 1 FROM pgshift_i",
		u, d, p.insertFromSQL(sent))
}
