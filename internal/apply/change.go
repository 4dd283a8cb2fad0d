package apply

// Row changes: each INSERT, UPDATE or DELETE becomes a statement on the target, or is merged
// with earlier changes to the same row (compact.go).

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// change applies one change: compacted with earlier changes to the same row of this target
// transaction when that is safe, or queued as its own statement.
//
// A redo (a constraint conflict of merged rows, redone in source order) can happen in any call
// that writes out merged rows or flushes the pipeline. It applies every recorded change, this
// one included once it is recorded; so after each such call a changed a.gen means this change
// is applied already and must not be applied again.
func (a *Applier) change(ctx context.Context, ch *cdc.Change) error {
	switch ch.Kind {
	case cdc.Trunc:
		return a.truncate(ctx, ch)
	case cdc.Schema:
		return a.ddl(ctx, ch)
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
	vals := make([][]byte, 0, len(idx))
	cols := make([]int, 0, len(idx))
	for _, i := range idx {
		if i < len(t) {
			vals, cols = append(vals, t[i].Data), append(cols, i)
		}
	}
	return describeValues(p, cols, vals)
}

// describeValues renders key values vals of columns idx (source column indexes, same order)
// for error messages, shortening long values.
func describeValues(p *plan, idx []int, vals [][]byte) string {
	if p.full {
		return " (REPLICA IDENTITY FULL row)"
	}
	parts := make([]string, 0, len(idx))
	for j, i := range idx {
		if j >= len(vals) || i >= len(p.rel.Columns) {
			continue
		}
		v := string(vals[j])
		if len(v) > 40 {
			v = v[:40] + "…"
		}
		parts = append(parts, p.rel.Columns[i].Name+"="+v)
	}
	return " (" + strings.Join(parts, ", ") + ")"
}
