// Package copy is phase 2 of a migration: schema pre-data, every table's rows in the
// replication slot's snapshot, post-data, sequences and materialized views, as resumable steps
// re-derived from the durable state on the target (internal/state) at every start.
package copy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/assess"
	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/progress"
	"github.com/pgshift/pgshift/internal/schema"
	"github.com/pgshift/pgshift/internal/snapshot"
	"github.com/pgshift/pgshift/internal/state"
)

// Options are the copy phase's settings beyond config.Config.
type Options struct {
	// Force starts the migration over. It (1) drops the pgshift state schema on the target,
	// (2) drops, on the source, the slot and publication the previous migration recorded and
	// any slot or publication with this migration's names, (3) drops on the target every
	// table this copy will create (DROP TABLE ... CASCADE, which also drops views and foreign
	// keys that depend on them), and (4) applies the pre-data schema with pg_dump --clean
	// --if-exists, so every object the source's schema defines is dropped (if present) and
	// created anew. Objects on the target that the source does not define are left alone,
	// unless they depend on a dropped table.
	Force bool
	// PgDump is the pg_dump binary to use; empty finds one (see schema.FindPgDump).
	PgDump string
	// Progress receives progress bars (when ProgressTTY) or nothing (log lines go to the
	// logger instead); nil shows no progress.
	Progress    io.Writer
	ProgressTTY bool
	// ProgressInterval between log lines when not on a terminal (default 10s).
	ProgressInterval time.Duration
	// NoProgress shows no progress at all: no bars and no periodic log lines.
	NoProgress bool
	// ChunkBytes is the target size of one copy chunk (default 256 MiB).
	ChunkBytes int64
	// IndexMemory is maintenance_work_mem for the target sessions that build indexes and
	// constraints (default 512MB). Up to Jobs such sessions run at once.
	IndexMemory string
	// LeaseInterval is the heartbeat interval of the migration's lease (default 5 s; see
	// state.Lease).
	LeaseInterval time.Duration
	// Step runs one step alone (see Step); StepAll runs every step not done yet.
	Step Step
	// Resume is the command an interrupted copy tells the user to run again (default
	// "pgshift copy", with the step).
	Resume string
}

// Summary is what a copy did.
type Summary struct {
	AlreadyCopied bool // the migration had already reached the copied phase; nothing was done
	Resumed       bool // an interrupted copy was continued
	Slot          string
	Publication   string
	ConsistentLSN pgtypes.LSN
	// Recopied are the tables an interrupted copy had not finished: copied again from scratch
	// in a new snapshot consistent at RecopyLSN (their snapshot_lsn in pgshift.tables).
	Recopied  []pgtypes.TableID
	RecopyLSN pgtypes.LSN

	Tables       int // tables copied by this run
	LargeObjects int // large objects copied by this run
	Rows         int64
	Bytes        int64
	Sequences    int
	Indexes      int // post-data steps applied
	MatViews     int
	Warnings     []string

	Analyzed int  // tables analyzed after the data
	Step     Step // the step run alone; StepAll for the whole copy
	// Steps are the steps this run went through (see Step).
	Steps []string

	Schema, Data, PostData, AnalyzeTime, SequenceTime, MatViewTime, Total time.Duration
}

// Throughput is bytes per second over the data phase.
func (s Summary) Throughput() float64 {
	if s.Data <= 0 {
		return 0
	}
	return float64(s.Bytes) / s.Data.Seconds()
}

var memSetting = regexp.MustCompile(`^[0-9]+\s*(kB|MB|GB|TB)?$`)

// Run runs phase 2 of a migration: schema pre-data, all table data in the slot's snapshot,
// post-data, sequences, materialized views. It creates the migration (slot, publication,
// state) or resumes it, and returns at once when the stored phase is already copied or later.
//
// Snapshots and resume. A fresh copy creates the publication, then the slot with an exported
// snapshot; pg_dump and every copy worker read in that snapshot, and the exporting replication
// connection stays open until the data phase ends. Every table's snapshot_lsn is the slot's
// consistent point C: follow applies a change to a table only if its transaction committed at
// or after the table's snapshot_lsn.
//
// An exported snapshot dies with the process that holds it, so a copy killed during the data
// phase cannot continue in it. On resume, tables marked done are kept (their rows are exactly
// the snapshot at C). Every other table — with its whole partition tree, which shares one
// snapshot (older publications sent its changes under the root's name) — is truncated on the target and
// copied again, whole, in a NEW snapshot, exported by a TEMPORARY slot created for that
// purpose, consistent at C2 > C; those tables' snapshot_lsn becomes C2, in the same target
// transaction as the truncation. The main slot still streams from C; for a recopied table,
// changes committed between C and C2 are already in its new copy and follow skips them by
// the rule above, while every later change is applied. Two snapshots never meet within one
// table or partition tree. Within one process, progress is finer: each work item (a chunk of a
// big table, or a pack of small tables) commits its rows with its pgshift.chunks record, and a
// failed item is redone alone in the still-living snapshot.
//
// One agent per migration: Run holds the migration's lease (state.Lease) for its whole run and
// refuses to start, with a *state.HeldError naming the holder, while another agent holds it —
// with --force too. Every target session it writes through is fenced by that lease.
//
// Phases before data (new, schema) hold nothing that depends on the slot: a resumed copy there
// drops the unused slot and starts the migration's snapshot afresh. Pre-data is applied in one
// transaction together with the move to the data phase, post-data steps each in a transaction
// with their pgshift.post_data record, and sequences and materialized views are idempotent; so
// a kill at any point resumes cleanly.
func Run(ctx context.Context, cfg config.Config, opts Options, log *slog.Logger) (Summary, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := opts.check(cfg); err != nil {
		return Summary{}, err
	}
	var sum Summary
	target := db.Endpoint{Role: db.Target, DSN: cfg.Target}
	err := state.WithLease(ctx, target.WhenUp(2*time.Minute, log), "copy", opts.LeaseInterval, log, func(ctx context.Context, lease *state.Lease) error {
		var err error
		sum, err = copyLeased(ctx, cfg, opts, lease, log)
		return err
	})
	return sum, err
}

// check validates the configuration for a copy and fills the options' defaults.
func (opts *Options) check(cfg config.Config) error {
	if err := cfg.RequireSource(); err != nil {
		return err
	}
	if err := cfg.RequireTarget(); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	if opts.IndexMemory == "" {
		opts.IndexMemory = "512MB"
	}
	if !memSetting.MatchString(opts.IndexMemory) {
		return fmt.Errorf("index memory %q: want a size such as 512MB or 2GB", opts.IndexMemory)
	}
	return nil
}

