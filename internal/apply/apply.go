// Package apply writes source transactions, as delivered by package cdc, to the target in
// commit order, exactly once.
//
// Contract: the end LSN of the last source transaction in a target transaction is stored in
// pgshift.position inside that same target transaction, so the target's rows and its recorded
// position can never disagree, whatever moment the process dies at. Durable() only ever
// reports positions whose target transaction has committed with synchronous_commit on; it is
// the only position the stream confirms to the source.
//
// Many small source transactions are grouped into one target transaction (bounded by count,
// bytes and time, and committed at once when no more input is waiting), and statements are
// pipelined with one prepared statement per relation and shape. Values travel in pgoutput's text
// format into parameters cast to the target column's type, so every type round-trips exactly as
// its own input/output functions define it. The session runs with an empty search_path and every
// name in generated SQL is schema-qualified.
//
// Every statement touches exactly the relation a change names: UPDATE and DELETE use ONLY
// (except on a partitioned table, which routes its rows), TRUNCATE is applied without CASCADE
// to exactly the relations listed (truncate.go), and an identity ALWAYS column the source
// changed is written by replacing the row (identity.go). Relation changes are checked before use
// (relation.go).
package apply

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// Options tune batching. Zero values take the defaults.
type Options struct {
	MaxTxs      int           // source transactions per target transaction (default 5000)
	MaxBytes    int64         // approximate change bytes per target transaction (default 32 MiB)
	MaxDelay    time.Duration // longest a target transaction stays open (default 50 ms)
	MaxPipeline int           // statements sent before results are read (default 1000)
	IdleCommit  time.Duration // commit when no input arrives for this long (default 5 ms)

	// SkipBelow is the applied position at start: transactions committed before it are on the
	// target already (the stream drops them too; this is a second guard).
	SkipBelow pgtypes.LSN
	// Snapshots are the per-table copy positions: a change to table T is applied only if its
	// transaction committed at or after Snapshots[T].
	Snapshots map[pgtypes.TableID]pgtypes.LSN

	// MaxRecorded bounds the changes of one open target transaction kept for a redo (default
	// 65536; MaxBytes bounds their bytes). A source transaction larger than that (one that
	// arrives unstreamed: protocol 1, a large logical_decoding_work_mem, or in progress when
	// the agent restarted) has what was recorded written out, then continues change by change.
	MaxRecorded int

	// Warned remembers the warnings given in this run, so reconnects do not repeat them. New
	// makes one when it is nil.
	Warned *WarnOnce

	// AfterCommit, when set, runs after each target commit and before the position is
	// published as durable: the named point "after-target-commit" for fault tests.
	AfterCommit func(pgtypes.LSN) error
}

func (o *Options) defaults() {
	if o.MaxTxs <= 0 {
		o.MaxTxs = 5000
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 32 << 20
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 50 * time.Millisecond
	}
	if o.MaxPipeline <= 0 {
		o.MaxPipeline = 1000
	}
	if o.IdleCommit <= 0 {
		o.IdleCommit = 5 * time.Millisecond
	}
	if o.MaxRecorded <= 0 {
		o.MaxRecorded = 65536
	}
	if o.Warned == nil {
		o.Warned = &WarnOnce{}
	}
}

// Stats are the applier's counters, readable from other goroutines.
type Stats struct {
	AppliedLSN   atomic.Uint64 // durable position
	CommitTimeUS atomic.Int64  // source commit time of the last applied transaction, µs since Unix epoch
	Txs          atomic.Uint64 // source transactions applied
	Changes      atomic.Uint64 // row changes applied
	Skipped      atomic.Uint64 // row changes skipped because their table's copy already had them
	TargetTxs    atomic.Uint64 // target transactions committed
}

