package apply

// TRUNCATE: pgoutput lists the relations a TRUNCATE emptied on the source (after its CASCADE
// and its expansion to partitions and inheritance children, as far as they are published), and
// whether it restarted identities. The target empties exactly those relations, never more:
//
//   - each table is truncated with ONLY, so an inheritance parent's children keep their rows
//     (a child that was emptied too is listed itself);
//   - a partitioned table (which cannot be truncated ONLY) is left out when its leaf partitions
//     are listed as well (publish_via_partition_root = false), and otherwise stands for all of
//     its leaves on the target (publish_via_partition_root = true sends only the root);
//   - a table whose copy was taken after the TRUNCATE committed (a resumed copy) is skipped: its
//     copy holds the TRUNCATE's effect and what came after;
//   - CASCADE is never used on the target: it would also empty tables that were skipped. A table
//     that a table not being emptied references by foreign key cannot be truncated, so it is
//     emptied with DELETE FROM ONLY instead (foreign keys do not fire in replica mode), and its
//     owned sequences restarted by hand when the source restarted identities.

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// stmt is one statement without parameters, with what it must do.
type stmt struct {
	sql string
	e   expect
}

// truncTarget is one relation listed in a TRUNCATE, as the target has it.
type truncTarget struct {
	oid    uint32
	kind   byte
	leaves []pgtypes.TableID // the leaf partitions of a partitioned table on the target
}

const truncRelationsSQL = `
SELECT i.n::int, coalesce(c.oid, 0), coalesce(c.relkind::text, ''), coalesce(lv.schemas, '{}'), coalesce(lv.names, '{}')
FROM unnest($1::text[]) WITH ORDINALITY AS i(name, n) LEFT JOIN pg_class c ON c.oid = to_regclass(i.name)
LEFT JOIN LATERAL (
  SELECT array_agg(ln.nspname::text ORDER BY l.oid) AS schemas, array_agg(l.relname::text ORDER BY l.oid) AS names
  FROM pg_partition_tree(c.oid) pt JOIN pg_class l ON l.oid = pt.relid JOIN pg_namespace ln ON ln.oid = l.relnamespace
  WHERE c.relkind = 'p' AND pt.isleaf AND l.relkind = 'r') lv ON true
ORDER BY i.n`

// referencedSQL returns the relations among $1 that a foreign key of a relation not among $1
// references: TRUNCATE refuses those (heap_truncate_find_FKs applies the same rule).
const referencedSQL = `
SELECT DISTINCT confrelid::oid FROM pg_constraint
WHERE contype = 'f' AND confrelid = ANY($1::oid[]) AND NOT conrelid = ANY($1::oid[])`

// ownedSequencesSQL returns the sequences owned by columns of the relations $1 (serial and
// identity), which TRUNCATE ... RESTART IDENTITY restarts.
const ownedSequencesSQL = `
SELECT DISTINCT n.nspname::text, s.relname::text
FROM pg_depend d JOIN pg_class s ON s.oid = d.objid JOIN pg_namespace n ON n.oid = s.relnamespace
WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = ANY($1::oid[])
  AND d.deptype IN ('a', 'i') AND s.relkind = 'S'
ORDER BY 1, 2`

// truncate applies a TRUNCATE: what the batch merged so far is written first (it happened
// before), then the statements truncatePlan works out.
func (a *Applier) truncate(ctx context.Context, ch *cdc.Change) error {
	// A redo in these two calls replays only earlier changes: this one is not recorded yet.
	if err := a.flushEntries(ctx); err != nil {
		return err
	}
	if err := a.flush(ctx); err != nil { // the catalog queries below need the connection
		return err
	}
	stmts, err := a.truncatePlan(ctx, ch)
	if err != nil {
		return fmt.Errorf("TRUNCATE: %w", err)
	}
	if len(stmts) == 0 {
		return nil
	}
	if a.recording() {
		a.raw = append(a.raw, rawChange{truncate: stmts})
		a.rawBytes += 256
	}
	a.pendingCh++
	a.queueSQL(stmts...)
	return nil
}