// copyLeased runs the copy under a lease the caller holds (Run, or First before following).
// Its work stops as soon as the lease is lost. A copy cut short by a failure that a new session
// gets past (the source restarted, a connection was cut) is resumed from the state it recorded,
// as running it again would: up to maxCopyAttempts in all, each once both servers answer. A
// copy that never reached both servers is not retried: a wrong DSN or a server that is down is
// told at once.
func copyLeased(ctx context.Context, cfg config.Config, opts Options, lease *state.Lease, log *slog.Logger) (Summary, error) {
	reached := false
	for attempt := 1; ; attempt++ {
		sum, connected, err := copyOnce(ctx, cfg, opts, lease, log)
		reached = reached || connected
		if errors.Is(err, state.ErrLeaseLost) && ctx.Err() == nil && lease != nil {
			// The lease session ended (a target restart, a session ended on the target): the
			// copy stopped writing at once. It resumes when the keeper holds the lease again,
			// or ends when another agent took it meanwhile (that agent then copies).
			log.Warn("the copy stopped: this agent lost its lease on the target; resuming once it holds it again", "err", err)
			if werr := lease.WaitHeld(ctx); werr != nil {
				if ctx.Err() != nil {
					return sum, err
				}
				return sum, werr
			}
			continue
		}
		raced := errors.Is(err, errDumpBeforeData)
		if err == nil || !reached || attempt == maxCopyAttempts || ctx.Err() != nil || !(db.Transient(err) || raced) ||
			errors.Is(err, ErrInterrupted) || errors.Is(err, state.ErrLeaseLost) {
			return sum, err
		}
		if raced {
			log.Warn("pg_dump of the schema failed, as it does when the source's schema changes while it reads it; starting the copy over (nothing was copied yet)", "attempt", attempt, "err", err)
		} else {
			log.Warn("the copy was cut short by a connection failure; resuming it", "attempt", attempt, "err", err)
		}
		select {
		case <-ctx.Done():
			return sum, err
		case <-time.After(time.Duration(attempt) * time.Second):
		}
		for _, e := range []db.Endpoint{{Role: db.Source, DSN: cfg.Source}, {Role: db.Target, DSN: cfg.Target}} {
			if conn, cerr := e.ConnectWhenUp(ctx, 2*time.Minute, log); cerr == nil {
				conn.Close(context.WithoutCancel(ctx))
			}
		}
	}
}

// maxCopyAttempts bounds the resumptions of one copy after connection failures.
const maxCopyAttempts = 4

// errDumpBeforeData marks a failed dump of the schema (the roles and database step in the
// preflight, pre-data in the slot's snapshot): before any data, so the copy can start over with
// a new slot at no cost (schemaAndData drops the unused one). Concurrent DDL on the source makes
// pg_dump fail that way ("cache lookup failed for index …"), which a second dump does not meet;
// a failure that stays (a privilege) fails every attempt alike.
var errDumpBeforeData = errors.New("a dump of the source's schema failed before any data was copied")

// copyOnce is one attempt of copyLeased; connected tells whether it reached both servers.
func copyOnce(ctx context.Context, cfg config.Config, opts Options, lease *state.Lease, log *slog.Logger) (_ Summary, connected bool, _ error) {
	ctx, cancel := lease.Bind(ctx)
	defer cancel()
	r := &copyRun{cfg: cfg, opts: opts, log: log, start: time.Now(), lease: lease, sum: Summary{Step: opts.Step},
		src: db.Endpoint{Role: db.Source, DSN: cfg.Source}, dst: db.Endpoint{Role: db.Target, DSN: cfg.Target, Session: lease.Fence}}
	defer r.close()
	sum, err := r.run(ctx)
	switch {
	case err == nil:
	case errors.Is(context.Cause(ctx), state.ErrLeaseLost):
		err = fmt.Errorf("%w: the copy stopped so that no other agent's copy meets its writes (%v)", state.ErrLeaseLost, err)
	case ctx.Err() != nil:
		err = r.interrupted()
	}
	return sum, r.srcConn != nil && r.dstConn != nil, err
}

// copyRun is one invocation of Run.
type copyRun struct {
	cfg      config.Config
	opts     Options
	log      *slog.Logger
	start    time.Time
	src, dst db.Endpoint

	lease            *state.Lease
	srcConn, dstConn *pgx.Conn
	srcInfo, dstInfo catalog.ServerInfo
	slotName         string
	pubName          string
	pgDump           schema.PgDump
	tables           []catalog.Table // selected source tables
	postPlan         *schema.PostDataPlan
	// postAhead delivers the post-data dump taken in the copy's snapshot beside the data phase
	// (nil when none was started: a resumed copy dumps post-data when it gets there).
	postAhead chan postAheadDump
	// deferred are the enable-state statements of post-data kept back until cutover, by the
	// key of the post-data item that carried them (see schema.DeferReplicaEnables).
	deferred map[string][]schema.EnableState
	// globals are the roles step (run with pre-data) and the database step (run last).
	globals schema.Globals
	// identities are the tables to give REPLICA IDENTITY FULL on the source before they are
	// published (--replica-identity-full).
	identities assess.IdentityPlan
	sum        Summary
	step       string // the step under way, for messages
	recopies   int    // new snapshots taken because a table was rewritten during the copy
}

// maxRecopies bounds the new snapshots one copy takes for tables rewritten under it: a source
// that rewrites a table over and over must be told, not chased.
const maxRecopies = 5

func (r *copyRun) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r.srcConn != nil {
		r.srcConn.Close(ctx)
	}
	if r.dstConn != nil {
		r.dstConn.Close(ctx)
	}
}

