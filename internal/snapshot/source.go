// Package snapshot copies table data from the source to the target in ONE consistent
// snapshot: the one exported by the logical replication slot the follow phase streams from, so
// every change committed before the slot's consistent point is in the copy and every change
// after it is in the slot — none lost, none doubled.
//
// It creates the publication and the slot, plans the copy (big tables split into ctid ranges
// so several workers copy them at once, small tables packed together), and streams COPY TO
// STDOUT on the source straight into COPY FROM STDIN on the target through a bounded pipe per
// worker: no intermediate files, memory independent of table size.
package snapshot

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// DefaultName is the default slot and publication name for a source database: pgshift_ and
// the database name reduced to what slot names allow (lower-case letters, digits, underscore),
// at most 63 bytes.
func DefaultName(database string) string {
	var b strings.Builder
	b.WriteString("pgshift_")
	for _, r := range strings.ToLower(database) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '_':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	s := b.String()
	if len(s) > 63 {
		s = s[:63]
	}
	return s
}

var slotNameRE = regexp.MustCompile(`^[a-z0-9_]{1,63}$`)

// ValidSlotName reports whether name is a legal replication slot name.
func ValidSlotName(name string) error {
	if !slotNameRE.MatchString(name) {
		return fmt.Errorf("replication slot name %q is invalid: use 1-63 lower-case letters, digits and underscores", name)
	}
	return nil
}

// PublicationTables returns the tables to name in the publication of a source of version v:
// every migrated table that can be followed. From 13 on a partition tree is named by its root
// only: a publication that names a partitioned table publishes all its partitions, present and
// future, and with publish_via_partition_root off (see CreatePublication) their changes arrive
// under the leaf partitions' own names. On 12, which cannot publish a partitioned table, every
// leaf partition is named instead: their changes arrive the same way, but a partition created
// later is in no publication until pgshift adds it (the follow session stops to adopt it).
// Unlogged tables are not WAL-logged and cannot be published; foreign tables and materialized
// views hold no local rows to follow.
func PublicationTables(tables []catalog.Table, v catalog.Version) []pgtypes.TableID {
	var out []pgtypes.TableID
	for _, t := range tables {
		if t.Persistence == 'u' {
			continue
		}
		switch {
		case v.PublishesPartitionedTables() && !t.IsPartition && (t.Kind == catalog.KindTable || t.Kind == catalog.KindPartitioned):
			out = append(out, t.ID)
		case !v.PublishesPartitionedTables() && t.Kind == catalog.KindTable:
			out = append(out, t.ID)
		}
	}
	return out
}

// PublicationExists reports whether the source has a publication of that name.
func PublicationExists(ctx context.Context, q catalog.Querier, name string) (bool, error) {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, name).Scan(&ok); err != nil {
		return false, fmt.Errorf("look up publication %s on the source: %w", name, err)
	}
	return ok, nil
}

// CreatePublication creates the publication FOR TABLE the given tables WITH
// (publish_via_partition_root = false) on a source of version v (12 lacks the option, and
// publishes leaves as themselves anyway). It must exist before the slot is created: a slot
// decodes with the publication as of each change's position, and pgoutput fails on changes
// decoded before the publication existed.
//
// Why not via the root: pgoutput then leaves every partition out of a TRUNCATE that names it
// (only a TRUNCATE of the root itself is sent), so the target would keep rows the source
// removed; and it describes a leaf's changes with the root's replica identity while the WAL
// carries the old row by the leaf's, so a root without a key (or with REPLICA IDENTITY FULL)
// over keyed leaves breaks on the first UPDATE. Published as themselves, leaves carry their own
// identity, a TRUNCATE lists exactly the leaves it emptied, and an UPDATE that moves a row to
// another partition arrives as a DELETE from one leaf and an INSERT into the other.
func CreatePublication(ctx context.Context, q catalog.Querier, name string, tables []pgtypes.TableID, v catalog.Version) error {
	sql := "CREATE PUBLICATION " + pgtypes.QuoteIdent(name)
	// An empty publication still lets the slot stream; tables can be added later.
	if len(tables) > 0 {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t.Sanitize()
		}
		sql += " FOR TABLE " + strings.Join(names, ", ")
	}
	if v.HasViaRoot() {
		sql += " WITH (publish_via_partition_root = false)"
	}
	if _, err := q.Exec(ctx, sql); err != nil {
		return fmt.Errorf("create publication %s on the source: %w", name, err)
	}
	return nil
}

