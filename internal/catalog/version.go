package catalog

import "fmt"

// Version is a server's version as server_version_num (150004 is 15.4; 100023 is 10.23). It is
// the one place that knows which PostgreSQL version has which feature: every check of a
// feature that depends on the version goes through one of its methods, so a new major or a
// changed rule is one edit here.
type Version int

// Major is the major version: 12 for 120022, 15 for 150004.
func (v Version) Major() int { return int(v) / 10000 }

func (v Version) String() string {
	return fmt.Sprintf("%d.%d", v.Major(), int(v)%10000)
}

// Supported ranges. Logical replication exists from 10, but pgshift's catalog reads use what 12
// added (pg_attribute.attgenerated, pg_partition_tree and pg_partition_root, prokind), so
// sources of 10 and 11 are refused up front (CheckSource) rather than failing on a query
// mid-way. Targets from 12.
const (
	MinSourceVersion Version = 120000
	MinTargetVersion Version = 120000
)

// CheckSource refuses a source pgshift cannot migrate from, saying what to do.
func (v Version) CheckSource() error {
	if v >= MinSourceVersion {
		return nil
	}
	return fmt.Errorf("the source runs PostgreSQL %s; pgshift migrates from PostgreSQL 12 or newer (it reads catalog columns that 12 added). "+
		"Upgrade the source in place first (pg_upgrade to 12 or newer), or move it with pg_dump and pg_restore during a write stop", v)
}

// TruncateReplicated: pgoutput sends TRUNCATE from 11 on; a 10 source silently leaves a
// TRUNCATE out of the stream (kept for when sources before 12 are supported).
func (v Version) TruncateReplicated() bool { return v >= 110000 }

// HasGeneratedColumns: GENERATED ALWAYS AS (...) STORED columns (pg_attribute.attgenerated),
// from 12.
func (v Version) HasGeneratedColumns() bool { return v >= 120000 }

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