func (r *copyRun) run(ctx context.Context) (Summary, error) {
	var err error
	if r.srcConn, err = r.src.Connect(ctx); err != nil {
		return r.sum, err
	}
	if r.dstConn, err = r.dst.Connect(ctx); err != nil {
		return r.sum, err
	}
	if r.srcInfo, err = catalog.Server(ctx, r.srcConn); err != nil {
		return r.sum, r.src.Describe(err)
	}
	if err := r.srcInfo.Features().CheckSource(); err != nil {
		return r.sum, err
	}
	if r.dstInfo, err = catalog.Server(ctx, r.dstConn); err != nil {
		return r.sum, r.dst.Describe(err)
	}
	r.slotName, r.pubName = r.cfg.Slot, r.cfg.Publication
	if r.slotName == "" {
		r.slotName = snapshot.DefaultName(r.srcInfo.Database)
	}
	if r.pubName == "" {
		r.pubName = snapshot.DefaultName(r.srcInfo.Database)
	}
	if err := snapshot.ValidSlotName(r.slotName); err != nil {
		return r.sum, fmt.Errorf("%w (set --slot)", err)
	}

	m, err := state.Load(ctx, r.dstConn)
	switch {
	case errors.Is(err, state.ErrNoMigration):
		m = state.Migration{}
	case err != nil:
		return r.sum, r.dst.Describe(err)
	}
	exists := m.Phase != ""
	if exists && !r.opts.Force {
		if m.SourceSystemID != r.srcInfo.SystemID || m.SourceDatabase != r.srcInfo.Database {
			return r.sum, fmt.Errorf("the target already holds a migration from another source (system id %s, database %s; this source is system id %s, database %s): use an empty target database, or pass --force to start over",
				m.SourceSystemID, m.SourceDatabase, r.srcInfo.SystemID, r.srcInfo.Database)
		}
		r.slotName, r.pubName = m.Slot, m.Publication
		r.sum.Slot, r.sum.Publication, r.sum.ConsistentLSN = m.Slot, m.Publication, m.ConsistentLSN
		if m.Phase.AtLeast(pgtypes.PhaseCopied) && r.opts.Step != StepSequences {
			r.sum.AlreadyCopied = true
			r.log.Info("copy already complete; nothing to do", "phase", m.Phase.String(), "slot", m.Slot)
			return r.sum, nil
		}
	}
	r.sum.Slot, r.sum.Publication = r.slotName, r.pubName
	switch {
	case r.opts.Force && r.opts.Step > StepSchema:
		return r.sum, fmt.Errorf("--force starts the migration over: use it with pgshift copy or pgshift copy schema, not with step %s", r.opts.Step)
	case !exists && r.opts.Step > StepSchema:
		return r.sum, fmt.Errorf("the target holds no migration yet: run pgshift copy schema (or pgshift copy) before step %s", r.opts.Step)
	}

	if err := r.preflight(ctx); err != nil {
		return r.sum, err
	}
	if r.opts.Force {
		if err := r.forget(ctx, m); err != nil {
			return r.sum, err
		}
		exists = false
	}
	if !exists {
		if err := r.checkFresh(ctx); err != nil {
			return r.sum, err
		}
	}
	// Both paths need the full state schema: a resumed migration may predate some of its tables.
	if err := state.Ensure(ctx, r.dstConn); err != nil {
		return r.sum, r.dst.Describe(err)
	}
	r.lease.Touch() // the holder's identity can be recorded now

	if !exists {
		if err := state.Create(ctx, r.dstConn, state.Migration{SourceSystemID: r.srcInfo.SystemID,
			SourceDatabase: r.srcInfo.Database, Slot: r.slotName, Publication: r.pubName, Phase: pgtypes.PhaseNew}); err != nil {
			return r.sum, r.dst.Describe(err)
		}
		m.Phase = pgtypes.PhaseNew
	} else {
		r.sum.Resumed = r.opts.Step == StepAll
		if r.sum.Resumed {
			r.log.Info("resuming an interrupted copy", "phase", m.Phase.String(), "slot", r.slotName)
		}
	}

	if err := r.steps(ctx, m.Phase, !exists); err != nil {
		return r.sum, err
	}
	r.sum.Total = time.Since(r.start)
	if m2, err := state.Load(ctx, r.dstConn); err == nil {
		r.sum.ConsistentLSN = m2.ConsistentLSN
	}
	if r.opts.Step != StepAll {
		r.log.Info("copy step done", "step", r.opts.Step.String(), "took", r.sum.Total.Round(time.Millisecond).String())
		return r.sum, nil
	}
	r.log.Info("copy complete", "tables", r.sum.Tables, "rows", r.sum.Rows, "bytes", progress.HumanBytes(r.sum.Bytes),
		"took", r.sum.Total.Round(time.Millisecond).String(), "consistent_lsn", r.sum.ConsistentLSN.String())
	return r.sum, nil
}

// preflight checks what would make the copy fail half-way, before anything is created, and
// reads and checks the tables to migrate.
func (r *copyRun) preflight(ctx context.Context) error {
	var err error
	if r.pgDump, err = schema.FindPgDump(ctx, r.opts.PgDump, r.srcInfo.VersionNum); err != nil {
		return err
	}
	// pg_dump of the database step runs beside the reads below (about 0.1 s of process start
	// and catalog reads off the critical path); the globals are planned after them.
	dbDump := r.pgDump.StartDatabaseDump(ctx, r.cfg.Source, r.globalsOptions())
	all, err := catalog.Tables(ctx, r.srcConn, config.TableFilter{})
	if err != nil {
		return r.src.Describe(err)
	}
	r.tables = assess.SelectTables(all, r.cfg.Filter())
	if len(r.tables) == 0 {
		r.sum.Warnings = append(r.sum.Warnings, "no tables match the include/exclude patterns: only the schema is copied")
	}
	// One rule table: the blockers are exactly those `pgshift assess` reports for these
	// servers and tables (wal_level, replication privilege — REPLICATION, superuser or
	// rds_replication —, ownership, row security, replica identity as pgoutput will publish
	// the changes, unlogged tables, a target that is not empty, extensions and languages the
	// target lacks, ...), and its warnings are the copy's.
	findings, err := assess.Preflight(ctx, r.srcConn, r.dstConn, assess.Options{Filter: r.cfg.Filter(), Jobs: r.cfg.Jobs,
		SourceName: r.src.String(), TargetName: r.dst.String(), Logger: r.log, StartOver: r.opts.Force,
		RecopyUnlogged: r.cfg.RecopyUnlogged, ReplicaIdentityFull: r.cfg.ReplicaIdentityFull})
	if err != nil {
		return fmt.Errorf("preflight: %w", err)
	}
	if r.globals, err = r.pgDump.PlanGlobals(ctx, r.srcConn, r.dstConn, r.cfg.Source, dbDump, r.srcInfo.Database, r.dstInfo.Database, r.globalsOptions()); err != nil {
		if _, ok := errors.AsType[*schema.DumpError](err); ok {
			return fmt.Errorf("%w: %w", errDumpBeforeData, err)
		}
		return err
	}
	for _, n := range r.globals.Notes() {
		r.warn(n)
	}
	// The identity rule's blockers are planned by the same rule (assess.PlanIdentities): with
	// --replica-identity-full a table with no key and no usable identity is given REPLICA
	// IDENTITY FULL on the source instead of refused; without it, the refusal names the flag.
	r.identities = assess.PlanIdentities(r.tables, r.cfg.ReplicaIdentityFull)
	blocked := slices.Clone(r.identities.Blocked)
	for _, f := range findings {
		if f.Code == assess.CodeNoReplicaIdentity {
			continue
		}
		switch f.Severity {
		case assess.Blocker:
			blocked = append(blocked, fmt.Sprintf("%s: %s; fix: %s", f.Object, f.Message, f.Fix))
		case assess.Warning:
			w := f.Object + ": " + f.Message
			if f.Fix != "" {
				w += " (" + f.Fix + ")"
			}
			r.warn(w)
		default:
			r.log.Debug("preflight", "object", f.Object, "finding", f.Message)
		}
	}
	if len(blocked) > 0 {
		return fmt.Errorf("the copy cannot start (nothing was created): %d blocker(s), as pgshift assess reports them:\n  %s",
			len(blocked), strings.Join(blocked, "\n  "))
	}
	// Only the steps that load data write the copy's WAL.
	if r.opts.Step == StepAll || r.opts.Step == StepData {
		w, err := checkpointWarning(ctx, r.dstConn, r.tables, r.cfg.Jobs)
		if err != nil {
			return r.dst.Describe(err)
		}
		if w != "" {
			r.warn(w)
		}
	}
	// The target side of row security needs the owners the copy will give the tables there.
	return snapshot.CheckTargetRowSecurity(ctx, r.dstConn, r.tables, r.cfg.NoOwner)
}

// globalsOptions are the copy's opt-outs of roles, owners and privileges.
func (r *copyRun) globalsOptions() schema.GlobalsOptions {
	return schema.GlobalsOptions{NoOwner: r.cfg.NoOwner, NoPrivileges: r.cfg.NoPrivileges, NoRoles: r.cfg.NoRoles}
}

func (r *copyRun) warn(msg string) {
	r.sum.Warnings = append(r.sum.Warnings, msg)
	r.log.Warn(msg)
}

func rootOf(t catalog.Table, byID map[pgtypes.TableID]*catalog.Table) pgtypes.TableID {
	return assess.PartitionRoot(t.ID, byID)
}

