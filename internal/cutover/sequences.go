package cutover

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/assess"
	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/snapshot"
)

// syncSequences sets every sequence that exists on both sides (and passes f) on to from the
// state it has on from: last_value moved by margin in the sequence's direction (clamped to its
// bounds), is_called kept, so the next value handed out on to is never one from already gave
// (with margin 0, exactly the next one). It returns how many it set.
func syncSequences(ctx context.Context, from, to *pgx.Conn, f config.TableFilter, margin int64) (int, error) {
	seqs, err := catalog.Sequences(ctx, from, f)
	if err != nil {
		return 0, err
	}
	onTo, err := catalog.SequenceList(ctx, to, config.TableFilter{})
	if err != nil {
		return 0, err
	}
	have := map[pgtypes.TableID]bool{}
	for _, s := range onTo {
		have[s.ID] = true
	}
	n := 0
	for _, s := range seqs {
		if !have[s.ID] {
			continue
		}
		// setval's bounds are the sequence's own on to: the margin is added there, in one
		// statement, so it never leaves them.
		_, err := to.Exec(ctx, `SELECT pg_catalog.setval(s.oid, CASE WHEN q.seqincrement > 0
				THEN least($2::int8 + $4::int8, q.seqmax) ELSE greatest($2::int8 - $4::int8, q.seqmin) END, $3::bool)
			FROM (SELECT $1::text::pg_catalog.regclass AS oid) s JOIN pg_catalog.pg_sequence q ON q.seqrelid = s.oid`,
			s.ID.Sanitize(), s.LastValue, s.IsCalled, max(margin, 0))
		if err != nil {
			return n, fmt.Errorf("set sequence %s to %d (+%d, is_called %t): %w", s.ID, s.LastValue, margin, s.IsCalled, err)
		}
		n++
	}
	return n, nil
}

// matViewCounts is what one refresh pass did.
type matViewCounts struct{ refreshed, after, skipped int }

// refreshMatViews refreshes on the target the populated materialized views whose
// cutover.matviews rule says when (pause or after); it counts the others. After the switch a
// view with a unique index on plain columns is refreshed CONCURRENTLY, so the application's
// readers are not blocked.
func refreshMatViews(ctx context.Context, conn *pgx.Conn, cs config.CutoverSettings, when string) (matViewCounts, error) {
	var n matViewCounts
	rows, err := conn.Query(ctx, `SELECT n.nspname, c.relname, EXISTS (SELECT 1 FROM pg_catalog.pg_index i
			WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL)
		FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind = 'm' AND c.relispopulated AND n.nspname NOT IN ('pgshift', 'pg_catalog', 'information_schema') ORDER BY 1, 2`)
	if err != nil {
		return n, fmt.Errorf("list materialized views on the target: %w", err)
	}
	type view struct {
		id     pgtypes.TableID
		unique bool
	}
	views, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (view, error) {
		var v view
		err := r.Scan(&v.id.Schema, &v.id.Name, &v.unique)
		return v, err
	})
	if err != nil {
		return n, fmt.Errorf("list materialized views on the target: %w", err)
	}
	for _, v := range views {
		switch rule := cs.MatViewRefresh(v.id.Schema, v.id.Name); {
		case rule == "skip":
			n.skipped++
			continue
		case rule != when:
			n.after++
			continue
		}
		sql := "REFRESH MATERIALIZED VIEW " + v.id.Sanitize()
		if when == "after" && v.unique {
			sql = "REFRESH MATERIALIZED VIEW CONCURRENTLY " + v.id.Sanitize()
		}
		if _, err := conn.Exec(ctx, sql); err != nil {
			return n, fmt.Errorf("refresh materialized view %s on the target: %w", v.id, err)
		}
		n.refreshed++
	}
	return n, nil
}

// syncUnfollowed brings over, during the pause, what logical decoding does not carry, from
// the side traffic leaves to the side it goes to: large objects (created, changed and removed
// since the copy or the last switch, compared by size and hash; idempotent) and, with
// recopy_unlogged, the unlogged tables, copied again whole. fromConn and toConn are open
// sessions to from and to (to's writable), used for the large objects rather than new logins.
// It returns what it did, for the step's detail.
func (e *Engine) syncUnfollowed(ctx context.Context, from, to db.Endpoint, fromConn, toConn *pgx.Conn) (string, error) {
	cfg := e.d.Config
	lo, err := snapshot.SyncLargeObjects(ctx, from, to,
		snapshot.LargeObjectOptions{NoOwner: cfg.NoOwner, NoPrivileges: cfg.NoPrivileges, Log: e.d.Log, SourceConn: fromConn, TargetConn: toConn})
	if err != nil {
		return "", fmt.Errorf("sync large objects: %w", err)
	}
	detail := fmt.Sprintf("; large objects: %d copied, %d updated, %d removed", lo.Copied, lo.Updated, lo.Removed)
	if !cfg.RecopyUnlogged {
		return detail, nil
	}
	all, err := catalog.Tables(ctx, fromConn, config.TableFilter{})
	if err != nil {
		return "", from.Describe(err)
	}
	fv, err := catalog.Server(ctx, fromConn)
	if err != nil {
		return "", from.Describe(err)
	}
	tv, err := catalog.Server(ctx, toConn)
	if err != nil {
		return "", to.Describe(err)
	}
	rr, err := snapshot.RecopyUnlogged(ctx, from, to, assess.SelectTables(all, cfg.Filter()), fv.VersionNum/10000 == tv.VersionNum/10000)
	if err != nil {
		return "", fmt.Errorf("copy unlogged tables again: %w", err)
	}
	return detail + fmt.Sprintf("; %d unlogged tables copied again (%d rows in %s)", rr.Tables, rr.Rows, rr.Took.Round(time.Millisecond)), nil
}

// writableSource is the source for pgshift's own writes during a rollback: a fenced source
// (cutover.fence_source) starts sessions read-only.
func (e *Engine) writableSource() db.Endpoint {
	ep := e.source()
	ep.Session = func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, "SET default_transaction_read_only = off")
		return err
	}
	return ep
}