// Applier applies one ordered stream of transactions on one target connection.
type Applier struct {
	conn   *pgx.Conn
	source Source
	opts   Options
	log    *slog.Logger
	stats  *Stats

	plans   map[uint32]*plan        // the current plan of each relation OID
	byRel   map[*cdc.Relation]*plan // plans by relation description, for the common case
	txPlans []*plan                 // plans built in the open target transaction
	stmtSeq int

	tx        pgx.Tx
	batch     *pgconn.Batch
	queued    []expect
	runPlan   *plan // consecutive INSERTs into one table not written yet (addRun)
	runRows   [][]cdc.Value
	txStart   time.Time
	txCount   int
	txBytes   int64
	cur       *cdc.Tx
	lastEnd   pgtypes.LSN
	lastTime  time.Time
	pendingCh uint64

	// Compaction state of the open target transaction (compact.go).
	entries    map[string]*entry
	entryPlans map[pgtypes.TableID]*plan
	seq        int
	raw        []rawChange
	rawBytes   int64 // approximate memory the recorded changes hold
	rawAtBegin int   // len(raw) when the current source transaction began (valid while recording)
	compacted  bool  // some changes were merged: a constraint conflict means redo
	noCompact  bool  // redoing, streamed, or too large to record: apply change by change
	gen        int   // bumped by redo, so an interrupted flushEntries stops
}

// expect is what one pipelined statement must do: affect exactly rows rows (-1: any number).
type expect struct {
	what string // for error messages: "UPDATE of public.t (id=5)"
	rows int64
}

// New prepares an applier on conn, a dedicated session to the target, and source, a session
// (or pool) to the source used to read column definitions when a relation changes.
func New(ctx context.Context, conn *pgx.Conn, source Source, opts Options, stats *Stats, log *slog.Logger) (*Applier, error) {
	opts.defaults()
	if stats == nil {
		stats = &Stats{}
	}
	// replica: the target's triggers and foreign keys must not fire again for changes whose
	// effects the source already streamed. synchronous_commit on: a confirmed position must
	// survive a crash of the target. The replication session's settings (among them
	// search_path = '', so every name is rendered and read schema-qualified) make every value's
	// text form read back exactly.
	settings := map[string]string{"session_replication_role": "replica", "synchronous_commit": "on"}
	for k, v := range cdc.SessionParams() {
		settings[k] = v
	}
	settings["search_path"] = ""
	for k, v := range settings {
		if _, err := conn.Exec(ctx, `SELECT pg_catalog.set_config($1::text, $2::text, false)`, k, v); err != nil {
			return nil, fmt.Errorf("prepare apply session on the target (%s = '%s'): %w", k, v, err)
		}
	}
	a := &Applier{conn: conn, source: source, opts: opts, log: log, stats: stats, plans: map[uint32]*plan{}, byRel: map[*cdc.Relation]*plan{}, lastEnd: opts.SkipBelow,
		entries: map[string]*entry{}, entryPlans: map[pgtypes.TableID]*plan{}}
	a.stats.AppliedLSN.Store(uint64(opts.SkipBelow))
	return a, nil
}

// Durable is the end LSN of the last source transaction durably committed on the target.
func (a *Applier) Durable() pgtypes.LSN { return pgtypes.LSN(a.stats.AppliedLSN.Load()) }

// Run applies chunks from q until ctx ends or an error occurs. An open target transaction is
// rolled back on return, so nothing half-applied is ever committed.
func (a *Applier) Run(ctx context.Context, q *cdc.Queue) (err error) {
	defer func() {
		if a.tx != nil {
			_ = a.tx.Rollback(context.Background())
			a.tx = nil
			a.runPlan, a.runRows = nil, nil
			_ = a.discardTxPlans(context.Background())
		}
	}()
	// Between source transactions with a target transaction open, the applier commits when
	// no more input arrives for IdleCommit, when the batch is full, or MaxDelay after it began.
	// Waiting a moment for more input lets a busy stream share one target commit among many
	// source transactions; an idle stream commits (and confirms) within IdleCommit.
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		var c *cdc.Chunk
		if a.tx != nil && a.cur == nil {
			if a.full() {
				if err := a.commit(ctx); err != nil {
					return err
				}
				continue
			}
			wait := min(a.opts.IdleCommit, time.Until(a.txStart.Add(a.opts.MaxDelay)))
			timer.Reset(max(wait, 0))
			select {
			case <-ctx.Done():
				return ctx.Err()
			case c = <-q.C():
				timer.Stop()
			case <-timer.C:
				if err := a.commit(ctx); err != nil {
					return err
				}
				continue
			}
		} else {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case c = <-q.C():
			}
		}
		err := a.chunk(ctx, c)
		q.Release(c)
		if err != nil {
			return err
		}
	}
}

