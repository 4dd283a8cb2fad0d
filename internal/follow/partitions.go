package follow

// Partition trees while following.
//
// The publication names each migrated partition tree by its root and publishes the leaves as
// themselves (snapshot.CreatePublication), so a partition created or attached on the source
// later is published at once, under its own name, while its rows from before it was attached
// never reach the slot; and a partition detached (or dropped) on the source silently stops
// being published. Neither may go unnoticed:
//
//   - a change of a table that is not part of the migration stops the stream (cdc's
//     Options.Tables) before anything of its transaction is applied;
//   - the monitor compares the source's trees with pgshift.tables and stops the session when a
//     migrated partition left its tree; it marks that partition as to be copied again first,
//     so the mark survives whatever happens next;
//   - every follow start (preflight) settles what changed once the target has the same shape:
//     a partition that joined a tree, left it, or is marked, is copied again on its own from
//     scratch in a new snapshot consistent at C3 (a temporary slot's, as a resumed copy does),
//     and its snapshot_lsn becomes C3, so follow applies exactly its changes committed from C3
//     on; a partition dropped on both sides is retired (its changes still in the slot are
//     skipped). Until the target has the same shape, following stops with the exact fix.
//
// Under ddl: follow the captured CREATE, ATTACH, DETACH and DROP are in the stream, and the
// applier settles each at its place (apply/newtable.go, apply/partition.go): these checks then
// leave joined and left partitions alone, and only copy what the applier registered pending.

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/assess"
	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/progress"
	"github.com/pgshift/pgshift/internal/snapshot"
	"github.com/pgshift/pgshift/internal/state"
)

// errTreeChanged stops a follow session when a migrated partition tree changed on the source;
// the next attempt's preflight settles the change or explains what to do.
var errTreeChanged = errors.New("a migrated partition tree changed on the source")

// relInfo is where one relation sits on one server now.
type relInfo struct {
	exists  bool
	kind    byte // catalog.KindTable, catalog.KindPartitioned, ...
	parent  pgtypes.TableID
	root    pgtypes.TableID // the top of its partition tree; itself when it is no partition (or a root)
	bound   string          // FOR VALUES ... (pg_get_expr of relpartbound); "" when no partition
	partKey string          // PARTITION BY ... of a partitioned table
}

func relInfoSQL(v catalog.Version) string {
	return `
SELECT m.s, m.n, c.oid IS NOT NULL, coalesce(c.relkind::text, ''),
       coalesce(pn.nspname, ''), coalesce(pc.relname, ''), coalesce(rn.nspname, ''), coalesce(rc.relname, ''),
       coalesce(pg_get_expr(c.relpartbound, c.oid), ''),
       CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) ELSE '' END
FROM unnest($1::text[], $2::text[]) AS m(s, n)
LEFT JOIN pg_class c ON c.oid = to_regclass(quote_ident(m.s) || '.' || quote_ident(m.n))
LEFT JOIN pg_inherits i ON c.relispartition AND i.inhrelid = c.oid
LEFT JOIN pg_class pc ON pc.oid = i.inhparent
LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace
LEFT JOIN pg_class rc ON rc.oid = ` + v.PartitionRootSQL("c.oid") + `
LEFT JOIN pg_namespace rn ON rn.oid = rc.relnamespace`
}

// describeRels tells where each of ids sits on the server q is connected to, of version v.
func describeRels(ctx context.Context, q catalog.Querier, v catalog.Version, ids []pgtypes.TableID) (map[pgtypes.TableID]relInfo, error) {
	schemas, names := splitIDs(ids)
	rows, err := q.Query(ctx, relInfoSQL(v), schemas, names)
	if err != nil {
		return nil, fmt.Errorf("read partitions: %w", err)
	}
	defer rows.Close()
	out := map[pgtypes.TableID]relInfo{}
	for rows.Next() {
		var id pgtypes.TableID
		var ri relInfo
		var kind string
		if err := rows.Scan(&id.Schema, &id.Name, &ri.exists, &kind, &ri.parent.Schema, &ri.parent.Name,
			&ri.root.Schema, &ri.root.Name, &ri.bound, &ri.partKey); err != nil {
			return nil, fmt.Errorf("read partitions: %w", err)
		}
		if kind != "" {
			ri.kind = kind[0]
		}
		if ri.exists && ri.root.Name == "" {
			ri.root = id // pg_partition_root is NULL for a table that is no partition
		}
		out[id] = ri
	}
	return out, rows.Err()
}

