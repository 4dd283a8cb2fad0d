// Package verify proves that the target holds the same data, schema and sequences as the
// source, and says precisely where it does not: which table, which key, missing, extra or
// different, which columns with both values, and the class of the discrepancy (timestamp
// precision, encoding, float rounding, char(n) padding, NULL vs empty string, ...).
//
// # How rows are compared
//
// Every row is reduced to the text of ROW(col1, col2, ...) over the columns both sides have
// (generated columns included: they must compute the same values), printed under fixed
// session settings (UTC, ISO dates, shortest exact floats, hex bytea) so that equal values
// print equally on any server. Each side hashes that text server-side and sums the hashes per
// key range: a sum is independent of row order, so neither side sorts and nothing but a few
// numbers per chunk crosses the network.
//
// Key ranges are computed on the source (a block sample of the primary key in byte order,
// COLLATE "C", so case variants and collation differences cannot put a key in different
// ranges on the two sides) and the very same ranges are hashed on both sides. A chunk whose
// count and hash sum agree is done. A differing chunk is split into 16 by exact quantiles of
// the side with more rows in it, recursively, until it holds at most LeafRows rows; then both
// sides list (key, hash) for the leaf and the keys that are missing, extra or different are
// known. Only those rows' values are fetched, to name the differing columns. A 100M-row table
// with 3 bad rows costs one hashing scan per side plus a few small range scans.
//
// Tables without a primary key are multisets: rows are bucketed by bits of their own hash and
// the buckets bisected the same way, so a row present twice on the target and once on the
// source is found and reported as a duplicate.
//
// Each side reads one snapshot for the whole first pass: a coordinator transaction exports it
// and every worker imports it (SET TRANSACTION SNAPSHOT), so chunks, bisection and the values
// shown are all from the same instant on each side.
//
// # Live mode: re-checking differing rows until stable
//
// While `pgshift run` follows the source, the target trails it and a first pass finds rows
// that are merely not yet applied. Those are re-checked, each round in four steps for the
// keys still in question:
//
//  1. read the source rows with their row version (xmin) and hash;
//  2. take X = pg_current_wal_insert_lsn() on the source;
//  3. wait until the target has applied everything up to X (its applied position in
//     pgshift.position, or the slot's confirmed_flush_lsn, which pgshift confirms only once
//     the target has committed it);
//  4. read the target rows, then the source rows again (xmin and hash).
//
// If the target now equals the source, the difference was lag. If the source row has the same
// row version in steps 1 and 4, it was not modified during the round: its last change
// committed before step 1 and so lies before X, the target has applied everything before X,
// and a target value that still differs is a real difference — no timing can make it false.
// A row whose version changed during the round proves nothing and goes into the next round;
// one that changes in every round up to the limit is reported as unstable (still changing on
// the source), never as a difference. Without a follower (no pgshift.position and no slot)
// there is one pass; if the source's WAL moved during it the report says so.
//
// Repair (--repair) rewrites the differing rows on the target from the source, one
// transaction per table with session_replication_role = replica (so triggers and foreign keys
// do not fire), logs what it does, then re-verifies exactly those rows.
package verify

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/progress"
)

// Side is one of the two databases: how to describe it and a pool of sessions to it. The pool
// should allow Options.Jobs+2 sessions (workers, the snapshot holder, and the re-check).
type Side struct {
	Endpoint db.Endpoint
	Pool     *pgxpool.Pool
}

// AppliedFunc returns the source WAL position the target has applied completely.
type AppliedFunc func(ctx context.Context) (pgtypes.LSN, error)

// Options control a verify run. Zero values take the defaults noted.
type Options struct {
	Mode   Mode               // default checksum
	Jobs   int                // parallel workers per side; default 4
	Filter config.TableFilter // which tables

	ChunkRows       int64 // rows per first-pass chunk; default 100000
	LeafRows        int64 // bisect until a range holds at most this many rows; default 2000
	MaxRowsPerTable int   // differing rows kept (listed, re-checked, repaired) per table; default 10000
	ValueLimit      int   // bytes of a value shown before truncation; default 200

	Schema    bool // compare schema objects
	Sequences bool // compare sequence positions

	// Applied, when set, turns on live mode: differing rows are re-checked after the target has
	// caught up (see the package documentation). Following says the target is a live follower,
	// so sequences behind the source are expected until cutover.
	Applied   AppliedFunc
	Following bool
	// Heartbeat, when set, is called after each re-check round has taken the source's
	// position, to put a transaction into the source's WAL after it: the follower's applied
	// position then reaches that point even if the source is otherwise idle.
	Heartbeat      func(ctx context.Context) error
	RecheckRounds  int           // default 5
	RecheckTimeout time.Duration // total budget for re-checking, default 2 minutes

	Repair bool // rewrite differing rows (and sequences behind) on the target from the source

	// Progress, when set, gets one task per table, counting the source rows hashed.
	Progress *progress.Tracker
}

func (o *Options) defaults() {
	if o.Mode == "" {
		o.Mode = ModeChecksum
	}
	if o.Jobs <= 0 {
		o.Jobs = 4
	}
	if o.ChunkRows <= 0 {
		o.ChunkRows = 100_000
	}
	if o.LeafRows <= 0 {
		o.LeafRows = 2000
	}
	if o.Mode == ModeRows && o.LeafRows < 20_000 {
		// Rows mode compares every leaf row by row anyway; bigger leaves mean fewer splits.
		o.LeafRows = 20_000
	}
	if o.MaxRowsPerTable <= 0 {
		o.MaxRowsPerTable = 10_000
	}
	if o.ValueLimit <= 0 {
		o.ValueLimit = 200
	}
	if o.RecheckRounds <= 0 {
		o.RecheckRounds = 5
	}
	if o.RecheckTimeout <= 0 {
		o.RecheckTimeout = 2 * time.Minute
	}
}

