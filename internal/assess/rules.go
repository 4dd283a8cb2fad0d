package assess

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/snapshot"
)

// SlotsNeeded and SendersNeeded are what pgshift uses on the source: one logical slot and one
// WAL sender for follow, plus one temporary slot and sender while a copy resumes or verify
// reads a consistent snapshot.
const (
	SlotsNeeded   = 2
	SendersNeeded = 2
)

// LongTransaction is the age from which an open transaction on the source is worth a warning.
const LongTransaction = 10 * time.Minute

// SpaceFactor is the headroom the target needs over the source's size: copied data, indexes
// rebuilt, WAL during the load and growth while following (the case study's 50% buffer).
const SpaceFactor = 1.5

// dataSettings are the server settings that change how values are read, written or compared
// as text. A difference between source and target is worth knowing before anything is copied.
var dataSettings = []string{
	"TimeZone", "DateStyle", "IntervalStyle", "standard_conforming_strings", "bytea_output",
	"extra_float_digits", "lc_monetary", "lc_numeric", "default_text_search_config", "xmloption",
}

// Facts is everything the rules need, as read from the servers. Target is nil when no target
// was given; target-side checks are then skipped (and an info finding says so).
type Facts struct {
	Source Server
	Target *Server
	Tables []Table
	// Sequences are the source's user sequences (schema.name).
	Sequences []string
	// UnreadableSequences are sequences whose value the source user may not read, per schema.
	UnreadableSequences map[string][]string
	// LargeObjects counts pg_largeobject_metadata rows; LargeObjectBytes is pg_largeobject's size.
	LargeObjects     int64
	LargeObjectBytes int64
	EventTriggers    []EventTrigger
	// ReplicaModeTriggers are the source's triggers and rules set ENABLE ALWAYS or ENABLE
	// REPLICA: they would fire during pgshift's apply, so the target keeps them disabled.
	ReplicaModeTriggers []ReplicaModeTrigger
	Extensions          []Extension
	Languages           []Language
	// TargetTablespaces are the tablespace names that exist on the target.
	TargetTablespaces []string
	// TargetSchemas are the source's schemas that already exist on the target, with whether the target user may CREATE in them.
	TargetSchemas []TargetSchema
	// TargetTables counts user tables already on the target, per schema; TargetTableNames
	// lists them (schema.name, in order).
	TargetTables     map[string]int
	TargetTableNames []string
	// StartOver says the copy will start the migration over (copy --force): it drops the
	// target's copies of the source's tables first, so existing tables do not stop it.
	StartOver bool
	// RecopyUnlogged says the copy copies unlogged tables again in the cutover pause.
	RecopyUnlogged bool
	// ReplicaIdentityFull says the copy sets REPLICA IDENTITY FULL on tables with no key and
	// no usable identity instead of refusing them (--replica-identity-full).
	ReplicaIdentityFull bool
	// TargetMigration is the pgshift migration recorded on the target; nil when there is none
	// or no target was given.
	TargetMigration *TargetMigration
	// PgshiftSlots and PgshiftPublications are the source's slots and publications named
	// pgshift_*, or named by TargetMigration.
	PgshiftSlots        []Slot
	PgshiftPublications []string
	// CopySeconds is the slow end of the copy-time estimate (Build fills it from the
	// Estimate when zero); 0 when unknown.
	CopySeconds float64
}

// EventTrigger is one user event trigger on the source.
type EventTrigger struct {
	Name, Event, Owner string
	Enabled            bool
}

// ReplicaModeTrigger is a trigger or rule that fires in session_replication_role = replica.
type ReplicaModeTrigger struct {
	Kind  string // "trigger" or "rule"
	Table string // schema.name, quoted where needed
	Name  string
	State string // "ALWAYS" or "REPLICA"
}

// CodeReplicaModeTrigger is the finding for a ReplicaModeTrigger.
const CodeReplicaModeTrigger = "replica_mode_trigger"

// Extension is one extension installed on the source, with what the target offers.
type Extension struct {
	Name    string
	Version string
	// TargetVersions are the versions the target can install; nil when there is no target, empty when none.
	TargetVersions []string
}

// Language is a procedural language defined or used by functions on the source.
type Language struct {
	Name      string
	Functions int
	// OnTarget reports whether the target defines it or can install it as an extension.
	OnTarget bool
}

// TargetSchema is a source schema that already exists on the target.
type TargetSchema struct {
	Name      string
	CanCreate bool
}