// treeMembersSQL lists every partition (at any depth) of the given roots.
func treeMembersSQL(v catalog.Version) string {
	return `
SELECT r.s, r.n, n.nspname, c.relname
FROM unnest($1::text[], $2::text[]) AS r(s, n)
CROSS JOIN ` + v.PartitionTreeSQL("to_regclass(quote_ident(r.s) || '.' || quote_ident(r.n))") + `
JOIN pg_class c ON c.oid = t.relid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.level > 0`
}

// treeMembers maps every partition of the roots, on the server q is connected to, to its root.
func treeMembers(ctx context.Context, q catalog.Querier, v catalog.Version, roots []pgtypes.TableID) (map[pgtypes.TableID]pgtypes.TableID, error) {
	schemas, names := splitIDs(roots)
	rows, err := q.Query(ctx, treeMembersSQL(v), schemas, names)
	if err != nil {
		return nil, fmt.Errorf("read partition trees: %w", err)
	}
	defer rows.Close()
	out := map[pgtypes.TableID]pgtypes.TableID{}
	for rows.Next() {
		var root, id pgtypes.TableID
		if err := rows.Scan(&root.Schema, &root.Name, &id.Schema, &id.Name); err != nil {
			return nil, fmt.Errorf("read partition trees: %w", err)
		}
		out[id] = root
	}
	return out, rows.Err()
}

func splitIDs(ids []pgtypes.TableID) (schemas, names []string) {
	schemas, names = make([]string, len(ids)), make([]string, len(ids))
	for i, id := range ids {
		schemas[i], names[i] = id.Schema, id.Name
	}
	return schemas, names
}

// treeState is the migration's partition trees next to the source's.
type treeState struct {
	reg     map[pgtypes.TableID]state.TableProgress
	roots   []pgtypes.TableID                   // registered roots of partition trees
	members map[pgtypes.TableID]pgtypes.TableID // the source's partitions of those roots → root
	// joined are the source's partitions that are not (or no longer: dropped) part of the migration.
	joined []pgtypes.TableID
	// left are registered partitions that are no longer in their tree on the source.
	left []pgtypes.TableID
}

func (s *session) readTrees(ctx context.Context) (treeState, error) {
	ts := treeState{reg: map[pgtypes.TableID]state.TableProgress{}}
	rows, err := state.LoadTables(ctx, s.dstPool)
	if err != nil {
		return ts, s.target.Describe(err)
	}
	for _, t := range rows {
		ts.reg[t.ID] = t
		if t.Kind == state.KindPartitioned && t.ID == t.Root {
			ts.roots = append(ts.roots, t.ID)
		}
	}
	if len(ts.roots) == 0 {
		return ts, nil
	}
	if ts.members, err = treeMembers(ctx, s.srcPool, s.srcVer, ts.roots); err != nil {
		return ts, s.source.Describe(err)
	}
	for id := range ts.members {
		if t, ok := ts.reg[id]; !ok || t.State == state.TableDropped {
			ts.joined = append(ts.joined, id)
		}
	}
	isRoot := map[pgtypes.TableID]bool{}
	for _, r := range ts.roots {
		isRoot[r] = true
	}
	for _, t := range rows {
		if t.ID == t.Root || !isRoot[t.Root] || t.State == state.TableDropped {
			continue
		}
		if ts.members[t.ID] != t.Root {
			ts.left = append(ts.left, t.ID)
		}
	}
	sortIDs(ts.joined)
	sortIDs(ts.left)
	return ts, nil
}

func sortIDs(ids []pgtypes.TableID) {
	sort.Slice(ids, func(i, j int) bool { return ids[i].String() < ids[j].String() })
}

