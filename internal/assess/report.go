// Package assess tells a user whether a database can be migrated by pgshift, what stands in the
// way and how to fix it, and how big the job is.
//
// It works in three separated steps so that each can be tested alone:
//
//   - gather.go reads the servers (read-only queries, plus one timed sample read) into Facts;
//   - rules.go and estimate.go turn Facts into Findings and a copy-time Estimate with no I/O;
//   - format.go renders a Report as text, JSON or Markdown with no I/O beyond the writer.
//
// assess never changes the source or the target: every fix is a statement for the user to run.
package assess

import (
	"time"
)

// Severity ranks a finding. A single blocker makes the database not ready (exit code 1).
type Severity string

const (
	Blocker Severity = "blocker" // the migration cannot start, or would lose or corrupt data
	Warning Severity = "warning" // it can run, but something needs a decision or a manual step
	Info    Severity = "info"    // worth knowing; pgshift handles it
)

// rank orders severities, most severe first.
func (s Severity) rank() int {
	switch s {
	case Blocker:
		return 0
	case Warning:
		return 1
	}
	return 2
}

// Finding codes. They are part of pgshift's interface (scripts match on them in the JSON
// output), so they never change meaning once released.
const (
	CodeWalLevel            = "wal_level"
	CodeReplicationSlots    = "replication_slots"
	CodeWalSenders          = "wal_senders"
	CodeReplicationPriv     = "replication_privilege"
	CodeCreatePriv          = "create_privilege"
	CodeTableOwnership      = "table_ownership"
	CodeSelectPriv          = "select_privilege"
	CodeTargetCreatePriv    = "target_create_privilege"
	CodeNoReplicaIdentity   = "no_replica_identity"
	CodeRowSecurity         = "row_security"
	CodeReplicaIdentityFull = "replica_identity_full"
	// CodeReplicaIdentityNothing: REPLICA IDENTITY NOTHING, taken as an insert-only table.
	CodeReplicaIdentityNothing = "replica_identity_nothing"
	CodeUnloggedTable          = "unlogged_table"
	CodeForeignTable           = "foreign_table"
	CodeLargeObjects           = "large_objects"
	CodeMaterializedView       = "materialized_view"
	CodeSequences              = "sequences"
	CodeMissingExtension       = "missing_extension"
	CodeExtensionVersion       = "extension_version"
	CodeExtension              = "extension"
	CodeMissingLanguage        = "missing_language"
	CodeEventTrigger           = "event_trigger"
	CodeTablespace             = "tablespace"
	CodeServerVersion          = "server_version"
	CodeMajorUpgrade           = "major_upgrade"
	CodeEncoding               = "encoding_mismatch"
	CodeCollation              = "collation_mismatch"
	CodeCtype                  = "ctype_mismatch"
	CodeSetting                = "setting_mismatch"
	CodeTargetSpace            = "target_space"
	CodeTargetNotEmpty         = "target_not_empty"
	CodeTargetWalLevel         = "target_wal_level"
	CodeNoTarget               = "no_target"
	CodeUnusedIndex            = "unused_index"
	CodePreparedXacts          = "prepared_transactions"
	CodeLongTransaction        = "long_transaction"
	CodeLeftoverSlot           = "leftover_slot"
	CodeLeftoverPublication    = "leftover_publication"
	CodeMigrationInProgress    = "migration_in_progress"
	CodeMaxSlotWALKeepSize     = "max_slot_wal_keep_size"
)

// Finding is one readiness observation: what, about which object, and what to do.
type Finding struct {
	Code     string   `json:"code"`
	Severity Severity `json:"severity"`
	// Object names what the finding is about: "public.orders", "role app_owner", "setting TimeZone",
	// "server" for server-wide conditions.
	Object  string `json:"object"`
	Message string `json:"message"`
	// Fix is what the user should do; empty only for info findings that need nothing.
	Fix string `json:"fix,omitempty"`
}

// Report is the whole assessment. Its JSON form is stable: fields are only ever added.
type Report struct {
	GeneratedAt time.Time `json:"generated_at"`
	Ready       bool      `json:"ready"`
	Blockers    int       `json:"blockers"`
	Warnings    int       `json:"warnings"`
	Infos       int       `json:"infos"`
	Source      Server    `json:"source"`
	Target      *Server   `json:"target,omitempty"`
	Findings    []Finding `json:"findings"`
	Tables      []Table   `json:"tables"`
	Totals      Totals    `json:"totals"`
	Estimate    Estimate  `json:"estimate"`
}

// Server describes one side as assessed.
type Server struct {
	// Endpoint is the safe description from db.Endpoint.String: never the DSN, never a password.
	Endpoint   string `json:"endpoint"`
	Version    string `json:"version"`
	VersionNum int    `json:"version_num"`
	Database   string `json:"database"`
	User       string `json:"user"`
	Superuser  bool   `json:"superuser"`
	// Replication is how the user may replicate: "superuser", "REPLICATION", "rds_replication", or "".
	Replication      string `json:"replication"`
	CreateOnDatabase bool   `json:"create_on_database"`
	Encoding         string `json:"encoding"`
	Collate          string `json:"collate"`
	Ctype            string `json:"ctype"`
	Tablespace       string `json:"tablespace"`
	WalLevel         string `json:"wal_level"`
	MaxSlots         int    `json:"max_replication_slots"`
	UsedSlots        int    `json:"used_replication_slots"`
	MaxSenders       int    `json:"max_wal_senders"`
	ActiveSenders    int    `json:"active_wal_senders"`
	DatabaseBytes    int64  `json:"database_bytes"`
	// PreparedXacts are two-phase transactions waiting for COMMIT/ROLLBACK PREPARED (gid list).
	PreparedXacts []string `json:"prepared_transactions,omitempty"`
	// OldestXactSeconds is the age of the oldest open transaction of a client session, 0 if none.
	OldestXactSeconds float64           `json:"oldest_transaction_seconds"`
	StatsReset        *time.Time        `json:"stats_reset,omitempty"`
	Settings          map[string]string `json:"settings"`
	// MaxSlotWALKeepBytes is max_slot_wal_keep_size in bytes, -1 for unlimited; nil before
	// PostgreSQL 13, which has no such limit.
	MaxSlotWALKeepBytes *int64 `json:"max_slot_wal_keep_bytes,omitempty"`
	// WALBytesPerSec is the average rate WAL was written since pg_stat_wal was last reset
	// (PostgreSQL 14 and later); 0 when unknown.
	WALBytesPerSec float64 `json:"wal_bytes_per_sec,omitempty"`
}

