package catalog

import (
	"context"
	"fmt"
)

// Version is a server's version as server_version_num (150004 is 15.4; 100023 is 10.23). It is
// the one place that knows which PostgreSQL version has which feature: every check of a
// feature that depends on the version goes through one of its methods, so a new major or a
// changed rule is one edit here.
type Version int

// Major is the major version: 12 for 120022, 15 for 150004.
func (v Version) Major() int { return int(v) / 10000 }

func (v Version) String() string {
	if v < 100000 { // 9.6.24 is 90624: the major was two numbers then
		return fmt.Sprintf("%d.%d.%d", int(v)/10000, int(v)/100%100, int(v)%100)
	}
	return fmt.Sprintf("%d.%d", v.Major(), int(v)%10000)
}

// Supported ranges. Logical replication exists from 10; what pgshift reads that a later version
// added goes through the methods below (HasGeneratedColumns, HasPartitionFunctions, HasProKind,
// ...), so sources of 10 and 11 are read with the catalogs they have. Targets from 12.
const (
	MinSourceVersion Version = 100000
	MinTargetVersion Version = 120000
)

// ReadVersion reads the server's server_version_num, for a reader whose query depends on it.
func ReadVersion(ctx context.Context, q Querier) (Version, error) {
	var v int
	if err := q.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read server_version_num: %w", err)
	}
	return Version(v), nil
}

// CheckSource refuses a source pgshift cannot migrate from, saying what to do.
func (v Version) CheckSource() error {
	if v >= MinSourceVersion {
		return nil
	}
	return fmt.Errorf("the source runs PostgreSQL %s; pgshift migrates from PostgreSQL 10 or newer (logical replication, which it follows the source with, arrived in 10). "+
		"Upgrade the source in place first (pg_upgrade to 10 or newer), or move it with pg_dump and pg_restore during a write stop", v)
}

// TruncateReplicated: pgoutput sends TRUNCATE from 11 on (publish = 'truncate'); a 10 source
// silently leaves a TRUNCATE out of the stream, so pgshift captures it with triggers of its own
// there (state.CaptureTruncates).
func (v Version) TruncateReplicated() bool { return v >= 110000 }

// HasGeneratedColumns: GENERATED ALWAYS AS (...) STORED columns (pg_attribute.attgenerated),
// from 12.
func (v Version) HasGeneratedColumns() bool { return v >= 120000 }

// HasIncludeColumns: indexes with INCLUDE columns (pg_index.indnkeyatts), from 11. Before 11
// every column of an index is a key column (indnatts).
func (v Version) HasIncludeColumns() bool { return v >= 110000 }

// HasProKind: pg_proc.prokind (and procedures), from 11; before 11 pg_proc.proisagg and
// proiswindow say what prokind 'a' and 'w' say, and every other row is a function.
func (v Version) HasProKind() bool { return v >= 110000 }

// HasPartitionFunctions: pg_partition_tree, pg_partition_root and pg_partition_ancestors, from
// 12. Before 12 a partition tree is walked through pg_inherits (relispartition).
func (v Version) HasPartitionFunctions() bool { return v >= 120000 }

// HasMissingValues: pg_attribute.atthasmissing and attmissingval (a column added with a
// non-volatile default keeps it there instead of rewriting the table), from 11.
func (v Version) HasMissingValues() bool { return v >= 110000 }

// HasExtendedHash: the seeded 64-bit hash functions of the built-in types (hashint8extended,
// hashtextextended, ...), from 11.
func (v Version) HasExtendedHash() bool { return v >= 110000 }

// HasPlanCacheMode: the plan_cache_mode setting, from 12.
func (v Version) HasPlanCacheMode() bool { return v >= 120000 }

// HasShortestFloatOutput: with extra_float_digits > 0, real and double precision print the
// shortest text that reads back exactly (Ryu), from 12; before 12 all 9 or 17 digits, which
// read back exactly too, but are other text for the same value.
func (v Version) HasShortestFloatOutput() bool { return v >= 120000 }

