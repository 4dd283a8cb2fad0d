package apply

// Tables created on the source while following (ddl: follow). The source's capture decided,
// in the CREATE TABLE's own transaction, what the table is to the migration, and recorded it
// with the table's object in the log (state.CaptureDDL's publish_new_table); the applier acts
// on that record, never on a decision of its own, so the target has the table exactly when
// its rows are in the stream or will be copied:
//
//   - published (added, or through its partition tree's root): every row of it is in the
//     stream from its CREATE TABLE's transaction on, so the table is created here and
//     registered done at that transaction's commit LSN, and its rows apply as they come,
//     those later in the same transaction included;
//   - excluded (the include/exclude patterns, or a tree the migration does not have): the
//     statement is skipped, and nothing of the table is published;
//   - anything else (no primary key, ALTER PUBLICATION failed, a capture that does not publish
//     new tables, CREATE TABLE AS, whose rows were written before it could be published): the
//     table is created here and registered pending; the follow session then copies it in a
//     snapshot of its own and publishes it (follow's adopt), and its snapshot_lsn becomes that
//     snapshot's, so no row is lost or doubled; its changes until then are skipped
//     (awaitCopy): the copy holds them. A table that cannot be published (no key)
//     stops the session there with the fix.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/sqlparse"
	"github.com/pgshift/pgshift/internal/state"
)

// What the capture decided for a new table (cdc.DDLObject.Publish).
const (
	publishAdded       = "added"
	publishRoot        = "root"
	publishPartitioned = "partitioned"
	publishExcluded    = "excluded"
	publishUnlogged    = "unlogged"
)

// newTable is a table a captured statement creates, as the capture decided.
type newTable struct {
	id      pgtypes.TableID
	publish string // cdc.DDLObject.Publish; "" when the capture recorded no decision
}

// streamed reports whether every row of the table is in the stream from its creation on.
func (n newTable) streamed(st sqlparse.DDL) bool {
	if st.CopyRows {
		return false
	}
	switch n.publish {
	case publishAdded, publishRoot, publishPartitioned, publishUnlogged:
		return true
	}
	return false
}

// newTable finds what the capture decided for the table st creates. It runs in the DDL's
// session (enterDDLSession): an unqualified name is created in the first schema of the
// statement's search_path that exists, which is the target's current_schema() there.
func (a *Applier) newTable(ctx context.Context, d *cdc.DDL, st sqlparse.DDL) (newTable, error) {
	nt := newTable{id: pgtypes.TableID{Schema: st.CreatesTable.Schema, Name: st.CreatesTable.Name}}
	var identity string
	if err := a.tx.QueryRow(ctx, `SELECT coalesce(nullif($1::text, ''), current_schema()::text, ''),
			pg_catalog.format('%I.%I', coalesce(nullif($1::text, ''), current_schema()::text, ''), $2::text)`,
		nt.id.Schema, nt.id.Name).Scan(&nt.id.Schema, &identity); err != nil {
		return nt, fmt.Errorf("schema change %d: resolve new table %s on the target: %w", d.ID, st.CreatesTable, err)
	}
	if nt.id.Schema == "" {
		return nt, &ErrDDL{ID: d.ID, Command: d.Command, Fix: fixDDLByHand,
			Msg: fmt.Sprintf("%s %s: no schema of the statement's search_path (%s) exists on the target", st.Kind, st.CreatesTable, d.SearchPath)}
	}
	for _, o := range d.Objects {
		if o.Class == "pg_class" && o.Type == "table" && o.Identity == identity {
			nt.publish = o.Publish
			return nt, nil
		}
	}
	if st.CopyRows {
		return nt, nil
	}
	// A later command of a query string of several: its objects are in its own row of the
	// source's log, which the applier does not replay (only the first).
	if err := a.awaitVisible(ctx); err != nil {
		return nt, err
	}
	err := a.source.QueryRow(ctx, `SELECT coalesce((SELECT o.v->>'publish' FROM pgshift.ddl_log l
			CROSS JOIN LATERAL jsonb_array_elements(l.objects) AS o(v)
			WHERE l.xid = f.xid AND l.statement_at = f.statement_at AND l.command = f.command AND l.id > f.id
			  AND o.v->>'class' = 'pg_class' AND o.v->>'type' = 'table' AND o.v->>'identity' = $2::text
			ORDER BY l.id LIMIT 1), '')
		FROM pgshift.ddl_log f WHERE f.id = $1::int8`, d.ID, identity).Scan(&nt.publish)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nt, fmt.Errorf("schema change %d: read what the source's capture did with new table %s: %w", d.ID, identity, err)
	}
	return nt, nil
}

