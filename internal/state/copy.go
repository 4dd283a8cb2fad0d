package state

// Copy progress: one row per migrated table in pgshift.tables, one row per finished chunk in
// pgshift.chunks, one row per finished post-data step in pgshift.post_data.
//
// Contract with the follow phase: every row of pgshift.tables carries snapshot_lsn, the source
// LSN at which that table's copy is consistent. A change to table T belongs on the target only
// if its source transaction committed at or after T's snapshot_lsn; everything committed
// before is already in the copied rows. Changes of a partition arrive under the leaf
// partition's own name (and, in migrations whose publication still published via the root,
// under the root's), so every member of a tree has its row. A partition tree is copied as one
// unit: the root, its partitioned branches and its leaves share one snapshot_lsn, and
// root_schema/root_name name that unit on every member row. A partition that joins a tree
// during follow is copied on its own in a later snapshot (AdoptTables) and keeps that LSN. A
// table created on the source during follow (ddl: follow) is registered when the applier
// replays its CREATE TABLE (RegisterNewTable), at that transaction's commit LSN.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// Table copy states in pgshift.tables.state.
const (
	TablePending = "pending" // not copied yet (or to be copied again in a new snapshot)
	TableCopying = "copying" // chunks being copied; finished chunks are in pgshift.chunks
	TableDone    = "done"    // every chunk committed; never copied again by this migration
	// TableDropped: the table was dropped on the source (and then on the target) during follow.
	// Its row stays, with snapshot_lsn at the moment that was noticed, so the changes of it
	// still in the slot are skipped rather than applied to a table that no longer exists.
	TableDropped = "dropped"
)

// Table kinds in pgshift.tables.kind.
const (
	KindData        = "table"       // holds rows: a plain table or a leaf partition
	KindPartitioned = "partitioned" // a partitioned table (root or intermediate): rows live in its leaves
)

// copyDDL adds what only the copy phase needs; Ensure runs it with the rest of the state schema.
var copyDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgshift.post_data (
		step_key    text PRIMARY KEY,
		description text NOT NULL,
		finished_at timestamptz NOT NULL DEFAULT now()
	)`,
}

// TableProgress is one row of pgshift.tables.
type TableProgress struct {
	ID          pgtypes.TableID
	Root        pgtypes.TableID // the partition tree this table belongs to; ID itself for a plain table
	Kind        string          // KindData or KindPartitioned
	Chunks      int             // chunks planned in the current snapshot; 0 until planned
	State       string
	SnapshotLSN pgtypes.LSN
	Rows        int64
	Bytes       int64
	StartedAt   time.Time // zero until the copy starts
	FinishedAt  time.Time // zero until done
	// Estimate is the source's size when the table was registered (pgshift.table_estimates);
	// zero when none was recorded.
	Estimate Estimate
}

// RegisterTables records the migrated tables, all pending at snapshot_lsn lsn. Tables already
// registered keep their row: RegisterTables is safe to call again on resume.
func RegisterTables(ctx context.Context, q catalog.Querier, tables []TableProgress, lsn pgtypes.LSN) error {
	for _, t := range tables {
		_, err := q.Exec(ctx, `INSERT INTO pgshift.tables (schema_name, table_name, root_schema, root_name, kind, state, snapshot_lsn)
			VALUES ($1, $2, $3, $4, $5, 'pending', $6::pg_lsn) ON CONFLICT (schema_name, table_name) DO NOTHING`,
			t.ID.Schema, t.ID.Name, t.Root.Schema, t.Root.Name, t.Kind, lsn.String())
		if err != nil {
			return fmt.Errorf("register table %s: %w", t.ID, err)
		}
		if t.Estimate != (Estimate{}) {
			if err := saveEstimate(ctx, q, t.ID, t.Estimate); err != nil {
				return err
			}
		}
	}
	return nil
}

// LoadTables reads every row of pgshift.tables, ordered by name.
func LoadTables(ctx context.Context, q catalog.Querier) ([]TableProgress, error) {
	est, err := LoadEstimates(ctx, q)
	if err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT schema_name, table_name, root_schema, root_name, kind, chunks, state,
		coalesce(snapshot_lsn::text, '0/0'), rows_copied, bytes_copied, started_at, finished_at
		FROM pgshift.tables ORDER BY schema_name, table_name`)
	if err != nil {
		return nil, fmt.Errorf("read table copy state: %w", err)
	}
	defer rows.Close()
	var out []TableProgress
	for rows.Next() {
		var t TableProgress
		var lsn string
		var started, finished *time.Time
		if err := rows.Scan(&t.ID.Schema, &t.ID.Name, &t.Root.Schema, &t.Root.Name, &t.Kind, &t.Chunks, &t.State,
			&lsn, &t.Rows, &t.Bytes, &started, &finished); err != nil {
			return nil, fmt.Errorf("read table copy state: %w", err)
		}
		if t.SnapshotLSN, err = pgtypes.ParseLSN(lsn); err != nil {
			return nil, fmt.Errorf("read table copy state of %s: %w", t.ID, err)
		}
		if started != nil {
			t.StartedAt = *started
		}
		if finished != nil {
			t.FinishedAt = *finished
		}
		t.Estimate = est[t.ID]
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read table copy state: %w", err)
	}
	return out, nil
}

