package snapshot

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/progress"
	"github.com/pgshift/pgshift/internal/state"
)

// firstNormalOID is FirstNormalObjectId: types with smaller OIDs are built in and have the
// same OID on every server, so their binary COPY form is portable. User types (enums,
// domains, composites, extension types) get OIDs from here up, which differ between servers
// and are embedded in the binary form of arrays and records.
const firstNormalOID = 16384

// pipeBuffer is the per-worker buffer between the source's COPY OUT and the target's COPY IN:
// it batches the source's one-message-per-row writes, and bounds memory per worker.
const pipeBuffer = 256 << 10

// sessionSettings make both sides read and write text values identically (db.TextSettings,
// pgshift's one definition), with no statement or idle timeouts cutting a long COPY.
// row_security = off makes a read or write that row-level security policies would filter fail
// instead of silently seeing only some rows (42501 "query would be affected by row-level
// security policy").
var sessionSettings = append(db.SetTextSettings(false),
	"SET statement_timeout = 0", "SET lock_timeout = 0", "SET idle_in_transaction_session_timeout = 0", "SET row_security = off")

// CopyOptions control Copy.
type CopyOptions struct {
	Jobs int
	// Snapshot is the exported snapshot every worker imports. The connection that exported it
	// must stay open and idle until Copy returns: a worker whose source session is lost
	// re-imports it to redo its chunk.
	Snapshot string
	// Binary allows COPY's binary format for tables whose columns are all built-in types; only
	// valid when both servers have the same major version.
	Binary bool
	// Retries is how often a failed work item is redone (in the same snapshot) when the
	// failure is a lost connection rather than the server rejecting the data.
	Retries int
	// StallTimeout fails a chunk through which no byte has flowed for this long (default 10
	// minutes): a half-open connection must become an error (and a retry), never a hang.
	StallTimeout time.Duration
	// LockTables, when set, are locked in ACCESS SHARE mode by the one worker (Jobs becomes 1)
	// right after it imports the snapshot, held until the copy ends, as pg_dump holds every
	// table it dumps: a TRUNCATE or rewrite of one then waits instead of hiding its rows from
	// the snapshot. One worker only: a second one's lock request would queue behind the
	// waiting TRUNCATE while the first holds its locks to the end, and both would wait for good.
	LockTables []pgtypes.TableID
	// LockShare, with Snapshot empty, copies LockTables in a snapshot of the one worker's own:
	// it locks them in SHARE mode first, then reads the WAL insert position, which is the
	// tables' snapshot LSN (recorded as each table starts): every change to them committed
	// before it is in the snapshot and none after, because their writers wait for the copy.
	// For tables rewritten over and over (an application that TRUNCATEs a queue every few
	// milliseconds): no rewrite can land between a snapshot and the copy's locks, as it can
	// between a slot's exported snapshot and the lock its importer takes.
	LockShare bool
	Tracker   *progress.Tracker
	Log       *slog.Logger
}

// Result sums what Copy moved.
type Result struct {
	Rows, Bytes int64
	Tables      int // tables finished by this call
}

// tableState follows one table across the work items that hold its chunks.
type tableState struct {
	mu      sync.Mutex
	done    int // chunks committed
	of      int
	started bool
	task    *progress.Task
}