// PublishesViaRoot reports whether the publication has publish_via_partition_root on, as
// migrations created by pgshift before it published partitions as themselves do; ok is false
// when there is no such publication. On 12, which has no such option (pubviaroot is read
// through to_jsonb, NULL where the column does not exist), it is always off.
func PublishesViaRoot(ctx context.Context, q catalog.Querier, name string) (viaRoot, ok bool, err error) {
	err = q.QueryRow(ctx, `SELECT coalesce((to_jsonb(p) ->> 'pubviaroot')::boolean, false) FROM pg_publication p WHERE pubname = $1`, name).Scan(&viaRoot)
	if errors.Is(err, pgx.ErrNoRows) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("read publication %s on the source: %w", name, err)
	}
	return viaRoot, true, nil
}

// PublishLeaves turns publish_via_partition_root off on an existing publication and returns the
// source's WAL position just after the change. Changes committed before it are still published
// through their roots (the slot decodes each change with the publication as it was then);
// later ones arrive under the leaves' names. Both describe the same rows, so a migration
// following the slot applies either correctly, as long as every leaf has the snapshot LSN of
// its tree.
func PublishLeaves(ctx context.Context, q catalog.Querier, name string) (pgtypes.LSN, error) {
	if _, err := q.Exec(ctx, "ALTER PUBLICATION "+pgtypes.QuoteIdent(name)+" SET (publish_via_partition_root = false)"); err != nil {
		return 0, fmt.Errorf("set publish_via_partition_root = false on publication %s on the source: %w", name, err)
	}
	var lsn string
	if err := q.QueryRow(ctx, `SELECT pg_current_wal_lsn()::text`).Scan(&lsn); err != nil {
		return 0, fmt.Errorf("read the source's WAL position: %w", err)
	}
	return pgtypes.ParseLSN(lsn)
}

// DropPublication drops the publication if it exists.
func DropPublication(ctx context.Context, q catalog.Querier, name string) error {
	if _, err := q.Exec(ctx, "DROP PUBLICATION IF EXISTS "+pgtypes.QuoteIdent(name)); err != nil {
		return fmt.Errorf("drop publication %s on the source: %w", name, err)
	}
	return nil
}

// Slot describes a slot just created with an exported snapshot.
type Slot struct {
	Name          string
	ConsistentLSN pgtypes.LSN // changes committed at or after this LSN are streamed; earlier ones are in the snapshot
	SnapshotName  string      // valid while the creating connection stays open and runs no other command
}

// CreateSlot creates a logical slot with the pgoutput plugin on a replication connection and
// exports its snapshot. The snapshot can be imported (SET TRANSACTION SNAPSHOT) only while
// conn stays open and idle: the caller must keep it so until every copy worker has imported
// it. A temporary slot disappears with conn; pgshift uses one on resume only to obtain a
// fresh snapshot and its consistent point.
func CreateSlot(ctx context.Context, conn *pgconn.PgConn, name string, temporary bool) (Slot, error) {
	if err := ValidSlotName(name); err != nil {
		return Slot{}, err
	}
	sql := "CREATE_REPLICATION_SLOT " + pgtypes.QuoteIdent(name)
	if temporary {
		sql += " TEMPORARY"
	}
	sql += " LOGICAL pgoutput EXPORT_SNAPSHOT"
	res, err := pglogrepl.ParseCreateReplicationSlot(conn.Exec(ctx, sql))
	if err != nil {
		return Slot{}, fmt.Errorf("create replication slot %s on the source: %w", name, err)
	}
	lsn, err := pgtypes.ParseLSN(res.ConsistentPoint)
	if err != nil {
		return Slot{}, fmt.Errorf("create replication slot %s: consistent point: %w", name, err)
	}
	if res.SnapshotName == "" {
		return Slot{}, fmt.Errorf("create replication slot %s: the server exported no snapshot", name)
	}
	return Slot{Name: name, ConsistentLSN: lsn, SnapshotName: res.SnapshotName}, nil
}

// SlotInfo is what the source says about an existing slot.
type SlotInfo struct {
	Exists     bool
	Plugin     string
	Database   string
	Active     bool
	WALStatus  string // reserved, extended, unreserved, lost; empty before PostgreSQL 13
	ConfirmLSN pgtypes.LSN
}

// LookupSlot reads a slot's state (catalog.Slot, which knows each version's columns).
func LookupSlot(ctx context.Context, q catalog.Querier, name string) (SlotInfo, error) {
	st, err := catalog.Slot(ctx, q, name)
	if err != nil {
		return SlotInfo{}, fmt.Errorf("look up replication slot %s on the source: %w", name, err)
	}
	return SlotInfo{Exists: st.Exists, Plugin: st.Plugin, Database: st.Database, Active: st.Active,
		WALStatus: st.WALStatus, ConfirmLSN: st.ConfirmedFlush}, nil
}

// DropSlot drops a slot if it exists (and is not in use).
func DropSlot(ctx context.Context, q catalog.Querier, name string) error {
	_, err := q.Exec(ctx, `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1`, name)
	if err != nil {
		return fmt.Errorf("drop replication slot %s on the source: %w", name, err)
	}
	return nil
}