// TableSnapshots returns each migrated table's snapshot_lsn: apply a source change to table T
// only if its transaction's commit LSN is >= the returned value for T. Leaf partitions (whose
// changes arrive under their own names) and partitioned tables (for publications that publish
// via the root) are included, each with its tree's LSN.
func TableSnapshots(ctx context.Context, q catalog.Querier) (map[pgtypes.TableID]pgtypes.LSN, error) {
	rows, err := q.Query(ctx, `SELECT schema_name, table_name, snapshot_lsn::text FROM pgshift.tables WHERE snapshot_lsn IS NOT NULL`)
	if err != nil {
		return nil, fmt.Errorf("read table snapshot LSNs: %w", err)
	}
	defer rows.Close()
	out := map[pgtypes.TableID]pgtypes.LSN{}
	for rows.Next() {
		var id pgtypes.TableID
		var s string
		if err := rows.Scan(&id.Schema, &id.Name, &s); err != nil {
			return nil, fmt.Errorf("read table snapshot LSNs: %w", err)
		}
		lsn, err := pgtypes.ParseLSN(s)
		if err != nil {
			return nil, fmt.Errorf("read snapshot LSN of %s: %w", id, err)
		}
		out[id] = lsn
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read table snapshot LSNs: %w", err)
	}
	return out, nil
}

// Every table-state transition below is a compare-and-set: it names the state (and phase) it
// expects and fails with ErrStateConflict, changing nothing, when the row is not in it. Tables
// move in the data phase, and while following, when partitions that changed their place on
// the source are adopted (AdoptTables) and copied in a snapshot of their own.

// inCopyPhase is the condition, in SQL, that the migration is in a phase where tables are
// copied: the data phase, or following (copied is the moment before following begins).
const inCopyPhase = `EXISTS (SELECT 1 FROM pgshift.migration WHERE id = 1 AND phase IN ('data', 'copied', 'following'))`

func tableConflict(id pgtypes.TableID, what, want string) error {
	return fmt.Errorf("%w: %s of %s: the table is not %s or the migration is not in a phase that copies tables; another pgshift agent may be running (pgshift status shows it) — stop it, then run this command again",
		ErrStateConflict, what, id, want)
}