// Copy copies the work items' chunks from src to dst with opts.Jobs workers, every worker
// reading in the exported snapshot opts.Snapshot. Each work item is one target transaction that
// also records its chunks in pgshift.chunks, so a chunk's rows and the record that it is done
// commit together; a failed item is rolled back whole and redone alone. When the last chunk
// of a table commits, the table is marked done in pgshift.tables with a synchronous commit,
// which also makes every earlier (asynchronously committed) chunk durable.
func Copy(ctx context.Context, src, dst db.Endpoint, items []WorkItem, opts CopyOptions) (Result, error) {
	if opts.Jobs < 1 || len(opts.LockTables) > 0 {
		opts.Jobs = 1
	}
	if opts.LockShare {
		if len(opts.LockTables) == 0 || opts.Snapshot != "" {
			return Result{}, errors.New("a copy under SHARE locks takes its own snapshot of the tables it locks")
		}
		opts.Retries = 0 // a new session would be a new snapshot, at another LSN
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.StallTimeout <= 0 {
		opts.StallTimeout = 10 * time.Minute
	}
	if !opts.LockShare && !snapshotNameRE.MatchString(opts.Snapshot) {
		return Result{}, fmt.Errorf("invalid exported snapshot name %q", opts.Snapshot)
	}
	tables := map[pgtypes.TableID]*tableState{}
	for _, it := range items {
		for _, c := range it.Chunks {
			ts := tables[c.Table.ID]
			if ts == nil {
				ts = &tableState{of: c.Of}
				if opts.Tracker != nil {
					ts.task = opts.Tracker.Task(c.Table.ID.String(), tableBytes(c.Table), max(c.Table.RowsEstimate, 0))
				}
				tables[c.Table.ID] = ts
			}
		}
	}
	var rows, bytes, finished atomic.Int64
	var rewrittenMu sync.Mutex
	rewritten := map[pgtypes.TableID]bool{}
	g, gctx := errgroup.WithContext(ctx)
	queue := make(chan WorkItem)
	g.Go(func() error {
		defer close(queue)
		for _, it := range items {
			select {
			case queue <- it:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for i := 0; i < opts.Jobs; i++ {
		g.Go(func() error {
			w := &worker{src: src, dst: dst, opts: opts, tables: tables}
			defer w.close()
			for it := range queue {
				r, b, err := w.copyItemRetrying(gctx, it)
				if rw, ok := errors.AsType[*RewrittenError](err); ok {
					// The item is rolled back and its tables stay unfinished; the rest goes on.
					opts.Log.Warn("table rewritten on the source after the copy's snapshot; it will be copied again in a new snapshot", "table", rw.Tables[0].String())
					rewrittenMu.Lock()
					rewritten[rw.Tables[0]] = true
					rewrittenMu.Unlock()
					continue
				}
				if err != nil {
					return err
				}
				rows.Add(r)
				bytes.Add(b)
				n, err := w.finishTables(gctx, it)
				if err != nil {
					return err
				}
				finished.Add(int64(n))
			}
			return nil
		})
	}
	err := g.Wait()
	if err == nil && len(rewritten) > 0 {
		rw := &RewrittenError{}
		for id := range rewritten {
			rw.Tables = append(rw.Tables, id)
		}
		slices.SortFunc(rw.Tables, func(a, b pgtypes.TableID) int { return strings.Compare(a.String(), b.String()) })
		err = rw
	}
	return Result{Rows: rows.Load(), Bytes: bytes.Load(), Tables: int(finished.Load())}, err
}

var snapshotNameRE = regexp.MustCompile(`^[0-9A-Fa-f-]+$`)

// worker owns one source session (inside the snapshot transaction) and one target session.
type worker struct {
	src, dst db.Endpoint
	opts     CopyOptions
	tables   map[pgtypes.TableID]*tableState

	srcConn, dstConn *pgx.Conn
	lockLSN          pgtypes.LSN // LockShare: the snapshot's position
}

func (w *worker) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if w.srcConn != nil {
		w.srcConn.Close(ctx)
	}
	if w.dstConn != nil {
		w.dstConn.Close(ctx)
	}
}

// ensureSource opens the source session and imports the snapshot, once per session.
func (w *worker) ensureSource(ctx context.Context) error {
	if w.srcConn != nil && !w.srcConn.IsClosed() {
		return nil
	}
	conn, err := w.src.Connect(ctx)
	if err != nil {
		return err
	}
	for _, s := range append(append([]string{}, sessionSettings...), "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY") {
		if _, err := conn.Exec(ctx, s); err != nil {
			conn.Close(ctx)
			return fmt.Errorf("start the copy snapshot on the source: %w", w.src.Describe(err))
		}
	}
	if w.opts.LockShare {
		// The locks first (LOCK takes no snapshot), then the first query takes the snapshot.
		names := make([]string, len(w.opts.LockTables))
		for i, t := range w.opts.LockTables {
			names[i] = t.Sanitize()
		}
		var lsn string
		_, err := conn.Exec(ctx, "SET LOCAL lock_timeout = '60s'; LOCK TABLE "+strings.Join(names, ", ")+" IN SHARE MODE; SET LOCAL lock_timeout = 0")
		if err == nil {
			err = conn.QueryRow(ctx, "SELECT pg_catalog.pg_current_wal_insert_lsn()::text").Scan(&lsn)
		}
		if err == nil {
			w.lockLSN, err = pgtypes.ParseLSN(lsn)
		}
		if err != nil {
			conn.Close(ctx)
			return fmt.Errorf("lock %s on the source to copy them again: %w", strings.Join(names, ", "), w.src.Describe(err))
		}
		w.srcConn = conn
		return nil
	}
	if _, err := conn.Exec(ctx, "SET TRANSACTION SNAPSHOT '"+w.opts.Snapshot+"'"); err != nil {
		conn.Close(ctx)
		if SnapshotGone(err) {
			return fmt.Errorf("import the copy snapshot %s on the source: %w (the session that exported it has ended; run pgshift copy again: unfinished tables are then copied again in a new snapshot)",
				w.opts.Snapshot, w.src.Describe(err))
		}
		return fmt.Errorf("import the copy snapshot %s on the source: %w", w.opts.Snapshot, w.src.Describe(err))
	}
	if len(w.opts.LockTables) > 0 {
		w.lockTables(ctx, conn)
	}
	w.srcConn = conn
	return nil
}

// lockTables takes opts.LockTables' locks in the snapshot transaction, waiting at most 10 s (a
// lock queued behind a long ALTER TABLE would hold the copy up); when it cannot, the copy goes
// on without them: the check after each chunk still notices a rewrite.
func (w *worker) lockTables(ctx context.Context, conn *pgx.Conn) {
	names := make([]string, len(w.opts.LockTables))
	for i, t := range w.opts.LockTables {
		names[i] = t.Sanitize()
	}
	_, err := conn.Exec(ctx, "SAVEPOINT pgshift_lock; SET LOCAL lock_timeout = '10s'; LOCK TABLE "+strings.Join(names, ", ")+" IN ACCESS SHARE MODE; SET LOCAL lock_timeout = 0; RELEASE SAVEPOINT pgshift_lock")
	if err != nil {
		w.opts.Log.Warn("copying without holding the tables locked (a rewrite during the copy is still noticed)", "tables", len(names), "err", w.src.Describe(err))
		if _, rerr := conn.Exec(ctx, "ROLLBACK TO SAVEPOINT pgshift_lock; RELEASE SAVEPOINT pgshift_lock"); rerr != nil {
			w.opts.Log.Warn("undo the failed lock", "err", w.src.Describe(rerr))
		}
	}
}

// RewrittenError: a table was rewritten on the source (ALTER TABLE that rewrites it, VACUUM
// FULL, CLUSTER, TRUNCATE) after the copy's snapshot was taken. Such commands are not
// MVCC-safe: the new file holds the rows with the rewriting transaction's xid, which the older
// snapshot cannot see, so a COPY in that snapshot reads the table as empty (or as the rows
// since), and no change in the stream would repair it. The chunk is not kept; the table must
// be copied again in a snapshot taken after the rewrite.
//
// Copy goes on with the other work items and returns this error at the end, naming every such
// table: the caller copies them (and whatever else is unfinished) again in a new snapshot.
type RewrittenError struct {
	Tables []pgtypes.TableID
}

func (e *RewrittenError) Error() string {
	names := make([]string, len(e.Tables))
	for i, t := range e.Tables {
		names[i] = t.String()
	}
	return fmt.Sprintf("table %s was rewritten on the source (ALTER TABLE … TYPE, VACUUM FULL, CLUSTER or TRUNCATE) after the copy's snapshot was taken, so the snapshot cannot see its rows: it must be copied again in a new snapshot",
		strings.Join(names, ", "))
}

// checkNotRewritten fails with a *RewrittenError when t's storage changed after the snapshot.
// It runs after a chunk's COPY in the same source transaction, which holds the table's ACCESS
// SHARE lock from the COPY on, so the storage the COPY read is the current one: pg_class read
// by a query shows the row as of the snapshot, pg_relation_filenode the current file (the
// catalog cache, refreshed when the lock was taken). They differ exactly when a rewrite
// committed after the snapshot and before the COPY.
func (w *worker) checkNotRewritten(ctx context.Context, t *catalog.Table) error {
	var rewritten bool
	err := w.srcConn.QueryRow(ctx, `SELECT c.relfilenode IS DISTINCT FROM pg_relation_filenode(c.oid) FROM pg_class c WHERE c.oid = $1::oid`, t.OID).Scan(&rewritten)
	if errors.Is(err, pgx.ErrNoRows) {
		rewritten = true // created after the snapshot under the same OID: not the table the snapshot knew
	} else if err != nil {
		return fmt.Errorf("copy %s: check its storage against the snapshot: %w", t.ID, w.src.Describe(err))
	}
	if rewritten {
		return &RewrittenError{Tables: []pgtypes.TableID{t.ID}}
	}
	return nil
}

// SnapshotGone reports whether err is the server refusing to import an exported snapshot
// because the session that exported it has ended: 22023 "invalid snapshot identifier" (up to
// PostgreSQL 16), 42704 "snapshot does not exist" (17 and later), or 55000 when the exporter
// ended while the snapshot was being imported.
func SnapshotGone(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "22023", "42704", "55000":
		return true
	}
	return false
}

// ensureTarget opens the target session. Data sessions commit asynchronously: a chunk's rows
// and its pgshift.chunks record share a transaction, so a commit lost in a target crash loses
// both and the chunk is simply copied again; finishing a table commits synchronously.
func (w *worker) ensureTarget(ctx context.Context) error {
	if w.dstConn != nil && !w.dstConn.IsClosed() {
		return nil
	}
	conn, err := w.dst.Connect(ctx)
	if err != nil {
		return err
	}
	for _, s := range append(append([]string{}, sessionSettings...), "SET synchronous_commit = off") {
		if _, err := conn.Exec(ctx, s); err != nil {
			conn.Close(ctx)
			return fmt.Errorf("prepare a copy session on the target: %w", w.dst.Describe(err))
		}
	}
	w.dstConn = conn
	return nil
}

// copyItemRetrying copies an item, redoing it (in the same snapshot) after a lost connection.
func (w *worker) copyItemRetrying(ctx context.Context, it WorkItem) (int64, int64, error) {
	for attempt := 0; ; attempt++ {
		rows, bytes, err := w.copyItem(ctx, it)
		if err == nil {
			return rows, bytes, nil
		}
		if ctx.Err() != nil || attempt >= w.opts.Retries || !retryable(err) {
			return 0, 0, err
		}
		w.opts.Log.Warn("copy chunk failed; copying it again in the same snapshot", "chunk", describeItem(it), "attempt", attempt+1, "error", err)
		w.close()
		w.srcConn, w.dstConn = nil, nil
	}
}

// retryable: the session was lost, or the server asked for a retry (db.Transient, pgshift's
// one retry policy); a server that rejected the data would reject it again, and a table
// rewritten after the snapshot cannot be seen in that snapshot again.
func retryable(err error) bool {
	if _, ok := errors.AsType[*RewrittenError](err); ok {
		return false
	}
	return db.Transient(err)
}

func describeItem(it WorkItem) string {
	var parts []string
	for _, c := range it.Chunks {
		parts = append(parts, fmt.Sprintf("%s %d/%d", c.Table.ID, c.No+1, c.Of))
	}
	return strings.Join(parts, ", ")
}

// copyItem copies every chunk of the item in one target transaction.
func (w *worker) copyItem(ctx context.Context, it WorkItem) (rows, bytes int64, err error) {
	if err := w.ensureSource(ctx); err != nil {
		return 0, 0, err
	}
	if err := w.ensureTarget(ctx); err != nil {
		return 0, 0, err
	}
	for _, c := range it.Chunks {
		if err := w.startTable(ctx, c); err != nil {
			return 0, 0, err
		}
	}
	started := time.Now()
	tx, err := w.dstConn.Begin(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("copy %s: %w", describeItem(it), w.dst.Describe(err))
	}
	type counted struct {
		task        *progress.Task
		bytes, rows int64
	}
	var progressed []counted
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx))
			for _, p := range progressed { // the rows were not kept: take them off the progress
				p.task.Add(-p.bytes, -p.rows)
			}
		}
	}()
	for _, c := range it.Chunks {
		r, b, cerr := w.copyChunk(ctx, c)
		progressed = append(progressed, counted{w.tables[c.Table.ID].task, b, r})
		if cerr != nil {
			return 0, 0, cerr
		}
		if err = w.checkNotRewritten(ctx, c.Table); err != nil {
			return 0, 0, err
		}
		if err = state.RecordChunk(ctx, tx, c.Table.ID, c.No, r, b); err != nil {
			return 0, 0, err
		}
		rows += r
		bytes += b
	}
	if err = tx.Commit(ctx); err != nil {
		return 0, 0, fmt.Errorf("copy %s: commit on the target: %w", describeItem(it), w.dst.Describe(err))
	}
	w.opts.Log.Debug("work item copied", "item", describeItem(it), "rows", rows, "bytes", bytes, "took", time.Since(started).Round(time.Millisecond).String())
	for _, c := range it.Chunks {
		ts := w.tables[c.Table.ID]
		ts.mu.Lock()
		ts.done++
		ts.mu.Unlock()
	}
	return rows, bytes, nil
}