func (a *Applier) full() bool {
	return a.txCount >= a.opts.MaxTxs || a.txBytes >= a.opts.MaxBytes || time.Since(a.txStart) >= a.opts.MaxDelay
}

func (a *Applier) chunk(ctx context.Context, c *cdc.Chunk) error {
	defer func() { a.txBytes += c.Bytes }()
	for _, ev := range c.Events {
		switch {
		case ev.Begin != nil:
			if a.cur != nil {
				return fmt.Errorf("transaction %d begins inside transaction %d", ev.Begin.Xid, a.cur.Xid)
			}
			if ev.Begin.Streamed && a.tx != nil {
				// A large transaction starts a target transaction of its own.
				if err := a.commit(ctx); err != nil {
					return err
				}
			}
			if ev.Begin.CommitLSN < a.lastEnd {
				return fmt.Errorf("transaction %d committed at %s arrives after position %s: the stream is out of order", ev.Begin.Xid, ev.Begin.CommitLSN, a.lastEnd)
			}
			if a.tx == nil {
				tx, err := a.conn.Begin(ctx)
				if err != nil {
					return fmt.Errorf("begin target transaction: %w", err)
				}
				a.tx, a.txStart, a.txCount, a.txBytes = tx, time.Now(), 0, 0
			}
			a.cur = ev.Begin
			a.rawAtBegin = len(a.raw)
			if a.cur.Streamed {
				// Too large to keep for a redo: this target transaction is applied change by
				// change, without compaction, to its end.
				a.noCompact = true
			}
		case ev.Change != nil:
			if a.cur == nil {
				return errors.New("row change outside a transaction")
			}
			if err := a.change(ctx, ev.Change); err != nil {
				err = fmt.Errorf("transaction %d (commit %s): %w", a.cur.Xid, a.cur.CommitLSN, err)
				if _, ok := errors.AsType[*ErrSchema](err); ok {
					return a.keepCompleted(ctx, err)
				}
				return err
			}
			if a.recording() && (len(a.raw) >= a.opts.MaxRecorded || a.rawBytes >= a.opts.MaxBytes) {
				if err := a.stopRecording(ctx); err != nil {
					return fmt.Errorf("transaction %d (commit %s): %w", a.cur.Xid, a.cur.CommitLSN, err)
				}
			}
			// Bounded pipeline: a transaction of any size streams through in slices.
			if len(a.queued) >= a.opts.MaxPipeline {
				if err := a.flush(ctx); err != nil {
					return err
				}
			}
		case ev.Commit != nil:
			if a.cur == nil || a.cur.Xid != ev.Commit.Xid {
				return fmt.Errorf("commit of transaction %d that did not begin", ev.Commit.Xid)
			}
			a.cur = nil
			a.lastEnd, a.lastTime = ev.Commit.EndLSN, ev.Commit.CommitTime
			a.txCount++
		}
	}
	return nil
}