// ResetTables marks tables to be copied again from scratch in a snapshot consistent at lsn:
// state pending, counters zero, their chunks forgotten. Call it in the same transaction that
// truncates those tables on the target, so the data and the state can never disagree. Any
// table of the unit may be reset (a finished partition of an unfinished tree included), but
// only while tables are copied (see inCopyPhase).
func ResetTables(ctx context.Context, tx pgx.Tx, ids []pgtypes.TableID, lsn pgtypes.LSN) error {
	for _, id := range ids {
		if _, err := tx.Exec(ctx, `DELETE FROM pgshift.chunks WHERE schema_name = $1::text AND table_name = $2::text`, id.Schema, id.Name); err != nil {
			return fmt.Errorf("reset copy state of %s: %w", id, err)
		}
		tag, err := tx.Exec(ctx, `UPDATE pgshift.tables SET state = 'pending', snapshot_lsn = $3::pg_lsn, chunks = 0,
			rows_copied = 0, bytes_copied = 0, started_at = NULL, finished_at = NULL
			WHERE schema_name = $1::text AND table_name = $2::text AND `+inCopyPhase, id.Schema, id.Name, lsn.String())
		if err != nil {
			return fmt.Errorf("reset copy state of %s: %w", id, err)
		}
		if tag.RowsAffected() == 0 {
			return tableConflict(id, "reset copy state", "registered")
		}
	}
	return nil
}

// AdoptTables makes tables part of the migration, or makes them start over, to be copied from
// scratch in a snapshot consistent at lsn: state pending, counters zero, chunks forgotten, the
// given root and kind. Call it in the target transaction that truncates the data tables, like
// ResetTables, so the data and the state can never disagree.
func AdoptTables(ctx context.Context, tx pgx.Tx, tables []TableProgress, lsn pgtypes.LSN) error {
	for _, t := range tables {
		if _, err := tx.Exec(ctx, `DELETE FROM pgshift.chunks WHERE schema_name = $1 AND table_name = $2`, t.ID.Schema, t.ID.Name); err != nil {
			return fmt.Errorf("reset copy state of %s: %w", t.ID, err)
		}
		_, err := tx.Exec(ctx, `INSERT INTO pgshift.tables (schema_name, table_name, root_schema, root_name, kind, state, snapshot_lsn)
			VALUES ($1, $2, $3, $4, $5, 'pending', $6::pg_lsn)
			ON CONFLICT (schema_name, table_name) DO UPDATE SET root_schema = EXCLUDED.root_schema, root_name = EXCLUDED.root_name,
				kind = EXCLUDED.kind, state = 'pending', snapshot_lsn = EXCLUDED.snapshot_lsn, chunks = 0,
				rows_copied = 0, bytes_copied = 0, started_at = NULL, finished_at = NULL`,
			t.ID.Schema, t.ID.Name, t.Root.Schema, t.Root.Name, t.Kind, lsn.String())
		if err != nil {
			return fmt.Errorf("register table %s: %w", t.ID, err)
		}
	}
	return nil
}

// RegisterNewTable makes a table created on the source while following (ddl: follow) part of
// the migration; call it in the target transaction that created the table there. streamed:
// every row of it is in the stream from its CREATE TABLE's transaction on, whose commit LSN is
// lsn, so it is done at once with snapshot_lsn lsn (the rows of that transaction itself are
// applied: the contract applies a change whose commit LSN is >= snapshot_lsn). Otherwise it is
// pending, to be copied in a snapshot of its own (follow's adopt, which sets its snapshot_lsn
// then); until that, no row of it was published. The row of a dropped table of the same name
// is replaced: its changes still in the slot are older than lsn, and skipped.
func RegisterNewTable(ctx context.Context, q catalog.Querier, t TableProgress, streamed bool, lsn pgtypes.LSN) error {
	st := TablePending
	if streamed {
		st = TableDone
	}
	if _, err := q.Exec(ctx, `DELETE FROM pgshift.chunks WHERE schema_name = $1 AND table_name = $2`, t.ID.Schema, t.ID.Name); err != nil {
		return fmt.Errorf("register new table %s: %w", t.ID, err)
	}
	_, err := q.Exec(ctx, `INSERT INTO pgshift.tables (schema_name, table_name, root_schema, root_name, kind, state, snapshot_lsn, started_at, finished_at)
		VALUES ($1, $2, $3, $4, $5, $6::text, $7::pg_lsn, CASE WHEN $6::text = 'done' THEN now() END, CASE WHEN $6::text = 'done' THEN now() END)
		ON CONFLICT (schema_name, table_name) DO UPDATE SET root_schema = EXCLUDED.root_schema, root_name = EXCLUDED.root_name,
			kind = EXCLUDED.kind, state = EXCLUDED.state, snapshot_lsn = EXCLUDED.snapshot_lsn, chunks = 0,
			rows_copied = 0, bytes_copied = 0, started_at = EXCLUDED.started_at, finished_at = EXCLUDED.finished_at`,
		t.ID.Schema, t.ID.Name, t.Root.Schema, t.Root.Name, t.Kind, st, lsn.String())
	if err != nil {
		return fmt.Errorf("register new table %s: %w", t.ID, err)
	}
	return nil
}