// markLeft records that registered partitions left their tree on the source: they are copied
// again before anything more of them is followed. Recorded at once, because the user's fix
// (attach it again on the source, or detach it on the target too) makes the trees look
// unchanged, while the changes made to it in the meantime were never published.
func (s *session) markLeft(ctx context.Context, ts treeState) error {
	for _, id := range ts.left {
		t := ts.reg[id]
		if t.State == state.TablePending || t.State == state.TableCopying {
			continue
		}
		if _, err := s.dstPool.Exec(ctx, `UPDATE pgshift.tables SET state = 'pending' WHERE schema_name = $1 AND table_name = $2`,
			id.Schema, id.Name); err != nil {
			return s.target.Describe(fmt.Errorf("mark %s to be copied again: %w", id, err))
		}
		s.log.Warn("a migrated partition is no longer in its partition tree on the source: its changes are not published any more",
			"table", id.String(), "root", t.Root.String())
	}
	return nil
}

// watchTrees is the monitor's check: a registered partition that left its tree ends the session
// (errTreeChanged), after it has been marked to be copied again. On a source whose
// publications cannot name a partitioned table (12), a partition that joined a tree ends it
// too: its changes are never published until the next preflight adopts it (settleTrees).
// Under ddl: follow the stream settles both (see settleTrees); a table the applier registered
// for a copy of its own ends the session, so that the next preflight copies it.
func (s *session) watchTrees(ctx context.Context) error {
	ts, err := s.readTrees(ctx)
	if err != nil {
		return err
	}
	if s.followDDL {
		ts.joined, ts.left = nil, nil // see settleTrees
		var waiting []pgtypes.TableID
		for _, t := range ts.reg {
			if t.State == state.TablePending || t.State == state.TableCopying {
				waiting = append(waiting, t.ID)
			}
		}
		if len(waiting) > 0 {
			// Registered by the applier for a copy of their own (a table created on the
			// source that its capture could not publish at once): the next start copies them.
			sortIDs(waiting)
			return fmt.Errorf("%w: %s wait for a copy of their own", errTreeChanged, idList(waiting))
		}
	}
	if len(ts.joined) > 0 && !s.srcVer.PublishesPartitionedTables() {
		return fmt.Errorf("%w: %s joined a partition tree, and PostgreSQL %d publishes no partition added after the copy began",
			errTreeChanged, idList(ts.joined), s.srcVer.Major())
	}
	if len(ts.left) == 0 {
		return nil
	}
	if err := s.markLeft(ctx, ts); err != nil {
		return err
	}
	return fmt.Errorf("%w: %s left their partition tree", errTreeChanged, idList(ts.left))
}

func idList(ids []pgtypes.TableID) string {
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = id.String()
	}
	return strings.Join(names, ", ")
}

// publishLeaves makes a publication of an older migration, which published partitions through
// their root, publish them as themselves (see snapshot.CreatePublication for why). Every leaf
// of such a migration is registered with its tree's snapshot LSN, so changes arriving under
// either name are applied correctly. What cannot be repaired is what the old setting already
// lost: a TRUNCATE of a single partition committed before the switch was never published.
func (s *session) publishLeaves(ctx context.Context) error {
	viaRoot, ok, err := snapshot.PublishesViaRoot(ctx, s.srcPool, s.mig.Publication)
	if err != nil {
		return s.source.Describe(err)
	}
	if !ok || !viaRoot {
		return nil // a missing publication is reported by the server when streaming starts
	}
	all, err := catalog.Tables(ctx, s.srcPool, config.TableFilter{})
	if err != nil {
		return s.source.Describe(err)
	}
	// Changes committed before the switch still come through the roots, with the roots'
	// replica identity: say where that cannot work, so a failure to apply them is expected.
	for _, f := range assess.IdentityFindings(assess.TablesFromCatalog(assess.SelectTables(all, s.cfg.Filter())), true) {
		if f.Severity == assess.Blocker {
			s.log.Warn("changes of this partition committed before the publication switch below are published through its root and may fail to apply; if they do, start the migration over (pgshift copy --force)",
				"table", f.Object, "reason", f.Message)
		}
	}
	lsn, err := snapshot.PublishLeaves(ctx, s.srcPool, s.mig.Publication)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42501" {
		// Not this user's publication: keep following as before, and say what that misses.
		s.log.Warn("the migration's publication publishes partitions through their root, which never sends a TRUNCATE of a single partition (the target would keep its rows), and this user may not change it; following goes on as before",
			"publication", s.mig.Publication,
			"fix", fmt.Sprintf("as its owner or a superuser, on the source: ALTER PUBLICATION %s SET (publish_via_partition_root = false); then restart pgshift run, and run pgshift verify once caught up", pgtypes.QuoteIdent(s.mig.Publication)))
		return nil
	}
	if err != nil {
		return s.source.Describe(err)
	}
	s.log.Warn("the migration's publication published partitions through their root, which never sends a TRUNCATE of a single partition: it now publishes them as themselves (publish_via_partition_root = false). "+
		"A TRUNCATE of one partition committed before the switch was not published: run pgshift verify once caught up",
		"publication", s.mig.Publication, "switched_at", lsn.String())
	return nil
}

