package apply

// Compaction: within one target transaction, the changes to one row (same table, same key) are
// merged into the fewest statements that leave the same final row: INSERT then UPDATEs is one
// INSERT, UPDATEs of a hot row are one UPDATE, INSERT then DELETE is nothing. Busy sources
// update a few rows over and over (counters, balances, queues), so this removes most of the
// target's work there.
//
// Why it is safe: the target transaction commits all of its source transactions at once, so
// only its final state is ever visible; triggers and foreign keys do not fire during apply
// (session_replication_role = replica). What could differ is the order rows are written in,
// which matters to unique and exclusion constraints other than the key: a row may take a value
// another row gives up later in the batch. The merged statements are written table by table
// (rows of different tables cannot interact while triggers and foreign keys are off), within a
// table in the order of each row's last change, and if a constraint still objects, the whole
// target transaction is rolled back and applied again change by change, in source order (redo).
// A redo applies every recorded change once, the one being processed included once it is
// recorded: every caller of something that can redo checks a.gen afterwards and, when it
// changed, does not apply its change again. Only tables with a key identity take part; key
// changes, UPDATEs of tables with an identity ALWAYS column outside the key, TRUNCATE, REPLICA
// IDENTITY FULL tables and streamed (large) transactions are applied change by change.
//
// What is kept for a redo is bounded (Options.MaxRecorded changes, Options.MaxBytes bytes):
// past it, the merged rows are written out (a conflict there still redoes what was recorded)
// and the rest of the target transaction is applied change by change without recording, so a
// source transaction of any size that arrives unstreamed holds bounded memory.

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// compaction is the merge state of the open target transaction.
type compaction struct {
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

// entry is the merged effect of this target transaction's changes to one row.
type entry struct {
	p     *plan
	state byte        // 'I' inserted, 'U' updated, 'D' deleted, 'R' deleted then inserted again
	where [][]byte    // key values of the row as it was before the batch (U, D, R)
	row   []cdc.Value // the row's new values (I, U, R); U may hold unchanged-TOAST placeholders
	seq   int         // order of the row's last change
}

// key renders the row's key for error messages. It is rendered only for them: done for every
// change, it cost a few percent of the applier's CPU in a backlog replay.
func (e *entry) key() string { return describeValues(e.p, e.p.keys, e.where) }

// rawChange is one change as received, kept so a batch can be applied again in source order:
// a row change and its plan, or the statements a TRUNCATE became.
type rawChange struct {
	p        *plan
	ch       *cdc.Change
	truncate []stmt
}

func (a *Applier) recording() bool { return !a.noCompact && a.cur != nil && !a.cur.Streamed }

// compactable says whether ch may be merged with other changes to its row.
func (a *Applier) compactable(p *plan, ch *cdc.Change) bool {
	if !a.recording() || p.full {
		return false
	}
	if len(p.keys) == 0 && ch.Kind != cdc.Insert {
		return false
	}
	if ch.Kind == cdc.Update && (ch.Old != nil || p.alwaysOutsideKey) {
		// A key change, or an identity ALWAYS column that may change (merged UPDATEs could not
		// set it): applied in order.
		return false
	}
	if q := a.entryPlans[p.table]; q != nil && q != p {
		return false // the table's columns changed within the batch
	}
	return true
}

// rowKey identifies a row by table and key values (their exact text, length-prefixed).
func rowKey(p *plan, wv [][]byte) string {
	if p.keyPrefix == nil {
		p.keyPrefix = []byte(p.table.Sanitize())
	}
	n := len(p.keyPrefix)
	for _, v := range wv {
		n += binary.MaxVarintLen64 + len(v)
	}
	b := append(make([]byte, 0, n), p.keyPrefix...)
	for _, v := range wv {
		b = binary.AppendUvarint(b, uint64(len(v)))
		b = append(b, v...)
	}
	return string(b)
}

// compact merges ch into the row's entry. Sequences that cannot happen on a consistent target
// (an INSERT of a row that exists, a change to a deleted row) are applied as they come, so the
// target reports them exactly as it would without compaction.
func (a *Applier) compact(ctx context.Context, p *plan, ch *cdc.Change) error {
	src := ch.New
	if ch.Kind == cdc.Delete {
		src = ch.Old
	}
	wv, err := values(src, p.keys, p, ch.Kind.String()+" key")
	if err != nil {
		return err
	}
	a.seq++
	k := rowKey(p, wv)
	if len(p.keys) == 0 {
		// A table without a key only ever receives INSERTs: each is a row of its own, kept in
		// order so runs of them become multi-row INSERTs.
		k += "\x00#" + strconv.Itoa(a.seq)
	}
	e := a.entries[k]
	a.pendingCh++
	switch {
	case e == nil:
		e = &entry{p: p, where: wv}
		switch ch.Kind {
		case cdc.Insert:
			e.state, e.row = 'I', ch.New
		case cdc.Update:
			e.state, e.row = 'U', ch.New
		case cdc.Delete:
			e.state = 'D'
		}
		a.entries[k] = e
		a.entryPlans[p.table] = p
	case ch.Kind == cdc.Insert && e.state == 'D':
		e.state, e.row = 'R', ch.New
	case ch.Kind == cdc.Update && e.state != 'D':
		e.row = overlay(e.row, ch.New)
	case ch.Kind == cdc.Delete && e.state == 'I':
		delete(a.entries, k) // inserted and deleted within the batch: nothing to write
		return nil
	case ch.Kind == cdc.Delete && e.state != 'D':
		e.state, e.row = 'D', nil
	default:
		a.pendingCh--
		gen := a.gen
		if err := a.flushEntries(ctx); err != nil {
			return err
		}
		if a.gen != gen {
			return nil // redone in source order, this change included
		}
		return a.direct(ctx, p, ch)
	}
	e.seq = a.seq
	a.compacted = true
	return nil
}

// overlay returns old with every value sent in upd replacing it; values upd leaves unchanged
// (TOAST placeholders) keep old's.
func overlay(old, upd []cdc.Value) []cdc.Value {
	out := make([]cdc.Value, len(upd))
	for i, v := range upd {
		if v.Kind == cdc.ValueUnchanged && i < len(old) {
			v = old[i]
		}
		out[i] = v
	}
	return out
}

// barrier writes out the merged rows of table t before a change to t is applied on its own.
func (a *Applier) barrier(ctx context.Context, t pgtypes.TableID) error {
	if a.entryPlans[t] == nil {
		return nil
	}
	return a.flushEntries(ctx)
}

// flushEntries queues the merged rows.
func (a *Applier) flushEntries(ctx context.Context) error {
	if len(a.entries) == 0 {
		return nil
	}
	list := make([]*entry, 0, len(a.entries))
	for _, e := range a.entries {
		list = append(list, e)
	}
	// Rows of different tables do not interact while triggers and foreign keys are off, so the
	// rows are written table by table (runs become multi-row statements), and within a table
	// in the order of each row's last change.
	sort.Slice(list, func(i, j int) bool {
		if list[i].p.table != list[j].p.table {
			ti, tj := list[i].p.table, list[j].p.table
			return ti.Schema < tj.Schema || ti.Schema == tj.Schema && ti.Name < tj.Name
		}
		return list[i].seq < list[j].seq
	})
	clear(a.entries)
	clear(a.entryPlans)
	gen := a.gen
	for i := 0; i < len(list) && a.gen == gen; {
		e := list[i]
		if e.state == 'I' {
			// A run of inserts into one table becomes multi-row INSERTs.
			j := i
			var rows [][]cdc.Value
			for ; j < len(list) && list[j].state == 'I' && list[j].p == e.p; j++ {
				rows = append(rows, list[j].row)
			}
			if err := a.insertRows(ctx, e.p, rows); err != nil {
				return err
			}
			i = j
			continue
		}
		if e.state == 'U' {
			// A run of updates of one table setting the same columns becomes multi-row UPDATEs.
			set := setColumns(e.p, e.row)
			j := i
			var rows []*entry
			for ; j < len(list) && list[j].state == 'U' && list[j].p == e.p && slices.Equal(setColumns(e.p, list[j].row), set); j++ {
				rows = append(rows, list[j])
			}
			if err := a.updateRows(ctx, e.p, set, rows); err != nil {
				return err
			}
			i = j
			continue
		}
		var err error
		switch e.state {
		case 'D':
			err = a.deleteRow(ctx, e.p, e.p.keys, e.where, e.key())
		case 'R':
			if err = a.deleteRow(ctx, e.p, e.p.keys, e.where, e.key()); err == nil && a.gen == gen {
				err = a.insertRows(ctx, e.p, [][]cdc.Value{e.row})
			}
		}
		if err != nil {
			return err
		}
		i++
	}
	return nil
}

// conflict reports a unique or exclusion violation, which compaction's reordering can cause.
func conflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "23505" || pgErr.Code == "23P01")
}