// RetireTable records that a table was dropped on both sides during follow: changes of it
// committed before lsn (all of them, when lsn is the source's position after the drop) are
// skipped from now on.
func RetireTable(ctx context.Context, q catalog.Querier, id pgtypes.TableID, lsn pgtypes.LSN) error {
	_, err := q.Exec(ctx, `UPDATE pgshift.tables SET state = 'dropped', snapshot_lsn = $3::pg_lsn, finished_at = now()
		WHERE schema_name = $1 AND table_name = $2`, id.Schema, id.Name, lsn.String())
	if err != nil {
		return fmt.Errorf("record that %s was dropped: %w", id, err)
	}
	return nil
}

// StartTable records that a table's copy began with the given number of planned chunks:
// pending (or copying, when a copy resumes it) → copying. A snapshotLSN other than 0 becomes
// the table's snapshot LSN (a copy that took its own snapshot, under locks).
func StartTable(ctx context.Context, q catalog.Querier, id pgtypes.TableID, chunks int, snapshotLSN pgtypes.LSN) error {
	var lsn *string
	if snapshotLSN != 0 {
		s := snapshotLSN.String()
		lsn = &s
	}
	tag, err := q.Exec(ctx, `UPDATE pgshift.tables SET state = 'copying', chunks = $3::int4, started_at = coalesce(started_at, now()),
			snapshot_lsn = coalesce($4::pg_lsn, snapshot_lsn)
		WHERE schema_name = $1::text AND table_name = $2::text AND state IN ('pending', 'copying') AND `+inCopyPhase,
		id.Schema, id.Name, chunks, lsn)
	if err != nil {
		return fmt.Errorf("record copy start of %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return tableConflict(id, "record copy start", "pending")
	}
	return nil
}

// RecordChunk records a finished chunk of a table that is copying. Call it in the target
// transaction that wrote the chunk's rows: both commit or neither does, so a chunk is never
// counted without its rows nor its rows kept without the record that stops it being copied
// again.
func RecordChunk(ctx context.Context, tx pgx.Tx, id pgtypes.TableID, chunkNo int, rows, bytes int64) error {
	tag, err := tx.Exec(ctx, `INSERT INTO pgshift.chunks (schema_name, table_name, chunk_no, rows_copied, bytes_copied)
		SELECT $1::text, $2::text, $3::int4, $4::int8, $5::int8
		WHERE EXISTS (SELECT 1 FROM pgshift.tables WHERE schema_name = $1::text AND table_name = $2::text AND state = 'copying')
		  AND `+inCopyPhase, id.Schema, id.Name, chunkNo, rows, bytes)
	if err != nil {
		return fmt.Errorf("record chunk %d of %s: %w", chunkNo, id, err)
	}
	if tag.RowsAffected() == 0 {
		return tableConflict(id, fmt.Sprintf("record chunk %d", chunkNo), "copying")
	}
	return nil
}

// FinishTable marks a copying table done, with its totals summed from its chunks.
func FinishTable(ctx context.Context, q catalog.Querier, id pgtypes.TableID) error {
	tag, err := q.Exec(ctx, `UPDATE pgshift.tables t SET state = 'done', finished_at = now(),
			rows_copied = coalesce(c.r, 0), bytes_copied = coalesce(c.b, 0)
		FROM (SELECT sum(rows_copied) AS r, sum(bytes_copied) AS b FROM pgshift.chunks
		      WHERE schema_name = $1::text AND table_name = $2::text) c
		WHERE t.schema_name = $1::text AND t.table_name = $2::text AND t.state = 'copying' AND `+inCopyPhase, id.Schema, id.Name)
	if err != nil {
		return fmt.Errorf("record copy end of %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return tableConflict(id, "record copy end", "copying")
	}
	return nil
}

// FinishPartitioned marks every partitioned table done whose partition tree has all its
// partitions done (or has none), with the totals of the whole tree; only while tables are copied
// (the caller then checks that every table is done). Partitioned tables hold no
// rows themselves; their row is there so the follow phase finds the snapshot LSN of changes
// published under the root's name
// (by publications that publish via the root).
func FinishPartitioned(ctx context.Context, q catalog.Querier) error {
	_, err := q.Exec(ctx, `UPDATE pgshift.tables p SET state = 'done', finished_at = now(),
			rows_copied = coalesce(s.r, 0), bytes_copied = coalesce(s.b, 0), started_at = coalesce(p.started_at, s.st, now())
		FROM (SELECT pp.schema_name, pp.table_name, sum(d.rows_copied) AS r, sum(d.bytes_copied) AS b,
		             min(d.started_at) AS st, coalesce(bool_and(d.state IN ('done', 'dropped')), true) AS all_done
		      FROM pgshift.tables pp
		      LEFT JOIN pgshift.tables d ON d.kind = 'table' AND d.root_schema = pp.root_schema AND d.root_name = pp.root_name
		      WHERE pp.kind = 'partitioned'
		      GROUP BY pp.schema_name, pp.table_name) s
		WHERE p.schema_name = s.schema_name AND p.table_name = s.table_name AND p.state <> 'done' AND s.all_done
		  AND `+inCopyPhase)
	if err != nil {
		return fmt.Errorf("record copy end of partitioned tables: %w", err)
	}
	return nil
}

// PostDataDone returns the keys of the post-data steps already applied.
func PostDataDone(ctx context.Context, q catalog.Querier) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT step_key FROM pgshift.post_data`)
	if err != nil {
		return nil, fmt.Errorf("read post-data state: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("read post-data state: %w", err)
		}
		out[k] = true
	}
	return out, rows.Err()
}

// RecordPostData records a finished post-data step; call it in the transaction that applied it.
// Only the post-data phase records steps (a compare-and-set like the table transitions).
func RecordPostData(ctx context.Context, tx pgx.Tx, key, description string) error {
	tag, err := tx.Exec(ctx, `INSERT INTO pgshift.post_data (step_key, description) SELECT $1::text, $2::text
		WHERE EXISTS (SELECT 1 FROM pgshift.migration WHERE id = 1 AND phase = 'post-data')`, key, description)
	if err != nil {
		return fmt.Errorf("record post-data step %s: %w", description, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: record post-data step %s: the migration is not in the post-data phase; another pgshift agent may be running (pgshift status shows it) — stop it, then run this command again",
			ErrStateConflict, description)
	}
	return nil
}

// ErrDeferredOnRenamed marks a rename of a table that has statements kept back for cutover
// (pgshift.deferred_ddl), whose text names the table by its old name.
var ErrDeferredOnRenamed = errors.New("the table has statements kept back for cutover that name it")

// RenameTable makes the migration follow a table under its new name (ddl: follow: the source
// renamed or moved it, and the target did the same in this transaction, q): its copy state,
// chunks and size estimate, and the root of the partitions and of itself. A table with pending
// deferred statements is refused with ErrDeferredOnRenamed: they would name a table that no
// longer exists at cutover.
func RenameTable(ctx context.Context, q catalog.Querier, from, to pgtypes.TableID) error {
	var pending int
	if err := q.QueryRow(ctx, `SELECT count(*) FROM pgshift.deferred_ddl WHERE schema_name = $1 AND table_name = $2 AND applied_at IS NULL`,
		from.Schema, from.Name).Scan(&pending); err != nil {
		return fmt.Errorf("rename %s to %s in the migration: %w", from, to, err)
	}
	if pending > 0 {
		return fmt.Errorf("rename %s to %s in the migration: %w (%d)", from, to, ErrDeferredOnRenamed, pending)
	}
	for _, sql := range []string{
		`UPDATE pgshift.tables SET schema_name = $3, table_name = $4 WHERE schema_name = $1 AND table_name = $2`,
		`UPDATE pgshift.tables SET root_schema = $3, root_name = $4 WHERE root_schema = $1 AND root_name = $2`,
		`UPDATE pgshift.chunks SET schema_name = $3, table_name = $4 WHERE schema_name = $1 AND table_name = $2`,
		`UPDATE pgshift.table_estimates SET schema_name = $3, table_name = $4 WHERE schema_name = $1 AND table_name = $2`,
	} {
		if _, err := q.Exec(ctx, sql, from.Schema, from.Name, to.Schema, to.Name); err != nil {
			return fmt.Errorf("rename %s to %s in the migration: %w", from, to, err)
		}
	}
	return nil
}

// ReRootTree keeps the roots of a partition tree's rows right after a partition was attached
// or detached (ddl: follow): every registered member of id's tree on the target (id itself,
// and its partitions when it is partitioned) gets the root the target's catalog now gives it.
// Their copy state and snapshot_lsn stay: a member whose rows were all copied or streamed
// under one name keeps receiving its changes under that same name (pgoutput publishes leaves
// as themselves). q is the target transaction that ran the statement; the target is 12 or
// newer (pg_partition_tree, which has no rows for a table that is in no tree).
func ReRootTree(ctx context.Context, q catalog.Querier, id pgtypes.TableID) error {
	_, err := q.Exec(ctx, `UPDATE pgshift.tables t SET root_schema = m.root_schema, root_name = m.root_name
		FROM (SELECT n.nspname::text AS s, c.relname::text AS r, rn.nspname::text AS root_schema, rc.relname::text AS root_name
			FROM (SELECT r.id AS relid FROM (SELECT pg_catalog.format('%I.%I', $1::text, $2::text)::regclass AS id) r
				UNION SELECT t.relid FROM pg_catalog.pg_partition_tree(pg_catalog.format('%I.%I', $1::text, $2::text)::regclass) t) p
			JOIN pg_catalog.pg_class c ON c.oid = p.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
			JOIN pg_catalog.pg_class rc ON rc.oid = coalesce(pg_catalog.pg_partition_root(p.relid), p.relid)
			JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace) m
		WHERE t.schema_name = m.s AND t.table_name = m.r AND t.state <> 'dropped'`, id.Schema, id.Name)
	if err != nil {
		return fmt.Errorf("set the partition tree root of %s and its partitions in the migration: %w", id, err)
	}
	return nil
}

// TableState is a table's state in pgshift.tables; ok is false when the migration has no row
// of it.
func TableState(ctx context.Context, q catalog.Querier, id pgtypes.TableID) (st string, ok bool, err error) {
	err = q.QueryRow(ctx, `SELECT state FROM pgshift.tables WHERE schema_name = $1 AND table_name = $2`, id.Schema, id.Name).Scan(&st)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read the migration's state of %s: %w", id, err)
	}
	return st, true, nil
}

// RecopyTable marks a migrated table to be copied again in a snapshot of its own (follow's
// adopt, which sets its snapshot_lsn then): some of its changes from lsn on were not published.
// Its changes until then still apply, to rows the copy replaces.
func RecopyTable(ctx context.Context, q catalog.Querier, id pgtypes.TableID, lsn pgtypes.LSN) error {
	_, err := q.Exec(ctx, `UPDATE pgshift.tables SET state = 'pending', snapshot_lsn = $3::pg_lsn WHERE schema_name = $1 AND table_name = $2
		AND kind = 'table' AND state <> 'dropped'`, id.Schema, id.Name, lsn.String())
	if err != nil {
		return fmt.Errorf("mark %s to be copied again: %w", id, err)
	}
	return nil
}