// Evaluate applies every readiness rule to the facts. It is pure: the same facts always give
// the same findings, in the same order (severity, then code, then object).
func Evaluate(f Facts) []Finding {
	var out []Finding
	add := func(code string, sev Severity, object, msg, fix string) {
		out = append(out, Finding{Code: code, Severity: sev, Object: object, Message: msg, Fix: fix})
	}
	src := f.Source
	user := pgtypes.QuoteIdent(src.User)

	// Logical decoding and room for pgshift's slots and senders.
	if src.WalLevel != "logical" {
		add(CodeWalLevel, Blocker, "server",
			fmt.Sprintf("wal_level is %q on the source; logical decoding needs \"logical\"", src.WalLevel),
			"ALTER SYSTEM SET wal_level = logical; then restart the source (on RDS/Aurora: set rds.logical_replication = 1 in the parameter group and reboot; Cloud SQL: cloudsql.logical_decoding = on)")
	}
	// A migration in progress already has its slot: it needs only the temporary one.
	slotsNeeded := SlotsNeeded
	if m := f.TargetMigration; m != nil && !f.StartOver {
		for _, s := range f.PgshiftSlots {
			if s.Name == m.Slot {
				slotsNeeded--
				break
			}
		}
	}
	if free := src.MaxSlots - src.UsedSlots; free < slotsNeeded {
		add(CodeReplicationSlots, Blocker, "server",
			fmt.Sprintf("%d of max_replication_slots = %d are free; pgshift needs %d (one for follow, one temporary for copy resume and verify)", max(free, 0), src.MaxSlots, slotsNeeded),
			fmt.Sprintf("raise max_replication_slots to at least %d and restart the source, or drop slots nothing uses any more (see pg_replication_slots; an inactive slot also holds WAL on the source)", src.UsedSlots+slotsNeeded))
	}
	if free := src.MaxSenders - src.ActiveSenders; free < SendersNeeded {
		add(CodeWalSenders, Blocker, "server",
			fmt.Sprintf("%d of max_wal_senders = %d are free; pgshift needs %d", max(free, 0), src.MaxSenders, SendersNeeded),
			fmt.Sprintf("raise max_wal_senders to at least %d and restart the source", src.ActiveSenders+SendersNeeded))
	}

	if n := len(src.PreparedXacts); n > 0 {
		add(CodePreparedXacts, Warning, "server",
			fmt.Sprintf("%s waiting for COMMIT/ROLLBACK PREPARED (%s): creating pgshift's replication slot waits until they end, however long that is",
				plural(n, "prepared transaction", "prepared transactions"), listSome(src.PreparedXacts, 5)),
			"finish them before starting the copy: COMMIT PREPARED 'gid'; or ROLLBACK PREPARED 'gid'; (ask their owner which)")
	}
	if age := time.Duration(src.OldestXactSeconds * float64(time.Second)); age >= LongTransaction {
		add(CodeLongTransaction, Warning, "server",
			fmt.Sprintf("a transaction has been open for %s: creating the replication slot waits for it to end, and it keeps vacuum from cleaning up", age.Round(time.Second)),
			"find it with SELECT pid, usename, application_name, xact_start, query FROM pg_stat_activity ORDER BY xact_start LIMIT 5; and end it (or start the copy when it has finished)")
	}

	// Privileges of the source user.
	if src.Replication == "" {
		add(CodeReplicationPriv, Blocker, "role "+src.User,
			fmt.Sprintf("user %s may not open a replication connection (not superuser, no REPLICATION attribute, not in rds_replication)", src.User),
			fmt.Sprintf("ALTER ROLE %s REPLICATION; (on RDS/Aurora: GRANT rds_replication TO %s;)", user, user))
	}
	if !src.CreateOnDatabase && !src.Superuser {
		add(CodeCreatePriv, Blocker, "database "+src.Database,
			fmt.Sprintf("user %s may not CREATE in database %s, which creating the publication requires", src.User, src.Database),
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s;", pgtypes.QuoteIdent(src.Database), user))
	}
	notOwned := map[string][]string{} // owner → tables
	noSelect := map[string][]string{} // schema → tables
	for _, t := range f.Tables {
		if t.Kind != "table" && t.Kind != "partitioned" {
			continue
		}
		if !t.OwnedByUser && !src.Superuser {
			notOwned[t.Owner] = append(notOwned[t.Owner], t.ID())
		}
		if !t.CanSelect && !src.Superuser {
			noSelect[t.Schema] = append(noSelect[t.Schema], t.ID())
		}
	}
	for _, owner := range sortedKeys(notOwned) {
		tables := notOwned[owner]
		add(CodeTableOwnership, Blocker, "role "+owner,
			fmt.Sprintf("user %s does not own %s owned by %s (%s); PostgreSQL %d requires ownership to add a table to a publication",
				src.User, plural(len(tables), "table", "tables"), owner, listSome(tables, 8), src.VersionNum/10000),
			fmt.Sprintf("GRANT %s TO %s; (membership is enough), or run pgshift as a superuser", pgtypes.QuoteIdent(owner), user))
	}
	for _, schema := range sortedKeys(noSelect) {
		tables := noSelect[schema]
		add(CodeSelectPriv, Blocker, "schema "+schema,
			fmt.Sprintf("user %s may not SELECT from %s in schema %s (%s); the copy reads every table",
				src.User, plural(len(tables), "table", "tables"), schema, listSome(tables, 8)),
			fmt.Sprintf("GRANT USAGE ON SCHEMA %[1]s TO %[2]s; GRANT SELECT ON ALL TABLES IN SCHEMA %[1]s TO %[2]s;", pgtypes.QuoteIdent(schema), user))
	}

	for _, schema := range sortedKeys(f.UnreadableSequences) {
		seqs := f.UnreadableSequences[schema]
		add(CodeSelectPriv, Blocker, "sequences in schema "+schema,
			fmt.Sprintf("user %s may not read %s in schema %s (%s); their values are synced to the target at cutover",
				src.User, plural(len(seqs), "sequence", "sequences"), schema, listSome(seqs, 8)),
			fmt.Sprintf("GRANT USAGE ON SCHEMA %[1]s TO %[2]s; GRANT SELECT ON ALL SEQUENCES IN SCHEMA %[1]s TO %[2]s;", pgtypes.QuoteIdent(schema), user))
	}

	// Tables whose row-level security policies apply to the source user: the copy reads with
	// row_security = off and would fail on them (reading through the policies would copy only
	// the rows they allow, silently).
	for _, t := range f.Tables {
		if t.Kind != "table" || !t.RowSecurityApplies {
			continue
		}
		add(CodeRowSecurity, Blocker, t.ID(),
			fmt.Sprintf("row-level security policies of this table apply to user %s, so it cannot read all of its rows: pgshift copy and verify refuse the table rather than see only the rows the policies allow", src.User),
			catalog.RowSecurityFix(src.User, t.ForceRowSecurity))
	}

	// Tables that logical replication cannot follow as they are.
	byID := tablesByID(f.Tables)
	for _, t := range f.Tables {
		id := t.ID()
		switch {
		case t.Kind == "table" && t.Unlogged && f.RecopyUnlogged:
			add(CodeUnloggedTable, Warning, id,
				fmt.Sprintf("unlogged table (%s): copied now; its changes never reach the WAL and cannot be followed, so the cutover pause copies it again (--recopy-unlogged), which takes the time of copying %s", humanBytes(t.TotalBytes), humanBytes(t.TotalBytes)),
				fmt.Sprintf("ALTER TABLE %s SET LOGGED; (rewrites the table) to have it followed instead", sanitize(t)))
		case t.Kind == "table" && t.Unlogged:
			// Copied once (schema and rows), left out of the publication: a blocker would leave
			// only --exclude, which drops the table from the target altogether.
			add(CodeUnloggedTable, Warning, id,
				fmt.Sprintf("unlogged table (%s): copied once, but its changes never reach the WAL, so they cannot be followed and it will be stale on the target", humanBytes(t.TotalBytes)),
				fmt.Sprintf("pass --recopy-unlogged (config: recopy_unlogged) to copy it again during the cutover pause, ALTER TABLE %s SET LOGGED; (rewrites the table) to have it followed, or --exclude %s if the target needs neither its definition nor its rows", sanitize(t), id))
		case t.Kind == "table":
			if fd, ok := identityFinding(t, byID, false); ok {
				if fd.Code == CodeNoReplicaIdentity && fd.Severity == Blocker && f.ReplicaIdentityFull && canSetFull(t.ReplicaIdentity, t.IdentityIssue) {
					// What copy will do about it (PlanIdentities): no blocker, but the user must know.
					fd.Severity = Warning
					fd.Message += "; pgshift copy sets REPLICA IDENTITY FULL on it on the source (replica_identity_full), recorded there for pgshift finish to restore"
					fd.Fix = fmt.Sprintf("to avoid FULL's cost (the whole old row in WAL on every UPDATE/DELETE), add a primary key (ALTER TABLE %s ADD PRIMARY KEY (...)) before the copy", sanitize(t))
				}
				out = append(out, fd)
			}
		case t.Kind == "foreign":
			add(CodeForeignTable, Warning, id,
				"foreign table: its definition is copied but its rows live on the remote server and are neither copied nor followed",
				"create the foreign server and user mapping on the target (CREATE SERVER ... / CREATE USER MAPPING ...), and make sure the target can reach the remote server")
		case t.Kind == "materialized_view":
			add(CodeMaterializedView, Info, id,
				fmt.Sprintf("materialized view (%s): not followed; pgshift refreshes it on the target at cutover", humanBytes(t.TotalBytes)),
				"")
		}
	}
	if f.LargeObjects > 0 {
		add(CodeLargeObjects, Warning, "database "+src.Database,
			fmt.Sprintf("%s (%s): copied in the snapshot, but logical replication does not carry their later changes — cutover copies what changed again", plural(int(f.LargeObjects), "large object", "large objects"), humanBytes(f.LargeObjectBytes)),
			"keep large-object writes low during the migration (the cutover pause copies every changed one), or move them into bytea columns to have them followed")
	}
	if n := len(f.Sequences); n > 0 {
		add(CodeSequences, Info, "database "+src.Database,
			fmt.Sprintf("%s (%s): sequence values do not travel with row changes; pgshift syncs them at cutover", plural(n, "sequence", "sequences"), listSome(f.Sequences, 5)),
			"")
	}
	for _, e := range f.EventTriggers {
		add(CodeEventTrigger, Warning, "event trigger "+e.Name,
			fmt.Sprintf("event trigger on %s owned by %s (enabled: %t); creating it on the target needs superuser, and managed services often refuse it", e.Event, e.Owner, e.Enabled),
			"recreate it on the target after the copy if it is still needed (it is part of pg_dump's schema; with a non-superuser target, remove it from the schema load)")
	}
	for _, tr := range f.ReplicaModeTriggers {
		name := maybeQuoted(tr.Name)
		when := "it fires in every session, replication included"
		if tr.State == "REPLICA" {
			when = "it fires only in replication sessions — exactly while pgshift applies changes"
		}
		add(CodeReplicaModeTrigger, Warning, tr.Kind+" "+name+" on "+tr.Table,
			fmt.Sprintf("%s %s on %s is ENABLE %s: pgshift keeps it disabled on the target until cutover (%s, so on the target it would repeat what the source's %s already did: an audit row written twice); pgshift status lists it, and cutover restores its state",
				tr.Kind, name, tr.Table, tr.State, when, tr.Kind),
			fmt.Sprintf("nothing to change for the migration; if the %s acts outside the database (queues, notifications, other servers), check that this should happen on the target once it takes traffic", tr.Kind))
	}
	// Unused indexes are grouped per schema: a database of many tables would otherwise bury
	// the findings that matter under one note per index. Each table's list is in the report.
	unused := unusedIndexes(f.Tables)
	for _, schema := range sortedKeys(unused) {
		ixs := unused[schema]
		var names, sanitized []string
		var bytes int64
		for _, ix := range ixs {
			names = append(names, ix.name+" on "+ix.table)
			sanitized = append(sanitized, ix.sanitized)
			bytes += ix.bytes
		}
		fix := fmt.Sprintf("if nothing needs them, drop them before migrating to shorten the copy: DROP INDEX %s;", strings.Join(sanitized, ", "))
		if len(sanitized) > 8 {
			fix = fmt.Sprintf("if nothing needs them, drop them before migrating to shorten the copy (DROP INDEX %s, ...; the full list is in the JSON report's unused_indexes)", strings.Join(sanitized[:8], ", "))
		}
		add(CodeUnusedIndex, Info, "schema "+schema,
			fmt.Sprintf("%s never scanned since the last stats reset (%s): %s; they are rebuilt on the target all the same",
				plural(len(ixs), "index", "indexes"), humanBytes(bytes), listSome(names, 8)), fix)
	}

	out = append(out, slotFindings(f)...)
	out = append(out, targetFindings(f)...)
	out = append(out, versionFindings(f)...)
	sortFindings(out)
	return out
}

// IdentityFindings is the replica-identity rule on its own, for copy's preflight: one finding per
// table that holds rows (plain tables and leaf partitions; unlogged ones are left to their own
// rule) whose UPDATEs and DELETEs could not be followed as pgoutput will publish them, or that
// REPLICA IDENTITY FULL makes costly. viaRoot says whether partitions are published through
// their root (publish_via_partition_root), as pgshift no longer does for new migrations.
func IdentityFindings(tables []Table, viaRoot bool) []Finding {
	byID := tablesByID(tables)
	var out []Finding
	for _, t := range tables {
		if t.Kind != "table" || t.Unlogged {
			continue
		}
		if f, ok := identityFinding(t, byID, viaRoot); ok {
			out = append(out, f)
		}
	}
	sortFindings(out)
	return out
}

func tablesByID(tables []Table) map[string]*Table {
	out := make(map[string]*Table, len(tables))
	for i := range tables {
		out[tables[i].ID()] = &tables[i]
	}
	return out
}

// identityFinding judges one table that holds rows exactly as pgoutput publishes its changes.
// The WAL always carries a changed row's old version by the identity of the relation that
// stores it: the leaf partition, for a partitioned table. Published as themselves (viaRoot
// false), leaves are described with that same identity, so only the leaf's own counts. Published
// through the root, pgoutput describes the row with the ROOT's identity instead, while the old
// row it sends still holds only the leaf's identity columns: the two must agree, or the target
// cannot find the row.
func identityFinding(t Table, byID map[string]*Table, viaRoot bool) (Finding, bool) {
	id := t.ID()
	var root *Table
	if t.Partition && t.Root != "" {
		root = byID[t.Root]
	}
	if !t.UsableIdentity && t.ReplicaIdentity == "nothing" {
		// The user's own choice of no identity: an insert-only table. Its UPDATEs and DELETEs
		// fail on the source once it is published, as they would under native replication.
		return Finding{Code: CodeReplicaIdentityNothing, Severity: Warning, Object: id,
			Message: "REPLICA IDENTITY NOTHING: taken as insert-only — once published, every UPDATE and DELETE on it fails on the source (SQLSTATE 55000)",
			Fix: fmt.Sprintf("if the application ever updates or deletes its rows, give it an identity first: a primary key, or ALTER TABLE %s REPLICA IDENTITY FULL; (or let pgshift copy --replica-identity-full set FULL after ALTER TABLE %s REPLICA IDENTITY DEFAULT)",
				sanitize(t), sanitize(t)),
		}, true
	}
	if !t.UsableIdentity {
		why := t.IdentityIssue
		switch {
		case why != "":
		case t.ReplicaIdentity == "nothing":
			why = "REPLICA IDENTITY NOTHING"
		default:
			why = "no primary key and no replica identity"
		}
		if root != nil {
			return Finding{Code: CodeNoReplicaIdentity, Severity: Blocker, Object: id,
				Message: fmt.Sprintf("partition of %s with %s: it is published with its partitioned table, and then every UPDATE and DELETE on it fails on the source (SQLSTATE 55000), breaking the application",
					root.ID(), why),
				Fix: fmt.Sprintf("give the partition an identity: ALTER TABLE %[1]s ADD PRIMARY KEY (...), or ALTER TABLE %[1]s REPLICA IDENTITY FULL; (a primary key on %[2]s gives every partition one); or leave the whole partition tree out with --exclude %[3]s — a partition cannot be left out alone",
					sanitize(t), sanitize(*root), root.ID()),
			}, true
		}
		fix := fmt.Sprintf("add a primary key that is not DEFERRABLE (ALTER TABLE %[1]s ADD PRIMARY KEY (...)), or ALTER TABLE %[1]s REPLICA IDENTITY USING INDEX on a unique index that is neither DEFERRABLE nor partial, over NOT NULL columns, or ALTER TABLE %[1]s REPLICA IDENTITY FULL; (pgshift copy --replica-identity-full, config replica_identity_full, does that for you, and pgshift finish restores it) — FULL costs: every UPDATE/DELETE writes the whole old row to WAL (about %[2]s per change here), and the target finds each row by comparing all columns (through an index that matches, if it has one); or leave it out with --exclude %[3]s",
			sanitize(t), humanBytes(avgRow(t)), id)
		if len(t.PrimaryKey) > 0 && t.ReplicaIdentity == "default" {
			// A primary key exists but PostgreSQL does not use it (DEFERRABLE, or not valid).
			fix = fmt.Sprintf("ALTER TABLE %[1]s REPLICA IDENTITY FULL; (every UPDATE/DELETE then writes the whole old row to WAL, about %[2]s per change here), or ALTER TABLE %[1]s REPLICA IDENTITY USING INDEX on a unique index that is neither DEFERRABLE nor partial, over NOT NULL columns (CREATE UNIQUE INDEX ... ON %[1]s (%[3]s) builds one on the key's columns)",
				sanitize(t), humanBytes(avgRow(t)), pgtypes.QuoteIdents(t.PrimaryKey))
		}
		return Finding{Code: CodeNoReplicaIdentity, Severity: Blocker, Object: id,
			Message: fmt.Sprintf("%s: once published, every UPDATE and DELETE on it fails on the source (SQLSTATE 55000), breaking the application", why),
			Fix:     fix,
		}, true
	}
	if viaRoot && root != nil {
		if problem := rootIdentityMismatch(t, *root); problem != "" {
			return Finding{Code: CodeNoReplicaIdentity, Severity: Blocker, Object: id,
				Message: fmt.Sprintf("partition published through its root %s (publish_via_partition_root): %s, so the first UPDATE or DELETE on it could not be applied on the target",
					root.ID(), problem),
				Fix: fmt.Sprintf("publish partitions as themselves (ALTER PUBLICATION ... SET (publish_via_partition_root = false), which is how pgshift creates its publication), or give %s the replica identity its partitions have", sanitize(*root)),
			}, true
		}
	}
	if t.ReplicaIdentity == "full" {
		changes := t.Updates + t.Deletes
		return Finding{Code: CodeReplicaIdentityFull, Severity: Warning, Object: id,
			Message: fmt.Sprintf("REPLICA IDENTITY FULL without a key: each UPDATE/DELETE logs the whole old row (about %s; %s updates+deletes since the last stats reset ≈ %s of extra WAL) and the target must find rows by all %d columns — a sequential scan per change unless an index matches",
				humanBytes(avgRow(t)), humanCount(changes), humanBytes(changes*avgRow(t)), t.Columns),
			Fix: fmt.Sprintf("add a primary key or a unique NOT NULL index (ALTER TABLE %s REPLICA IDENTITY USING INDEX ...) if the rows have one", sanitize(t)),
		}, true
	}
	return Finding{}, false
}

// rootIdentityMismatch says why a leaf's changes published with its root's replica identity
// could not be applied, or "" when they can: the old row the WAL holds (the leaf's identity
// columns, or every column under FULL) must contain every column the root's identity names.
func rootIdentityMismatch(leaf, root Table) string {
	switch {
	case !root.UsableIdentity:
		return fmt.Sprintf("the root has no replica identity (%s), so pgoutput marks no column of the partition's rows as a key", root.ReplicaIdentity)
	case leaf.ReplicaIdentity == "full":
		return "" // the old row holds every column
	case root.ReplicaIdentity == "full":
		return fmt.Sprintf("the root has REPLICA IDENTITY FULL, so the target looks rows up by every column, but the partition logs only its key (%s) of the old row",
			strings.Join(leaf.IdentityColumns, ", "))
	}
	have := map[string]bool{}
	for _, c := range leaf.IdentityColumns {
		have[c] = true
	}
	for _, c := range root.IdentityColumns {
		if !have[c] {
			return fmt.Sprintf("the root's replica identity (%s) has column %s, which the partition's (%s) does not log",
				strings.Join(root.IdentityColumns, ", "), c, strings.Join(leaf.IdentityColumns, ", "))
		}
	}
	return ""
}

// targetFindings are the rules that compare the source with the target.
func targetFindings(f Facts) []Finding {
	var out []Finding
	add := func(code string, sev Severity, object, msg, fix string) {
		out = append(out, Finding{Code: code, Severity: sev, Object: object, Message: msg, Fix: fix})
	}
	src, dst := f.Source, f.Target
	if dst == nil {
		add(CodeNoTarget, Info, "target", "no target given: version, extension, settings, privilege and space checks of the target were skipped",
			"run again with --target DSN")
		for _, e := range f.Extensions {
			add(CodeExtension, Info, "extension "+e.Name,
				fmt.Sprintf("extension %s %s is installed on the source; the target must be able to install it", e.Name, e.Version), "")
		}
		return out
	}
	tuser := pgtypes.QuoteIdent(dst.User)

	srcMajor, dstMajor := src.VersionNum/10000, dst.VersionNum/10000
	switch {
	case dstMajor < srcMajor:
		add(CodeServerVersion, Blocker, "server",
			fmt.Sprintf("target runs PostgreSQL %s, older than the source's %s; schema and data from a newer major version may not load", dst.Version, src.Version),
			fmt.Sprintf("use a target of PostgreSQL %d or newer", srcMajor))
	case dstMajor > srcMajor:
		msg := fmt.Sprintf("major version upgrade %s → %s", src.Version, dst.Version)
		if gains := upgradeGains(catalog.Version(src.VersionNum), catalog.Version(dst.VersionNum)); len(gains) > 0 {
			msg += "; it gives " + strings.Join(gains, "; ")
		}
		add(CodeMajorUpgrade, Info, "server", msg,
			"read the release notes of every major version in between; pgshift runs ANALYZE on the target after the copy")
	}

	if !dst.CreateOnDatabase && !dst.Superuser {
		add(CodeTargetCreatePriv, Blocker, "database "+dst.Database,
			fmt.Sprintf("target user %s may not CREATE in database %s: the schemas and pgshift's state schema cannot be created", dst.User, dst.Database),
			fmt.Sprintf("GRANT CREATE ON DATABASE %s TO %s; (on the target)", pgtypes.QuoteIdent(dst.Database), tuser))
	}
	for _, s := range f.TargetSchemas {
		if !s.CanCreate && !dst.Superuser {
			add(CodeTargetCreatePriv, Blocker, "schema "+s.Name,
				fmt.Sprintf("schema %s exists on the target but user %s may not create tables in it", s.Name, dst.User),
				fmt.Sprintf("GRANT USAGE, CREATE ON SCHEMA %s TO %s; (on the target)", pgtypes.QuoteIdent(s.Name), tuser))
		}
	}
	// A target that holds a migration holds its tables: copy resumes it.
	if n := sumValues(f.TargetTables); n > 0 && f.TargetMigration == nil {
		names := listSome(f.TargetTableNames, 5)
		if f.StartOver {
			add(CodeTargetNotEmpty, Info, "database "+dst.Database,
				fmt.Sprintf("the target database holds %s (%s); --force drops those the source defines and creates them anew", plural(n, "user table", "user tables"), names), "")
		} else {
			add(CodeTargetNotEmpty, Blocker, "database "+dst.Database,
				fmt.Sprintf("the target database is not empty: it holds %s (%s); pgshift copies into an empty database, since copying into existing tables would fail or mix data", plural(n, "user table", "user tables"), names),
				"point --target at an empty database (CREATE DATABASE ... TEMPLATE template0), or pass --force to pgshift copy to drop and re-create the source's objects on it")
		}
	}
	if dst.WalLevel != "logical" {
		add(CodeTargetWalLevel, Warning, "server",
			fmt.Sprintf("wal_level is %q on the target: reverse replication after cutover (what makes rollback lossless) needs \"logical\"", dst.WalLevel),
			"ALTER SYSTEM SET wal_level = logical; and restart the target before cutover")
	}

	for _, e := range f.Extensions {
		switch {
		case len(e.TargetVersions) == 0:
			add(CodeMissingExtension, Blocker, "extension "+e.Name,
				fmt.Sprintf("extension %s %s is installed on the source but not available on the target (pg_available_extensions)", e.Name, e.Version),
				fmt.Sprintf("install the package that provides %s on the target server (or enable it in the provider's allow-list), or drop it on the source if unused", e.Name))
		case !contains(e.TargetVersions, e.Version):
			add(CodeExtensionVersion, Warning, "extension "+e.Name,
				fmt.Sprintf("extension %s is version %s on the source; the target offers %s", e.Name, e.Version, strings.Join(e.TargetVersions, ", ")),
				fmt.Sprintf("install version %s on the target, or check that the available version reads the source's data the same way", e.Version))
		}
	}
	for _, l := range f.Languages {
		if !l.OnTarget {
			add(CodeMissingLanguage, Blocker, "language "+l.Name,
				fmt.Sprintf("procedural language %s (used by %s) is not available on the target", l.Name, plural(l.Functions, "function", "functions")),
				fmt.Sprintf("install %s on the target (e.g. the postgresql-<version>-%s package, then CREATE EXTENSION %s), or rewrite those functions", l.Name, strings.TrimPrefix(l.Name, "pl"), l.Name))
		}
	}
	for _, ts := range usedTablespaces(f) {
		if !contains(f.TargetTablespaces, ts.name) {
			add(CodeTablespace, Warning, "tablespace "+ts.name,
				fmt.Sprintf("%s on the source uses tablespace %s, which does not exist on the target", ts.what, ts.name),
				fmt.Sprintf("CREATE TABLESPACE %s LOCATION '...' on the target, or accept that these objects land in the target's default tablespace", pgtypes.QuoteIdent(ts.name)))
		}
	}

	if src.Encoding != dst.Encoding {
		sev := Blocker
		msg := fmt.Sprintf("source encoding %s, target %s: text may not convert, or convert differently", src.Encoding, dst.Encoding)
		if dst.Encoding == "UTF8" && src.Encoding != "SQL_ASCII" {
			sev = Warning
			msg = fmt.Sprintf("source encoding %s, target UTF8: every character converts, but lengths in bytes change (octet_length, varchar limits in bytes elsewhere)", src.Encoding)
		}
		add(CodeEncoding, sev, "database "+dst.Database, msg,
			fmt.Sprintf("create the target database with ENCODING '%s' TEMPLATE template0", src.Encoding))
	}
	if src.Collate != dst.Collate {
		add(CodeCollation, Warning, "database "+dst.Database,
			fmt.Sprintf("LC_COLLATE is %q on the source and %q on the target: text sorts differently, so ORDER BY results, index order and range conditions on text change", src.Collate, dst.Collate),
			fmt.Sprintf("create the target database with LC_COLLATE '%s' TEMPLATE template0, unless the new order is intended", src.Collate))
	}
	if src.Ctype != dst.Ctype {
		add(CodeCtype, Warning, "database "+dst.Database,
			fmt.Sprintf("LC_CTYPE is %q on the source and %q on the target: upper(), lower(), ILIKE and regular expressions classify characters differently", src.Ctype, dst.Ctype),
			fmt.Sprintf("create the target database with LC_CTYPE '%s' TEMPLATE template0", src.Ctype))
	}
	for _, name := range dataSettings {
		sv, sok := src.Settings[name]
		dv, dok := dst.Settings[name]
		if sok && dok && sv != dv {
			add(CodeSetting, Warning, "setting "+name,
				fmt.Sprintf("%s is %q on the source and %q on the target: clients that rely on the default read and write these values differently", name, sv, dv),
				fmt.Sprintf("ALTER DATABASE %s SET %s = '%s'; on the target, unless the change is intended", pgtypes.QuoteIdent(dst.Database), name, strings.ReplaceAll(sv, "'", "''")))
		}
	}

	need := int64(float64(src.DatabaseBytes) * SpaceFactor)
	add(CodeTargetSpace, Info, "database "+dst.Database,
		fmt.Sprintf("the target's free disk space cannot be read over SQL; it needs at least %s (source %s × %.1f for indexes, WAL and growth during the migration)", humanBytes(need), humanBytes(src.DatabaseBytes), SpaceFactor),
		fmt.Sprintf("check the target volume or allocated storage has %s free", humanBytes(need)))
	return out
}

type tablespaceUse struct{ name, what string }

// usedTablespaces lists non-default tablespaces the source's database or tables live in.
func usedTablespaces(f Facts) []tablespaceUse {
	counts := map[string]int{}
	for _, t := range f.Tables {
		if t.Tablespace != "" && t.Tablespace != "pg_default" {
			counts[t.Tablespace]++
		}
	}
	var out []tablespaceUse
	if ts := f.Source.Tablespace; ts != "" && ts != "pg_default" {
		out = append(out, tablespaceUse{ts, "database " + f.Source.Database})
		delete(counts, ts)
	}
	for _, name := range sortedKeys(counts) {
		out = append(out, tablespaceUse{name, plural(counts[name], "table", "tables")})
	}
	return out
}

type unusedIndex struct {
	name, table, sanitized string
	bytes                  int64
}

// unusedIndexes returns the never-scanned, non-enforcing indexes per schema.
func unusedIndexes(tables []Table) map[string][]unusedIndex {
	out := map[string][]unusedIndex{}
	for _, t := range tables {
		for _, ix := range t.UnusedIndexes {
			id := pgtypes.TableID{Schema: t.Schema, Name: ix.Name}
			out[t.Schema] = append(out[t.Schema], unusedIndex{name: maybeQuoted(ix.Name), table: t.ID(), sanitized: id.Sanitize(), bytes: ix.Bytes})
		}
	}
	return out
}

// maybeQuoted prints an identifier the way TableID.String does: quoted only when needed.
func maybeQuoted(name string) string {
	s := pgtypes.TableID{Schema: "x", Name: name}.String()
	return s[2:]
}

func sortFindings(fs []Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := fs[i], fs[j]
		if a.Severity.rank() != b.Severity.rank() {
			return a.Severity.rank() < b.Severity.rank()
		}
		if a.Code != b.Code {
			return a.Code < b.Code
		}
		return a.Object < b.Object
	})
}