// side is one database during a run.
type side struct {
	name string
	Side
	snapshot string // exported snapshot id, imported by every worker transaction of the first pass
	info     catalog.ServerInfo
	encoding string
}

// verifier is one run.
type verifier struct {
	src, tgt *side
	opts     Options
	log      *slog.Logger
	hash     hashKind
}

// Run compares source and target and returns the report. An error means the comparison could
// not be made at all; problems with single tables are recorded in their TableResult instead.
func Run(ctx context.Context, src, tgt Side, opts Options, log *slog.Logger) (*Report, error) {
	opts.defaults()
	v := &verifier{
		src:  &side{name: "source", Side: src},
		tgt:  &side{name: "target", Side: tgt},
		opts: opts,
		log:  log,
	}
	return v.run(ctx)
}

func (v *verifier) run(ctx context.Context) (*Report, error) {
	start := time.Now()
	rep := &Report{Mode: v.opts.Mode, Source: v.src.Endpoint.String(), Target: v.tgt.Endpoint.String(),
		StartedAt: start.UTC(), Classes: map[string]int{}, Snapshots: map[string]string{}}
	for _, s := range []*side{v.src, v.tgt} {
		if err := s.describe(ctx); err != nil {
			return nil, err
		}
	}
	if v.src.encoding != v.tgt.encoding {
		v.hash = hashPortable
		rep.Notes = append(rep.Notes, fmt.Sprintf("server encodings differ (source %s, target %s): rows are compared as UTF-8 text",
			v.src.encoding, v.tgt.encoding))
	} else if sv := v.src.info.Features(); !sv.HasExtendedHash() {
		v.hash = hashPortable
		rep.Notes = append(rep.Notes, fmt.Sprintf("the source runs PostgreSQL %d, which has no extended hash functions (11+): rows are compared by an md5 of their text", sv.Major()))
	}
	srcTables, err := catalog.Tables(ctx, v.src.Pool, v.opts.Filter)
	if err != nil {
		return nil, v.src.Endpoint.Describe(err)
	}
	tgtTables, err := catalog.Tables(ctx, v.tgt.Pool, v.opts.Filter)
	if err != nil {
		return nil, v.tgt.Endpoint.Describe(err)
	}
	if v.opts.Schema {
		sr, err := v.schemaDiff(ctx)
		if err != nil {
			return nil, err
		}
		rep.Schema = sr
	}
	if v.opts.Sequences {
		sq, err := v.sequenceCheck(ctx)
		if err != nil {
			return nil, err
		}
		rep.Sequences = sq
	}
	plans, skipped, err := v.pair(ctx, srcTables, tgtTables)
	if err != nil {
		return nil, err
	}
	rep.Notes = append(rep.Notes, skipped...)

	lsn0, err := currentLSN(ctx, v.src.Pool)
	if err != nil {
		return nil, v.src.Endpoint.Describe(err)
	}
	xid0, err := nextXid(ctx, v.src.Pool)
	if err != nil {
		return nil, v.src.Endpoint.Describe(err)
	}
	if err := v.firstPass(ctx, plans, rep); err != nil {
		return nil, err
	}
	lsn1, err := currentLSN(ctx, v.src.Pool)
	if err != nil {
		return nil, v.src.Endpoint.Describe(err)
	}
	xid1, err := nextXid(ctx, v.src.Pool)
	if err != nil {
		return nil, v.src.Endpoint.Describe(err)
	}

	if v.opts.Applied != nil && v.opts.Mode != ModeCount {
		live, err := v.recheck(ctx, plans)
		if err != nil {
			return nil, err
		}
		live.SourceLSN0, live.SourceLSN1 = lsn0.String(), lsn1.String()
		rep.Live = live
	} else if v.opts.Applied != nil {
		rep.Notes = append(rep.Notes, "count mode cannot re-check rows: while the target is being followed, counts may "+
			"differ by changes not applied yet; use --mode checksum for a live comparison")
	} else if xid1 != xid0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the source was written to during verify (%d transactions; WAL moved from %s to %s): "+
			"each side was read in one snapshot, but a target that is not followed by pgshift run shows the source's later writes "+
			"as differences; stop writes for a clean result", xid1-xid0, lsn0, lsn1))
	}
	if v.opts.Applied != nil && v.opts.Mode != ModeCount {
		if err := v.fetchValues(ctx, plans, false); err != nil {
			return nil, err
		}
	}
	if v.opts.Repair {
		if err := v.repair(ctx, plans, rep); err != nil {
			return nil, err
		}
	}
	for _, p := range plans {
		rep.Tables = append(rep.Tables, p.result())
	}
	sort.Slice(rep.Tables, func(i, j int) bool { return rep.Tables[i].Name < rep.Tables[j].Name })
	rep.Duration = Duration(time.Since(start))
	rep.summarize()
	return rep, nil
}

// describe reads the server's identity and encoding.
func (s *side) describe(ctx context.Context) error {
	info, err := catalog.Server(ctx, s.Pool)
	if err != nil {
		return s.Endpoint.Describe(err)
	}
	s.info = info
	if err := s.Pool.QueryRow(ctx, `SELECT current_setting('server_encoding')`).Scan(&s.encoding); err != nil {
		return s.Endpoint.Describe(err)
	}
	return nil
}

func currentLSN(ctx context.Context, q catalog.Querier) (pgtypes.LSN, error) {
	var s string
	if err := q.QueryRow(ctx, `SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END::text`).Scan(&s); err != nil {
		return 0, fmt.Errorf("read WAL position: %w", err)
	}
	return pgtypes.ParseLSN(s)
}