// adoptee is a table to copy again (or for the first time) in a new snapshot.
type adoptee struct {
	id      pgtypes.TableID
	root    pgtypes.TableID
	kind    byte
	publish bool // not published through a migrated root: add it to the publication itself
}

// settleTrees is the preflight's part: it settles every change of the migrated partition trees
// that the target already mirrors, and refuses to follow while one it does not mirror would
// lose changes. A partition that joined a tree on the source only is left for now: nothing of
// it has been published if it has no changes yet, and its first change stops the stream.
func (s *session) settleTrees(ctx context.Context) error {
	ts, err := s.readTrees(ctx)
	if err != nil {
		return err
	}
	if s.followDDL {
		// A partition created (CREATE TABLE ... PARTITION OF) or attached on the source after
		// the target's position is in the stream ahead: the applier creates or attaches and
		// registers it when it gets there (apply/newtable.go, apply/partition.go). Adopting it
		// here would copy rows the stream then applies again. Likewise a partition detached
		// (or dropped) there: the capture kept it published in the DETACH's transaction, or
		// the applier marks it to be copied again when it replays the DETACH, with the
		// target's tree then the same.
		ts.joined, ts.left = nil, nil
	}
	if err := s.markLeft(ctx, ts); err != nil {
		return err
	}
	cands := append([]pgtypes.TableID(nil), ts.joined...)
	for _, t := range ts.reg {
		if (t.State == state.TablePending || t.State == state.TableCopying) && !containsID(ts.joined, t.ID) {
			cands = append(cands, t.ID)
		}
	}
	if len(cands) == 0 {
		return nil
	}
	sortIDs(cands)
	src, err := describeRels(ctx, s.srcPool, s.srcVer, cands)
	if err != nil {
		return s.source.Describe(err)
	}
	dst, err := describeRels(ctx, s.dstPool, s.dstVer, cands)
	if err != nil {
		return s.target.Describe(err)
	}
	var adopt []adoptee
	var problems []string
	for _, id := range cands {
		si, di := src[id], dst[id]
		_, registered := ts.reg[id]
		joined := containsID(ts.joined, id)
		switch {
		case !si.exists && !di.exists:
			// Dropped on both sides: nothing left to copy or follow.
			lsn, err := s.sourceLSN(ctx)
			if err != nil {
				return err
			}
			if err := state.RetireTable(ctx, s.dstPool, id, lsn); err != nil {
				return s.target.Describe(err)
			}
			s.log.Warn("a migrated partition was dropped on the source and the target: no longer followed; its changes still in the slot are skipped",
				"table", id.String(), "from", lsn.String())
		case !si.exists:
			problems = append(problems, fmt.Sprintf("%s was dropped on the source during the migration, but the target still has it: drop it on the target too (DROP TABLE %s;), then run pgshift run again",
				id, id.Sanitize()))
		case mirrored(si, di):
			// On 12 the publication names leaves, not roots (snapshot.PublicationTables): a new
			// leaf is published only once added.
			a := adoptee{id: id, root: si.root, kind: si.kind, publish: si.kind == catalog.KindTable && !s.srcVer.PublishesPartitionedTables()}
			if _, migratedRoot := ts.reg[si.root]; si.root == id || !migratedRoot {
				if si.root != id {
					problems = append(problems, fmt.Sprintf("%s is now a partition of %s, which is not part of the migration, so its changes are not published: detach it on the source, or start the migration over with that table included (pgshift copy --force)",
						id, si.parent))
					continue
				}
				a.publish = true
			}
			adopt = append(adopt, a)
		case joined && !di.exists && !s.srcVer.PublishesPartitionedTables():
			// On 12 no change of it is ever published before pgshift adds it to the
			// publication, so waiting for one would follow on while the target misses its rows.
			problems = append(problems, fmt.Sprintf("%s was created or attached as a partition of %s on the source after the copy began; the source runs PostgreSQL %d, whose publications hold leaf partitions only, so none of its changes are published until pgshift adds it. "+
				"Fix: %s then run pgshift run again: pgshift adds it to the publication, copies its rows in a new snapshot and follows it from there",
				id, si.parent, s.srcVer.Major(), createHint(id, si)))
		case joined && !di.exists:
			// Waits for its first change, which stops the stream; see notMigrated.
			s.log.Warn("a partition was created or attached on the source after the copy began and does not exist on the target: following stops at its first change",
				"table", id.String(), "parent", si.parent.String(), "fix", createHint(id, si))
		case !registered || joined:
			problems = append(problems, fmt.Sprintf("%s joined partition tree %s on the source after the copy began, but the target's %s is not the same partition: %s, then run pgshift run again",
				id, si.root, id, createHint(id, si)))
		default:
			problems = append(problems, leftProblem(id, ts.reg[id], si, di))
		}
	}
	if len(problems) > 0 {
		return fatalf("the migrated partition trees differ between the source and the target, so following now would lose changes:\n  %s",
			strings.Join(problems, "\n  "))
	}
	if len(adopt) == 0 {
		return nil
	}
	return s.adopt(ctx, adopt)
}