// Table is one relation's size and activity, with what the rules need to know about it.
type Table struct {
	Schema string `json:"schema"`
	Name   string `json:"name"`
	// Kind is "table", "partitioned", "foreign" or "materialized_view".
	Kind       string `json:"kind"`
	Partition  bool   `json:"partition,omitempty"`
	Unlogged   bool   `json:"unlogged,omitempty"`
	Owner      string `json:"owner"`
	Tablespace string `json:"tablespace,omitempty"`
	// ReplicaIdentity is "default", "full", "index" or "nothing"; PrimaryKey is empty without one.
	ReplicaIdentity string   `json:"replica_identity"`
	PrimaryKey      []string `json:"primary_key,omitempty"`
	UsableIdentity  bool     `json:"usable_identity"`
	// IdentityColumns are the columns the replica identity logs of an old row (the key, or the
	// identity index's columns); empty for FULL and NOTHING.
	IdentityColumns []string `json:"identity_columns,omitempty"`
	// Root is the top of the partition tree a partition belongs to (schema.name as ID prints
	// it); empty for tables that are not partitions.
	Root string `json:"partition_root,omitempty"`
	// IdentityIssue says why UsableIdentity is false (e.g. a DEFERRABLE primary key).
	IdentityIssue string `json:"identity_issue,omitempty"`
	// RowSecurityApplies: the table's row-level security policies apply to the source user,
	// so the copy cannot read all of its rows (ForceRowSecurity: FORCE ROW LEVEL SECURITY).
	RowSecurityApplies bool    `json:"row_security_applies,omitempty"`
	ForceRowSecurity   bool    `json:"force_row_security,omitempty"`
	Columns            int     `json:"columns"`
	RowsEstimate       int64   `json:"rows_estimate"`
	TotalBytes         int64   `json:"total_bytes"`
	HeapBytes          int64   `json:"heap_bytes"`
	ToastBytes         int64   `json:"toast_bytes"`
	IndexBytes         int64   `json:"index_bytes"`
	Inserts            int64   `json:"inserts"`
	Updates            int64   `json:"updates"`
	Deletes            int64   `json:"deletes"`
	Indexes            int     `json:"indexes"`
	IndexScans         int64   `json:"index_scans"`
	UnusedIndexes      []Index `json:"unused_indexes,omitempty"`
	CanSelect          bool    `json:"can_select"`
	OwnedByUser        bool    `json:"owned_by_user"`
}

// ID is the table's schema.name as printed in reports.
func (t Table) ID() string { return tableID(t.Schema, t.Name) }

// Index is one index with how often it was used.
type Index struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
	Scans int64  `json:"scans"`
}

// Totals sums the tables for the database as a whole.
type Totals struct {
	Tables        int   `json:"tables"`
	RowsEstimate  int64 `json:"rows_estimate"`
	TotalBytes    int64 `json:"total_bytes"`
	HeapBytes     int64 `json:"heap_bytes"`
	ToastBytes    int64 `json:"toast_bytes"`
	IndexBytes    int64 `json:"index_bytes"`
	Inserts       int64 `json:"inserts"`
	Updates       int64 `json:"updates"`
	Deletes       int64 `json:"deletes"`
	Indexes       int   `json:"indexes"`
	IndexScans    int64 `json:"index_scans"`
	UnusedIndexes int   `json:"unused_indexes"`
	Sequences     int   `json:"sequences"`
}

// Estimate is the copy-time range and what it rests on.
type Estimate struct {
	Jobs       int   `json:"jobs"`
	DataBytes  int64 `json:"data_bytes"`  // heap + TOAST of the tables that are copied
	IndexBytes int64 `json:"index_bytes"` // rebuilt on the target after the data
	// MeasuredBytesPerSec is the source read rate of one sample COPY (on-disk bytes per second), 0 when not measured.
	MeasuredBytesPerSec float64 `json:"measured_bytes_per_sec"`
	MeasuredTable       string  `json:"measured_table,omitempty"`
	LowSeconds          float64 `json:"low_seconds"`
	HighSeconds         float64 `json:"high_seconds"`
	Assumption          string  `json:"assumption"`
}

// Low and High return the range as durations.
func (e Estimate) Low() time.Duration  { return secs(e.LowSeconds) }
func (e Estimate) High() time.Duration { return secs(e.HighSeconds) }

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// Has reports whether the report holds a finding with this code, severity and object.
func (r Report) Has(code string, sev Severity, object string) bool {
	for _, f := range r.Findings {
		if f.Code == code && f.Severity == sev && f.Object == object {
			return true
		}
	}
	return false
}
