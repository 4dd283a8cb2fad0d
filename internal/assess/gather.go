package assess

import (
	"context"
	"fmt"
	"time"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// serverSQL reads one server's identity, privileges of the current user, database locale and
// replication capacity. The rds_replication test goes through pg_roles so it does not fail on
// servers where that role does not exist. Senders are counted from pg_stat_activity, whose
// backend_type is visible to unprivileged users too.
const serverSQL = `
SELECT current_setting('server_version_num')::int, current_setting('server_version'), current_database(), current_user,
       r.rolsuper, r.rolreplication,
       EXISTS (SELECT 1 FROM pg_roles rr WHERE rr.rolname = 'rds_replication' AND pg_has_role(current_user, rr.oid, 'MEMBER')),
       has_database_privilege(current_database(), 'CREATE'),
       pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, t.spcname,
       current_setting('wal_level'),
       current_setting('max_replication_slots')::int, (SELECT count(*) FROM pg_replication_slots)::int,
       current_setting('max_wal_senders')::int,
       (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'walsender')::int,
       pg_database_size(current_database()),
       (SELECT stats_reset FROM pg_stat_database WHERE datname = current_database())
FROM pg_roles r, pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace
WHERE r.rolname = current_user AND d.datname = current_database()`

// settingsSQL reads the values a new session starts with (reset_val), so the assess session's
// own client settings do not mask the server's or database's defaults.
const settingsSQL = `SELECT name, reset_val FROM pg_settings WHERE name = ANY($1)`

func readServer(ctx context.Context, q catalog.Querier) (Server, error) {
	var s Server
	var super, repl, rds bool
	var reset *time.Time
	err := q.QueryRow(ctx, serverSQL).Scan(&s.VersionNum, &s.Version, &s.Database, &s.User, &super, &repl, &rds,
		&s.CreateOnDatabase, &s.Encoding, &s.Collate, &s.Ctype, &s.Tablespace, &s.WalLevel,
		&s.MaxSlots, &s.UsedSlots, &s.MaxSenders, &s.ActiveSenders, &s.DatabaseBytes, &reset)
	if err != nil {
		return s, fmt.Errorf("read server settings: %w", err)
	}
	s.Superuser, s.StatsReset = super, reset
	switch {
	case super:
		s.Replication = "superuser"
	case repl:
		s.Replication = "REPLICATION"
	case rds:
		s.Replication = "rds_replication"
	}
	// Prepared transactions and long-open transactions anywhere in the cluster delay creating
	// a logical slot: it waits until every transaction running at that moment has ended.
	if err := collect(ctx, q, `SELECT gid FROM pg_prepared_xacts ORDER BY prepared`, nil, func(r scanner) error {
		var gid string
		if err := r.Scan(&gid); err != nil {
			return err
		}
		s.PreparedXacts = append(s.PreparedXacts, gid)
		return nil
	}); err != nil {
		return s, fmt.Errorf("list prepared transactions: %w", err)
	}
	// pgshift's own sessions (a copy holding its snapshot) are not the user's problem.
	if err := q.QueryRow(ctx, `SELECT coalesce(extract(epoch FROM max(now() - xact_start)), 0)::float8
		FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
		  AND application_name NOT LIKE $1 || '%'`, db.ApplicationName).
		Scan(&s.OldestXactSeconds); err != nil {
		return s, fmt.Errorf("read transaction ages: %w", err)
	}
	rows, err := q.Query(ctx, settingsSQL, dataSettings)
	if err != nil {
		return s, fmt.Errorf("read server settings: %w", err)
	}
	defer rows.Close()
	s.Settings = map[string]string{}
	for rows.Next() {
		var name, val string
		if err := rows.Scan(&name, &val); err != nil {
			return s, fmt.Errorf("read server settings: %w", err)
		}
		s.Settings[name] = val
	}
	if err := rows.Err(); err != nil {
		return s, fmt.Errorf("read server settings: %w", err)
	}
	rows.Close()
	if err := readSlotLimits(ctx, q, &s); err != nil {
		return s, err
	}
	return s, nil
}

// tableExtraSQL adds to catalog.Tables what only assess needs: owner and the user's rights on
// each table, its tablespace, and the activity counters since the last stats reset.
const tableExtraSQL = `
SELECT c.oid, pg_get_userbyid(c.relowner), pg_has_role(c.relowner, 'USAGE'), has_table_privilege(c.oid, 'SELECT'),
       coalesce(ts.spcname, ''), coalesce(s.n_tup_ins, 0), coalesce(s.n_tup_upd, 0), coalesce(s.n_tup_del, 0),
       coalesce(s.n_live_tup, 0)
FROM pg_class c
LEFT JOIN pg_tablespace ts ON ts.oid = c.reltablespace
LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
WHERE c.oid = ANY($1)`

// indexSQL lists each table's indexes with their use. An index is "unused" when it was never
// scanned and does not enforce anything (unique, primary key, exclusion) or identify rows for
// replication: dropping such an index cannot change what the data means.
const indexSQL = `
SELECT i.indrelid, ic.relname, pg_relation_size(i.indexrelid), coalesce(s.idx_scan, 0),
       i.indisunique OR i.indisprimary OR i.indisexclusion OR i.indisreplident
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = i.indexrelid
WHERE i.indrelid = ANY($1)
ORDER BY i.indrelid, ic.relname`

var kindNames = map[byte]string{
	catalog.KindTable:       "table",
	catalog.KindPartitioned: "partitioned",
	catalog.KindForeign:     "foreign",
	catalog.KindMatView:     "materialized_view",
}

var identityNames = map[byte]string{'d': "default", 'f': "full", 'i': "index", 'n': "nothing"}

// TablesFromCatalog describes catalog tables as the rules see them, with each partition's tree
// root. The activity counters, owner and privileges stay zero: readTables adds them, and copy's
// preflight, which applies the identity rule to the same tables, does not need them.
func TablesFromCatalog(cts []catalog.Table) []Table {
	byID := make(map[pgtypes.TableID]*catalog.Table, len(cts))
	for i := range cts {
		byID[cts[i].ID] = &cts[i]
	}
	tables := make([]Table, len(cts))
	for i, ct := range cts {
		tables[i] = Table{
			Schema: ct.ID.Schema, Name: ct.ID.Name, Kind: kindNames[ct.Kind], Partition: ct.IsPartition,
			Unlogged: ct.Persistence == 'u', ReplicaIdentity: identityNames[ct.ReplicaIdentity],
			PrimaryKey: ct.PrimaryKey, UsableIdentity: ct.HasUsableIdentity(), IdentityColumns: ct.IdentityKey,
			IdentityIssue: ct.IdentityIssue, RowSecurityApplies: ct.RowSecurityApplies, ForceRowSecurity: ct.ForceRowSecurity,
			Columns: len(ct.Columns), RowsEstimate: ct.RowsEstimate, TotalBytes: ct.TotalBytes, HeapBytes: ct.HeapBytes,
			ToastBytes: ct.ToastBytes, IndexBytes: ct.IndexBytes,
		}
		if ct.IsPartition {
			tables[i].Root = PartitionRoot(ct.ID, byID).String()
		}
	}
	return tables
}

// PartitionRoot is the top of the partition tree id belongs to, as far as tables knows its
// ancestors; id itself for a table that is no partition.
func PartitionRoot(id pgtypes.TableID, tables map[pgtypes.TableID]*catalog.Table) pgtypes.TableID {
	for depth := 0; depth < 100; depth++ { // partition trees are shallow; a cycle cannot occur, but never loop on one
		cur := tables[id]
		if cur == nil || !cur.IsPartition || cur.Parent.Name == "" {
			return id
		}
		id = cur.Parent
	}
	return id
}

// SelectTables applies the filter to partition trees as a whole: a partition is migrated
// exactly when its root is. The publication names the root, which publishes every partition of
// the tree (see snapshot.PublicationTables), and pg_dump creates a partitioned table with its
// partitions, so a tree cannot be split between migrated and not. It is the one selection of
// assess and copy.
func SelectTables(all []catalog.Table, f config.TableFilter) []catalog.Table {
	byID := make(map[pgtypes.TableID]*catalog.Table, len(all))
	for i := range all {
		byID[all[i].ID] = &all[i]
	}
	var out []catalog.Table
	for _, t := range all {
		root := PartitionRoot(t.ID, byID)
		if f.Match(root.Schema, root.Name) {
			out = append(out, t)
		}
	}
	return out
}

func readTables(ctx context.Context, q catalog.Querier, filter config.TableFilter) ([]Table, error) {
	all, err := catalog.Tables(ctx, q, config.TableFilter{})
	if err != nil {
		return nil, err
	}
	cts := SelectTables(all, filter)
	if len(cts) == 0 {
		return nil, nil
	}
	tables := TablesFromCatalog(cts)
	byOID := make(map[uint32]*Table, len(cts))
	oids := make([]uint32, len(cts))
	for i, ct := range cts {
		if ct.Kind == catalog.KindForeign {
			tables[i].CanSelect, tables[i].OwnedByUser = true, true
		}
		byOID[ct.OID] = &tables[i]
		oids[i] = ct.OID
	}
	rows, err := q.Query(ctx, tableExtraSQL, oids)
	if err != nil {
		return nil, fmt.Errorf("read table statistics: %w", err)
	}
	for rows.Next() {
		var oid uint32
		var live int64
		var t Table
		if err := rows.Scan(&oid, &t.Owner, &t.OwnedByUser, &t.CanSelect, &t.Tablespace, &t.Inserts, &t.Updates, &t.Deletes, &live); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read table statistics: %w", err)
		}
		dst := byOID[oid]
		dst.Owner, dst.OwnedByUser, dst.CanSelect, dst.Tablespace = t.Owner, t.OwnedByUser, t.CanSelect, t.Tablespace
		dst.Inserts, dst.Updates, dst.Deletes = t.Inserts, t.Updates, t.Deletes
		// reltuples is -1 until the first VACUUM/ANALYZE; the live-tuple counter is the next best guess.
		if dst.RowsEstimate < 0 && (dst.Kind == "table" || dst.Kind == "materialized_view") {
			dst.RowsEstimate = live
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read table statistics: %w", err)
	}

	rows, err = q.Query(ctx, indexSQL, oids)
	if err != nil {
		return nil, fmt.Errorf("read index statistics: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var oid uint32
		var ix Index
		var enforcing bool
		if err := rows.Scan(&oid, &ix.Name, &ix.Bytes, &ix.Scans, &enforcing); err != nil {
			return nil, fmt.Errorf("read index statistics: %w", err)
		}
		t := byOID[oid]
		t.Indexes++
		t.IndexScans += ix.Scans
		if ix.Scans == 0 && !enforcing {
			t.UnusedIndexes = append(t.UnusedIndexes, ix)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read index statistics: %w", err)
	}
	return tables, nil
}

// notExtensionMember excludes objects created by CREATE EXTENSION: the extension recreates them.
const notExtensionMember = `NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = %s::regclass AND d.objid = %s AND d.deptype = 'e')`

func readSourceObjects(ctx context.Context, q catalog.Querier, f *Facts, filter config.TableFilter) error {
	seqs, err := catalog.SequenceList(ctx, q, filter)
	if err != nil {
		return err
	}
	for _, s := range seqs {
		f.Sequences = append(f.Sequences, s.ID.String())
	}
	// pg_sequences shows NULL for a sequence the user may not read, which looks like "never
	// used": ask the privilege directly.
	if err := collect(ctx, q, `
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'S' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
  -- CASE keeps the planner from calling has_sequence_privilege on other relation kinds (an error).
  AND CASE WHEN c.relkind = 'S' THEN NOT has_sequence_privilege(c.oid, 'SELECT') ELSE false END
  AND `+fmt.Sprintf(notExtensionMember, "'pg_class'", "c.oid")+`
ORDER BY 1, 2`, nil, func(r scanner) error {
		var schema, name string
		if err := r.Scan(&schema, &name); err != nil {
			return err
		}
		if filter.Match(schema, name) {
			if f.UnreadableSequences == nil {
				f.UnreadableSequences = map[string][]string{}
			}
			f.UnreadableSequences[schema] = append(f.UnreadableSequences[schema], tableID(schema, name))
		}
		return nil
	}); err != nil {
		return fmt.Errorf("check sequence privileges: %w", err)
	}
	if err := q.QueryRow(ctx, `SELECT (SELECT count(*) FROM pg_largeobject_metadata), pg_total_relation_size('pg_catalog.pg_largeobject')`).
		Scan(&f.LargeObjects, &f.LargeObjectBytes); err != nil {
		return fmt.Errorf("count large objects: %w", err)
	}

	// pgshift's own (ddl: follow, state.CaptureDDL) is not the application's.
	rows, err := q.Query(ctx, `SELECT e.evtname, e.evtevent, pg_get_userbyid(e.evtowner), e.evtenabled <> 'D'
		FROM pg_event_trigger e WHERE e.evtname <> $1::text AND `+fmt.Sprintf(notExtensionMember, "'pg_event_trigger'", "e.oid")+` ORDER BY 1`, catalog.DDLTrigger)
	if err != nil {
		return fmt.Errorf("list event triggers: %w", err)
	}
	for rows.Next() {
		var e EventTrigger
		if err := rows.Scan(&e.Name, &e.Event, &e.Owner, &e.Enabled); err != nil {
			rows.Close()
			return fmt.Errorf("list event triggers: %w", err)
		}
		f.EventTriggers = append(f.EventTriggers, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list event triggers: %w", err)
	}

	if err := readReplicaModeTriggers(ctx, q, f, filter); err != nil {
		return err
	}

	// plpgsql is part of every installation; it is neither reported nor checked.
	rows, err = q.Query(ctx, `SELECT extname, extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("list extensions: %w", err)
	}
	for rows.Next() {
		var e Extension
		if err := rows.Scan(&e.Name, &e.Version); err != nil {
			rows.Close()
			return fmt.Errorf("list extensions: %w", err)
		}
		f.Extensions = append(f.Extensions, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list extensions: %w", err)
	}

	// Languages that user functions are written in, and procedural languages defined outside
	// any extension (an extension's language is covered by the extension check).
	rows, err = q.Query(ctx, `
SELECT l.lanname, count(p.oid)::int
FROM pg_language l
LEFT JOIN pg_proc p ON p.prolang = l.oid
     AND p.pronamespace NOT IN (SELECT oid FROM pg_namespace WHERE nspname IN ('pg_catalog', 'information_schema', 'pgshift'))
     AND `+fmt.Sprintf(notExtensionMember, "'pg_proc'", "p.oid")+`
WHERE l.lanname NOT IN ('internal', 'c', 'sql', 'plpgsql')
GROUP BY l.lanname, l.oid
HAVING count(p.oid) > 0 OR `+fmt.Sprintf(notExtensionMember, "'pg_language'", "l.oid")+`
ORDER BY 1`)
	if err != nil {
		return fmt.Errorf("list procedural languages: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var l Language
		if err := rows.Scan(&l.Name, &l.Functions); err != nil {
			return fmt.Errorf("list procedural languages: %w", err)
		}
		f.Languages = append(f.Languages, l)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("list procedural languages: %w", err)
	}
	return nil
}

// readTargetObjects reads what the target offers for the source's extensions, languages,
// tablespaces and schemas, and what user tables it already holds.
func readTargetObjects(ctx context.Context, q catalog.Querier, f *Facts) error {
	names := make([]string, len(f.Extensions))
	for i, e := range f.Extensions {
		names[i] = e.Name
	}
	versions := map[string][]string{}
	if err := collect(ctx, q, `SELECT name, version FROM pg_available_extension_versions WHERE name = ANY($1) ORDER BY 1, 2`,
		[]any{names}, func(r scanner) error {
			var n, v string
			if err := r.Scan(&n, &v); err != nil {
				return err
			}
			versions[n] = append(versions[n], v)
			return nil
		}); err != nil {
		return fmt.Errorf("list available extensions: %w", err)
	}
	for i := range f.Extensions {
		f.Extensions[i].TargetVersions = append([]string{}, versions[f.Extensions[i].Name]...)
	}

	langs := make([]string, len(f.Languages))
	for i, l := range f.Languages {
		langs[i] = l.Name
	}
	onTarget := map[string]bool{}
	if err := collect(ctx, q, `SELECT lanname FROM pg_language WHERE lanname = ANY($1)
		UNION SELECT name FROM pg_available_extensions WHERE name = ANY($1)`, []any{langs}, func(r scanner) error {
		var n string
		if err := r.Scan(&n); err != nil {
			return err
		}
		onTarget[n] = true
		return nil
	}); err != nil {
		return fmt.Errorf("list languages: %w", err)
	}
	for i := range f.Languages {
		f.Languages[i].OnTarget = onTarget[f.Languages[i].Name]
	}

	if err := collect(ctx, q, `SELECT spcname FROM pg_tablespace ORDER BY 1`, nil, func(r scanner) error {
		var n string
		if err := r.Scan(&n); err != nil {
			return err
		}
		f.TargetTablespaces = append(f.TargetTablespaces, n)
		return nil
	}); err != nil {
		return fmt.Errorf("list tablespaces: %w", err)
	}

	schemaSet := map[string]bool{}
	for _, t := range f.Tables {
		schemaSet[t.Schema] = true
	}
	if err := collect(ctx, q, `SELECT nspname, has_schema_privilege(oid, 'CREATE') FROM pg_namespace WHERE nspname = ANY($1) ORDER BY 1`,
		[]any{sortedKeys(schemaSet)}, func(r scanner) error {
			var s TargetSchema
			if err := r.Scan(&s.Name, &s.CanCreate); err != nil {
				return err
			}
			f.TargetSchemas = append(f.TargetSchemas, s)
			return nil
		}); err != nil {
		return fmt.Errorf("list schemas: %w", err)
	}

	f.TargetTables = map[string]int{}
	if err := collect(ctx, q, `
SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
  AND n.nspname NOT LIKE 'pg\_toast%' AND n.nspname NOT LIKE 'pg\_temp\_%'
  AND `+fmt.Sprintf(notExtensionMember, "'pg_class'", "c.oid")+`
ORDER BY 1, 2`, nil, func(r scanner) error {
		var n, rel string
		if err := r.Scan(&n, &rel); err != nil {
			return err
		}
		f.TargetTables[n]++
		f.TargetTableNames = append(f.TargetTableNames, tableID(n, rel))
		return nil
	}); err != nil {
		return fmt.Errorf("list existing tables: %w", err)
	}
	return nil
}

type scanner interface{ Scan(dest ...any) error }

// collect runs a query and hands each row to fn.
func collect(ctx context.Context, q catalog.Querier, sql string, args []any, fn func(scanner) error) error {
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// readReplicaModeTriggers lists user triggers and rules set ENABLE ALWAYS or ENABLE REPLICA on
// migrated tables. A trigger cloned onto a partition is listed only when its state differs
// from its parent's: the parent's finding covers the others (from 13 on; 12 does not record
// the parent, so every clone is listed).
func readReplicaModeTriggers(ctx context.Context, q catalog.Querier, f *Facts, filter config.TableFilter) error {
	err := collect(ctx, q, `
SELECT 'trigger', n.nspname, c.relname, t.tgname, CASE t.tgenabled WHEN 'A' THEN 'ALWAYS' ELSE 'REPLICA' END
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_trigger parent ON parent.oid = (to_jsonb(t) ->> 'tgparentid')::oid -- tgparentid is 13+; NULL before
WHERE NOT t.tgisinternal AND t.tgenabled IN ('A', 'R') AND (parent.oid IS NULL OR parent.tgenabled <> t.tgenabled)
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
  AND `+fmt.Sprintf(notExtensionMember, "'pg_trigger'", "t.oid")+`
UNION ALL
SELECT 'rule', n.nspname, c.relname, r.rulename, CASE r.ev_enabled WHEN 'A' THEN 'ALWAYS' ELSE 'REPLICA' END
FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE r.ev_enabled IN ('A', 'R') AND r.rulename <> '_RETURN'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pgshift')
  AND `+fmt.Sprintf(notExtensionMember, "'pg_rewrite'", "r.oid")+`
ORDER BY 2, 3, 1, 4`, nil, func(r scanner) error {
		var tr ReplicaModeTrigger
		var schema, table string
		if err := r.Scan(&tr.Kind, &schema, &table, &tr.Name, &tr.State); err != nil {
			return err
		}
		if filter.Match(schema, table) {
			tr.Table = tableID(schema, table)
			f.ReplicaModeTriggers = append(f.ReplicaModeTriggers, tr)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list triggers and rules that fire in replica mode: %w", err)
	}
	return nil
}
