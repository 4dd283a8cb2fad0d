// Package catalog reads what a database contains — tables, columns, keys, replica identity,
// sequences, sizes — without changing anything. It is the one place that knows the system
// catalogs' shape; the phases (assess, copy, follow, verify) work on its typed results.
//
// Objects in pg_catalog, information_schema, pg_toast, temporary schemas, pgshift's own
// schema, and objects that belong to an extension are never returned: an extension's
// objects are recreated by CREATE EXTENSION on the target, not copied.
package catalog

import (
	"context"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// StateSchema is the schema pgshift keeps its own state in; it is never migrated or compared.
const StateSchema = "pgshift"

// TruncateLogName is the table (in StateSchema) pgshift's TRUNCATE triggers record into, on a
// source whose pgoutput sends no TRUNCATE (Version.TruncateReplicated); it is published, and its
// rows arrive as TRUNCATEs of the tables they name (state.CaptureTruncates).
const TruncateLogName = "truncates"

// TruncateTrigger is the name of those triggers on the published tables.
const TruncateTrigger = "pgshift_capture_truncate"

// IsTruncateLog reports whether id is pgshift's TRUNCATE log table.
func IsTruncateLog(id pgtypes.TableID) bool {
	return id.Schema == StateSchema && id.Name == TruncateLogName
}

// DDLLogName is the table (in StateSchema) pgshift's event trigger records the source's schema
// changes into, with ddl: follow; it is published, and its rows arrive as the DDL to replay on
// the target (state.CaptureDDL).
const DDLLogName = "ddl_log"

// DDLTrigger is the name of that event trigger on the source.
const DDLTrigger = "pgshift_capture_ddl"

// IsDDLLog reports whether id is pgshift's DDL log table.
func IsDDLLog(id pgtypes.TableID) bool {
	return id.Schema == StateSchema && id.Name == DDLLogName
}

// Querier is what catalog needs from a connection; *pgx.Conn, *pgxpool.Pool and pgx.Tx all fit.
type Querier interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// Relation kinds (pg_class.relkind) that hold or expose rows.
const (
	KindTable       = 'r'
	KindPartitioned = 'p'
	KindForeign     = 'f'
	KindMatView     = 'm'
)

// Column is one live (not dropped) column.
type Column struct {
	Name string
	Num  int // attnum; holes where columns were dropped are normal
	// Type is the declared type as SQL accepts it in a cast, the same text whatever the
	// session's search_path: built-in types as format_type() prints them ("numeric(12,2)",
	// "character varying(40)[]"), every other type schema-qualified ("public.mood[]").
	Type       string
	TypeOID    uint32
	NotNull    bool
	HasDefault bool
	Generated  bool   // GENERATED ALWAYS AS (...) STORED: computed by the target, never copied
	Identity   string // "a" (ALWAYS), "d" (BY DEFAULT) or ""
	// TextOnly says the column's values have no portable binary COPY form, so they must travel
	// as text: the type, or a type it is made of (array element, domain base, composite
	// attribute, range subtype), is an OID-valued reg* type (an OID names another object, or
	// none, on another server), has no binary I/O (aclitem), or is not built in (its OID, which
	// the binary form of arrays and records embeds, differs between servers).
	TextOnly bool
}

// Table is one relation that may hold user data.
type Table struct {
	ID              pgtypes.TableID
	OID             uint32
	Kind            byte // KindTable, KindPartitioned, KindForeign, KindMatView
	Persistence     byte // 'p' permanent, 'u' unlogged
	IsPartition     bool // a leaf (or intermediate) partition of Parent
	Parent          pgtypes.TableID
	ReplicaIdentity byte // 'd' default (primary key), 'n' nothing, 'f' full, 'i' index
	// PrimaryKey is the primary key's key columns in key order (never its INCLUDE columns),
	// deferrable or not: committed rows are unique in it either way. Empty without one.
	PrimaryKey []string
	// IdentityKey is the key columns of the index PostgreSQL uses as the replica identity (see
	// HasUsableIdentity); nil for FULL and when there is none.
	IdentityKey []string
	// IdentityIssue says why UPDATE and DELETE cannot be published ("" when they can), e.g.
	// that the primary key is DEFERRABLE.
	IdentityIssue string
	Owner         string // the table owner's role name
	// RowSecurity is ENABLE ROW LEVEL SECURITY, ForceRowSecurity FORCE ROW LEVEL SECURITY.
	RowSecurity, ForceRowSecurity bool
	// RowSecurityApplies says the table's policies apply to the user that read the catalog:
	// its reads see only the rows the policies allow, or fail under row_security = off. It
	// is false for superusers, roles with BYPASSRLS, and the owner unless FORCE is set.
	RowSecurityApplies bool
	Columns            []Column
	RowsEstimate       int64 // pg_class.reltuples; -1 when never analyzed
	HeapBytes          int64 // main fork
	TotalBytes         int64 // heap + indexes + TOAST
	ToastBytes         int64
	IndexBytes         int64
}

// HasUsableIdentity reports whether UPDATE and DELETE on the table can be published, decided
// as PostgreSQL decides it (relcache's RelationGetIndexList, then CheckCmdReplicaIdentity):
// REPLICA IDENTITY FULL, or an identity index — the primary key under DEFAULT, the chosen
// index under USING INDEX — that is live, valid, unique, immediate (not DEFERRABLE) and not
// partial. A deferrable primary key is no replica identity: once the table is published,
// the application's UPDATEs and DELETEs on it fail.
func (t Table) HasUsableIdentity() bool {
	return t.ReplicaIdentity == 'f' || len(t.IdentityKey) > 0
}

// RowSecurityProblem says why user (the user that read the catalog) cannot read all of the
// table's rows, or "" when it can: pgshift reads with row_security = off, which PostgreSQL
// refuses where policies apply, instead of returning only the rows they allow.
func (t Table) RowSecurityProblem(user string) string {
	if !t.RowSecurityApplies {
		return ""
	}
	return fmt.Sprintf("the row-level security policies of %s apply to %s, so not all of its rows can be read — %s",
		t.ID, user, RowSecurityFix(user, t.ForceRowSecurity))
}

// RowSecurityFix is what lets user ("" when not known) read every row of a table with
// row-level security; forced says the table has FORCE ROW LEVEL SECURITY.
func RowSecurityFix(user string, forced bool) string {
	role := "..."
	if user != "" {
		role = pgtypes.QuoteIdent(user)
	}
	fix := "connect as a superuser or a role with BYPASSRLS (ALTER ROLE " + role + " BYPASSRLS), or as the table owner"
	if forced {
		return fix + " after ALTER TABLE ... NO FORCE ROW LEVEL SECURITY (FORCE applies the policies to the owner too; set it again after the migration)"
	}
	return fix + " (without FORCE ROW LEVEL SECURITY)"
}

// CopyColumns are the columns whose values are copied: all but generated ones.
func (t Table) CopyColumns() []Column {
	out := make([]Column, 0, len(t.Columns))
	for _, c := range t.Columns {
		if !c.Generated {
			out = append(out, c)
		}
	}
	return out
}

// HoldsData reports whether the table stores rows itself (a plain table or a leaf partition),
// as opposed to a partitioned parent, a foreign table or a materialized view.
func (t Table) HoldsData() bool { return t.Kind == KindTable }

const tablesSQL = `
SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relpersistence::text, c.relispartition,
       c.relreplident::text, coalesce(pn.nspname, ''), coalesce(pc.relname, ''),
       c.reltuples::bigint,
       -- The size functions read the current catalog, this query its snapshot: a relation
       -- dropped or replaced since (a rewrite gives the table a new TOAST table) is NULL.
       coalesce(CASE WHEN c.relkind IN ('r','m') THEN pg_relation_size(c.oid) ELSE 0 END, 0),
       coalesce(CASE WHEN c.relkind IN ('r','m','p') THEN pg_total_relation_size(c.oid) ELSE 0 END, 0),
       coalesce(CASE WHEN c.reltoastrelid <> 0 THEN pg_total_relation_size(c.reltoastrelid) ELSE 0 END, 0),
       coalesce(CASE WHEN c.relkind IN ('r','m','p') THEN pg_indexes_size(c.oid) ELSE 0 END, 0),
       pg_get_userbyid(c.relowner), c.relrowsecurity, c.relforcerowsecurity,
       -- check_enable_rls(): policies apply unless the user bypasses them (superuser or
       -- BYPASSRLS) or owns the table (membership counts) and FORCE is not set.
       c.relrowsecurity
         AND NOT coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user), false)
         AND (c.relforcerowsecurity OR NOT pg_has_role(c.relowner, 'USAGE'))
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_inherits i ON c.relispartition AND i.inhrelid = c.oid
LEFT JOIN pg_class pc ON pc.oid = i.inhparent
LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE c.relkind IN ('r', 'p', 'f', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 12 DESC, n.nspname, c.relname`

// columnsSQL renders each column's type so that it means the same type in any session: a
// type outside pg_catalog is written schema-qualified (format_type() qualifies only what the
// current search_path does not find), keeping its typmod and array brackets.
func columnsSQL(v Version) string {
	generated := "a.attgenerated <> ''"
	if !v.HasGeneratedColumns() {
		generated = "false"
	}
	return `
SELECT a.attrelid, a.attname, a.attnum,
       CASE WHEN et.typnamespace = 'pg_catalog'::regnamespace THEN format_type(a.atttypid, a.atttypmod)
            ELSE quote_ident(en.nspname) || '.' || quote_ident(et.typname)
                 || substr(format_type(et.oid, a.atttypmod), length(format_type(et.oid, NULL)) + 1)
                 || CASE WHEN et.oid <> a.atttypid THEN '[]' ELSE '' END
       END,
       a.atttypid, a.attnotnull, a.atthasdef, ` + generated + `, a.attidentity::text
FROM pg_attribute a
LEFT JOIN pg_type el ON el.typarray = a.atttypid
JOIN pg_type et ON et.oid = coalesce(el.oid, a.atttypid)
JOIN pg_namespace en ON en.oid = et.typnamespace
WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum`
}

// textOnlyTypesSQL returns, for each given type, whether its values must be copied as text
// (see Column.TextOnly): it walks the types it is made of.
const textOnlyTypesSQL = `
WITH RECURSIVE parts(root, typ) AS (
  SELECT u.t, u.t FROM unnest($1::oid[]) AS u(t)
  UNION
  SELECT p.root, sub.typ
  FROM parts p
  JOIN pg_type t ON t.oid = p.typ
  CROSS JOIN LATERAL (
    SELECT t.typelem WHERE t.typelem <> 0
    UNION ALL SELECT t.typbasetype WHERE t.typbasetype <> 0
    UNION ALL SELECT a.atttypid FROM pg_attribute a
              WHERE t.typrelid <> 0 AND a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped
    UNION ALL SELECT r.rngsubtype FROM pg_range r WHERE r.rngtypid = t.oid
  ) AS sub(typ)
)
SELECT p.root,
       bool_or(p.typ >= 16384 OR t.typsend::oid = 0 OR t.typreceive::oid = 0
               OR (t.typnamespace = 'pg_catalog'::regnamespace
                   AND t.typname IN ('regclass', 'regtype', 'regproc', 'regprocedure', 'regoper', 'regoperator',
                                     'regconfig', 'regdictionary', 'regnamespace', 'regrole', 'regcollation')))
FROM parts p JOIN pg_type t ON t.oid = p.typ
GROUP BY p.root`

// keysSQL returns, per table, the primary key and the replica identity index: their key
// columns in index order (never INCLUDE columns, which are no part of the key), whether
// relcache would consider the index for the replica identity at all, and why not.
func keysSQL(v Version) string {
	keyAtts := "i.indnkeyatts"
	if !v.HasIncludeColumns() {
		keyAtts = "i.indnatts" // every index column is a key column
	}
	return `
SELECT i.indrelid, i.indexrelid::regclass::text, i.indisprimary, i.indisreplident,
       i.indislive AND i.indisvalid AND i.indisunique AND i.indimmediate AND i.indpred IS NULL,
       i.indimmediate, i.indpred IS NULL, a.attname, a.attnotnull
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = ANY($1) AND (i.indisprimary OR i.indisreplident) AND k.ord <= ` + keyAtts + `
ORDER BY i.indrelid, i.indexrelid, k.ord`
}

// Tables lists the user relations that pass the filter, largest first, with their columns and keys.
func Tables(ctx context.Context, q Querier, f config.TableFilter) ([]Table, error) {
	rows, err := q.Query(ctx, tablesSQL)
	if err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	var tables []Table
	for rows.Next() {
		var t Table
		var kind, persistence, ident string
		if err := rows.Scan(&t.OID, &t.ID.Schema, &t.ID.Name, &kind, &persistence, &t.IsPartition,
			&ident, &t.Parent.Schema, &t.Parent.Name, &t.RowsEstimate, &t.HeapBytes, &t.TotalBytes,
			&t.ToastBytes, &t.IndexBytes, &t.Owner, &t.RowSecurity, &t.ForceRowSecurity, &t.RowSecurityApplies); err != nil {
			rows.Close()
			return nil, fmt.Errorf("list tables: %w", err)
		}
		t.Kind, t.Persistence, t.ReplicaIdentity = kind[0], persistence[0], ident[0]
		if f.Match(t.ID.Schema, t.ID.Name) {
			tables = append(tables, t)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list tables: %w", err)
	}
	if len(tables) == 0 {
		return nil, nil
	}
	byOID := make(map[uint32]*Table, len(tables))
	oids := make([]uint32, len(tables))
	for i := range tables {
		byOID[tables[i].OID] = &tables[i]
		oids[i] = tables[i].OID
	}
	v, err := ReadVersion(ctx, q)
	if err != nil {
		return nil, err
	}
	if err := readColumns(ctx, q, v, oids, byOID); err != nil {
		return nil, err
	}
	if err := readKeys(ctx, q, v, oids, byOID); err != nil {
		return nil, err
	}
	return tables, nil
}

func readColumns(ctx context.Context, q Querier, v Version, oids []uint32, byOID map[uint32]*Table) error {
	rows, err := q.Query(ctx, columnsSQL(v), oids)
	if err != nil {
		return fmt.Errorf("list columns: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var oid uint32
		var c Column
		if err := rows.Scan(&oid, &c.Name, &c.Num, &c.Type, &c.TypeOID, &c.NotNull, &c.HasDefault, &c.Generated, &c.Identity); err != nil {
			return fmt.Errorf("list columns: %w", err)
		}
		t := byOID[oid]
		t.Columns = append(t.Columns, c)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list columns: %w", err)
	}
	rows.Close()
	return markTextOnly(ctx, q, byOID)
}

// markTextOnly sets Column.TextOnly from the columns' types.
func markTextOnly(ctx context.Context, q Querier, byOID map[uint32]*Table) error {
	seen := map[uint32]bool{}
	var types []uint32
	for _, t := range byOID {
		for _, c := range t.Columns {
			if !seen[c.TypeOID] {
				seen[c.TypeOID] = true
				types = append(types, c.TypeOID)
			}
		}
	}
	if len(types) == 0 {
		return nil
	}
	rows, err := q.Query(ctx, textOnlyTypesSQL, types)
	if err != nil {
		return fmt.Errorf("read column types: %w", err)
	}
	defer rows.Close()
	textOnly := map[uint32]bool{}
	for rows.Next() {
		var oid uint32
		var text bool
		if err := rows.Scan(&oid, &text); err != nil {
			return fmt.Errorf("read column types: %w", err)
		}
		textOnly[oid] = text
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read column types: %w", err)
	}
	for _, t := range byOID {
		for i := range t.Columns {
			// A type the query did not return (dropped meanwhile) is not known to be portable.
			tt, ok := textOnly[t.Columns[i].TypeOID]
			t.Columns[i].TextOnly = tt || !ok
		}
	}
	return nil
}

// indexKey is the primary key or the replica identity index of one table.
type indexKey struct {
	name        string
	cols        []string
	considered  bool // relcache considers it for the replica identity
	immediate   bool
	whole       bool // not partial
	nullableCol string
}

func readKeys(ctx context.Context, q Querier, v Version, oids []uint32, byOID map[uint32]*Table) error {
	rows, err := q.Query(ctx, keysSQL(v), oids)
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	defer rows.Close()
	pk, repl := map[uint32]*indexKey{}, map[uint32]*indexKey{}
	for rows.Next() {
		var oid uint32
		var k indexKey
		var primary, isRepl, notNull bool
		var col string
		if err := rows.Scan(&oid, &k.name, &primary, &isRepl, &k.considered, &k.immediate, &k.whole, &col, &notNull); err != nil {
			return fmt.Errorf("list keys: %w", err)
		}
		for _, m := range []struct {
			is bool
			by map[uint32]*indexKey
		}{{primary, pk}, {isRepl, repl}} {
			if !m.is {
				continue
			}
			cur := m.by[oid]
			if cur == nil || cur.name != k.name {
				cur = &indexKey{name: k.name, considered: k.considered, immediate: k.immediate, whole: k.whole}
				m.by[oid] = cur
			}
			cur.cols = append(cur.cols, col)
			if !notNull && cur.nullableCol == "" {
				cur.nullableCol = col
			}
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	for oid, t := range byOID {
		if k := pk[oid]; k != nil {
			t.PrimaryKey = k.cols
		}
		t.IdentityKey, t.IdentityIssue = replicaIdentity(t.ReplicaIdentity, pk[oid], repl[oid])
	}
	return nil
}

// replicaIdentity decides the identity key as PostgreSQL does (see Table.HasUsableIdentity),
// and otherwise says why there is none.
func replicaIdentity(mode byte, pk, repl *indexKey) ([]string, string) {
	switch mode {
	case 'f':
		return nil, ""
	case 'n':
		return nil, "REPLICA IDENTITY NOTHING"
	case 'd':
		if pk == nil {
			return nil, "no primary key and no replica identity"
		}
		if why := pk.unusable(); why != "" {
			return nil, fmt.Sprintf("its primary key %s %s, and PostgreSQL does not use such a key as the replica identity", pk.name, why)
		}
		return pk.cols, ""
	case 'i':
		if repl == nil {
			return nil, "its REPLICA IDENTITY USING INDEX index no longer exists, so it has no replica identity"
		}
		if why := repl.unusable(); why != "" {
			return nil, fmt.Sprintf("its replica identity index %s %s, and PostgreSQL does not use such an index as the replica identity", repl.name, why)
		}
		return repl.cols, ""
	}
	return nil, fmt.Sprintf("unknown replica identity %q", mode)
}

// unusable says why relcache skips the index for the replica identity ("" when it does not).
// A nullable column cannot occur in an index PostgreSQL accepts as identity (ALTER TABLE
// refuses it, and refuses dropping NOT NULL later); it is checked so nothing is assumed.
func (k *indexKey) unusable() string {
	switch {
	case !k.immediate:
		return "is DEFERRABLE"
	case !k.whole:
		return "is partial (has a WHERE clause)"
	case !k.considered:
		return "is not valid (a failed CREATE INDEX CONCURRENTLY or REINDEX?)"
	case k.nullableCol != "":
		return "has the nullable column " + pgtypes.QuoteIdent(k.nullableCol)
	}
	return ""
}

// Sequence is one sequence with its current state: nextval() returns LastValue when IsCalled
// is false, and LastValue plus the increment when it is true.
type Sequence struct {
	ID        pgtypes.TableID
	LastValue int64
	IsCalled  bool
	// OwnedBy is the column owning the sequence (serial/identity), "" when free-standing.
	OwnedBy string
}

// Sequences lists user sequences with their current state. LastValue and IsCalled are read
// from each sequence relation itself, never from pg_sequences, whose last_value is NULL both
// for a sequence not called yet and for one the user may not read: a sequence set with
// setval(s, 101, false) is (101, false), and its next value is 101. A sequence the user may
// not read is an error that names it.
func Sequences(ctx context.Context, q Querier, f config.TableFilter) ([]Sequence, error) {
	out, unreadable, err := listSequences(ctx, q, f)
	if err != nil {
		return nil, err
	}
	if len(unreadable) > 0 {
		return nil, fmt.Errorf("%d sequence(s) whose position this user may not read: %s — GRANT SELECT on them (GRANT SELECT ON ALL SEQUENCES IN SCHEMA ... TO ...), or connect as a role that may",
			len(unreadable), strings.Join(unreadable, ", "))
	}
	for start := 0; start < len(out); start += sequenceBatch {
		if err := readSequenceState(ctx, q, out[start:min(start+sequenceBatch, len(out))]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// SequenceList lists the user sequences like Sequences, without reading their state (which
// needs the SELECT privilege on each): LastValue and IsCalled are zero.
func SequenceList(ctx context.Context, q Querier, f config.TableFilter) ([]Sequence, error) {
	out, _, err := listSequences(ctx, q, f)
	return out, err
}

// listSequences lists the user sequences that pass f, and those of them the user may not read.
func listSequences(ctx context.Context, q Querier, f config.TableFilter) (out []Sequence, unreadable []string, err error) {
	const listSQL = `
SELECT n.nspname, c.relname, has_sequence_privilege(c.oid, 'SELECT'),
       coalesce((SELECT quote_ident(tn.nspname) || '.' || quote_ident(tc.relname) || '.' || quote_ident(ta.attname)
                 FROM pg_depend d
                 JOIN pg_class tc ON tc.oid = d.refobjid
                 JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                 JOIN pg_attribute ta ON ta.attrelid = d.refobjid AND ta.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
                 LIMIT 1), '')
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
  AND n.nspname NOT LIKE 'pg\_temp\_%' AND n.nspname NOT LIKE 'pg\_toast\_temp\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2`
	rows, err := q.Query(ctx, listSQL)
	if err != nil {
		return nil, nil, fmt.Errorf("list sequences: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var s Sequence
		var readable bool
		if err := rows.Scan(&s.ID.Schema, &s.ID.Name, &readable, &s.OwnedBy); err != nil {
			return nil, nil, fmt.Errorf("list sequences: %w", err)
		}
		if !f.Match(s.ID.Schema, s.ID.Name) {
			continue
		}
		if !readable {
			unreadable = append(unreadable, s.ID.String())
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("list sequences: %w", err)
	}
	return out, unreadable, nil
}

// sequenceBatch is how many sequences one statement reads.
const sequenceBatch = 200

// readSequenceState fills LastValue and IsCalled of seqs with one UNION ALL over them.
func readSequenceState(ctx context.Context, q Querier, seqs []Sequence) error {
	parts := make([]string, len(seqs))
	args := make([]any, len(seqs))
	for i, s := range seqs {
		args[i] = i
		parts[i] = fmt.Sprintf("SELECT $%d::int, last_value, is_called FROM %s", i+1, s.ID.Sanitize())
	}
	rows, err := q.Query(ctx, strings.Join(parts, " UNION ALL "), args...)
	if err != nil {
		return fmt.Errorf("read the state of sequences %s ... %s: %w", seqs[0].ID, seqs[len(seqs)-1].ID, err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var i int
		var last int64
		var called bool
		if err := rows.Scan(&i, &last, &called); err != nil {
			return fmt.Errorf("read sequence state: %w", err)
		}
		if i < 0 || i >= len(seqs) {
			return fmt.Errorf("read sequence state: unexpected row %d", i)
		}
		seqs[i].LastValue, seqs[i].IsCalled = last, called
		seen++
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read the state of sequences %s ... %s: %w", seqs[0].ID, seqs[len(seqs)-1].ID, err)
	}
	if seen != len(seqs) {
		return fmt.Errorf("read sequence state: %d rows for %d sequences", seen, len(seqs))
	}
	return nil
}

// ServerInfo is what pgshift needs to know about a server as a whole.
type ServerInfo struct {
	VersionNum int    // server_version_num, e.g. 150004
	Version    string // server_version, e.g. "15.4"
	Database   string
	SystemID   string // pg_control system identifier: tells one cluster from another (and from a restored copy's successor)
	User       string
	Superuser  bool
}

// Features is the server's version, to ask what it supports.
func (s ServerInfo) Features() Version { return Version(s.VersionNum) }

// Server reads the server's version and identity.
func Server(ctx context.Context, q Querier) (ServerInfo, error) {
	var s ServerInfo
	err := q.QueryRow(ctx, `SELECT current_setting('server_version_num')::int, current_setting('server_version'),
		current_database(), (SELECT system_identifier::text FROM pg_control_system()), current_user,
		(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)`).
		Scan(&s.VersionNum, &s.Version, &s.Database, &s.SystemID, &s.User, &s.Superuser)
	if err != nil {
		return s, fmt.Errorf("read server info: %w", err)
	}
	return s, nil
}