// checkFresh refuses source objects that already use this migration's names (a target that
// holds user tables is a blocker of preflight's).
func (r *copyRun) checkFresh(ctx context.Context) error {
	slot, err := snapshot.LookupSlot(ctx, r.srcConn, r.slotName)
	if err != nil {
		return r.src.Describe(err)
	}
	if slot.Exists {
		return fmt.Errorf("%s: replication slot %s already exists (left by another migration?): drop it with SELECT pg_drop_replication_slot('%s'), choose another name with --slot, or pass --force",
			r.src, r.slotName, r.slotName)
	}
	pub, err := snapshot.PublicationExists(ctx, r.srcConn, r.pubName)
	if err != nil {
		return r.src.Describe(err)
	}
	if pub {
		return fmt.Errorf("%s: publication %s already exists: drop it with DROP PUBLICATION %s, choose another name with --publication, or pass --force",
			r.src, r.pubName, pgtypes.QuoteIdent(r.pubName))
	}
	return nil
}

// forget implements --force's steps 1-3 (see Options.Force).
func (r *copyRun) forget(ctx context.Context, m state.Migration) error {
	r.log.Warn("--force: starting the migration over", "slot", r.slotName, "publication", r.pubName)
	slots := []string{r.slotName}
	pubs := []string{r.pubName}
	if m.Phase != "" && m.SourceSystemID == r.srcInfo.SystemID && m.SourceDatabase == r.srcInfo.Database {
		slots = append(slots, m.Slot)
		pubs = append(pubs, m.Publication)
	}
	for _, s := range slots {
		if err := snapshot.DropSlot(ctx, r.srcConn, s); err != nil {
			return r.src.Describe(err)
		}
	}
	for _, p := range pubs {
		if err := snapshot.DropPublication(ctx, r.srcConn, p); err != nil {
			return r.src.Describe(err)
		}
	}
	if err := state.Drop(ctx, r.dstConn); err != nil {
		return r.dst.Describe(err)
	}
	for _, t := range r.tables {
		if t.IsPartition {
			continue // dropped with its root
		}
		kind := "TABLE"
		switch t.Kind {
		case catalog.KindForeign:
			kind = "FOREIGN TABLE"
		case catalog.KindMatView:
			kind = "MATERIALIZED VIEW"
		}
		var exists bool
		if err := r.dstConn.QueryRow(ctx, `SELECT to_regclass($1) IS NOT NULL`, t.ID.Sanitize()).Scan(&exists); err != nil {
			return r.dst.Describe(err)
		}
		if !exists {
			continue
		}
		if _, err := r.dstConn.Exec(ctx, "DROP "+kind+" IF EXISTS "+t.ID.Sanitize()+" CASCADE"); err != nil {
			return fmt.Errorf("--force: drop %s on the target: %w", t.ID, r.dst.Describe(err))
		}
	}
	return nil
}

// checkSlot makes sure the migration's slot still exists and has kept its WAL: without it the
// changes since the copy's snapshot are gone and following would silently lose them.
func (r *copyRun) checkSlot(ctx context.Context) error {
	si, err := snapshot.LookupSlot(ctx, r.srcConn, r.slotName)
	if err != nil {
		return r.src.Describe(err)
	}
	if !si.Exists {
		return fmt.Errorf("%s: the migration's replication slot %s no longer exists, so the changes made since the copy began are lost; start over with --force",
			r.src, r.slotName)
	}
	if si.WALStatus == "lost" {
		return fmt.Errorf("%s: replication slot %s has lost WAL it needed (max_slot_wal_keep_size?), so changes made since the copy began are gone; start over with --force",
			r.src, r.slotName)
	}
	return nil
}

// migrationTables describes the selected tables as pgshift.tables rows.
func (r *copyRun) migrationTables() []state.TableProgress {
	byID := make(map[pgtypes.TableID]*catalog.Table, len(r.tables))
	for i := range r.tables {
		byID[r.tables[i].ID] = &r.tables[i]
	}
	var out []state.TableProgress
	for _, t := range r.tables {
		kind := ""
		switch {
		case t.HoldsData():
			kind = state.KindData
		case t.Kind == catalog.KindPartitioned:
			kind = state.KindPartitioned
		default:
			continue
		}
		out = append(out, state.TableProgress{ID: t.ID, Root: rootOf(t, byID), Kind: kind,
			Estimate: state.Estimate{Rows: t.RowsEstimate, Bytes: t.HeapBytes + t.ToastBytes}})
	}
	return out
}

// excluded lists the source tables not migrated, for pg_dump.
func (r *copyRun) excluded(ctx context.Context) ([]pgtypes.TableID, error) {
	all, err := catalog.Tables(ctx, r.srcConn, config.TableFilter{})
	if err != nil {
		return nil, r.src.Describe(err)
	}
	keep := map[pgtypes.TableID]bool{}
	for _, t := range r.tables {
		keep[t.ID] = true
	}
	var out []pgtypes.TableID
	for _, t := range all {
		if !keep[t.ID] {
			out = append(out, t.ID)
		}
	}
	return out, nil
}

// exporter holds a replication connection whose slot exported a snapshot.
type exporter struct {
	conn *pgconn.PgConn
	slot snapshot.Slot
}

func (e *exporter) close() {
	if e != nil && e.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.conn.Close(ctx)
	}
}

func (r *copyRun) newExporter(ctx context.Context, name string, temporary bool) (*exporter, error) {
	conn, err := r.src.Replication(ctx)
	if err != nil {
		return nil, err
	}
	slot, err := snapshot.CreateSlot(ctx, conn, name, temporary)
	if err != nil {
		conn.Close(ctx)
		return nil, r.src.Describe(err)
	}
	return &exporter{conn: conn, slot: slot}, nil
}