// mirrored reports whether the target has the relation in the same place as the source: a
// partition of the same parent with the same bounds, or a table of its own on both sides.
func mirrored(si, di relInfo) bool {
	if !si.exists || !di.exists || si.kind != di.kind {
		return false
	}
	return si.parent == di.parent && si.bound == di.bound
}

func createHint(id pgtypes.TableID, si relInfo) string {
	if si.parent.Name == "" {
		return "create it on the target as on the source (it is not a partition there)"
	}
	ddl := fmt.Sprintf("CREATE TABLE %s PARTITION OF %s %s", id.Sanitize(), si.parent.Sanitize(), si.bound)
	if si.partKey != "" {
		ddl += " PARTITION BY " + si.partKey
	}
	return "create it on the target: " + ddl + ";"
}

func leftProblem(id pgtypes.TableID, t state.TableProgress, si, di relInfo) string {
	where := "is no longer a partition"
	if si.parent.Name != "" {
		where = "is now a partition of " + si.parent.String()
	}
	attach := fmt.Sprintf("attach it again on the source (ALTER TABLE %s ATTACH PARTITION %s FOR VALUES ...;)", t.Root.Sanitize(), id.Sanitize())
	if di.exists && di.parent.Name != "" {
		return fmt.Sprintf("%s was detached from its partition tree %s on the source and %s, so its changes are no longer published (the target still has it as a partition of %s). Either %s, or detach it on the target in the same way (ALTER TABLE %s DETACH PARTITION %s;); then run pgshift run again: it is copied again in a new snapshot and followed from there",
			id, t.Root, where, di.parent, attach, di.parent.Sanitize(), id.Sanitize())
	}
	return fmt.Sprintf("%s left its partition tree %s on the source and %s, and the target does not have it in the same place: either %s, or make the target the same; then run pgshift run again: it is copied again in a new snapshot and followed from there",
		id, t.Root, where, attach)
}

func containsID(ids []pgtypes.TableID, id pgtypes.TableID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func (s *session) sourceLSN(ctx context.Context) (pgtypes.LSN, error) {
	var lsn string
	if err := s.srcPool.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		return 0, s.source.Describe(fmt.Errorf("read the source's WAL position: %w", err))
	}
	return pgtypes.ParseLSN(lsn)
}