// nextXid is the next transaction id the server will assign: it moves only when a
// transaction writes, so comparing it before and after tells whether the source was written to.
// The txid_ functions exist on every supported version (pg_current_snapshot is 13+).
func nextXid(ctx context.Context, q catalog.Querier) (int64, error) {
	var x int64
	if err := q.QueryRow(ctx, `SELECT txid_snapshot_xmax(txid_current_snapshot())`).Scan(&x); err != nil {
		return 0, fmt.Errorf("read next transaction id: %w", err)
	}
	return x, nil
}

// tablePlan is one table's comparison: the statements for each side and what was found.
type tablePlan struct {
	id         pgtypes.TableID
	src, tgt   *tableSQL
	cols       []catalog.Column // compared columns, source definitions, source order
	tgtTypes   map[string]string
	keyed      bool
	keyCols    []catalog.Column
	est        int64
	maxRows    int
	valueLimit int

	task     *progress.Task
	rowBytes float64 // average heap bytes per source row, for progress in bytes

	mu       sync.Mutex
	res      TableResult
	diffs    []*RowDiff // at most maxRows
	started  time.Time
	finished time.Time
}

func (p *tablePlan) addRows(src, tgt int64) {
	p.task.Add(int64(float64(src)*p.rowBytes), src)
	p.mu.Lock()
	p.res.SourceRows += src
	p.res.TargetRows += tgt
	p.mu.Unlock()
}

func (p *tablePlan) addDiff(d *RowDiff) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.res.Differences++
	if len(p.diffs) < p.maxRows {
		p.diffs = append(p.diffs, d)
	}
}

func (p *tablePlan) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.res.Error == "" {
		p.res.Error = err.Error()
	}
}

// result freezes the table's outcome, counting classes.
func (p *tablePlan) result() TableResult {
	p.mu.Lock()
	defer p.mu.Unlock()
	r := p.res
	r.Table, r.Name, r.Keyed = p.id, p.id.String(), p.keyed
	r.Rows = nil
	r.Classes = map[string]int{}
	r.Differences, r.Unstable = 0, 0
	for _, d := range p.diffs {
		r.Rows = append(r.Rows, *d)
		if d.Kind == KindUnstable {
			r.Unstable++
			continue
		}
		r.Differences++
		r.Classes[d.Class]++
	}
	// Differences beyond the listing cap are counted but not listed.
	if extra := p.res.Differences - int64(len(p.diffs)); extra > 0 {
		r.Differences += extra
	}
	if len(r.Classes) == 0 {
		r.Classes = nil
	}
	if !p.finished.IsZero() {
		r.Duration = Duration(p.finished.Sub(p.started))
	}
	return r
}

// pair matches source tables to target tables by name and builds their plans. Tables missing on
// the target are reported by the schema diff and, here, as tables that could not be compared.
func (v *verifier) pair(ctx context.Context, srcTables, tgtTables []catalog.Table) ([]*tablePlan, []string, error) {
	byID := make(map[pgtypes.TableID]catalog.Table, len(tgtTables))
	for _, t := range tgtTables {
		byID[t.ID] = t
	}
	var notes []string
	collatable, err := collatableTypes(ctx, v.src.Pool, srcTables)
	if err != nil {
		return nil, nil, v.src.Endpoint.Describe(err)
	}
	var plans []*tablePlan
	for _, s := range srcTables {
		if !s.HoldsData() {
			continue // partitioned parents (their leaves are compared), foreign tables, materialized views
		}
		p := &tablePlan{id: s.ID, est: s.RowsEstimate, maxRows: v.opts.MaxRowsPerTable, valueLimit: v.opts.ValueLimit,
			tgtTypes: map[string]string{}}
		if s.RowsEstimate > 0 {
			p.rowBytes = float64(s.HeapBytes) / float64(s.RowsEstimate)
		}
		if v.opts.Progress != nil {
			p.task = v.opts.Progress.Task(s.ID.String(), s.HeapBytes, max(s.RowsEstimate, 0))
		}
		p.res.Table, p.res.Name = s.ID, s.ID.String()
		plans = append(plans, p)
		t, ok := byID[s.ID]
		if !ok || t.Kind == catalog.KindForeign {
			p.res.Error = fmt.Sprintf("table %s does not exist on the target: create it (pgshift copy) or exclude it with --exclude", s.ID)
			continue
		}
		tcols := map[string]catalog.Column{}
		for _, c := range t.Columns {
			tcols[c.Name] = c
		}
		var missing []string
		for _, c := range s.Columns {
			tc, ok := tcols[c.Name]
			if !ok {
				missing = append(missing, c.Name)
				continue
			}
			p.cols = append(p.cols, c)
			p.tgtTypes[c.Name] = tc.Type
		}
		if len(missing) > 0 {
			notes = append(notes, fmt.Sprintf("%s: columns %s are missing on the target and are not compared (see the schema differences)",
				s.ID, strings.Join(missing, ", ")))
		}
		if len(p.cols) == 0 && (len(s.Columns) > 0 || len(t.Columns) > 0) {
			p.res.Error = fmt.Sprintf("table %s has no column in common with the target", s.ID)
			continue
		}
		// Read through row-level security policies, a side would show only the rows they
		// allow, and two filtered sides can agree while the target lacks rows: such a table
		// is not compared (the sessions' row_security = off also refuses any such read).
		if why := s.RowSecurityProblem(v.src.info.User); why != "" {
			p.res.Error = "on the source: " + why
			continue
		}
		if why := t.RowSecurityProblem(v.tgt.info.User); why != "" {
			p.res.Error = "on the target: " + why
			continue
		}
		colNames := make([]string, len(p.cols))
		for i, c := range p.cols {
			colNames[i] = c.Name
		}
		p.keyed = len(s.PrimaryKey) > 0
		var keyTypesS, keyTypesT []string
		var coll []bool
		for _, k := range s.PrimaryKey {
			var kc catalog.Column
			for _, c := range s.Columns {
				if c.Name == k {
					kc = c
				}
			}
			tt, ok := p.tgtTypes[k]
			if !ok {
				p.res.Error = fmt.Sprintf("table %s: key column %s is missing on the target", s.ID, k)
				break
			}
			p.keyCols = append(p.keyCols, kc)
			keyTypesS = append(keyTypesS, kc.Type)
			keyTypesT = append(keyTypesT, tt)
			coll = append(coll, collatable[kc.TypeOID])
		}
		if p.res.Error != "" {
			continue
		}
		colHash := make([]string, len(p.cols))
		for i, c := range p.cols {
			if c.Type == p.tgtTypes[c.Name] { // same declared type: the same hash function applies on both sides
				colHash[i] = binaryHash[c.TypeOID]
			}
		}
		p.src = newTableSQL(s.ID, colNames, colHash, s.PrimaryKey, keyTypesS, coll, v.hash)
		p.tgt = newTableSQL(s.ID, colNames, colHash, s.PrimaryKey, keyTypesT, coll, v.hash)
		// The two servers print the same float as other text (see floatBits): such columns are
		// hashed by their bits. Floats inside domains or composite values are still compared as
		// text, so they show as float rounding differences between these versions.
		if v.src.info.Features().HasShortestFloatOutput() != v.tgt.info.Features().HasShortestFloatOutput() {
			canon := make([]string, len(p.cols))
			for i, c := range p.cols {
				if c.Type != p.tgtTypes[c.Name] {
					continue
				}
				switch c.TypeOID {
				case 700:
					canon[i] = floatBits("float4send")
				case 701:
					canon[i] = floatBits("float8send")
				case 1021:
					canon[i] = floatArrayBits("float4send")
				case 1022:
					canon[i] = floatArrayBits("float8send")
				}
			}
			p.src.canon, p.tgt.canon = canon, canon
		}
	}
	return plans, notes, nil
}