// change applies one change: compacted with earlier changes to the same row of this target
// transaction when that is safe, or queued as its own statement.
//
// A redo (a constraint conflict of merged rows, redone in source order) can happen in any call
// that writes out merged rows or flushes the pipeline. It applies every recorded change, this
// one included once it is recorded; so after each such call a changed a.gen means this change
// is applied already and must not be applied again.
func (a *Applier) change(ctx context.Context, ch *cdc.Change) error {
	if ch.Kind == cdc.Trunc {
		return a.truncate(ctx, ch)
	}
	if snap, ok := a.opts.Snapshots[ch.Rel.Table]; ok && a.cur.CommitLSN < snap {
		a.stats.Skipped.Add(1)
		return nil // the table's copy was taken after this transaction: it holds the change already
	}
	p, err := a.plan(ctx, ch.Rel) // a redo in here does not include this change: it is not recorded yet
	if err != nil {
		return err
	}
	if len(p.keys) == 0 && ch.Kind != cdc.Insert && !(p.full && len(p.rel.Columns) == 0) {
		// The source refuses such changes on a published table; if one arrives anyway, there
		// is no way to find the row.
		return &ErrSchema{Table: p.table, Msg: fmt.Sprintf("%s on a table without replica identity columns cannot be applied", ch.Kind),
			Fix: fmt.Sprintf("ALTER TABLE %s REPLICA IDENTITY FULL; (on the source)", p.table.Sanitize())}
	}
	gen := a.gen
	if a.recording() {
		a.raw = append(a.raw, rawChange{p: p, ch: ch})
		a.rawBytes += changeBytes(ch)
	}
	if a.compactable(p, ch) {
		return a.compact(ctx, p, ch)
	}
	if err := a.barrier(ctx, p.table); err != nil {
		return err
	}
	if a.gen != gen {
		return nil // redone in source order, this change included
	}
	return a.direct(ctx, p, ch)
}

// changeBytes estimates the memory a recorded change holds: its values, their headers and the
// change itself.
func changeBytes(ch *cdc.Change) int64 {
	n := int64(160)
	for _, t := range [][]cdc.Value{ch.Old, ch.New} {
		n += int64(len(t)) * 32
		for _, v := range t {
			n += int64(len(v.Data))
		}
	}
	return n
}

// direct queues one change as its own statement.
func (a *Applier) direct(ctx context.Context, p *plan, ch *cdc.Change) (err error) {
	a.pendingCh++
	switch ch.Kind {
	case cdc.Insert:
		return a.addRun(ctx, p, ch.New)
	case cdc.Update:
		keySrc := ch.New
		if ch.Old != nil {
			keySrc = ch.Old
		}
		where := p.keys
		if p.full {
			if where, err = fullWhere(p, ch.Old); err != nil {
				return err
			}
		}
		wv, err := values(keySrc, where, p, "UPDATE key")
		if err != nil {
			return err
		}
		key := describeKey(p, keySrc, where)
		if p.anyAlways {
			return a.updateIdentity(ctx, p, ch, where, wv, key)
		}
		return a.updateRow(ctx, p, ch.New, where, wv, key)
	case cdc.Delete:
		where := p.keys
		if p.full {
			if where, err = fullWhere(p, ch.Old); err != nil {
				return err
			}
		}
		wv, err := values(ch.Old, where, p, "DELETE key")
		if err != nil {
			return err
		}
		return a.deleteRow(ctx, p, where, wv, describeKey(p, ch.Old, where))
	}
	return fmt.Errorf("unknown change kind %s", ch.Kind)
}

// fullWhere are the columns a REPLICA IDENTITY FULL change matches its old row by: every column
// of the old row. PostgreSQL logs that row whole, TOASTed values inlined; an old row with an
// unchanged-TOAST placeholder would match rows differing in that column, so it is refused. A row
// of a table without columns matches any row.
func fullWhere(p *plan, old []cdc.Value) ([]int, error) {
	if len(old) != len(p.rel.Columns) {
		return nil, fmt.Errorf("change of %s (REPLICA IDENTITY FULL) without its old row", p.table)
	}
	for i, v := range old {
		if v.Kind == cdc.ValueUnchanged {
			return nil, fmt.Errorf("change of %s (REPLICA IDENTITY FULL): the old row lacks the value of column %s (unchanged TOAST), so the row cannot be found exactly",
				p.table, pgtypes.QuoteIdent(p.rel.Columns[i].Name))
		}
	}
	return allIndexes(len(old)), nil
}

