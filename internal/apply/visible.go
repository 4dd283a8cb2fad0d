package apply

// Catalog reads at the stream's position. When a relation changes, the applier reads the
// table's columns from the source's catalog (attnums, defaults, nullability) to prove what
// changed. The walsender decodes a transaction once its commit record is flushed, which is
// before the committing backend leaves the proc array: for a moment (longer with a synchronous
// standby, which the commit waits for in between) another session still sees the catalog as it
// was before that transaction. Read then, a column dropped and added again in that very
// transaction still has its old attnum, and the change goes unnoticed. So before such a read
// the applier waits until the transaction it is applying is visible to a new snapshot on the
// source.

import (
	"context"
	"fmt"
	"time"

	"github.com/pgshift/pgshift/internal/catalog"
)

// visibleWarn is how often a long wait is reported: a commit is visible microseconds after its
// record is flushed, unless a synchronous standby that does not confirm holds it, and then the
// source's own clients wait as well. pgshift waits with them, saying so, rather than read a
// catalog that may not be the one the transaction left.
const visibleWarn = 30 * time.Second

// awaitVisible waits until the transaction being applied is visible on the source (a no-op
// outside a transaction and for a transaction already waited for).
func (a *Applier) awaitVisible(ctx context.Context) error {
	if a.cur == nil || a.cur.Xid == 0 || a.visibleXid == a.cur.Xid {
		return nil
	}
	xid := a.cur.Xid
	v, err := a.sourceVersion(ctx)
	if err != nil {
		return err
	}
	sql := visibleSQL(v)
	start, warned := time.Now(), time.Duration(0)
	pause := time.Millisecond
	for {
		var ok bool
		if err := a.source.QueryRow(ctx, sql, int64(xid)).Scan(&ok); err != nil {
			return fmt.Errorf("check that transaction %d is visible on the source: %w", xid, err)
		}
		if ok {
			a.visibleXid = xid
			return nil
		}
		if waited := time.Since(start); waited-warned >= visibleWarn {
			warned = waited
			a.log.Warn("a transaction the source sent is not visible there yet; waiting before reading its catalog (a synchronous standby that does not confirm?)",
				"xid", xid, "waited", waited.Round(time.Second).String())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		pause = min(2*pause, 50*time.Millisecond)
	}
}

// visibleSQL tells whether the 32-bit transaction id $1 is no longer in progress for a new
// snapshot, extending it to 64 bits with the epoch of the snapshot's next id (the previous
// epoch when it is above that id's low half; an id above it in the first epoch is no
// transaction of this server's, and nothing to wait for).
func visibleSQL(v catalog.Version) string {
	xmax, visible, cast := `pg_catalog.pg_snapshot_xmax(s)::text::bigint`, `pg_catalog.pg_visible_in_snapshot`, `::text::xid8`
	snap := `pg_catalog.pg_current_snapshot()`
	if v < 130000 {
		xmax, visible, cast = `pg_catalog.txid_snapshot_xmax(s)`, `pg_catalog.txid_visible_in_snapshot`, ``
		snap = `pg_catalog.txid_current_snapshot()`
	}
	return fmt.Sprintf(`SELECT CASE WHEN f < 0 THEN true ELSE %[2]s(f%[3]s, s) END
		FROM (SELECT s, ((((%[1]s >> 32) - CASE WHEN $1::bigint > (%[1]s & 4294967295) THEN 1 ELSE 0 END) << 32) | $1::bigint) AS f
			FROM (SELECT %[4]s AS s) x) y`, xmax, visible, cast, snap)
}
