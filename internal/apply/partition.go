package apply

// Partitions attached or detached on the source while following (ddl: follow). The statement
// replays in the target transaction of its source transaction, like every captured one; what
// the applier adds is the migration's table list, kept as the source's capture recorded what
// became of the partition's rows (state.CaptureDDL's partition_moves), so that none is lost or
// applied twice:
//
//   - ATTACH of a table the migration has (copied, or created during follow and streamed): its
//     rows are on the target already and its changes keep arriving under its own name (on 13+
//     also through the root's membership, but pgoutput sends each change once), so it keeps
//     its state and snapshot_lsn; only its root changes.
//   - ATTACH of a table the migration does not have (left out, or outside it from the start):
//     its rows are not on the target. The target must have the table itself (the applier does
//     not invent its definition): if it does not, the statement is refused with the fix. Else
//     it is registered pending at the commit LSN and copied in a snapshot of its own (follow's
//     adopt, which also publishes it before 13, when no publication can name its root).
//   - DETACH: the table becomes a root of its own. If it stays published (the publication
//     names it, or on 13+ the capture added it in the DETACH's own transaction), it keeps its
//     state and snapshot_lsn; otherwise its later changes were not published, and it is copied
//     again in a snapshot of its own.

import (
	"context"
	"fmt"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/sqlparse"
	"github.com/pgshift/pgshift/internal/state"
)

// What the capture recorded for a detached partition that stays published (besides
// publishAdded and publishPartitioned).
const publishMember = "member"

// attachable refuses an ATTACH PARTITION whose partition the target does not have.
func (a *Applier) attachable(ctx context.Context, d *cdc.DDL, st sqlparse.DDL) error {
	found, err := a.resolveTables(ctx, []sqlparse.Name{*st.Attaches})
	if err != nil {
		return fmt.Errorf("schema change %d: %w", d.ID, err)
	}
	if len(found) > 0 {
		return nil
	}
	return &ErrDDL{ID: d.ID, Command: d.Command,
		Msg: fmt.Sprintf("%s: the target has no table %s (it is not part of the migration), so the partition cannot be attached there", st.Kind, st.Attaches),
		Fix: fmt.Sprintf("create %s on the target as it is on the source, empty (pg_dump --schema-only --table %s of the source), and pgshift replays the ATTACH and copies its rows in a snapshot of its own",
			st.Attaches, st.Attaches)}
}

// movePartition keeps the migration's table list in step after st attached or detached a
// partition on the target (see the top of this file), and returns partition:outcome for the
// audit log.
func (a *Applier) movePartition(ctx context.Context, d *cdc.DDL, st sqlparse.DDL) (string, error) {
	name, attach := st.Detaches, false
	if st.Attaches != nil {
		name, attach = st.Attaches, true
	}
	ids, err := a.resolveTables(ctx, []sqlparse.Name{*name})
	if err != nil {
		return "", fmt.Errorf("schema change %d: %w", d.ID, err)
	}
	if len(ids) != 1 {
		return "", &ErrDDL{ID: d.ID, Command: d.Command, Fix: fixDDLByHand, Msg: fmt.Sprintf("%s: no table %s on the target after it ran", st.Kind, name)}
	}
	id := ids[0]
	if err := state.ReRootTree(ctx, a.tx, id); err != nil {
		return "", err
	}
	members, err := a.treeMembers(ctx, id)
	if err != nil {
		return "", fmt.Errorf("schema change %d: %w", d.ID, err)
	}
	var identity string
	if err := a.tx.QueryRow(ctx, `SELECT pg_catalog.format('%I.%I', $1::text, $2::text)`, id.Schema, id.Name).Scan(&identity); err != nil {
		return "", fmt.Errorf("schema change %d: %w", d.ID, err)
	}
	publish := ""
	for _, o := range d.Objects {
		if o.Class == "pg_class" && o.Identity == identity && o.Partition != "" {
			publish = o.Publish
		}
	}
	outcome := "kept"
	for _, m := range members {
		cur, ok, err := state.TableState(ctx, a.tx, m.ID)
		if err != nil {
			return "", err
		}
		registered := ok && cur != state.TableDropped
		switch {
		case attach && !registered:
			// Its rows are not on the target: copied in a snapshot of its own.
			if err := state.RegisterNewTable(ctx, a.tx, m, false, a.cur.CommitLSN); err != nil {
				return "", err
			}
			a.awaitCopy(m.ID)
			outcome = state.TablePending
		case !attach && registered && m.Kind == state.KindData && publish != publishMember && publish != publishAdded && publish != publishPartitioned:
			// Its changes after the DETACH were not published.
			if err := state.RecopyTable(ctx, a.tx, m.ID, a.cur.CommitLSN); err != nil {
				return "", err
			}
			a.awaitCopy(m.ID)
			outcome = state.TablePending
		}
	}
	if outcome == state.TablePending {
		why := "it was not part of the migration: its rows are not on the target"
		if !attach {
			why = fmt.Sprintf("the source's capture did not keep it published (%q)", publish)
		}
		a.log.Warn("a partition attached or detached on the source is copied in a snapshot of its own, and the follow session restarts for it",
			"table", id.String(), "ddl_id", d.ID, "statement", st.Kind, "why", why)
	} else {
		a.log.Info("a partition attached or detached on the source keeps being followed", "table", id.String(), "ddl_id", d.ID, "statement", st.Kind, "publish", publish)
	}
	return id.String() + ":" + outcome, nil
}

// treeMembers are id and, when it is partitioned, its partitions on the target, as the
// migration registers them (the target is 12 or newer).
func (a *Applier) treeMembers(ctx context.Context, id pgtypes.TableID) ([]state.TableProgress, error) {
	rows, err := a.tx.Query(ctx, `SELECT n.nspname::text, c.relname::text, c.relkind::text, rn.nspname::text, rc.relname::text
		FROM (SELECT r.id AS relid, 0 AS level FROM (SELECT pg_catalog.format('%I.%I', $1::text, $2::text)::regclass AS id) r
			UNION SELECT t.relid, t.level FROM pg_catalog.pg_partition_tree(pg_catalog.format('%I.%I', $1::text, $2::text)::regclass) t) p
		JOIN pg_catalog.pg_class c ON c.oid = p.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		JOIN pg_catalog.pg_class rc ON rc.oid = coalesce(pg_catalog.pg_partition_root(p.relid), p.relid)
		JOIN pg_catalog.pg_namespace rn ON rn.oid = rc.relnamespace ORDER BY p.level, c.relname`, id.Schema, id.Name)
	if err != nil {
		return nil, fmt.Errorf("read the partitions of %s on the target: %w", id, err)
	}
	defer rows.Close()
	var out []state.TableProgress
	for rows.Next() {
		t := state.TableProgress{Kind: state.KindData}
		var kind string
		if err := rows.Scan(&t.ID.Schema, &t.ID.Name, &kind, &t.Root.Schema, &t.Root.Name); err != nil {
			return nil, fmt.Errorf("read the partitions of %s on the target: %w", id, err)
		}
		if kind == "p" {
			t.Kind = state.KindPartitioned
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read the partitions of %s on the target: %w", id, err)
	}
	return out, nil
}