// redo rolls back the target transaction and applies every change it held again, one by one
// in source order. A conflict then is real and is returned. Plans built in the rolled-back
// transaction are discarded first (a column one of them added is gone); the changes they
// served are planned again.
func (a *Applier) redo(ctx context.Context, cause error) error {
	a.log.Debug("reapplying batch in source order after a constraint conflict", "err", cause)
	if err := a.tx.Rollback(ctx); err != nil {
		return fmt.Errorf("roll back target transaction: %w", err)
	}
	a.tx = nil
	if err := a.discardTxPlans(ctx); err != nil {
		return err
	}
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin target transaction: %w", err)
	}
	a.tx = tx
	a.gen++
	raw := a.raw
	a.resetCompaction()
	a.noCompact = true
	a.batch, a.queued, a.bytes, a.pendingCh, a.pendingDDL = nil, nil, 0, 0, 0
	a.runPlan, a.runRows = nil, nil
	for _, r := range raw {
		if r.truncate != nil {
			if err := a.writeRun(ctx); err != nil {
				return err
			}
			a.pendingCh++
			a.queueSQL(r.truncate...)
			continue
		}
		p := r.p
		if p.stale {
			if p, err = a.plan(ctx, r.ch.Rel); err != nil {
				return err
			}
		}
		if err := a.direct(ctx, p, r.ch); err != nil {
			return err
		}
	}
	return a.flush(ctx)
}