// HasWALStatus: pg_replication_slots.wal_status and safe_wal_size, and the
// max_slot_wal_keep_size setting that can make a slot lose WAL, from 13. Before 13 a slot keeps
// all the WAL it needs for as long as it exists (the disk may fill; the slot is never lost).
func (v Version) HasWALStatus() bool { return v >= 130000 }

// HasViaRoot: publish_via_partition_root (pg_publication.pubviaroot), from 13.
func (v Version) HasViaRoot() bool { return v >= 130000 }

// PublishesPartitionedTables: a publication may name a partitioned table (and then publishes
// all its partitions, present and future) from 13. On 12 only leaf partitions can be added,
// one by one, and a partition created later is in no publication until it is added.
func (v Version) PublishesPartitionedTables() bool { return v >= 130000 }

// HasMessages: pgoutput's messages option (logical decoding messages sent to the client), from
// 14. Before 14 a heartbeat written with pg_logical_emit_message still moves the slot: pgoutput
// before 15 sends every transaction's BEGIN and COMMIT, also of a transaction with no
// published change, so the heartbeat's transaction arrives empty.
func (v Version) HasMessages() bool { return v >= 140000 }

// HasStreaming: pgoutput protocol 2 with streaming of in-progress transactions larger than
// logical_decoding_work_mem (logical_decoding_work_mem itself is 13+), from 14. Before 14 a
// large transaction arrives whole after its commit, and the server spills it to its own disk
// while decoding.
func (v Version) HasStreaming() bool { return v >= 140000 }

// HasParallelStreaming: pgoutput protocol 4, streaming = parallel, from 16. pgshift does not
// use it: the only difference on the wire is the abort LSN and time in Stream Abort, and
// pgshift applies a streamed transaction at its commit, in commit order, whatever the
// protocol, so protocol 4 gives it nothing.
func (v Version) HasParallelStreaming() bool { return v >= 160000 }

// ProtoVersion is the pgoutput protocol pgshift asks this server for: 2 with streaming from
// 14, else 1 (see HasParallelStreaming for why not 4).
func (v Version) ProtoVersion() int {
	if v.HasStreaming() {
		return 2
	}
	return 1
}

// HasTIDRangeScan: a scan of a ctid range (ctid >= a AND ctid < b) reads only those pages, from
// 14; before 14 it is a sequential scan of the whole table with a filter.
func (v Version) HasTIDRangeScan() bool { return v >= 140000 }

// HasStatWAL: the pg_stat_wal view (WAL written since the last reset), from 14.
func (v Version) HasStatWAL() bool { return v >= 140000 }

// HasPublicationNamespace: publications FOR TABLES IN SCHEMA (pg_publication_namespace), row
// filters (pg_publication_rel.prqual) and column lists (prattrs), from 15.
func (v Version) HasPublicationNamespace() bool { return v >= 150000 }

// HasRowFilters: publication row filters and column lists, from 15 (see HasPublicationNamespace).
func (v Version) HasRowFilters() bool { return v >= 150000 }

// SkipsEmptyTransactions: pgoutput leaves out transactions with no published change, from 15.
func (v Version) SkipsEmptyTransactions() bool { return v >= 150000 }

// HasOriginNone: a subscription or pgoutput client can ask for origin = none (only changes
// that did not come from replication), from 16. Reverse replication after cutover (target →
// source) needs it on the new server to not echo back what pgshift applied there; on an older
// new server the applier must filter by replication origin itself.
func (v Version) HasOriginNone() bool { return v >= 160000 }

// HasFailoverSlots: logical slots synchronised to physical standbys (failover = true,
// pg_replication_slots.failover), from 17: a slot that survives a failover of the source.
func (v Version) HasFailoverSlots() bool { return v >= 170000 }

// HasProtocol32: the wire protocol 3.2 (longer cancel keys), from 18.
func (v Version) HasProtocol32() bool { return v >= 180000 }