// schemaAndData creates the publication and slot, applies pre-data and, with data, copies every
// table in the slot's snapshot. from is the stored phase: new, or schema when an earlier attempt
// stopped before its data phase.
func (r *copyRun) schemaAndData(ctx context.Context, from pgtypes.Phase, data bool) error {
	t0 := time.Now()
	if err := snapshot.DropSlot(ctx, r.srcConn, r.slotName); err != nil { // unused: nothing was copied from it
		return r.src.Describe(err)
	}
	// Before the tables are published: once they are, an UPDATE without identity fails.
	changed, err := state.SetReplicaIdentityFull(ctx, r.srcConn, r.identities.SetFull)
	if err != nil {
		return r.src.Describe(err)
	}
	for _, c := range changed {
		r.warn(fmt.Sprintf("%s has no key: set REPLICA IDENTITY FULL on the source (recorded in its pgshift schema; pgshift finish restores it: %s)", c.Table, c.Restore()))
	}
	pubExists, err := snapshot.PublicationExists(ctx, r.srcConn, r.pubName)
	if err != nil {
		return r.src.Describe(err)
	}
	if !pubExists {
		v := r.srcInfo.Features()
		tables := snapshot.PublicationTables(r.tables, v)
		if !v.TruncateReplicated() {
			// pgoutput on this source sends no TRUNCATE: triggers record each one in a table
			// that is published with the rest (see state.CaptureTruncates).
			if err := state.CaptureTruncates(ctx, r.srcConn, tables); err != nil {
				return r.src.Describe(err)
			}
			r.log.Info("TRUNCATE capture installed on the source (PostgreSQL 10 does not replicate TRUNCATE)",
				"trigger", catalog.TruncateTrigger, "tables", len(tables), "log", catalog.StateSchema+"."+catalog.TruncateLogName)
			tables = append(tables, pgtypes.TableID{Schema: catalog.StateSchema, Name: catalog.TruncateLogName})
		}
		captured := false
		if r.cfg.FollowDDL() {
			// ddl: follow: the source's schema changes are recorded in a table published with
			// the rest, in their transactions (see state.CaptureDDL).
			err := state.CaptureDDL(ctx, r.srcConn)
			switch {
			case errors.Is(err, state.ErrNoDDLCapture):
				r.warn(fmt.Sprintf("ddl: follow is configured, but %v; schema changes on the source are not followed: the agent stops with the DDL to run on the target when a table's columns change (as with ddl: stop)", err))
			case err != nil:
				return r.src.Describe(err)
			default:
				r.log.Info("DDL capture installed on the source", "event_trigger", catalog.DDLTrigger, "log", catalog.StateSchema+"."+catalog.DDLLogName)
				tables = append(tables, pgtypes.TableID{Schema: catalog.StateSchema, Name: catalog.DDLLogName})
				captured = true
			}
		}
		if err := snapshot.CreatePublication(ctx, r.srcConn, r.pubName, tables, v); err != nil {
			return r.src.Describe(err)
		}
		if captured {
			// A table created from here on joins the publication in its own transaction; one
			// created before this (none is streamed) is copied instead when the applier meets it.
			if err := state.ConfigureDDLFollow(ctx, r.srcConn, r.pubName, r.cfg.Filter()); err != nil {
				return r.src.Describe(err)
			}
		}
	}
	exp, err := r.newExporter(ctx, r.slotName, false)
	if err != nil {
		return err
	}
	defer exp.close()
	lsn := exp.slot.ConsistentLSN
	r.sum.ConsistentLSN = lsn
	r.log.Info("replication slot created", "slot", r.slotName, "consistent_lsn", lsn.String(), "snapshot", exp.slot.SnapshotName)
	if err := state.SetConsistentLSN(ctx, r.dstConn, lsn); err != nil {
		return r.dst.Describe(err)
	}
	if err := state.Advance(ctx, r.dstConn, from, pgtypes.PhaseSchema); err != nil {
		return r.dst.Describe(err)
	}
	excl, err := r.excluded(ctx)
	if err != nil {
		return err
	}
	pre, err := r.dump(ctx, schema.PreData, r.dumpOptions(schema.DumpOptions{Snapshot: exp.slot.SnapshotName, ExcludeTables: excl, Clean: r.opts.Force}))
	if _, ok := errors.AsType[*schema.DumpError](err); ok {
		return fmt.Errorf("%w: %w", errDumpBeforeData, err)
	}
	if err != nil {
		return err
	}
	err = schema.ApplyPreData(ctx, r.dstConn, r.globals.WithRoles(pre), func(tx pgx.Tx) error {
		if err := state.RegisterTables(ctx, tx, r.migrationTables(), lsn); err != nil {
			return err
		}
		return state.Advance(ctx, tx, pgtypes.PhaseSchema, pgtypes.PhaseData)
	})
	if err != nil {
		return r.dst.Describe(err)
	}
	r.sum.Schema = time.Since(t0)
	r.log.Info("pre-data schema applied", "took", r.sum.Schema.Round(time.Millisecond).String())
	if !data {
		return nil
	}
	r.step = StepData.String()
	r.dumpPostDataAhead(ctx, exp.slot.SnapshotName, excl)
	return r.copyData(ctx, exp, nil)
}

// postAheadDump is the outcome of the post-data dump taken beside the data phase.
type postAheadDump struct {
	script schema.Script
	err    error
}

// dumpPostDataAhead starts pg_dump of post-data in the copy's snapshot now, beside the data
// phase, so that the indexes can be built as soon as the data is in: at scale 30 the dump
// alone took about 2 s between the two. The snapshot also makes post-data the same schema
// as pre-data. The dump shares nothing with the data phase but the exported snapshot, which
// it imports at once, while the exporting session is open. A failure here is not the copy's:
// postDataPlan then dumps again without a snapshot, as a resumed copy does.
func (r *copyRun) dumpPostDataAhead(ctx context.Context, snapshotName string, excl []pgtypes.TableID) {
	ch := make(chan postAheadDump, 1)
	r.postAhead = ch
	opts := r.dumpOptions(schema.DumpOptions{Snapshot: snapshotName, ExcludeTables: excl})
	go func() {
		s, err := r.dump(ctx, schema.PostData, opts)
		ch <- postAheadDump{script: s, err: err}
	}()
}

// dumpOptions adds the copy's opt-outs to o.
func (r *copyRun) dumpOptions(o schema.DumpOptions) schema.DumpOptions {
	o.NoOwner, o.NoPrivileges = r.cfg.NoOwner, r.cfg.NoPrivileges
	return o
}

// dump runs pg_dump for one section and parses its script. A dump outside a snapshot
// (post-data) that fails because the source restarted under it is run again once the source
// is back, up to maxDumpRetries times: pg_dump tells a lost server only in its messages, so
// the source itself is asked (its postmaster start time moved, or it is not up). A dump in
// the copy's snapshot cannot be redone: the snapshot died with the session.
func (r *copyRun) dump(ctx context.Context, section schema.Section, o schema.DumpOptions) (schema.Script, error) {
	var text string
	for attempt := 0; ; attempt++ {
		var started time.Time
		if o.Snapshot == "" {
			started, _ = r.sourceStarted(ctx)
		}
		var err error
		if text, err = r.pgDump.Dump(ctx, r.cfg.Source, section, o); err == nil {
			break
		}
		if o.Snapshot != "" || attempt == maxDumpRetries || ctx.Err() != nil {
			return schema.Script{}, err
		}
		now, serr := r.sourceStarted(ctx)
		if serr == nil && now.Equal(started) && !started.IsZero() {
			return schema.Script{}, err // the source stayed up: the failure is pg_dump's own
		}
		if serr != nil && !db.Transient(serr) {
			return schema.Script{}, errors.Join(err, serr)
		}
		r.log.Warn("pg_dump failed while the source restarted; dumping again", "section", string(section), "attempt", attempt+1, "err", err)
		select {
		case <-ctx.Done():
			return schema.Script{}, err
		case <-time.After(time.Duration(attempt+1) * 2 * time.Second):
		}
	}
	s, err := schema.Parse(text)
	if err != nil {
		return s, fmt.Errorf("pg_dump --section=%s output: %w", section, err)
	}
	return s, nil
}

// maxDumpRetries bounds the dumps redone because the source restarted during one.
const maxDumpRetries = 3