// collatableTypes reports which column types of the tables are collatable (text-like).
func collatableTypes(ctx context.Context, q catalog.Querier, tables []catalog.Table) (map[uint32]bool, error) {
	seen := map[uint32]bool{}
	var oids []uint32
	for _, t := range tables {
		for _, c := range t.Columns {
			if !seen[c.TypeOID] {
				seen[c.TypeOID] = true
				oids = append(oids, c.TypeOID)
			}
		}
	}
	out := map[uint32]bool{}
	if len(oids) == 0 {
		return out, nil
	}
	rows, err := q.Query(ctx, `SELECT oid FROM pg_type WHERE oid = ANY($1) AND typcollation <> 0`, oids)
	if err != nil {
		return nil, fmt.Errorf("read column collations: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var oid uint32
		if err := rows.Scan(&oid); err != nil {
			return nil, fmt.Errorf("read column collations: %w", err)
		}
		out[oid] = true
	}
	return out, rows.Err()
}

// snapshotHolder keeps the transaction whose snapshot the workers of one side import.
type snapshotHolder struct {
	conn *pgxpool.Conn
	tx   pgx.Tx
}

func (s *side) exportSnapshot(ctx context.Context) (*snapshotHolder, string, error) {
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return nil, "", s.Endpoint.Describe(err)
	}
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		conn.Release()
		return nil, "", s.Endpoint.Describe(err)
	}
	// The holder sits idle while the workers read; a server-wide idle timeout must not end it,
	// or workers starting later could no longer import the snapshot.
	if _, err := tx.Exec(ctx, `SET LOCAL idle_in_transaction_session_timeout = 0`); err != nil {
		_ = tx.Rollback(ctx)
		conn.Release()
		return nil, "", s.Endpoint.Describe(err)
	}
	var id, lsn string
	if err := tx.QueryRow(ctx, `SELECT pg_export_snapshot(), CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END::text`).Scan(&id, &lsn); err != nil {
		_ = tx.Rollback(ctx)
		conn.Release()
		return nil, "", s.Endpoint.Describe(fmt.Errorf("export snapshot: %w", err))
	}
	s.snapshot = id
	return &snapshotHolder{conn: conn, tx: tx}, lsn, nil
}

func (h *snapshotHolder) close(ctx context.Context) {
	if h == nil {
		return
	}
	_ = h.tx.Rollback(ctx)
	h.conn.Release()
}

// read runs fn in a read-only repeatable-read transaction on this side, in the exported
// snapshot when there is one, with the session settings that make row text canonical.
func (s *side) read(ctx context.Context, useSnapshot bool, fn func(pgx.Tx) error) error {
	conn, err := s.Pool.Acquire(ctx)
	if err != nil {
		return s.Endpoint.Describe(err)
	}
	defer conn.Release()
	tx, err := conn.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return s.Endpoint.Describe(err)
	}
	defer func() { _ = tx.Rollback(ctx) }()
	if useSnapshot && s.snapshot != "" {
		// The id comes from pg_export_snapshot() and has the form 00000003-0000001B-1; it
		// cannot be a parameter, so it is checked before being spliced in.
		if !validSnapshotID(s.snapshot) {
			return fmt.Errorf("%s: unexpected snapshot id %q", s.name, s.snapshot)
		}
		if _, err := tx.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+s.snapshot+"'"); err != nil {
			return s.Endpoint.Describe(fmt.Errorf("import snapshot %s: %w", s.snapshot, err))
		}
	}
	if _, err := tx.Exec(ctx, sessionSettings(s.info.Features())); err != nil {
		return s.Endpoint.Describe(err)
	}
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

func validSnapshotID(id string) bool {
	if id == "" || len(id) > 64 {
		return false
	}
	for _, r := range id {
		if !(r >= '0' && r <= '9' || r >= 'A' && r <= 'F' || r >= 'a' && r <= 'f' || r == '-') {
			return false
		}
	}
	return true
}