// stopRecording writes out what the open target transaction merged so far, then lets the rest
// of it be applied change by change without keeping anything for a redo: its source transaction
// is too large to hold in memory. A conflict in this flush still redoes what was recorded. Once
// the flush has succeeded the target equals the source at this change, so a later conflict is
// real and is returned as it is.
func (a *Applier) stopRecording(ctx context.Context) error {
	a.log.Debug("transaction too large to keep for a redo; applying the rest change by change", "changes", len(a.raw), "bytes", a.rawBytes)
	return a.unrecordedFromHere(ctx, a.txCount > 0)
}

// unrecordedFromHere writes out what compaction holds and applies the rest of the open target
// transaction change by change, without a recording (a source transaction too large to keep,
// or one that holds a schema change). commitFirst first commits the source transactions before
// the current one on their own (commitBefore), so that a schema stop later in it keeps them.
func (a *Applier) unrecordedFromHere(ctx context.Context, commitFirst bool) error {
	if commitFirst {
		if err := a.commitBefore(ctx); err != nil {
			return err
		}
	}
	if err := a.flushEntries(ctx); err != nil {
		return err
	}
	if err := a.flush(ctx); err != nil {
		return err
	}
	a.resetCompaction()
	a.noCompact = true
	return nil
}

// commitBefore gives the current source transaction a target transaction of its own before it
// stops being recorded: the ones before it in the open target transaction are applied again
// from the recording and committed, then its own changes so far are applied again in a new
// target transaction. A schema stop later in it then leaves the position right before it.
func (a *Applier) commitBefore(ctx context.Context) error {
	cur, own := a.cur, slices.Clone(a.raw[a.rawAtBegin:])
	a.raw, a.cur = a.raw[:a.rawAtBegin], nil
	// The current transaction is the current one again on every return: a failure here is
	// reported in its name (a nil one took the agent down with a panic when the target
	// restarted during this redo).
	defer func() { a.cur = cur }()
	if err := a.redo(ctx, errors.New("committing the transactions before a large one")); err != nil {
		return err
	}
	if err := a.commit(ctx); err != nil {
		return err
	}
	tx, err := a.conn.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin target transaction: %w", err)
	}
	a.tx, a.txStart, a.txCount, a.txBytes = tx, time.Now(), 0, 0
	a.cur, a.raw, a.rawAtBegin = cur, own, 0
	return a.redo(ctx, errors.New("applying a large transaction on its own"))
}

// resetCompaction forgets the merged rows and the raw changes (after a commit or for a redo).
func (a *Applier) resetCompaction() {
	clear(a.entries)
	clear(a.entryPlans)
	a.raw = a.raw[:0:0]
	a.rawBytes = 0
	a.compacted = false
	a.noCompact = false
}

// setColumns are the columns an UPDATE of row writes: all sent values except unchanged TOAST
// placeholders and identity ALWAYS columns.
func setColumns(p *plan, row []cdc.Value) []int {
	var set []int
	for i, v := range row {
		if v.Kind != cdc.ValueUnchanged && !p.always[i] {
			set = append(set, i)
		}
	}
	return set
}

// updateRows updates distinct rows (merged entries never share a key) that set the same
// columns: runs of 64 and 8 rows share one UPDATE ... FROM (VALUES ...), the rest go one by one.
func (a *Applier) updateRows(ctx context.Context, p *plan, set []int, rows []*entry) error {
	if len(set) == 0 {
		return nil // only unchanged TOAST values: nothing to write
	}
	gen := a.gen
	for len(rows) > 0 && a.gen == gen {
		n := 1
		for _, size := range []int{64, 8} {
			if len(rows) >= size && size*(len(set)+len(p.keys)) <= 65535 {
				n = size
				break
			}
		}
		if n == 1 {
			e := rows[0]
			if err := a.updateRow(ctx, p, e.row, p.keys, e.where, e.key()); err != nil {
				return err
			}
			rows = rows[1:]
			continue
		}
		vals := make([][]byte, 0, n*(len(set)+len(p.keys)))
		for _, e := range rows[:n] {
			v, err := values(e.row, set, p, "UPDATE")
			if err != nil {
				return err
			}
			vals = append(append(vals, v...), e.where...)
		}
		shape := "UM" + strconv.Itoa(n) + "/" + mask(set)
		err := a.queue(ctx, p, shape, func() string { return p.updateManySQL(set, n) }, vals,
			expect{what: fmt.Sprintf("UPDATE of %d rows of %s", n, p.table), rows: int64(n)})
		if err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}