// setSnapshot sets the copy position the applier judges id's changes by (Options.Snapshots).
func (a *Applier) setSnapshot(id pgtypes.TableID, lsn pgtypes.LSN) {
	a.opts.Snapshots = maps.Clone(a.opts.Snapshots) // the caller's map is not the applier's to change
	if a.opts.Snapshots == nil {
		a.opts.Snapshots = map[pgtypes.TableID]pgtypes.LSN{}
	}
	a.opts.Snapshots[id] = lsn
}

// awaitCopy makes the applier skip every later change of id in this session: it is registered
// pending, and follow's adopt copies it in a snapshot of its own, taken after every change this
// session applies, and sets its snapshot_lsn then (the next session judges by that). Applied
// now, its changes would meet rows the target does not have yet: an UPDATE of a row only the
// copy brings affects none.
func (a *Applier) awaitCopy(id pgtypes.TableID) {
	a.setSnapshot(id, pgtypes.LSN(math.MaxUint64))
}

// registerNewTable makes a table the statement just created on the target part of the
// migration, in the DDL's target transaction, and returns its state there.
func (a *Applier) registerNewTable(ctx context.Context, d *cdc.DDL, st sqlparse.DDL, nt newTable) (string, error) {
	t := state.TableProgress{ID: nt.id, Root: nt.id, Kind: state.KindData}
	var kind string
	// The target is 12 or newer: pg_partition_root names the tree's root (NULL for a table
	// that is no partition).
	err := a.tx.QueryRow(ctx, `SELECT c.relkind::text, coalesce(rn.nspname::text, ''), coalesce(rc.relname::text, '')
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		LEFT JOIN pg_catalog.pg_class rc ON rc.oid = pg_catalog.pg_partition_root(c.oid)
		LEFT JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace
		WHERE n.nspname = $1::text AND c.relname = $2::text`, nt.id.Schema, nt.id.Name).Scan(&kind, &t.Root.Schema, &t.Root.Name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", &ErrDDL{ID: d.ID, Command: d.Command, Fix: fixDDLByHand,
			Msg: fmt.Sprintf("%s created no table %s on the target", st.Kind, nt.id)}
	}
	if err != nil {
		return "", fmt.Errorf("schema change %d: read new table %s on the target: %w", d.ID, nt.id, err)
	}
	if t.Root.Name == "" {
		t.Root = nt.id
	}
	if kind == "p" {
		t.Kind = state.KindPartitioned
	}
	streamed := nt.streamed(st)
	if err := state.RegisterNewTable(ctx, a.tx, t, streamed, a.cur.CommitLSN); err != nil {
		return "", err
	}
	a.setSnapshot(nt.id, a.cur.CommitLSN)
	if !streamed {
		a.awaitCopy(nt.id)
	}
	switch {
	case streamed && nt.publish == publishUnlogged:
		a.log.Warn("a table created on the source is unlogged: its rows are not in the WAL, so only its schema is followed (recopy_unlogged copies such tables at cutover)",
			"table", nt.id.String(), "ddl_id", d.ID)
	case streamed:
		a.log.Info("a table created on the source is followed from its creation", "table", nt.id.String(), "ddl_id", d.ID, "publish", nt.publish)
	default:
		why := nt.publish
		switch {
		case st.CopyRows:
			why = "CREATE TABLE AS wrote its rows before they could be published"
		case why == "":
			why = "the source's capture recorded no decision (a capture older than this pgshift, or a query string pgshift could not match)"
		}
		a.log.Warn("a table created on the source is not in the stream from its creation: it is copied in a snapshot of its own, and the follow session restarts for it",
			"table", nt.id.String(), "ddl_id", d.ID, "why", why)
		return state.TablePending, nil
	}
	return state.TableDone, nil
}
