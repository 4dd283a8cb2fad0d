package apply

// The statement pipeline: statements of the open target transaction are queued and sent in one
// round trip, consecutive INSERTs into one table as multi-row INSERTs, each with the number of
// rows it must affect.

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/cdc"
)

// replanEvery is how many executions a prepared statement of the applier gets before it is
// prepared again (and so planned again for its table's current size).
const replanEvery = 1000

// pipeline is what is queued on the target connection and not sent yet.
type pipeline struct {
	batch   *pgconn.Batch
	queued  []expect
	bytes   int   // parameter bytes of the queued statements
	runPlan *plan // consecutive INSERTs into one table not written yet (addRun)
	runRows [][]cdc.Value
}

// expect is what one pipelined statement must do: affect exactly rows rows (-1: any number).
type expect struct {
	what string // for error messages: "UPDATE of public.t (id=5)"
	rows int64
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
	if ok && p.uses[shape] >= replanEvery {
		// Prepared statements live long, and PostgreSQL settles on a generic plan of each after
		// a few executions. One planned while its table was a page or two scans it whole (that
		// is cheaper there), and keeps doing so when a large transaction grows the table to
		// millions of rows: each change then reads all of them. Prepared again now and then,
		// the statement is planned for the table as it is.
		if err := a.flush(ctx); err != nil {
			return err
		}
		if a.gen != gen {
			return nil // the batch was redone in source order, this statement included
		}
		if err := a.conn.PgConn().Deallocate(ctx, name); err != nil {
			return fmt.Errorf("deallocate %s on the target: %w", name, err)
		}
		delete(p.stmts, shape)
		ok = false
	}
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
		p.uses[shape] = 0
	}
	p.uses[shape]++
	if a.batch == nil {
		a.batch = &pgconn.Batch{}
	}
	a.batch.ExecPrepared(name, vals, nil, nil)
	a.queued = append(a.queued, e)
	for _, v := range vals {
		a.bytes += len(v)
	}
	// The pipeline is bounded by bytes as well as statements: a thousand multi-row INSERTs of
	// wide rows would hold a hundred megabytes. A flush here may redo the batch; callers check
	// a.gen afterwards, as for every flush.
	if a.bytes >= a.opts.MaxPipelineBytes {
		return a.flush(ctx)
	}
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
	a.batch, a.queued, a.bytes = &pgconn.Batch{}, a.queued[:0:0], 0
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
		if a.cur != nil && a.txCount > 0 && a.recording() && a.rawAtBegin <= len(a.raw) {
			// In the middle of a source transaction, with others before it: those are redone
			// and committed on their own first, and this one's changes so far redone in a new
			// target transaction. Redone, the rest of it is applied unrecorded, and a schema
			// stop later in it could not keep the ones before it (keepCompleted).
			return a.commitBefore(ctx)
		}
		return a.redo(ctx, err)
	}
	return err
}