// firstPass exports a snapshot on each side and compares every table in it, in parallel.
func (v *verifier) firstPass(ctx context.Context, plans []*tablePlan, rep *Report) error {
	srcSnap, srcLSN, err := v.src.exportSnapshot(ctx)
	if err != nil {
		return err
	}
	defer srcSnap.close(context.WithoutCancel(ctx))
	tgtSnap, tgtLSN, err := v.tgt.exportSnapshot(ctx)
	if err != nil {
		return err
	}
	defer tgtSnap.close(context.WithoutCancel(ctx))
	rep.Snapshots["source"], rep.Snapshots["target"] = srcLSN, tgtLSN
	defer func() { v.src.snapshot, v.tgt.snapshot = "", "" }()

	var active []*tablePlan
	for _, p := range plans {
		if p.res.Error == "" {
			active = append(active, p)
		}
	}
	// Plan chunks for all tables (one sample query per keyed table), then run every chunk
	// slice of every table through one pool of workers, largest tables first.
	units := make([][]unit, len(active))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(v.opts.Jobs)
	for i, p := range active {
		p.started = time.Now()
		g.Go(func() error {
			u, err := v.planUnits(gctx, p)
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				p.fail(err)
				return nil
			}
			units[i] = u
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	var all []unit
	remaining := map[*tablePlan]int{}
	for _, us := range units {
		all = append(all, us...)
		for _, u := range us {
			remaining[u.plan]++
		}
	}
	var mu sync.Mutex
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(v.opts.Jobs)
	for _, u := range all {
		g.Go(func() error {
			err := v.runUnit(gctx, u)
			if err != nil {
				if ctx.Err() != nil {
					return err
				}
				u.plan.fail(err)
			}
			mu.Lock()
			remaining[u.plan]--
			done := remaining[u.plan] == 0
			mu.Unlock()
			if done {
				u.plan.task.Done()
				u.plan.finished = time.Now()
				r := u.plan.result()
				level := slog.LevelDebug
				if r.Differences > 0 || r.SourceRows != r.TargetRows {
					level = slog.LevelWarn
				}
				v.log.Log(gctx, level, "table verified", "table", r.Name, "source_rows", r.SourceRows, "target_rows", r.TargetRows,
					"chunks", r.Chunks, "chunks_differing", r.ChunksDiff, "differences", r.Differences,
					"seconds", math.Round(time.Duration(r.Duration).Seconds()*1000)/1000)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	if v.opts.Applied == nil && v.opts.Mode != ModeCount {
		// One pass: show the values from the same snapshots the differences were found in.
		return v.fetchValues(ctx, plans, true)
	}
	return nil
}

// unit is one piece of first-pass work: a key range of a table split into chunk buckets, a
// whole multiset table, or a table to count.
type unit struct {
	plan   *tablePlan
	lo, hi []string
	bounds [][]string
}

// planUnits splits a table into slices of chunks for the workers.
func (v *verifier) planUnits(ctx context.Context, p *tablePlan) ([]unit, error) {
	if v.opts.Mode == ModeCount || !p.keyed {
		p.res.Chunks = 1
		return []unit{{plan: p}}, nil
	}
	est := p.est
	if est < 0 { // never analyzed: count on the source
		if err := v.src.read(ctx, true, func(tx pgx.Tx) error {
			return tx.QueryRow(ctx, p.src.countSQL()).Scan(&est)
		}); err != nil {
			return nil, fmt.Errorf("count rows of %s on the source: %w", p.id, err)
		}
	}
	chunkRows := v.opts.ChunkRows
	nchunks := int64(1)
	if est > chunkRows {
		nchunks = min((est+chunkRows-1)/chunkRows, 10_000)
	}
	var bounds [][]string
	if nchunks > 1 {
		sampleRows := min(nchunks*64, 200_000)
		pct := math.Min(100, 100*float64(sampleRows)/float64(est))
		var sample [][]string
		err := v.src.read(ctx, true, func(tx pgx.Tx) error {
			sql, a := p.src.sampleSQL(pct)
			rows, err := tx.Query(ctx, sql, a...)
			if err != nil {
				return err
			}
			sample, err = scanKeys(rows, len(p.keyCols))
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("sample keys of %s on the source: %w", p.id, err)
		}
		bounds = quantileBounds(sample, int(nchunks))
	}
	p.res.Chunks = len(bounds) + 1
	// When no key column is collatable, the byte-order range predicates are the key index's
	// own order, so each chunk is one query that an index range scan feeds, and chunks are the
	// units of parallel work. A collatable key compared in COLLATE "C" order cannot use an index
	// built in another collation: then each worker scans a slice of the table once and sums
	// per chunk with a CASE tree over the boundaries, instead of one full scan per chunk.
	indexable := true
	for _, c := range p.src.collatable {
		indexable = indexable && !c
	}
	if indexable {
		units := make([]unit, 0, len(bounds)+1)
		for i := 0; i <= len(bounds); i++ {
			u := unit{plan: p}
			if i > 0 {
				u.lo = bounds[i-1]
			}
			if i < len(bounds) {
				u.hi = bounds[i]
			}
			units = append(units, u)
		}
		return units, nil
	}
	nslices := min(len(bounds)+1, v.opts.Jobs)
	per := (len(bounds) + 1 + nslices - 1) / nslices
	var units []unit
	for first := 0; first <= len(bounds); first += per {
		last := min(first+per, len(bounds)+1) // chunks [first, last)
		u := unit{plan: p}
		if first > 0 {
			u.lo = bounds[first-1]
		}
		if last <= len(bounds) {
			u.hi = bounds[last-1]
		}
		if last-1 > first {
			u.bounds = bounds[first : last-1]
		}
		units = append(units, u)
	}
	return units, nil
}

// quantileBounds picks n-1 boundaries from sorted sample keys, dropping repeats.
func quantileBounds(sample [][]string, n int) [][]string {
	if len(sample) == 0 || n <= 1 {
		return nil
	}
	var out [][]string
	for i := 1; i < n; i++ {
		idx := i*len(sample)/n - 1
		if idx < 0 {
			continue
		}
		k := sample[idx]
		if len(out) > 0 && slices.Equal(out[len(out)-1], k) {
			continue
		}
		out = append(out, k)
	}
	return out
}

// scanKeys reads rows of n text columns.
func scanKeys(rows pgx.Rows, n int) ([][]string, error) {
	defer rows.Close()
	var out [][]string
	for rows.Next() {
		k := make([]string, n)
		ptrs := make([]any, n)
		for i := range k {
			ptrs[i] = &k[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// bucketSum is one chunk's row count and hash sum on one side.
type bucketSum struct {
	count int64
	sum   string
}

// both runs f on the source and the target at the same time, each in its snapshot.
func (v *verifier) both(ctx context.Context, snapshot bool, f func(ctx context.Context, s *side, q *tableSQL, tx pgx.Tx) error, p *tablePlan) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range []*side{v.src, v.tgt} {
		q := p.src
		if s == v.tgt {
			q = p.tgt
		}
		g.Go(func() error {
			return s.read(gctx, snapshot, func(tx pgx.Tx) error {
				if err := f(gctx, s, q, tx); err != nil {
					return s.Endpoint.Describe(err)
				}
				return nil
			})
		})
	}
	return g.Wait()
}

// bucketSums hashes (lo, hi] split at bounds on both sides.
func (v *verifier) bucketSums(ctx context.Context, p *tablePlan, lo, hi []string, bounds [][]string) (src, tgt map[int]bucketSum, err error) {
	src, tgt = map[int]bucketSum{}, map[int]bucketSum{}
	err = v.both(ctx, true, func(ctx context.Context, s *side, q *tableSQL, tx pgx.Tx) error {
		sql, a := q.bucketHashSQL(lo, hi, bounds)
		out := src
		if s == v.tgt {
			out = tgt
		}
		return readBuckets(ctx, tx, sql, a, out)
	}, p)
	return src, tgt, err
}

func readBuckets(ctx context.Context, tx pgx.Tx, sql string, a []any, out map[int]bucketSum) error {
	rows, err := tx.Query(ctx, sql, a...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var b int
		var s bucketSum
		if err := rows.Scan(&b, &s.count, &s.sum); err != nil {
			return err
		}
		out[b] = s
	}
	return rows.Err()
}

// runUnit does one unit of the first pass.
func (v *verifier) runUnit(ctx context.Context, u unit) error {
	p := u.plan
	switch {
	case v.opts.Mode == ModeCount:
		var sc, tc int64
		err := v.both(ctx, true, func(ctx context.Context, s *side, q *tableSQL, tx pgx.Tx) error {
			c := &sc
			if s == v.tgt {
				c = &tc
			}
			return tx.QueryRow(ctx, q.countSQL()).Scan(c)
		}, p)
		if err != nil {
			return fmt.Errorf("count rows of %s: %w", p.id, err)
		}
		p.addRows(sc, tc)
		if sc != tc {
			p.mu.Lock()
			p.res.ChunksDiff = 1
			p.mu.Unlock()
		}
		return nil
	case !p.keyed:
		return v.multiset(ctx, p)
	}
	src, tgt, err := v.bucketSums(ctx, p, u.lo, u.hi, u.bounds)
	if err != nil {
		return fmt.Errorf("hash chunks of %s: %w", p.id, err)
	}
	for b := 0; b <= len(u.bounds); b++ {
		s, t := src[b], tgt[b]
		p.addRows(s.count, t.count)
		if s == t && v.opts.Mode != ModeRows {
			continue
		}
		if s != t {
			p.mu.Lock()
			p.res.ChunksDiff++
			p.mu.Unlock()
		}
		lo, hi := u.lo, u.hi
		if b > 0 {
			lo = u.bounds[b-1]
		}
		if b < len(u.bounds) {
			hi = u.bounds[b]
		}
		if err := v.bisect(ctx, p, lo, hi, s.count, t.count, 0); err != nil {
			return fmt.Errorf("bisect %s: %w", p.id, err)
		}
	}
	return nil
}

// bisect narrows a differing key range (lo, hi] down to rows.
func (v *verifier) bisect(ctx context.Context, p *tablePlan, lo, hi []string, sc, tc int64, depth int) error {
	if max(sc, tc) <= v.opts.LeafRows || depth > 32 {
		return v.leaf(ctx, p, lo, hi)
	}
	// Boundaries from the side with more rows in the range, so a range the source has few rows
	// in but the target many (extra rows) still splits.
	from, q := v.src, p.src
	n := sc
	if tc > sc {
		from, q, n = v.tgt, p.tgt, tc
	}
	step := (n + 15) / 16
	var bounds [][]string
	err := from.read(ctx, true, func(tx pgx.Tx) error {
		sql, a := q.quantilesSQL(lo, hi, step)
		rows, err := tx.Query(ctx, sql, a...)
		if err != nil {
			return err
		}
		bounds, err = scanKeys(rows, len(p.keyCols))
		return err
	})
	if err != nil {
		return from.Endpoint.Describe(err)
	}
	if hi != nil && len(bounds) > 0 && slices.Equal(bounds[len(bounds)-1], hi) {
		bounds = bounds[:len(bounds)-1]
	}
	if len(bounds) == 0 {
		return v.leaf(ctx, p, lo, hi)
	}
	src, tgt, err := v.bucketSums(ctx, p, lo, hi, bounds)
	if err != nil {
		return err
	}
	for b := 0; b <= len(bounds); b++ {
		s, t := src[b], tgt[b]
		if s == t && v.opts.Mode != ModeRows {
			continue
		}
		blo, bhi := lo, hi
		if b > 0 {
			blo = bounds[b-1]
		}
		if b < len(bounds) {
			bhi = bounds[b]
		}
		if err := v.bisect(ctx, p, blo, bhi, s.count, t.count, depth+1); err != nil {
			return err
		}
	}
	return nil
}

// keyString joins key parts; PostgreSQL text never contains NUL, so the join is unambiguous.
func keyString(k []string) string { return strings.Join(k, "\x00") }

// leaf lists (key, digest) of the range on both sides and records the keys that differ.
// Memory is bounded by LeafRows (the source's rows of the range are held in a map).
func (v *verifier) leaf(ctx context.Context, p *tablePlan, lo, hi []string) error {
	full := v.opts.Mode == ModeRows
	n := len(p.keyCols)
	srcRows := map[string]string{}
	srcKeys := map[string][]string{}
	err := v.src.read(ctx, true, func(tx pgx.Tx) error {
		sql, a := p.src.leafSQL(lo, hi, full)
		rows, err := tx.Query(ctx, sql, a...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			k, d, err := scanKeyDigest(rows, n)
			if err != nil {
				return err
			}
			ks := keyString(k)
			srcRows[ks], srcKeys[ks] = d, k
		}
		return rows.Err()
	})
	if err != nil {
		return v.src.Endpoint.Describe(err)
	}
	err = v.tgt.read(ctx, true, func(tx pgx.Tx) error {
		sql, a := p.tgt.leafSQL(lo, hi, full)
		rows, err := tx.Query(ctx, sql, a...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			k, d, err := scanKeyDigest(rows, n)
			if err != nil {
				return err
			}
			ks := keyString(k)
			sd, ok := srcRows[ks]
			switch {
			case !ok:
				p.addDiff(&RowDiff{Kind: KindExtra, Class: ClassExtraRow, keyVals: k})
			case sd != d:
				p.addDiff(&RowDiff{Kind: KindDifferent, keyVals: k})
			}
			delete(srcRows, ks)
		}
		return rows.Err()
	})
	if err != nil {
		return v.tgt.Endpoint.Describe(err)
	}
	missing := make([]string, 0, len(srcRows))
	for ks := range srcRows {
		missing = append(missing, ks)
	}
	sort.Strings(missing)
	for _, ks := range missing {
		p.addDiff(&RowDiff{Kind: KindMissing, Class: ClassMissingRow, keyVals: srcKeys[ks]})
	}
	return nil
}

func scanKeyDigest(rows pgx.Rows, n int) ([]string, string, error) {
	k := make([]string, n)
	var d string
	ptrs := make([]any, n+1)
	for i := range k {
		ptrs[i] = &k[i]
	}
	ptrs[n] = &d
	err := rows.Scan(ptrs...)
	return k, d, err
}

// multiset compares a table without a key: rows bucketed by bits of their hash. The first pass
// makes buckets of about LeafRows rows, so a differing bucket is usually listed at once instead
// of being bisected by more scans of the whole table, and all such buckets are listed in one
// scan per side (multisetLeaves); it reads each side in page ranges in parallel, as keyed
// tables are read in key ranges.
func (v *verifier) multiset(ctx context.Context, p *tablePlan) error {
	est := max(p.est, 1)
	width := uint(0)
	for width < 16 && est>>width > v.opts.LeafRows {
		width++
	}
	p.mu.Lock()
	p.res.Chunks = 1 << width
	p.mu.Unlock()
	src, tgt, err := v.multisetFirst(ctx, p, width)
	if err != nil {
		return fmt.Errorf("hash rows of %s: %w", p.id, err)
	}
	mask := int64(1)<<width - 1
	var leaves []int64
	for b := int64(0); b < int64(1)<<width; b++ {
		s, t := src[int(b)], tgt[int(b)]
		p.addRows(s.count, t.count)
		if s == t && v.opts.Mode != ModeRows {
			continue
		}
		if s != t {
			p.mu.Lock()
			p.res.ChunksDiff++
			p.mu.Unlock()
		}
		if max(s.count, t.count) <= v.opts.LeafRows {
			leaves = append(leaves, b)
			continue
		}
		if err := v.drill(ctx, p, mask, b, width, s.count, t.count); err != nil {
			return fmt.Errorf("bisect %s: %w", p.id, err)
		}
	}
	if err := v.multisetLeaves(ctx, p, mask, leaves); err != nil {
		return fmt.Errorf("list rows of %s: %w", p.id, err)
	}
	return nil
}

// multisetParts is how many page ranges one side of a keyless table is hashed in: one per job,
// each at least multisetPartPages pages (8 MiB).
const multisetPartPages = 1024

// multisetFirst sums the row hashes of every bucket (the hash's low width bits) on both sides,
// each side reading page ranges of its own table in parallel: counts and sums add up, so how a
// side's pages are divided does not matter. The last range is open-ended, so rows on pages
// added since the size was read are counted too (the snapshot decides which rows are seen).
func (v *verifier) multisetFirst(ctx context.Context, p *tablePlan, width uint) (src, tgt map[int]bucketSum, err error) {
	g, gctx := errgroup.WithContext(ctx)
	var out [2]map[int]bucketSum
	for i, s := range []*side{v.src, v.tgt} {
		q := p.src
		if s == v.tgt {
			q = p.tgt
		}
		g.Go(func() error {
			var pages int64
			if err := s.read(gctx, true, func(tx pgx.Tx) error {
				return tx.QueryRow(gctx, `SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::int`, q.table).Scan(&pages)
			}); err != nil {
				return s.Endpoint.Describe(err)
			}
			parts := int(min(int64(v.opts.Jobs), max(pages/multisetPartPages, 1)))
			if !s.info.Features().HasTIDRangeScan() {
				parts = 1 // each page range would be a scan of the whole table (before 14)
			}
			sums := make([]map[int]bucketSum, parts)
			pg, pctx := errgroup.WithContext(gctx)
			for k := 0; k < parts; k++ {
				from, to := pages*int64(k)/int64(parts), pages*int64(k+1)/int64(parts)
				if k == 0 {
					from = -1 // no lower bound
				}
				if k == parts-1 {
					to = -1 // no upper bound
				}
				pg.Go(func() error {
					sums[k] = map[int]bucketSum{}
					return s.read(pctx, true, func(tx pgx.Tx) error {
						sql, a := q.multisetBucketSQL(0, 0, 0, width)
						sql, a = q.withPages(sql, a, from, to)
						if err := readBuckets(pctx, tx, sql, a, sums[k]); err != nil {
							return s.Endpoint.Describe(err)
						}
						return nil
					})
				})
			}
			if err := pg.Wait(); err != nil {
				return err
			}
			out[i] = addBuckets(sums)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, nil, err
	}
	return out[0], out[1], nil
}

// addBuckets adds per-range bucket sums into one map (sums are exact integers).
func addBuckets(parts []map[int]bucketSum) map[int]bucketSum {
	total := map[int]*big.Int{}
	counts := map[int]int64{}
	for _, m := range parts {
		for b, s := range m {
			n, ok := new(big.Int).SetString(s.sum, 10)
			if !ok {
				n = new(big.Int) // an empty bucket's NULL sum
			}
			if total[b] == nil {
				total[b] = new(big.Int)
			}
			total[b].Add(total[b], n)
			counts[b] += s.count
		}
	}
	out := make(map[int]bucketSum, len(total))
	for b, n := range total {
		out[b] = bucketSum{count: counts[b], sum: n.String()}
	}
	return out
}

func (v *verifier) multisetSums(ctx context.Context, p *tablePlan, mask, val int64, shift, width uint) (src, tgt map[int]bucketSum, err error) {
	src, tgt = map[int]bucketSum{}, map[int]bucketSum{}
	err = v.both(ctx, true, func(ctx context.Context, s *side, q *tableSQL, tx pgx.Tx) error {
		sql, a := q.multisetBucketSQL(mask, val, shift, width)
		out := src
		if s == v.tgt {
			out = tgt
		}
		return readBuckets(ctx, tx, sql, a, out)
	}, p)
	return src, tgt, err
}

// drill narrows a differing hash bucket (rows with (h & mask) = val) down to row hashes.
func (v *verifier) drill(ctx context.Context, p *tablePlan, mask, val int64, shift uint, sc, tc int64) error {
	if max(sc, tc) <= v.opts.LeafRows || shift >= 60 {
		return v.multisetLeaf(ctx, p, mask, val)
	}
	src, tgt, err := v.multisetSums(ctx, p, mask, val, shift, 4)
	if err != nil {
		return err
	}
	for b := int64(0); b < 16; b++ {
		s, t := src[int(b)], tgt[int(b)]
		if s == t && v.opts.Mode != ModeRows {
			continue
		}
		if err := v.drill(ctx, p, mask|15<<shift, val|b<<shift, shift+4, s.count, t.count); err != nil {
			return err
		}
	}
	return nil
}

type multisetCount struct {
	count int64
	hash  string
}

// multisetLeaf lists one bucket (see multisetLeaves).
func (v *verifier) multisetLeaf(ctx context.Context, p *tablePlan, mask, val int64) error {
	return v.multisetLeaves(ctx, p, mask, []int64{val})
}

// multisetLeafBatch is how many buckets one listing scan covers.
const multisetLeafBatch = 4096

// multisetLeaves counts each distinct row of the buckets (h & mask) = val, for every val, on
// both sides, and records rows whose counts differ: missing, extra, or duplicated. One scan per
// side lists many buckets.
func (v *verifier) multisetLeaves(ctx context.Context, p *tablePlan, mask int64, vals []int64) error {
	for start := 0; start < len(vals); start += multisetLeafBatch {
		if err := v.multisetLeafList(ctx, p, mask, vals[start:min(start+multisetLeafBatch, len(vals))]); err != nil {
			return err
		}
	}
	return nil
}

func (v *verifier) multisetLeafList(ctx context.Context, p *tablePlan, mask int64, vals []int64) error {
	full := v.opts.Mode == ModeRows
	counts := [2]map[string]multisetCount{{}, {}}
	err := v.both(ctx, true, func(ctx context.Context, s *side, q *tableSQL, tx pgx.Tx) error {
		sql, a := q.multisetLeafSQL(mask, vals, full)
		out := counts[0]
		if s == v.tgt {
			out = counts[1]
		}
		rows, err := tx.Query(ctx, sql, a...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var d string
			var c multisetCount
			if err := rows.Scan(&d, &c.count, &c.hash); err != nil {
				return err
			}
			out[d] = c
		}
		return rows.Err()
	}, p)
	if err != nil {
		return err
	}
	digests := map[string]bool{}
	for d := range counts[0] {
		digests[d] = true
	}
	for d := range counts[1] {
		digests[d] = true
	}
	sorted := make([]string, 0, len(digests))
	for d := range digests {
		sorted = append(sorted, d)
	}
	sort.Strings(sorted)
	for _, d := range sorted {
		s, t := counts[0][d], counts[1][d]
		if s.count == t.count {
			continue
		}
		h := s.hash
		if h == "" {
			h = t.hash
		}
		p.addDiff(multisetDiff(h, s.count, t.count))
	}
	return nil
}

func multisetDiff(hash string, sc, tc int64) *RowDiff {
	d := &RowDiff{digest: hash, SourceCount: sc, TargetCount: tc}
	switch {
	case sc == 0:
		d.Kind, d.Class = KindExtra, ClassExtraRow
	case tc == 0:
		d.Kind, d.Class = KindMissing, ClassMissingRow
	case tc > sc:
		d.Kind, d.Class = KindDuplicate, ClassDuplicateRow
	default:
		d.Kind, d.Class = KindMissing, ClassMissingRow
	}
	return d
}
