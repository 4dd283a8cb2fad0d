package assess

import (
	"fmt"

	"github.com/pgshift/pgshift/internal/catalog"
)

// Version findings.
const (
	CodeVersionUnsupported = "version_unsupported"
	CodeVersionLimit       = "version_limit"
	CodeNotReplicated      = "not_replicated"
)

// versionFindings names what the source's and the target's major versions mean for the
// migration: what logical decoding on that source cannot do, and what the new server gives.
// Every version rule is a catalog.Version check, so the facts about versions live in one place.
func versionFindings(f Facts) []Finding {
	var out []Finding
	add := func(code string, sev Severity, object, msg, fix string) {
		out = append(out, Finding{Code: code, Severity: sev, Object: object, Message: msg, Fix: fix})
	}
	src := catalog.Version(f.Source.VersionNum)
	if err := src.CheckSource(); err != nil {
		add(CodeVersionUnsupported, Blocker, "server", err.Error(),
			"upgrade the source in place to 10 or newer first (pg_upgrade), or migrate with a dump and restore during a write stop")
	}
	if f.Target != nil {
		if dst := catalog.Version(f.Target.VersionNum); dst < catalog.MinTargetVersion {
			add(CodeVersionUnsupported, Blocker, "server",
				fmt.Sprintf("the target runs PostgreSQL %s; pgshift needs a target of 12 or newer", f.Target.Version),
				"use a target of PostgreSQL 12 or newer (a migration is the moment to move to a supported major)")
		}
	}
	// Never replicated on any version: said once, with what pgshift does about it.
	add(CodeNotReplicated, Info, "server",
		"logical decoding never carries sequence values or schema changes (DDL), on any PostgreSQL version: sequences are synced at cutover; schema changes made on the source during the migration are captured by pgshift's event trigger and replayed on the target in order with the rows (ddl: follow, the default; it needs a superuser on the source), and otherwise (ddl: stop, or no superuser) stop following unless pgshift can prove what it means (an added column)",
		"with ddl: follow, make schema changes on the source only, each in a query string of its own; with ddl: stop, make them before the copy or after cutover, or run the same DDL on the target first, then on the source")
	if !src.TruncateReplicated() {
		add(CodeVersionLimit, Warning, "server",
			fmt.Sprintf("PostgreSQL %d does not replicate TRUNCATE (logical decoding sends none before 11): pgshift captures it itself with a statement-level trigger %s on every published table of the source, "+
				"which records each TRUNCATE into %s.%s (published with the tables, removed when the migration is finished); "+
				"a TRUNCATE that fires no trigger escapes it and leaves its rows on the target: one run with session_replication_role = replica, or after ALTER TABLE ... DISABLE TRIGGER ALL",
				src.Major(), catalog.TruncateTrigger, catalog.StateSchema, catalog.TruncateLogName),
			"leave pgshift's triggers in place and enabled until cutover; do not TRUNCATE in replica mode; run pgshift verify before cutover")
	}
	if !src.HasStreaming() {
		add(CodeVersionLimit, Info, "server",
			fmt.Sprintf("PostgreSQL %d cannot stream transactions in progress (14+ can): a large transaction reaches the target only after it commits on the source, all of it at once. "+
				"The source's walsender keeps it in memory up to logical_decoding_work_mem (13; 4096 changes on 12 and older) and spills the rest to its own disk (pg_replslot); "+
				"the agent's memory stays bounded (a bounded queue, one open target transaction), but lag jumps by the time to apply the whole transaction after its commit", src.Major()),
			"split very large batch jobs into smaller transactions during the migration, or upgrade the source to 14+ in place first")
	}
	if !src.HasWALStatus() {
		add(CodeVersionLimit, Info, "server",
			fmt.Sprintf("PostgreSQL %d has no max_slot_wal_keep_size: while the agent is stopped, the slot keeps all WAL since its position, without limit (the slot is never lost, but the source's disk can fill)", src.Major()),
			"keep the agent running; watch pgshift status (retained WAL) and the source's free disk space")
	}
	if !src.PublishesPartitionedTables() && hasPartitions(f.Tables) {
		add(CodeVersionLimit, Info, "server",
			fmt.Sprintf("PostgreSQL %d publications hold leaf partitions only: pgshift publishes each partition, and a partition created on the source during the migration is not published until pgshift adds it: following stops with the statement to create it on the target, then adopts it", src.Major()),
			"create new partitions ahead of time, before the copy; or create each new one on the target too as soon as it is created on the source")
	}
	if src.HasFailoverSlots() {
		add(CodeVersionLimit, Info, "server",
			fmt.Sprintf("PostgreSQL %d can keep logical slots on physical standbys (failover slots); pgshift's slot is not one, so a failover of the source to a standby loses it and the migration must copy again", src.Major()),
			"avoid planned failovers of the source during the migration")
	}
	return out
}

func hasPartitions(tables []Table) bool {
	for _, t := range tables {
		if t.Partition || t.Kind == "partitioned" {
			return true
		}
	}
	return false
}

// upgradeGains lists (for the major_upgrade finding) what the target's major brings that the source's lacks, as it concerns a
// migration and the time after it (reverse replication after cutover runs from the new server).
func upgradeGains(src, dst catalog.Version) []string {
	type gain struct {
		has  func(catalog.Version) bool
		what string
	}
	gains := []gain{
		{catalog.Version.TruncateReplicated, "TRUNCATE in logical replication, so no trigger of pgshift's on the source's tables (11)"},
		{catalog.Version.HasIncludeColumns, "covering indexes (INCLUDE) and hash partitions, default partitions and keys on partitioned tables (11)"},
		{catalog.Version.HasGeneratedColumns, "stored generated columns and the partition functions (pg_partition_tree) (12)"},
		{catalog.Version.HasWALStatus, "max_slot_wal_keep_size, so a stalled slot cannot fill the disk (13)"},
		{catalog.Version.PublishesPartitionedTables, "publications of partitioned tables, so a new partition is followed without a stop (13)"},
		{catalog.Version.HasStreaming, "streaming of large transactions in progress, so replication lag stays small under batch jobs (14)"},
		{catalog.Version.HasStatWAL, "pg_stat_wal for WAL volume (14)"},
		{catalog.Version.HasRowFilters, "publication row filters and column lists (15)"},
		{catalog.Version.HasOriginNone, "origin = none, so the new server itself leaves out of reverse replication what was replicated into it (before 16 pgshift drops it on its side) (16)"},
		{catalog.Version.HasFailoverSlots, "failover slots that survive a failover to a standby (17)"},
		{catalog.Version.HasProtocol32, "wire protocol 3.2 with longer cancel keys, which pgshift's proxy speaks to clients (18)"},
	}
	var out []string
	for _, g := range gains {
		if g.has(dst) && !g.has(src) {
			out = append(out, g.what)
		}
	}
	return out
}