// avgRow is the table's average on-disk row size (heap + TOAST), at least 1 byte when it has rows.
func avgRow(t Table) int64 {
	rows := t.RowsEstimate
	if rows <= 0 {
		return 0
	}
	return max((t.HeapBytes+t.ToastBytes)/rows, 1)
}

func sanitize(t Table) string { return pgtypes.TableID{Schema: t.Schema, Name: t.Name}.Sanitize() }

func tableID(schema, name string) string { return pgtypes.TableID{Schema: schema, Name: name}.String() }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func sumValues(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func schemaCounts(m map[string]int) string {
	parts := make([]string, 0, len(m))
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// listSome joins the first n items and says how many more there are.
func listSome(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:n], ", ") + fmt.Sprintf(" and %d more", len(items)-n)
}

// slotFindings are the rules about pgshift's own objects on the source: slots and publications
// left by an earlier migration, a migration still in progress, and how much WAL a slot may
// hold before the source gives up on it.
func slotFindings(f Facts) []Finding {
	var out []Finding
	add := func(code string, sev Severity, object, msg, fix string) {
		out = append(out, Finding{Code: code, Severity: sev, Object: object, Message: msg, Fix: fix})
	}
	src, m := f.Source, f.TargetMigration
	// Why a pgshift object counts as left over: nothing on the target claims it.
	orphan := "the target holds no pgshift migration state"
	finish := "or run pgshift finish for the migration it belongs to"
	switch {
	case f.Target == nil:
		orphan = "no target was given, so no migration could be found that still uses it"
		finish = "after checking with --target that no migration uses it, or run pgshift finish for the migration it belongs to"
	case m != nil:
		orphan = fmt.Sprintf("the migration recorded on the target uses slot %s and publication %s", m.Slot, m.Publication)
	}
	// What a stopped slot costs: the source's WAL limit decides whether it is the disk or the slot.
	limit := "until the source's disk fills (max_slot_wal_keep_size is unlimited)"
	if k := src.MaxSlotWALKeepBytes; k == nil {
		limit = "until the source's disk fills"
	} else if *k >= 0 {
		limit = fmt.Sprintf("until it passes max_slot_wal_keep_size = %s and the source invalidates it", humanBytes(*k))
	}

	for _, s := range f.PgshiftSlots {
		object := "replication slot " + s.Name
		where := s.Type
		if s.Database != "" {
			where += ", database " + s.Database
		}
		if m != nil && s.Name == m.Slot && s.WALStatus == "lost" {
			add(CodeMigrationInProgress, Warning, object,
				fmt.Sprintf("the pgshift migration of database %s recorded on the target (phase %s) cannot continue: the source invalidated its slot %s (wal_status lost) after it fell too far behind",
					m.SourceDatabase, m.Phase, s.Name),
				"start the migration over: pgshift copy --force (it drops the old slot, publication and copied data first)")
			continue
		}
		if m != nil && s.Name == m.Slot {
			state := "not streaming now: the agent is stopped"
			if s.Active {
				state = fmt.Sprintf("streaming to process %d", s.ActivePID)
			}
			add(CodeMigrationInProgress, Info, object,
				fmt.Sprintf("a pgshift migration of database %s is in progress (phase %s): slot %s (%s) and publication %s are its own; the slot holds %s of WAL on the source, %s",
					m.SourceDatabase, m.Phase, s.Name, where, m.Publication, humanBytes(s.RetainedBytes), state),
				"")
			continue
		}
		if s.Active {
			// Something streams from it right now: a running agent (of a migration into a target
			// not given here, or into another one). Never a leftover, never to be dropped.
			whose := "a pgshift agent of a migration into another target"
			if f.Target == nil {
				whose = "a pgshift agent of a running migration (pass --target to see which)"
			}
			add(CodeMigrationInProgress, Info, object,
				fmt.Sprintf("replication slot %s (%s) is in use: process %d streams from it, most likely %s; it holds %s of WAL on the source",
					s.Name, where, s.ActivePID, whose, humanBytes(s.RetainedBytes)), "")
			continue
		}
		drop := fmt.Sprintf("SELECT pg_drop_replication_slot(%s); on the source", sqlLiteral(s.Name))
		var msg string
		switch {
		case s.WALStatus == "lost":
			msg = fmt.Sprintf("replication slot %s (%s) was left by an earlier pgshift migration and %s; the source has already invalidated it (wal_status lost): it holds no WAL but counts against max_replication_slots",
				s.Name, where, orphan)
		default:
			msg = fmt.Sprintf("replication slot %s (%s) was left by an earlier pgshift migration and %s; nothing reads it, so it holds %s of WAL on the source (pg_current_wal_lsn() - restart_lsn) and keeps all WAL written from now on, %s",
				s.Name, where, orphan, humanBytes(s.RetainedBytes), limit)
		}
		add(CodeLeftoverSlot, Warning, object, msg, fmt.Sprintf("if no migration uses it any more: %s, %s", drop, finish))
	}

	defaultName := snapshot.DefaultName(src.Database)
	streaming := map[string]bool{} // pgshift names its slot and publication alike
	for _, s := range f.PgshiftSlots {
		streaming[s.Name] = s.Active
	}
	for _, p := range f.PgshiftPublications {
		if m != nil && p == m.Publication || streaming[p] {
			continue // part of a migration in progress, reported with its slot
		}
		msg := fmt.Sprintf("publication %s was left by an earlier pgshift migration and %s", p, orphan)
		if p == defaultName {
			msg += "; pgshift copy with its default names refuses to start while it exists"
		} else {
			msg += "; it costs nothing by itself, but it keeps its tables published to whatever subscribes to it"
		}
		add(CodeLeftoverPublication, Warning, "publication "+p, msg,
			fmt.Sprintf("if no migration uses it any more: DROP PUBLICATION %s; on the source, %s", pgtypes.QuoteIdent(p), finish))
	}

	if k := src.MaxSlotWALKeepBytes; k != nil {
		// WAL the source writes while the copy runs: the slot holds all of it until follow starts.
		copyWAL := int64(src.WALBytesPerSec * f.CopySeconds)
		rate := "the source's WAL write rate is unknown (pg_stat_wal needs PostgreSQL 14 and some history)"
		if src.WALBytesPerSec > 0 {
			rate = fmt.Sprintf("the source writes about %s of WAL per hour on average", humanBytes(int64(src.WALBytesPerSec*3600)))
			if copyWAL > 0 {
				rate += fmt.Sprintf(", about %s during a copy of up to %s", humanBytes(copyWAL), humanDuration(secs(f.CopySeconds)))
			}
		}
		suggest := "'...'"
		if copyWAL > 0 {
			suggest = fmt.Sprintf("'%dGB'", max((3*copyWAL+(1<<30)-1)>>30, 1)) // three times the copy's WAL, in whole GB
		}
		set := fmt.Sprintf("ALTER SYSTEM SET max_slot_wal_keep_size = %s; SELECT pg_reload_conf(); on the source", suggest)
		switch {
		case *k < 0:
			add(CodeMaxSlotWALKeepSize, Info, "setting max_slot_wal_keep_size",
				fmt.Sprintf("max_slot_wal_keep_size is -1 (unlimited): if pgshift's agent stops (crash, lost connection, a paused run), its slot keeps every WAL segment the source writes until the agent catches up, however long that takes, until the source's disk fills; %s", rate),
				fmt.Sprintf("%s — a size the source's WAL disk can afford, e.g. a few times the WAL written during the expected copy time", set))
		case copyWAL > *k:
			add(CodeMaxSlotWALKeepSize, Warning, "setting max_slot_wal_keep_size",
				fmt.Sprintf("max_slot_wal_keep_size is %s, but %s: the slot holds that WAL until the copy ends, so the source would invalidate it during the copy and the migration would have to start over",
					humanBytes(*k), rate),
				fmt.Sprintf("raise it above the copy's WAL, if the source's disk can afford it: %s", set))
		default:
			add(CodeMaxSlotWALKeepSize, Info, "setting max_slot_wal_keep_size",
				fmt.Sprintf("max_slot_wal_keep_size is %s: pgshift's agent may fall up to %s of WAL behind; beyond that the source invalidates the slot, pgshift stops with a fatal error and the migration must start over from the copy; %s",
					humanBytes(*k), humanBytes(*k), rate),
				"")
		}
	}
	return out
}
