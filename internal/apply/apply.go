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
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
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
	// MaxPipelineBytes bounds the parameter bytes of the statements sent before results are
	// read (default 4 MiB), so the pipeline's memory does not grow with row width.
	MaxPipelineBytes int
	// IdleCommit, when positive, is how long an open target transaction waits for more input
	// between source transactions before it commits. Zero (the default) commits as soon as no
	// input is waiting: an idle or lightly loaded stream applies each transaction at once, and
	// a busy one still shares commits, because input queues up while a commit is flushed.
	IdleCommit time.Duration

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

	// Origin, when set, names the replication origin the session is marked with
	// (pg_replication_origin_session_setup; created when missing): every transaction it commits
	// carries the origin in its commit record, pgoutput sends an Origin message for it, and a
	// stream of the other direction drops it (cdc.Options.DropOrigin), so reverse replication
	// does not echo what it applied. It needs the superuser or, from 15, EXECUTE on the function.
	Origin string

	// FollowDDL (ddl: follow) replays the schema changes captured on the source (ddl.go); without
	// it their rows are ignored and the relation checks judge what changed.
	FollowDDL bool
	// AfterDDL, when set, runs right after a captured schema change ran on the target, before
	// its transaction commits: the named point "after-ddl" for fault tests.
	AfterDDL func() error

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
	if o.MaxPipelineBytes <= 0 {
		o.MaxPipelineBytes = 4 << 20
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
	DDL          atomic.Uint64 // captured schema changes committed (ddl.go)
}

// Applier applies one ordered stream of transactions on one target connection. Its state is in
// four parts: the plan cache (plancache.go), the statement pipeline (pipeline.go), the open
// target transaction (here), and the compaction of that transaction's changes (compact.go).
type Applier struct {
	conn   *pgx.Conn
	source Source
	opts   Options
	log    *slog.Logger
	stats  *Stats
	// ddlSaved are the session's own settings while a schema change runs under the source
	// session's (ddl.go).
	ddlSaved map[string]string

	planCache
	pipeline

	// The open target transaction.
	tx      pgx.Tx
	txStart time.Time
	txCount int
	txBytes int64
	cur     *cdc.Tx
	// visibleXid: the last transaction awaitVisible saw visible on the source.
	visibleXid uint32
	srcVersion catalog.Version // the source's version, once read (sourceVersion)
	lastEnd    pgtypes.LSN
	lastTime   time.Time
	pendingCh  uint64
	pendingDDL uint64 // schema changes in the open target transaction

	compaction
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
	if opts.Origin != "" {
		if err := setupOrigin(ctx, conn, opts.Origin); err != nil {
			return nil, err
		}
	}
	a := &Applier{conn: conn, source: source, opts: opts, log: log, stats: stats, lastEnd: opts.SkipBelow,
		planCache:  planCache{plans: map[uint32]*plan{}, byRel: map[*cdc.Relation]*plan{}},
		compaction: compaction{entries: map[string]*entry{}, entryPlans: map[pgtypes.TableID]*plan{}}}
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
	// no input is waiting (or none arrives for IdleCommit), when the batch is full, or MaxDelay
	// after it began. A busy stream still shares one target commit among many source
	// transactions: what arrives while a commit is flushed waits in the queue for the next.
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
			// No input waiting: commit now (IdleCommit 0), or after waiting IdleCommit for more.
			if a.opts.IdleCommit <= 0 {
				select {
				case c = <-q.C():
				default:
					if err := a.commit(ctx); err != nil {
						return err
					}
					continue
				}
			} else {
				timer.Reset(max(min(a.opts.IdleCommit, time.Until(a.txStart.Add(a.opts.MaxDelay))), 0))
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
				if _, ok := errors.AsType[*ErrDDL](err); ok {
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
			if a.noCompact {
				// Applied without a recording (streamed, too large, or after a redo): committed
				// on its own, so a schema stop in a later transaction can keep the ones before
				// it (keepCompleted needs the whole open target transaction recorded).
				if err := a.commit(ctx); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// keepCompleted handles a schema stop (cause) in the middle of a target transaction: the
// source transactions before the stopping one are applied again from the recording and
// committed, so the stop is exact. The user's fix (a column renamed or added on the target)
// then meets only the transactions from the stopping one on; applied to a target still
// behind the source's schema change, the same fix would make the earlier ones fail next.
// The open target transaction is always recorded when it holds more than the stopping source
// transaction: one applied without a recording is committed at its end, one that grows too
// large to record first commits those before it (stopRecording), and a conflict's redo in the
// middle of one does the same (flush).
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
	a.stats.DDL.Add(a.pendingDDL)
	a.stats.TargetTxs.Add(1)
	a.stats.CommitTimeUS.Store(a.lastTime.UnixMicro())
	a.stats.AppliedLSN.Store(uint64(a.lastEnd))
	a.pendingCh, a.pendingDDL = 0, 0
	return nil
}

// setupOrigin marks the session with replication origin name, creating the origin first when
// it does not exist.
func setupOrigin(ctx context.Context, conn *pgx.Conn, name string) error {
	if _, err := conn.Exec(ctx, `SELECT pg_catalog.pg_replication_origin_create($1::text)
		WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_origin WHERE roname = $1::text)`, name); err != nil {
		return fmt.Errorf("create replication origin %s for the apply session: %w", name, err)
	}
	if _, err := conn.Exec(ctx, `SELECT pg_catalog.pg_replication_origin_session_setup($1::text)`, name); err != nil {
		return fmt.Errorf("mark the apply session with replication origin %s (pg_replication_origin_session_setup): %w", name, err)
	}
	return nil
}