// sourceStarted is the source postmaster's start time, on a new session that waits for a
// source in recovery to accept connections.
func (r *copyRun) sourceStarted(ctx context.Context) (time.Time, error) {
	conn, err := r.src.ConnectWhenUp(ctx, 2*time.Minute, r.log)
	if err != nil {
		return time.Time{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var t time.Time
	if err := conn.QueryRow(ctx, `SELECT pg_catalog.pg_postmaster_start_time()`).Scan(&t); err != nil {
		return time.Time{}, r.src.Describe(err)
	}
	return t, nil
}

// resumeData continues an interrupted data phase: finished tables are kept, every other
// partition tree or table is truncated and copied again in a new snapshot (see Run).
//
// locked are data tables to copy again under SHARE locks in a snapshot of their own
// (snapshot.CopyOptions.LockShare), first: tables a rewrite hit again after a new snapshot.
func (r *copyRun) resumeData(ctx context.Context, locked []pgtypes.TableID) error {
	if err := r.copyLocked(ctx, locked); err != nil {
		return err
	}
	progressRows, err := state.LoadTables(ctx, r.dstConn)
	if err != nil {
		return r.dst.Describe(err)
	}
	redoRoots := map[pgtypes.TableID]bool{}
	for _, t := range progressRows {
		if t.Kind == state.KindData && t.State != state.TableDone {
			redoRoots[t.Root] = true
		}
	}
	var redo, truncate []pgtypes.TableID
	for _, t := range progressRows {
		if redoRoots[t.Root] {
			redo = append(redo, t.ID)
			if t.Kind == state.KindData {
				truncate = append(truncate, t.ID)
			}
		}
	}
	if len(redo) == 0 {
		return r.finishData(ctx, 0)
	}
	// A temporary slot only exports a fresh snapshot and tells its consistent point; it
	// disappears with its connection when the recopy is done.
	// (Unique also when a rewrite makes one copy take several within a second.)
	tmpName := fmt.Sprintf("%s_r%d_%d", r.slotName, time.Now().Unix(), r.recopies)
	if len(tmpName) > 63 {
		tmpName = fmt.Sprintf("pgshift_r%d", time.Now().UnixNano())
	}
	exp, err := r.newExporter(ctx, tmpName, true)
	if err != nil {
		return err
	}
	defer exp.close()
	lsn := exp.slot.ConsistentLSN
	r.sum.Recopied, r.sum.RecopyLSN = truncate, lsn
	r.log.Warn("the snapshot of the interrupted copy is gone with its process: copying unfinished tables again from scratch in a new snapshot; follow skips their changes committed before its LSN",
		"tables", len(truncate), "new_snapshot_lsn", lsn.String())
	if err := r.startOver(ctx, truncate, redo, lsn); err != nil {
		return r.dst.Describe(err)
	}
	keep := map[pgtypes.TableID]bool{}
	for _, id := range truncate {
		keep[id] = true
	}
	return r.copyData(ctx, exp, keep)
}

// startOver empties the data tables truncate on the target and resets the copy state of reset
// (those tables and their partitioned roots) to pending at lsn, in one target transaction.
func (r *copyRun) startOver(ctx context.Context, truncate, reset []pgtypes.TableID, lsn pgtypes.LSN) error {
	return pgx.BeginFunc(ctx, r.dstConn, func(tx pgx.Tx) error {
		if len(truncate) > 0 {
			if _, err := tx.Exec(ctx, pgtypes.TruncateOnly(truncate)); err != nil {
				return fmt.Errorf("truncate the tables to copy again on the target: %w", err)
			}
		}
		return state.ResetTables(ctx, tx, reset, lsn)
	})
}

// copyLocked copies tables again from scratch, each in one source session that holds them in
// SHARE mode from before its snapshot (snapshot.CopyOptions.LockShare), and records the
// snapshot's position as their snapshot LSN.
func (r *copyRun) copyLocked(ctx context.Context, ids []pgtypes.TableID) error {
	if len(ids) == 0 {
		return nil
	}
	var tables []*catalog.Table
	for _, t := range snapshot.DataTables(r.tables) {
		if slices.Contains(ids, t.ID) {
			tables = append(tables, t)
		}
	}
	names := make([]string, len(ids))
	for i, id := range ids {
		names[i] = id.Sanitize()
	}
	r.log.Warn("copying tables again while holding them in SHARE mode: their writes wait until each is copied", "tables", strings.Join(names, ", "))
	if err := r.startOver(ctx, ids, ids, r.sum.ConsistentLSN); err != nil { // each start records its own LSN
		return r.dst.Describe(err)
	}
	for _, id := range ids {
		if !slices.Contains(r.sum.Recopied, id) {
			r.sum.Recopied = append(r.sum.Recopied, id)
		}
	}
	items := snapshot.Plan(tables, snapshot.PlanOptions{ChunkBytes: r.opts.ChunkBytes, Jobs: 1, Whole: !r.srcInfo.Features().HasTIDRangeScan()})
	res, err := snapshot.Copy(ctx, r.src, r.dst, items, snapshot.CopyOptions{
		Jobs: 1, LockShare: true, LockTables: ids, Binary: r.srcInfo.VersionNum/10000 == r.dstInfo.VersionNum/10000, Log: r.log})
	r.sum.Rows += res.Rows
	r.sum.Bytes += res.Bytes
	r.sum.Tables += res.Tables
	return err
}

// copyData copies the selected data tables (only those in only, when set) in exp's snapshot.
func (r *copyRun) copyData(ctx context.Context, exp *exporter, only map[pgtypes.TableID]bool) error {
	t0 := time.Now()
	var tables []*catalog.Table
	for _, t := range snapshot.DataTables(r.tables) {
		if only == nil || only[t.ID] {
			tables = append(tables, t)
		}
	}
	items := snapshot.Plan(tables, snapshot.PlanOptions{ChunkBytes: r.opts.ChunkBytes, Jobs: r.cfg.Jobs, Whole: !r.srcInfo.Features().HasTIDRangeScan()})
	r.log.Info("copying data", "tables", len(tables), "work_items", len(items), "jobs", r.cfg.Jobs, "snapshot_lsn", exp.slot.ConsistentLSN.String())
	popts := progress.Options{Out: r.opts.Progress, TTY: r.opts.ProgressTTY && r.opts.Progress != nil,
		Interval: r.opts.ProgressInterval, Log: r.log, Title: "copy"}
	if r.opts.NoProgress {
		popts = progress.Options{Title: "copy", Interval: time.Hour} // counts only; draws and logs nothing
	}
	tracker := progress.New(popts)
	pctx, stopProgress := context.WithCancel(ctx)
	g, gctx := errgroup.WithContext(pctx)
	var res snapshot.Result
	g.Go(func() error { return tracker.Run(gctx) })
	g.Go(func() error {
		defer stopProgress()
		var err error
		copts := snapshot.CopyOptions{
			Jobs: r.cfg.Jobs, Snapshot: exp.slot.SnapshotName, Binary: r.srcInfo.VersionNum/10000 == r.dstInfo.VersionNum/10000,
			Retries: 2, Tracker: tracker, Log: r.log,
		}
		if r.recopies > 0 {
			// Copying again what a rewrite hit (often a table the application TRUNCATEs):
			// one worker holding them locked, so the next TRUNCATE waits for it.
			for _, t := range tables {
				copts.LockTables = append(copts.LockTables, t.ID)
			}
		}
		res, err = snapshot.Copy(gctx, r.src, r.dst, items, copts)
		return err
	})
	err := g.Wait()
	tracker.Stop()
	r.sum.Rows += res.Rows
	r.sum.Bytes += res.Bytes
	r.sum.Tables += res.Tables
	if err == nil {
		// In the same snapshot as the rows that may name them by OID.
		var lo snapshot.LargeObjectResult
		lo, err = snapshot.SyncLargeObjects(ctx, r.src, r.dst, r.largeObjectOptions(exp.slot.SnapshotName))
		r.sum.LargeObjects, r.sum.Bytes = r.sum.LargeObjects+lo.Copied, r.sum.Bytes+lo.Bytes
	}
	r.sum.Data += time.Since(t0)
	if rw, ok := errors.AsType[*snapshot.RewrittenError](err); ok && ctx.Err() == nil && r.recopies < maxRecopies {
		// A table rewritten after this snapshot cannot be read in it: what is finished stays,
		// the rest is copied again in a new snapshot taken after the rewrite, as an
		// interrupted copy is.
		r.recopies++
		r.log.Warn("tables were rewritten on the source during the copy; copying the unfinished tables again in a new snapshot",
			"tables", len(rw.Tables), "first", rw.Tables[0].String(), "attempt", r.recopies, "fix", "avoid table-rewriting DDL, VACUUM FULL, CLUSTER and TRUNCATE on the source while pgshift copies")
		var locked []pgtypes.TableID
		if r.recopies > 1 {
			// Rewritten again after a new snapshot: an application rewrites (TRUNCATEs) them
			// faster than a snapshot reaches its copy. Copied under SHARE locks instead:
			// their writes wait for their copy.
			locked = rw.Tables
		}
		return r.resumeData(ctx, locked)
	}
	if err != nil {
		return err
	}
	return r.finishData(ctx, time.Since(t0))
}

func (r *copyRun) finishData(ctx context.Context, took time.Duration) error {
	if err := state.FinishPartitioned(ctx, r.dstConn); err != nil {
		return r.dst.Describe(err)
	}
	rows, err := state.LoadTables(ctx, r.dstConn)
	if err != nil {
		return r.dst.Describe(err)
	}
	for _, t := range rows {
		if t.State != state.TableDone {
			return fmt.Errorf("table %s is still %s after the data phase (was it dropped on the source, or left out by changed --include/--exclude patterns, since the copy began?)", t.ID, t.State)
		}
	}
	if err := state.Advance(ctx, r.dstConn, pgtypes.PhaseData, pgtypes.PhasePostData); err != nil {
		return r.dst.Describe(err)
	}
	r.log.Info("data copied", "rows", r.sum.Rows, "bytes", progress.HumanBytes(r.sum.Bytes), "took", took.Round(time.Millisecond).String())
	return nil
}

// postDataPlan plans post-data from the dump taken beside the data phase, or, when there is
// none (a resumed copy) or it failed, from a dump now without a snapshot: an index or
// constraint is the same in any snapshot as long as the schema does not change meanwhile.
func (r *copyRun) postDataPlan(ctx context.Context) (schema.PostDataPlan, error) {
	if r.postPlan != nil {
		return *r.postPlan, nil
	}
	var post schema.Script
	have := false
	if r.postAhead != nil {
		var ahead postAheadDump
		select {
		case ahead = <-r.postAhead:
		case <-ctx.Done():
			return schema.PostDataPlan{}, ctx.Err()
		}
		r.postAhead = nil
		if ahead.err != nil {
			r.log.Warn("the post-data dump taken beside the data phase failed; dumping post-data again", "err", ahead.err)
		} else {
			post, have = ahead.script, true
		}
	}
	if !have {
		excl, err := r.excluded(ctx)
		if err != nil {
			return schema.PostDataPlan{}, err
		}
		if post, err = r.dump(ctx, schema.PostData, r.dumpOptions(schema.DumpOptions{ExcludeTables: excl})); err != nil {
			return schema.PostDataPlan{}, err
		}
	}
	sizes := map[pgtypes.TableID]int64{}
	for _, t := range r.tables {
		sizes[t.ID] = t.TotalBytes
	}
	plan := schema.PlanPostData(post, func(id pgtypes.TableID) int64 { return sizes[id] })
	// Triggers and rules that fire in replica mode would fire during apply: keep them disabled
	// on the target and record their statements for cutover (state.ApplyDeferred).
	plan, r.deferred = schema.DeferReplicaEnables(plan)
	r.postPlan = &plan
	return plan, nil
}

func (r *copyRun) postData(ctx context.Context) error {
	m, err := state.Load(ctx, r.dstConn)
	if err != nil {
		return r.dst.Describe(err)
	}
	if m.Phase != pgtypes.PhasePostData {
		return nil
	}
	t0 := time.Now()
	plan, err := r.postDataPlan(ctx)
	if err != nil {
		return err
	}
	pool, err := r.dst.Pool(ctx, r.cfg.Jobs)
	if err != nil {
		return err
	}
	defer pool.Close()
	done, err := state.PostDataDone(ctx, r.dstConn)
	if err != nil {
		return r.dst.Describe(err)
	}
	n := len(plan.Indexes) + len(plan.Attach) + len(plan.ForeignKeys) + len(plan.Other)
	r.log.Info("building indexes and constraints", "steps", n, "already_done", len(done), "jobs", r.cfg.Jobs)
	err = schema.ApplyPostData(ctx, pool, plan, r.postDataOptions(done))
	if err != nil {
		return r.dst.Describe(err)
	}
	r.sum.Indexes = n
	r.sum.PostData = time.Since(t0)
	r.log.Info("post-data applied", "steps", n, "took", r.sum.PostData.Round(time.Millisecond).String())
	if err := r.analyze(ctx); err != nil {
		return err
	}
	if err := state.Advance(ctx, r.dstConn, pgtypes.PhasePostData, pgtypes.PhaseSequences); err != nil {
		return r.dst.Describe(err)
	}
	return nil
}

func (r *copyRun) postDataOptions(done map[string]bool) schema.PostDataOptions {
	return schema.PostDataOptions{
		Jobs:            r.cfg.Jobs,
		SessionSettings: []string{"SET LOCAL maintenance_work_mem = '" + r.opts.IndexMemory + "'", "SET LOCAL synchronous_commit = on"},
		Done:            func(it schema.Item) bool { return done[it.Key()] },
		Record: func(ctx context.Context, tx pgx.Tx, it schema.Item) error {
			for _, d := range r.deferred[it.Key()] {
				err := state.RecordDeferred(ctx, tx, state.DeferredStatement{Kind: d.Kind, Table: d.Table, Name: d.Name,
					Object: d.Object(), Statement: d.Statement, Reason: d.Reason})
				if err != nil {
					return err
				}
				r.log.Warn("kept back until cutover: the target keeps it disabled while pgshift applies changes", "object", d.Object(), "statement", d.Statement)
			}
			return state.RecordPostData(ctx, tx, it.Key(), it.Describe())
		},
		Progress: func(it schema.Item, took time.Duration) {
			r.log.Debug("post-data step applied", "object", it.Describe(), "took", took.Round(time.Millisecond).String())
		},
		Log: r.log,
	}
}

// sequencesAndViews sets every migrated sequence on the target to the source's current value
// and refreshes materialized views. Both are idempotent, so a resumed run simply does them again.
func (r *copyRun) sequencesAndViews(ctx context.Context) error {
	t0 := time.Now()
	n, err := SyncSequences(ctx, r.srcConn, r.dstConn, r.cfg.Filter())
	if err != nil {
		return err
	}
	r.sum.Sequences = n
	r.sum.SequenceTime = time.Since(t0)
	r.log.Info("sequences set", "count", n, "took", r.sum.SequenceTime.Round(time.Millisecond).String())

	t1 := time.Now()
	plan, err := r.postDataPlan(ctx)
	if err != nil {
		return err
	}
	if len(plan.MatViews) > 0 {
		pool, err := r.dst.Pool(ctx, 1)
		if err != nil {
			return err
		}
		defer pool.Close()
		// Refreshed every time (no Done): a view refreshed before a kill is refreshed again,
		// which is what a resumed run needs since the data may have changed.
		o := r.postDataOptions(nil)
		o.Done, o.Record = nil, nil
		if err := schema.RunItems(ctx, pool, plan.Preamble, plan.MatViews, 1, o); err != nil {
			return r.dst.Describe(err)
		}
	}
	r.sum.MatViews = len(plan.MatViews)
	r.sum.MatViewTime = time.Since(t1)
	// Last, so the database's settings (a search_path, a statement_timeout) never apply to the
	// copy's own sessions; idempotent, so a resumed copy runs it again.
	if err := schema.ApplyDatabase(ctx, r.dstConn, r.globals.Database); err != nil {
		return r.dst.Describe(err)
	}
	return nil
}

// largeObjectOptions are SyncLargeObjects' options for this copy, reading in snapshotName.
func (r *copyRun) largeObjectOptions(snapshotName string) snapshot.LargeObjectOptions {
	return snapshot.LargeObjectOptions{Snapshot: snapshotName, NoOwner: r.cfg.NoOwner, NoPrivileges: r.cfg.NoPrivileges, Log: r.log}
}

// SyncSequences sets each sequence that exists on both sides (and passes the filter) to the
// source's current state, last_value and is_called as read from the sequence itself, so the
// target's next value is the source's (a sequence set with setval(s, 101, false) gives 101 on
// both). It returns how many it set.
func SyncSequences(ctx context.Context, src, dst *pgx.Conn, f config.TableFilter) (int, error) {
	seqs, err := catalog.Sequences(ctx, src, f)
	if err != nil {
		return 0, fmt.Errorf("read sequences on the source: %w", err)
	}
	onTarget, err := catalog.SequenceList(ctx, dst, config.TableFilter{})
	if err != nil {
		return 0, fmt.Errorf("read sequences on the target: %w", err)
	}
	have := map[pgtypes.TableID]bool{}
	for _, s := range onTarget {
		have[s.ID] = true
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i].ID.Sanitize() < seqs[j].ID.Sanitize() })
	n := 0
	for _, s := range seqs {
		if !have[s.ID] {
			continue
		}
		if _, err := dst.Exec(ctx, `SELECT pg_catalog.setval($1::text::pg_catalog.regclass, $2::bigint, $3::boolean)`, s.ID.Sanitize(), s.LastValue, s.IsCalled); err != nil {
			return n, fmt.Errorf("set sequence %s to %d (is_called %t) on the target: %w", s.ID, s.LastValue, s.IsCalled, err)
		}
		n++
	}
	return n, nil
}