// addRun adds an INSERT applied on its own to the run of consecutive INSERTs into one table,
// which is written as multi-row INSERTs when it is full or before any other statement: the
// rows go in the order they came, as one statement instead of many.
func (a *Applier) addRun(ctx context.Context, p *plan, row []cdc.Value) error {
	if a.runPlan != p {
		gen := a.gen
		if err := a.writeRun(ctx); err != nil {
			return err
		}
		if a.gen != gen {
			return nil // redone in source order, this change included
		}
		a.runPlan = p
	}
	a.runRows = append(a.runRows, row)
	if len(a.runRows) >= 64 {
		return a.writeRun(ctx)
	}
	return nil
}

// writeRun queues the pending run of INSERTs.
func (a *Applier) writeRun(ctx context.Context) error {
	if len(a.runRows) == 0 {
		return nil
	}
	p, rows := a.runPlan, a.runRows
	a.runPlan, a.runRows = nil, make([][]cdc.Value, 0, 64)
	return a.insertRows(ctx, p, rows)
}

// insertRows inserts rows with as few statements as possible: runs of 64 and 8 rows share one
// multi-row INSERT, the rest go one by one.
func (a *Applier) insertRows(ctx context.Context, p *plan, rows [][]cdc.Value) error {
	gen := a.gen
	for len(rows) > 0 && a.gen == gen { // a redo replaces what is left
		n := 1
		for _, size := range []int{64, 8} {
			// A relation without columns inserts with DEFAULT VALUES, one row per statement.
			if len(rows) >= size && size*len(p.rel.Columns) <= 65535 && len(p.rel.Columns) > 0 {
				n = size
				break
			}
		}
		vals := make([][]byte, 0, n*len(p.rel.Columns))
		for _, r := range rows[:n] {
			v, err := values(r, nil, p, "INSERT")
			if err != nil {
				return err
			}
			vals = append(vals, v...)
		}
		err := a.queue(ctx, p, "I"+strconv.Itoa(n), func() string { return p.insertSQL(n) }, vals,
			expect{what: "INSERT into " + p.table.String(), rows: int64(n)})
		if err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// updateRow sets the sent columns of row (unchanged TOAST values and identity ALWAYS columns
// left out) on the row whose identity columns where have the values wv.
func (a *Applier) updateRow(ctx context.Context, p *plan, row []cdc.Value, where []int, wv [][]byte, key string) error {
	var set []int
	for i, v := range row {
		if v.Kind != cdc.ValueUnchanged && !p.always[i] {
			set = append(set, i)
		}
	}
	if len(set) == 0 {
		return nil // only unchanged TOAST values: nothing to write
	}
	vals, err := values(row, set, p, "UPDATE")
	if err != nil {
		return err
	}
	shape := "U" + mask(set) + "/" + mask(where)
	return a.queue(ctx, p, shape, func() string { return p.updateSQL(set, where) }, append(vals, wv...),
		expect{what: "UPDATE of " + p.table.String() + key, rows: 1})
}

func (a *Applier) deleteRow(ctx context.Context, p *plan, where []int, wv [][]byte, key string) error {
	return a.queue(ctx, p, "D"+mask(where), func() string { return p.deleteSQL(where) }, wv,
		expect{what: "DELETE from " + p.table.String() + key, rows: 1})
}

// queue adds one statement to the pipeline, preparing its shape on first use.
func (a *Applier) queue(ctx context.Context, p *plan, shape string, sqlFn func() string, vals [][]byte, e expect) error {
	gen := a.gen
	if err := a.writeRun(ctx); err != nil { // the pending inserts come first
		return err
	}
	if a.gen != gen {
		return nil // the batch was redone in source order, this statement included
	}
	name, ok := p.stmts[shape]
	if !ok {
		if err := a.flush(ctx); err != nil { // Prepare needs the connection to itself
			return err
		}
		if a.gen != gen {
			return nil // the batch was redone in source order, this statement included
		}
		a.stmtSeq++
		name = "pgshift_apply_" + strconv.Itoa(a.stmtSeq)
		sql := sqlFn()
		if _, err := a.conn.PgConn().Prepare(ctx, name, sql, nil); err != nil {
			return fmt.Errorf("prepare %s: %w", sql, err)
		}
		p.stmts[shape] = name
	}
	if a.batch == nil {
		a.batch = &pgconn.Batch{}
	}
	a.batch.ExecPrepared(name, vals, nil, nil)
	a.queued = append(a.queued, e)
	return nil
}

// flush sends the pipelined statements and checks that each did what it must.
func (a *Applier) flush(ctx context.Context) error {
	if err := a.writeRun(ctx); err != nil {
		return err
	}
	if len(a.queued) == 0 {
		return nil
	}
	b, queued := a.batch, a.queued
	a.batch, a.queued = &pgconn.Batch{}, a.queued[:0:0]
	res, err := a.conn.PgConn().ExecBatch(ctx, b).ReadAll()
	if err != nil {
		err = fmt.Errorf("apply on the target: %w", err)
	}
	if err == nil {
		for i, r := range res {
			if r.Err != nil {
				err = fmt.Errorf("%s: %w", queued[i].what, r.Err)
				break
			}
			if n := r.CommandTag.RowsAffected(); queued[i].rows >= 0 && n != queued[i].rows {
				return fmt.Errorf("%s affected %d rows on the target, want %d: the target has diverged from the source (was it written to directly?); run pgshift verify", queued[i].what, n, queued[i].rows)
			}
		}
	}
	if err != nil && a.compacted && conflict(err) {
		// Compaction reordered changes and a unique or exclusion constraint saw an
		// intermediate state the source never had: apply this batch again in source order.
		return a.redo(ctx, err)
	}
	return err
}

// keepCompleted handles a schema stop (cause) in the middle of a target transaction: the
// source transactions before the stopping one are applied again from the recording and
// committed, so the stop is exact. The user's fix (a column renamed or added on the target)
// then meets only the transactions from the stopping one on; applied to a target still
// behind the source's schema change, the same fix would make the earlier ones fail next.
// Without a complete recording (a large transaction, a redo) nothing is kept, as before.
func (a *Applier) keepCompleted(ctx context.Context, cause error) error {
	if a.tx == nil || a.txCount == 0 || !a.recording() || a.rawAtBegin > len(a.raw) {
		return cause
	}
	a.raw = a.raw[:a.rawAtBegin]
	a.cur = nil
	if err := a.redo(ctx, cause); err != nil {
		return errors.Join(cause, fmt.Errorf("apply the transactions before it: %w", err))
	}
	if err := a.commit(ctx); err != nil {
		return errors.Join(cause, fmt.Errorf("commit the transactions before it: %w", err))
	}
	a.log.Info("applied the source transactions before the schema stop", "applied_lsn", a.lastEnd.String())
	return cause
}

// commit flushes the pipeline, stores the position and commits the target transaction.
func (a *Applier) commit(ctx context.Context) error {
	if err := a.flushEntries(ctx); err != nil {
		return err
	}
	if err := a.flush(ctx); err != nil {
		return err
	}
	if err := state.SavePosition(ctx, a.tx, a.lastEnd, a.lastTime); err != nil {
		return err
	}
	if err := a.tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit target transaction up to %s: %w", a.lastEnd, err)
	}
	a.tx = nil
	a.txPlans = a.txPlans[:0]
	a.resetCompaction()
	if a.opts.AfterCommit != nil {
		if err := a.opts.AfterCommit(a.lastEnd); err != nil {
			return err
		}
	}
	a.stats.Txs.Add(uint64(a.txCount))
	a.stats.Changes.Add(a.pendingCh)
	a.stats.TargetTxs.Add(1)
	a.stats.CommitTimeUS.Store(a.lastTime.UnixMicro())
	a.stats.AppliedLSN.Store(uint64(a.lastEnd))
	a.pendingCh = 0
	return nil
}

// plan returns the plan for a relation description. A description seen before (the same
// pointer) has its plan at once; a new one (a relation message) is checked: against the
// previous description of its table, and the target's columns when they differ.
func (a *Applier) plan(ctx context.Context, r *cdc.Relation) (*plan, error) {
	if p := a.byRel[r]; p != nil && !p.stale {
		return p, nil
	}
	cur := a.plans[r.OID]
	if cur != nil && relKey(cur.rel) == relKey(r) {
		// Sent again with the same columns (pgoutput does after every invalidation of the
		// table on the source, e.g. by ANALYZE).
		if err := a.checkResent(ctx, cur, r); err != nil {
			return nil, err
		}
		a.rememberRel(r, cur)
		return cur, nil
	}
	if err := a.flush(ctx); err != nil { // buildPlan needs the connection to itself
		return nil, err
	}
	p, err := a.buildPlan(ctx, r, cur)
	if err != nil {
		return nil, err
	}
	p.prev = cur
	a.plans[r.OID] = p
	a.txPlans = append(a.txPlans, p)
	a.rememberRel(r, p)
	return p, nil
}

// discardTxPlans forgets the plans built in a target transaction that was rolled back: columns
// they added on the target are gone with it. Their prepared statements outlive the rollback
// (preparing is not transactional), so they are deallocated, and new plans prepare theirs under
// new names. conn must be idle.
func (a *Applier) discardTxPlans(ctx context.Context) error {
	for i := len(a.txPlans) - 1; i >= 0; i-- {
		p := a.txPlans[i]
		p.stale = true
		if a.plans[p.rel.OID] == p {
			if p.prev != nil {
				a.plans[p.rel.OID] = p.prev
			} else {
				delete(a.plans, p.rel.OID)
			}
		}
		for _, name := range p.stmts {
			if err := a.conn.PgConn().Deallocate(ctx, name); err != nil {
				return fmt.Errorf("deallocate %s on the target: %w", name, err)
			}
		}
		clear(p.stmts)
	}
	a.txPlans = a.txPlans[:0]
	return nil
}

// rememberRel caches the plan of a relation description by identity: the stream hands every
// change of one description the same pointer. The cache is bounded; descriptions come and go
// as the source re-sends relation messages.
func (a *Applier) rememberRel(r *cdc.Relation, p *plan) {
	if len(a.byRel) >= 4096 {
		clear(a.byRel)
	}
	a.byRel[r] = p
}

// values picks the columns idx (all when nil) of t as text parameters.
func values(t []cdc.Value, idx []int, p *plan, what string) ([][]byte, error) {
	if idx == nil {
		idx = allIndexes(len(t))
	}
	out := make([][]byte, len(idx))
	for j, i := range idx {
		if i >= len(t) {
			return nil, fmt.Errorf("%s of %s: column %d missing from the row", what, p.table, i+1)
		}
		switch v := t[i]; v.Kind {
		case cdc.ValueNull:
			out[j] = nil
		case cdc.ValueText:
			out[j] = v.Data
		case cdc.ValueUnchanged:
			return nil, fmt.Errorf("%s of %s: column %s has an unchanged TOAST value where its value is needed", what, p.table, pgtypes.QuoteIdent(p.rel.Columns[i].Name))
		default:
			return nil, fmt.Errorf("%s of %s: column %s in unsupported format %q", what, p.table, pgtypes.QuoteIdent(p.rel.Columns[i].Name), v.Kind)
		}
	}
	return out, nil
}

func allIndexes(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func mask(idx []int) string {
	var b strings.Builder
	for _, i := range idx {
		b.WriteString(strconv.Itoa(i))
		b.WriteByte(',')
	}
	return b.String()
}

// describeKey renders the key of a row for error messages, shortening long values.
func describeKey(p *plan, t []cdc.Value, idx []int) string {
	if p.full {
		return " (REPLICA IDENTITY FULL row)"
	}
	parts := make([]string, 0, len(idx))
	for _, i := range idx {
		if i >= len(t) {
			continue
		}
		v := string(t[i].Data)
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		parts = append(parts, p.rel.Columns[i].Name+"="+v)
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