// truncatePlan turns a TRUNCATE into statements on the target (see the top of this file).
func (a *Applier) truncatePlan(ctx context.Context, ch *cdc.Change) ([]stmt, error) {
	names := make([]string, len(ch.Truncated))
	listed := make(map[pgtypes.TableID]bool, len(ch.Truncated))
	for i, r := range ch.Truncated {
		names[i] = r.Table.Sanitize()
		listed[r.Table] = true
	}
	rows, err := a.conn.Query(ctx, truncRelationsSQL, names)
	if err != nil {
		return nil, fmt.Errorf("read the truncated relations on the target: %w", err)
	}
	var targets []truncTarget
	for rows.Next() {
		var n int
		var oid uint32
		var kind string
		var schemas, leaves []string
		if err := rows.Scan(&n, &oid, &kind, &schemas, &leaves); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read the truncated relations on the target: %w", err)
		}
		t := truncTarget{oid: oid}
		if kind != "" {
			t.kind = kind[0]
		}
		for j := range leaves {
			t.leaves = append(t.leaves, pgtypes.TableID{Schema: schemas[j], Name: leaves[j]})
		}
		targets = append(targets, t)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the truncated relations on the target: %w", err)
	}
	if len(targets) != len(ch.Truncated) {
		return nil, fmt.Errorf("read the truncated relations on the target: %d of %d found", len(targets), len(ch.Truncated))
	}

	// The tables to empty, each once, in the order listed.
	var empty []pgtypes.TableID
	seen := map[pgtypes.TableID]bool{}
	addTable := func(id pgtypes.TableID) {
		if seen[id] {
			return
		}
		seen[id] = true
		if snap, ok := a.opts.Snapshots[id]; ok && a.cur.CommitLSN < snap {
			a.stats.Skipped.Add(1)
			return // its copy was taken after this TRUNCATE: it holds its effect already
		}
		empty = append(empty, id)
	}
	for i, r := range ch.Truncated {
		t := targets[i]
		switch t.kind {
		case catalog.KindTable:
			addTable(r.Table)
		case catalog.KindPartitioned:
			var in, out []string
			for _, l := range t.leaves {
				if listed[l] {
					in = append(in, l.String())
				} else {
					out = append(out, l.String())
				}
			}
			switch {
			case len(in) == 0: // published through the root: the root stands for its leaves
				for _, l := range t.leaves {
					addTable(l)
				}
			case len(out) > 0:
				return nil, &ErrSchema{Table: r.Table,
					Msg: fmt.Sprintf("the source's TRUNCATE lists partitions %s of it but not %s, which the target also has: the partitions differ between source and target",
						strings.Join(in, ", "), strings.Join(out, ", ")),
					Fix: "make the target's partitions of the table the source's"}
			}
			// Otherwise its leaves are listed and truncated themselves.
		case 0:
			return nil, &ErrSchema{Table: r.Table, Msg: "the table does not exist on the target",
				Fix: "create it on the target with the source's definition (pg_dump --schema-only -t)"}
		default:
			return nil, &ErrSchema{Table: r.Table, Msg: fmt.Sprintf("the relation is of kind %q on the target, not a table", t.kind),
				Fix: "create it on the target as a table with the source's definition (pg_dump --schema-only -t)"}
		}
	}
	if len(empty) == 0 {
		return nil, nil
	}

	oids, err := a.oidsOf(ctx, empty)
	if err != nil {
		return nil, err
	}
	rows, err = a.conn.Query(ctx, referencedSQL, oids)
	if err != nil {
		return nil, fmt.Errorf("read foreign keys of the truncated tables on the target: %w", err)
	}
	referenced := map[uint32]bool{}
	for rows.Next() {
		var oid uint32
		if err := rows.Scan(&oid); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read foreign keys of the truncated tables on the target: %w", err)
		}
		referenced[oid] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read foreign keys of the truncated tables on the target: %w", err)
	}

	var trunc, del []string
	var delOids []uint32
	for i, id := range empty {
		if referenced[oids[i]] {
			del = append(del, id.Sanitize())
			delOids = append(delOids, oids[i])
		} else {
			trunc = append(trunc, "ONLY "+id.Sanitize())
		}
	}
	var out []stmt
	if len(trunc) > 0 {
		sql := "TRUNCATE " + strings.Join(trunc, ", ")
		if ch.RestartIdentity {
			sql += " RESTART IDENTITY"
		}
		out = append(out, stmt{sql: sql, e: expect{what: sql, rows: -1}})
	}
	for _, t := range del {
		sql := "DELETE FROM ONLY " + t
		out = append(out, stmt{sql: sql, e: expect{what: sql + " (for TRUNCATE; the table is referenced by a foreign key of a table not truncated)", rows: -1}})
	}
	if ch.RestartIdentity && len(delOids) > 0 {
		rows, err := a.conn.Query(ctx, ownedSequencesSQL, delOids)
		if err != nil {
			return nil, fmt.Errorf("read sequences owned by the truncated tables on the target: %w", err)
		}
		var seqs []pgtypes.TableID
		for rows.Next() {
			var id pgtypes.TableID
			if err := rows.Scan(&id.Schema, &id.Name); err != nil {
				rows.Close()
				return nil, fmt.Errorf("read sequences owned by the truncated tables on the target: %w", err)
			}
			seqs = append(seqs, id)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("read sequences owned by the truncated tables on the target: %w", err)
		}
		for _, s := range seqs {
			sql := "ALTER SEQUENCE " + s.Sanitize() + " RESTART"
			out = append(out, stmt{sql: sql, e: expect{what: sql + " (for TRUNCATE ... RESTART IDENTITY)", rows: -1}})
		}
	}
	return out, nil
}

// oidsOf returns the target OIDs of tables, in order.
func (a *Applier) oidsOf(ctx context.Context, ids []pgtypes.TableID) ([]uint32, error) {
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = id.Sanitize()
	}
	rows, err := a.conn.Query(ctx, `SELECT coalesce(to_regclass(i.name)::oid, 0) FROM unnest($1::text[]) WITH ORDINALITY AS i(name, n) ORDER BY i.n`, names)
	if err != nil {
		return nil, fmt.Errorf("read the truncated tables on the target: %w", err)
	}
	defer rows.Close()
	var oids []uint32
	for rows.Next() {
		var oid uint32
		if err := rows.Scan(&oid); err != nil {
			return nil, fmt.Errorf("read the truncated tables on the target: %w", err)
		}
		oids = append(oids, oid)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the truncated tables on the target: %w", err)
	}
	if len(oids) != len(ids) || slices.Contains(oids, 0) {
		return nil, fmt.Errorf("read the truncated tables on the target: some of %s are missing", strings.Join(names, ", "))
	}
	return oids, nil
}

// queueSQL adds statements without parameters to the pipeline. The caller writes the pending
// run of INSERTs first (flush or writeRun), so the statements keep their order.
func (a *Applier) queueSQL(stmts ...stmt) {
	if a.batch == nil {
		a.batch = &pgconn.Batch{}
	}
	for _, s := range stmts {
		a.batch.ExecParams(s.sql, nil, nil, nil, nil)
		a.queued = append(a.queued, s.e)
	}
}