func (w *worker) startTable(ctx context.Context, c Chunk) error {
	ts := w.tables[c.Table.ID]
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.started {
		return nil
	}
	if err := state.StartTable(ctx, w.dstConn, c.Table.ID, c.Of, w.lockLSN); err != nil {
		return err
	}
	ts.started = true
	return nil
}

// finishTables marks the item's tables done when their last chunk has committed.
func (w *worker) finishTables(ctx context.Context, it WorkItem) (int, error) {
	n := 0
	for _, c := range it.Chunks {
		ts := w.tables[c.Table.ID]
		ts.mu.Lock()
		complete := ts.done == ts.of
		if complete {
			ts.done++ // finish once
		}
		ts.mu.Unlock()
		if !complete {
			continue
		}
		err := pgx.BeginFunc(ctx, w.dstConn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, "SET LOCAL synchronous_commit = on"); err != nil {
				return err
			}
			return state.FinishTable(ctx, tx, c.Table.ID)
		})
		if err != nil {
			return n, fmt.Errorf("finish copy of %s: %w", c.Table.ID, w.dst.Describe(err))
		}
		ts.task.Done()
		w.opts.Log.Debug("table copied", "table", c.Table.ID.String())
		n++
	}
	return n, nil
}

// CopySQL returns the COPY statements for a chunk: out on the source, in on the target.
// Columns are always listed (generated columns are left to the target, dropped ones do not
// exist); identity columns keep their values because COPY never applies identity defaults
// to supplied columns, GENERATED ALWAYS included.
//
// The format is chosen per table: binary when allowed and every copied column has a portable
// binary form, text as soon as one column does not (catalog.Column.TextOnly: reg* types,
// whose binary form is a raw OID naming another object on the target; aclitem, which has no
// binary I/O; types that are not built in, whose OIDs differ between servers; and anything
// made of them).
func CopySQL(c Chunk, binary bool) (out, in string) {
	t := c.Table
	var names []string
	useBinary := binary
	for _, col := range t.CopyColumns() {
		names = append(names, col.Name)
		if col.TextOnly || col.TypeOID >= firstNormalOID {
			useBinary = false
		}
	}
	cols := ""
	if len(names) > 0 {
		cols = " (" + pgtypes.QuoteIdents(names) + ")"
	}
	format := ""
	if useBinary {
		format = " WITH (FORMAT binary)"
	}
	switch {
	case c.Whole && len(names) > 0:
		out = "COPY " + t.ID.Sanitize() + cols + " TO STDOUT" + format
	case len(names) > 0:
		out = "COPY (SELECT " + pgtypes.QuoteIdents(names) + " FROM ONLY " + t.ID.Sanitize() + " WHERE " + c.Where() + ") TO STDOUT" + format
	default: // a table without copyable columns still has rows (their count matters)
		where := ""
		if !c.Whole {
			where = " WHERE " + c.Where()
		}
		out = "COPY (SELECT FROM ONLY " + t.ID.Sanitize() + where + ") TO STDOUT" + format
	}
	in = "COPY " + t.ID.Sanitize() + cols + " FROM STDIN" + format
	return out, in
}

