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

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// StateSchema is the schema pgshift keeps its own state in; it is never migrated or compared.
const StateSchema = "pgshift"

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
	Name       string
	Num        int    // attnum; holes where columns were dropped are normal
	Type       string // format_type(), e.g. "numeric(12,2)", "character varying(40)[]"
	TypeOID    uint32
	NotNull    bool
	HasDefault bool
	Generated  bool   // GENERATED ALWAYS AS (...) STORED: computed by the target, never copied
	Identity   string // "a" (ALWAYS), "d" (BY DEFAULT) or ""
}

// Table is one relation that may hold user data.
type Table struct {
	ID              pgtypes.TableID
	OID             uint32
	Kind            byte // KindTable, KindPartitioned, KindForeign, KindMatView
	Persistence     byte // 'p' permanent, 'u' unlogged
	IsPartition     bool // a leaf (or intermediate) partition of Parent
	Parent          pgtypes.TableID
	ReplicaIdentity byte     // 'd' default (primary key), 'n' nothing, 'f' full, 'i' index
	PrimaryKey      []string // column names, in key order; empty when there is none
	IdentityKey     []string // the columns that identify a row in UPDATE/DELETE: replica identity index or PK; nil for FULL/none
	Columns         []Column
	RowsEstimate    int64 // pg_class.reltuples; -1 when never analyzed
	HeapBytes       int64 // main fork
	TotalBytes      int64 // heap + indexes + TOAST
	ToastBytes      int64
	IndexBytes      int64
}

// HasUsableIdentity reports whether UPDATE and DELETE on the table can be published:
// a primary key (default identity), an identity index, or REPLICA IDENTITY FULL.
func (t Table) HasUsableIdentity() bool {
	switch t.ReplicaIdentity {
	case 'f':
		return true
	case 'i':
		return len(t.IdentityKey) > 0
	case 'd':
		return len(t.PrimaryKey) > 0
	}
	return false
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
       CASE WHEN c.relkind IN ('r','m') THEN pg_relation_size(c.oid) ELSE 0 END,
       CASE WHEN c.relkind IN ('r','m','p') THEN pg_total_relation_size(c.oid) ELSE 0 END,
       CASE WHEN c.reltoastrelid <> 0 THEN pg_total_relation_size(c.reltoastrelid) ELSE 0 END,
       CASE WHEN c.relkind IN ('r','m','p') THEN pg_indexes_size(c.oid) ELSE 0 END
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

const columnsSQL = `
SELECT a.attrelid, a.attname, a.attnum, format_type(a.atttypid, a.atttypmod), a.atttypid,
       a.attnotnull, a.atthasdef, a.attgenerated <> '', a.attidentity::text
FROM pg_attribute a
WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum`

// keysSQL returns, per table, the primary key and the replica identity index columns in index order.
const keysSQL = `
SELECT i.indrelid, i.indisprimary, i.indisreplident, a.attname
FROM pg_index i
CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
WHERE i.indrelid = ANY($1) AND (i.indisprimary OR i.indisreplident)
ORDER BY i.indrelid, i.indexrelid, k.ord`

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
			&t.ToastBytes, &t.IndexBytes); err != nil {
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
	if err := readColumns(ctx, q, oids, byOID); err != nil {
		return nil, err
	}
	if err := readKeys(ctx, q, oids, byOID); err != nil {
		return nil, err
	}
	return tables, nil
}

func readColumns(ctx context.Context, q Querier, oids []uint32, byOID map[uint32]*Table) error {
	rows, err := q.Query(ctx, columnsSQL, oids)
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
	return nil
}

func readKeys(ctx context.Context, q Querier, oids []uint32, byOID map[uint32]*Table) error {
	rows, err := q.Query(ctx, keysSQL, oids)
	if err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	defer rows.Close()
	replIdent := map[uint32][]string{}
	for rows.Next() {
		var oid uint32
		var primary, repl bool
		var col string
		if err := rows.Scan(&oid, &primary, &repl, &col); err != nil {
			return fmt.Errorf("list keys: %w", err)
		}
		t := byOID[oid]
		if primary {
			t.PrimaryKey = append(t.PrimaryKey, col)
		}
		if repl {
			replIdent[oid] = append(replIdent[oid], col)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list keys: %w", err)
	}
	for _, t := range byOID {
		switch t.ReplicaIdentity {
		case 'd':
			t.IdentityKey = t.PrimaryKey
		case 'i':
			t.IdentityKey = replIdent[t.OID]
		}
	}
	return nil
}

// Sequence is one sequence with its current state.
type Sequence struct {
	ID        pgtypes.TableID
	LastValue int64
	IsCalled  bool
	// OwnedBy is the column owning the sequence (serial/identity), "" when free-standing.
	OwnedBy string
}

// Sequences lists user sequences with their current values (pg_sequences, so no lock is taken).
// A sequence never used has LastValue = start and IsCalled = false.
func Sequences(ctx context.Context, q Querier, f config.TableFilter) ([]Sequence, error) {
	const sql = `
SELECT s.schemaname, s.sequencename, coalesce(s.last_value, s.start_value), s.last_value IS NOT NULL,
       coalesce((SELECT quote_ident(tn.nspname) || '.' || quote_ident(tc.relname) || '.' || quote_ident(ta.attname)
                 FROM pg_depend d
                 JOIN pg_class tc ON tc.oid = d.refobjid
                 JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                 JOIN pg_attribute ta ON ta.attrelid = d.refobjid AND ta.attnum = d.refobjsubid
                 WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
                 LIMIT 1), '')
FROM pg_sequences s
JOIN pg_namespace n ON n.nspname = s.schemaname
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = s.sequencename
WHERE s.schemaname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2`
	rows, err := q.Query(ctx, sql)
	if err != nil {
		return nil, fmt.Errorf("list sequences: %w", err)
	}
	defer rows.Close()
	var out []Sequence
	for rows.Next() {
		var s Sequence
		if err := rows.Scan(&s.ID.Schema, &s.ID.Name, &s.LastValue, &s.IsCalled, &s.OwnedBy); err != nil {
			return nil, fmt.Errorf("list sequences: %w", err)
		}
		if f.Match(s.ID.Schema, s.ID.Name) {
			out = append(out, s)
		}
	}
	return out, rows.Err()
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