// adopt copies tables from scratch in a new snapshot and registers them at its consistent
// point, like a resumed copy does for unfinished tables (see Copy): in one target transaction
// the data tables are truncated and their rows set to pending at C3; then the rows are copied
// in the snapshot, each chunk committed with its record. A kill at any point leaves them
// pending, and the next start adopts them again.
func (s *session) adopt(ctx context.Context, adopt []adoptee) error {
	var publish []pgtypes.TableID
	for _, a := range adopt {
		if a.publish {
			publish = append(publish, a.id)
		}
	}
	all, err := catalog.Tables(ctx, s.srcPool, config.TableFilter{})
	if err != nil {
		return s.source.Describe(err)
	}
	defs := map[pgtypes.TableID]catalog.Table{}
	for _, t := range all {
		defs[t.ID] = t
	}
	if len(publish) > 0 {
		// A table of its own is published by name; one without a usable identity would make the
		// application's UPDATEs fail on the source from then on.
		var tabs []catalog.Table
		for _, id := range publish {
			tabs = append(tabs, defs[id])
		}
		for _, f := range assess.IdentityFindings(assess.TablesFromCatalog(tabs), false) {
			if f.Severity == assess.Blocker {
				return fatalf("%s must be added to the publication to follow it, but: %s; fix: %s", f.Object, f.Message, f.Fix)
			}
		}
		published, err := publishedTables(ctx, s, publish)
		if err != nil {
			return err
		}
		if !s.srcVer.TruncateReplicated() {
			// Before they are published: no TRUNCATE of them may escape the capture.
			if err := state.CaptureTruncates(ctx, s.srcPool, publish); err != nil {
				return s.source.Describe(err)
			}
		}
		for _, id := range publish {
			if published[id] {
				continue
			}
			if _, err := s.srcPool.Exec(ctx, "ALTER PUBLICATION "+pgtypes.QuoteIdent(s.mig.Publication)+" ADD TABLE "+id.Sanitize()); err != nil {
				return s.source.Describe(fmt.Errorf("add %s to publication %s: %w", id, s.mig.Publication, err))
			}
		}
	}
	conn, err := s.source.Replication(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	// Created after the publication change: every change from its consistent point on is published.
	tmp := fmt.Sprintf("%s_a%d", s.mig.Slot, time.Now().Unix())
	if len(tmp) > 63 {
		tmp = fmt.Sprintf("pgshift_a%d", time.Now().UnixNano())
	}
	slot, err := snapshot.CreateSlot(ctx, conn, tmp, true)
	if err != nil {
		return s.source.Describe(err)
	}
	lsn := slot.ConsistentLSN
	var rows []state.TableProgress
	var data []*catalog.Table
	var names []string
	var ids []pgtypes.TableID
	for _, a := range adopt {
		kind := state.KindPartitioned
		if a.kind == catalog.KindTable {
			kind = state.KindData
			def, ok := defs[a.id]
			if !ok {
				return fmt.Errorf("table %s vanished from the source while it was being adopted; run pgshift run again", a.id)
			}
			data = append(data, &def)
			names = append(names, a.id.Sanitize())
			ids = append(ids, a.id)
		}
		rows = append(rows, state.TableProgress{ID: a.id, Root: a.root, Kind: kind})
	}
	tx, err := s.dstPool.Begin(ctx)
	if err != nil {
		return s.target.Describe(err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	if len(names) > 0 {
		if _, err := tx.Exec(ctx, pgtypes.TruncateOnly(ids)); err != nil {
			return s.target.Describe(fmt.Errorf("truncate %s on the target before copying: %w", strings.Join(names, ", "), err))
		}
	}
	if err := state.AdoptTables(ctx, tx, rows, lsn); err != nil {
		return s.target.Describe(err)
	}
	if err := tx.Commit(ctx); err != nil {
		return s.target.Describe(err)
	}
	s.log.Warn("copying partitions that changed their place on the source, in a new snapshot; follow applies their changes from its LSN on",
		"tables", idList(idsOf(adopt)), "snapshot_lsn", lsn.String())
	srcInfo, err := catalog.Server(ctx, s.srcPool)
	if err != nil {
		return s.source.Describe(err)
	}
	dstInfo, err := catalog.Server(ctx, s.dstPool)
	if err != nil {
		return s.target.Describe(err)
	}
	items := snapshot.Plan(data, snapshot.PlanOptions{Jobs: s.cfg.Jobs, Whole: !s.srcVer.HasTIDRangeScan()})
	tracker := progress.New(progress.Options{Title: "adopt", Interval: time.Hour}) // counts only
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		_, err := snapshot.Copy(gctx, s.source, s.target, items, snapshot.CopyOptions{
			Jobs: max(s.cfg.Jobs, 1), Snapshot: slot.SnapshotName, Binary: srcInfo.VersionNum/10000 == dstInfo.VersionNum/10000,
			Retries: 2, Tracker: tracker, Log: s.log,
		})
		return err
	})
	if err := g.Wait(); err != nil {
		return err
	}
	if err := state.FinishPartitioned(ctx, s.dstPool); err != nil {
		return s.target.Describe(err)
	}
	return nil
}

func idsOf(adopt []adoptee) []pgtypes.TableID {
	out := make([]pgtypes.TableID, len(adopt))
	for i, a := range adopt {
		out[i] = a.id
	}
	return out
}

func publishedTables(ctx context.Context, s *session, ids []pgtypes.TableID) (map[pgtypes.TableID]bool, error) {
	schemas, names := splitIDs(ids)
	rows, err := s.srcPool.Query(ctx, `SELECT schemaname, tablename FROM pg_publication_tables
		WHERE pubname = $1::text AND (schemaname, tablename) IN (SELECT * FROM unnest($2::text[], $3::text[]))`,
		s.mig.Publication, schemas, names)
	if err != nil {
		return nil, s.source.Describe(fmt.Errorf("read publication %s: %w", s.mig.Publication, err))
	}
	defer rows.Close()
	out := map[pgtypes.TableID]bool{}
	for rows.Next() {
		var id pgtypes.TableID
		if err := rows.Scan(&id.Schema, &id.Name); err != nil {
			return nil, s.source.Describe(fmt.Errorf("read publication %s: %w", s.mig.Publication, err))
		}
		out[id] = true
	}
	return out, rows.Err()
}

// notMigrated explains a stream stopped by a change of a table that is not part of the
// migration. When the target already has that table where the source has it, the next attempt
// adopts it (errTreeChanged, retried); otherwise following stops with the fix.
func (s *session) notMigrated(ctx context.Context, nm *cdc.NotMigratedError) error {
	info, err := describeRels(ctx, s.srcPool, s.srcVer, []pgtypes.TableID{nm.Table})
	if err != nil {
		return s.source.Describe(err)
	}
	dinfo, err := describeRels(ctx, s.dstPool, s.dstVer, []pgtypes.TableID{nm.Table})
	if err != nil {
		return s.target.Describe(err)
	}
	si, di := info[nm.Table], dinfo[nm.Table]
	if si.exists && si.parent.Name != "" {
		if mirrored(si, di) {
			return fmt.Errorf("%w: %s joined partition tree %s", errTreeChanged, nm.Table, si.root)
		}
		return fatalf("the source changed %s (transaction committed at %s), a partition of %s created or attached after the copy began; it is not on the target, so pgshift cannot follow it yet, and nothing of that transaction was applied. "+
			"Fix: %s then run pgshift run again: pgshift copies its rows in a new snapshot and follows it from there",
			nm.Table, nm.CommitLSN, si.parent, createHint(nm.Table, si))
	}
	return fatalf("the source changed %s (transaction committed at %s), which the publication %s sends but which is not part of this migration (was it renamed on the source, or added to the publication by hand?); nothing of that transaction was applied. "+
		"Undo the rename on the source, or remove it from the publication (ALTER PUBLICATION %s DROP TABLE %s;), or start the migration over with it included (pgshift copy --force)",
		nm.Table, nm.CommitLSN, s.mig.Publication, pgtypes.QuoteIdent(s.mig.Publication), nm.Table.Sanitize())
}