// PartitionRootSQL is an SQL expression for the root of the partition tree that the relation
// whose OID is the expression rel belongs to, NULL when it is no partition (a root or a table
// outside any tree): pg_partition_root from 12, a walk up pg_inherits before.
func (v Version) PartitionRootSQL(rel string) string {
	if v.HasPartitionFunctions() {
		return "pg_partition_root(" + rel + ")"
	}
	return `(WITH RECURSIVE up(relid, depth) AS (
   SELECT i.inhparent, 1 FROM pg_inherits i JOIN pg_class ch ON ch.oid = i.inhrelid
   WHERE i.inhrelid = (` + rel + `) AND ch.relispartition
   UNION ALL
   SELECT i.inhparent, u.depth + 1 FROM up u JOIN pg_inherits i ON i.inhrelid = u.relid JOIN pg_class ch ON ch.oid = i.inhrelid
   WHERE ch.relispartition)
 SELECT relid FROM up ORDER BY depth DESC LIMIT 1)`
}

// PartitionTreeSQL is an SQL FROM item (alias t, columns relid oid, level int, isleaf bool) of
// the partitions at any depth of the relation whose OID is the expression rel, itself at
// level 0 when it is partitioned (pg_partition_tree's rows; none for a table outside any
// tree): pg_partition_tree from 12, a walk down pg_inherits before. rel may refer to a
// preceding FROM item (it is used LATERAL).
func (v Version) PartitionTreeSQL(rel string) string {
	if v.HasPartitionFunctions() {
		return "LATERAL pg_partition_tree(" + rel + ") t"
	}
	return `LATERAL (WITH RECURSIVE down(relid, level) AS (
   SELECT c.oid, 0 FROM pg_class c WHERE c.oid = (` + rel + `) AND c.relkind = 'p'
   UNION ALL
   SELECT i.inhrelid, d.level + 1 FROM down d JOIN pg_inherits i ON i.inhparent = d.relid JOIN pg_class ch ON ch.oid = i.inhrelid
   WHERE ch.relispartition)
 SELECT d.relid::regclass AS relid, d.level, pc.relkind <> 'p' AS isleaf FROM down d JOIN pg_class pc ON pc.oid = d.relid) t`
}

// ProKindSQL is an SQL expression for pg_proc.prokind of the pg_proc row aliased p: the column
// from 11, derived from proisagg and proiswindow before (there are no procedures before 11).
func (v Version) ProKindSQL(p string) string {
	if v.HasProKind() {
		return p + ".prokind"
	}
	return "(CASE WHEN " + p + ".proisagg THEN 'a' WHEN " + p + ".proiswindow THEN 'w' ELSE 'f' END)::\"char\""
}

// PrintsExecuteFunction: pg_get_triggerdef writes EXECUTE FUNCTION (the spelling 11 added), from
// 12; before, EXECUTE PROCEDURE.
func (v Version) PrintsExecuteFunction() bool { return v >= 120000 }

// TriggerDefSQL is an SQL expression for the definition of the pg_trigger row aliased t, as 12
// and newer print it: pg_get_triggerdef writes EXECUTE FUNCTION from 12, EXECUTE PROCEDURE
// before (the same trigger), so before 12 its first EXECUTE PROCEDURE is rewritten.
func (v Version) TriggerDefSQL(t string) string {
	if v.PrintsExecuteFunction() {
		return "pg_get_triggerdef(" + t + ".oid)"
	}
	return "regexp_replace(pg_get_triggerdef(" + t + ".oid), ' EXECUTE PROCEDURE ', ' EXECUTE FUNCTION ')"
}

// AttGeneratedSQL is an SQL expression for pg_attribute.attgenerated of the row aliased a: the
// column from 12, ” (not generated) before.
func (v Version) AttGeneratedSQL(a string) string {
	if v.HasGeneratedColumns() {
		return a + ".attgenerated"
	}
	return `''::"char"`
}