// WriteSummary writes the human summary of a copy: tables, rows, bytes, time, throughput, the
// time of each phase, where the change stream starts, and the warnings.
func (s Summary) WriteSummary(w io.Writer) {
	var b strings.Builder
	if s.AlreadyCopied {
		fmt.Fprintf(&b, "copy already complete (slot %s, consistent at %s); nothing to do — run `pgshift run` to follow changes\n",
			s.Slot, s.ConsistentLSN)
		_, _ = io.WriteString(w, b.String())
		return
	}
	if s.Step != StepAll {
		fmt.Fprintf(&b, "copy step %d (%s) done in %s", s.Step, s.Step, s.Total.Round(time.Millisecond))
		switch s.Step {
		case StepSchema:
			fmt.Fprintf(&b, ": schema applied; slot %s consistent at %s — next: pgshift copy data\n", s.Slot, s.ConsistentLSN)
		case StepData:
			fmt.Fprintf(&b, ": %d tables, %s rows, %s — next: pgshift copy indexes\n", s.Tables, progress.HumanCount(s.Rows), progress.HumanBytes(s.Bytes))
		case StepIndexes:
			fmt.Fprintf(&b, ": %d post-data steps, %d tables analyzed — next: pgshift copy sequences\n", s.Indexes, s.Analyzed)
		case StepSequences:
			fmt.Fprintf(&b, ": %d sequences set, %d materialized views refreshed — next: pgshift run\n", s.Sequences, s.MatViews)
		}
		for _, warn := range s.Warnings {
			fmt.Fprintf(&b, "  warning: %s\n", warn)
		}
		_, _ = io.WriteString(w, b.String())
		return
	}
	verb := "copied"
	if s.Resumed {
		verb = "copied (resumed)"
	}
	fmt.Fprintf(&b, "%s %d tables, %s rows, %s in %s (%s/s during the data phase)\n", verb, s.Tables,
		progress.HumanCount(s.Rows), progress.HumanBytes(s.Bytes), s.Total.Round(time.Millisecond), progress.HumanBytes(int64(s.Throughput())))
	fmt.Fprintf(&b, "  schema %s · data %s · indexes and constraints %s (%d steps) · statistics %s (%d tables) · sequences %s (%d) · materialized views %s (%d)\n",
		s.Schema.Round(time.Millisecond), s.Data.Round(time.Millisecond), s.PostData.Round(time.Millisecond), s.Indexes,
		s.AnalyzeTime.Round(time.Millisecond), s.Analyzed, s.SequenceTime.Round(time.Millisecond), s.Sequences, s.MatViewTime.Round(time.Millisecond), s.MatViews)
	if s.LargeObjects > 0 {
		fmt.Fprintf(&b, "  %d large object(s) copied in the snapshot\n", s.LargeObjects)
	}
	fmt.Fprintf(&b, "  slot %s and publication %s hold every change since %s\n", s.Slot, s.Publication, s.ConsistentLSN)
	if len(s.Recopied) > 0 {
		fmt.Fprintf(&b, "  %d unfinished table(s) were copied again in a new snapshot consistent at %s\n", len(s.Recopied), s.RecopyLSN)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(&b, "  warning: %s\n", warn)
	}
	_, _ = io.WriteString(w, b.String())
}

// First runs the copy phase when the target does not hold a completed copy yet (it resumes an
// interrupted one), under the agent's lease, before following.
func First(ctx context.Context, cfg config.Config, lease *state.Lease, log *slog.Logger) error {
	opts := Options{Resume: "pgshift run"}
	if err := opts.check(cfg); err != nil {
		return err
	}
	sum, err := copyLeased(ctx, cfg, opts, lease, log)
	if err != nil {
		return err
	}
	log.Info("copy complete; following changes", "slot", sum.Slot, "publication", sum.Publication, "consistent_lsn", sum.ConsistentLSN.String())
	return nil
}