// copyChunk streams one chunk: COPY TO STDOUT on the source into COPY FROM STDIN on the
// target, through a bounded buffer. Either side failing stops the other.
func (w *worker) copyChunk(ctx context.Context, c Chunk) (rows, bytes int64, err error) {
	out, in := CopySQL(c, w.opts.Binary)
	task := w.tables[c.Table.ID].task
	pr, pw := io.Pipe()
	g, gctx := errgroup.WithContext(ctx)
	streamed := make(chan struct{})
	g.Go(func() error { // stall watchdog
		tick := time.NewTicker(min(w.opts.StallTimeout/4, 15*time.Second))
		defer tick.Stop()
		last, since := int64(-1), time.Now()
		for {
			select {
			case <-streamed:
				return nil
			case <-gctx.Done():
				return nil
			case <-tick.C:
				if n := atomic.LoadInt64(&bytes); n != last {
					last, since = n, time.Now()
				} else if time.Since(since) >= w.opts.StallTimeout {
					return fmt.Errorf("copy %s chunk %d/%d: no data moved for %s (connection stalled?)", c.Table.ID, c.No+1, c.Of, w.opts.StallTimeout)
				}
			}
		}
	})
	// When the source fails, the target's COPY fails too (the pipe carries the source's error
	// into CopyFail): the source's error is the cause and the one to report, whichever side's
	// error reaches the group first.
	var srcErr, dstRaw error
	g.Go(func() error {
		bw := bufio.NewWriterSize(&countingWriter{w: pw, task: task, n: &bytes}, pipeBuffer)
		_, err := w.srcConn.PgConn().CopyTo(gctx, bw, out)
		if err == nil {
			err = bw.Flush()
		}
		if err != nil {
			pw.CloseWithError(err)
			srcErr = fmt.Errorf("copy %s chunk %d/%d out of the source: %w%s", c.Table.ID, c.No+1, c.Of, w.src.Describe(err), rowSecurityHint(err, c.Table))
			return srcErr
		}
		return pw.Close()
	})
	g.Go(func() error {
		tag, err := w.dstConn.PgConn().CopyFrom(gctx, pr, in)
		close(streamed)
		if err != nil {
			dstRaw = err
			pr.CloseWithError(err)
			return fmt.Errorf("copy %s chunk %d/%d into the target: %w%s", c.Table.ID, c.No+1, c.Of, w.dst.Describe(err), rowSecurityHint(err, c.Table))
		}
		rows = tag.RowsAffected()
		return nil
	})
	if err := g.Wait(); err != nil {
		// (The source's error is only the echo of the target's when the target closed the pipe.)
		if srcErr != nil && !errors.Is(srcErr, context.Canceled) && (dstRaw == nil || !errors.Is(srcErr, dstRaw)) {
			err = srcErr
		}
		return 0, atomic.LoadInt64(&bytes), err
	}
	task.Add(0, rows)
	return rows, bytes, nil
}

// countingWriter counts the bytes passing to the pipe, for the result and the progress bar.
type countingWriter struct {
	w    io.Writer
	task *progress.Task
	n    *int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	atomic.AddInt64(c.n, int64(n))
	c.task.Add(int64(n), 0)
	return n, err
}

// DataTables returns the tables whose rows Copy moves (plain tables and leaf partitions).
func DataTables(tables []catalog.Table) []*catalog.Table {
	var out []*catalog.Table
	for i := range tables {
		if tables[i].HoldsData() {
			out = append(out, &tables[i])
		}
	}
	return out
}
