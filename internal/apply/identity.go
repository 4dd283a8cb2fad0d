package apply

// Identity ALWAYS columns: PostgreSQL refuses an UPDATE that sets one (only DEFAULT), so an
// UPDATE leaves them out of SET; but the source can change one (UPDATE ... SET id = DEFAULT).
// Then the target row is replaced in one statement (DELETE ... RETURNING, then INSERT ...
// OVERRIDING SYSTEM VALUE of the new row, unchanged TOAST values and target-only columns taken
// from the deleted row). Whether the value changed is known when the column is part of the
// replica identity (its old value is sent, or equals the new one when no old key is sent) or
// under REPLICA IDENTITY FULL; otherwise the target decides, in one statement that updates the
// row when the column already has the new value and replaces it when not.
//
// The common case, an identity primary key that does not change, stays a plain UPDATE: the
// check is a comparison of the key's old and new text.

import (
	"bytes"
	"context"
	"slices"

	"github.com/pgshift/pgshift/internal/cdc"
)

// updateIdentity applies an UPDATE of a table with identity ALWAYS columns; where/wv match the
// old row as for updateRow.
func (a *Applier) updateIdentity(ctx context.Context, p *plan, ch *cdc.Change, where []int, wv [][]byte, key string) error {
	var sent, set, unknown []int
	changed := false
	for i, v := range ch.New {
		if v.Kind == cdc.ValueUnchanged {
			continue
		}
		sent = append(sent, i)
		if !p.always[i] {
			set = append(set, i)
			continue
		}
		switch old, known := oldValue(p, ch, i); {
		case !known:
			unknown = append(unknown, i)
		case old.Kind != v.Kind || !bytes.Equal(old.Data, v.Data):
			changed = true
		}
	}
	switch {
	case changed:
		vals, err := values(ch.New, sent, p, "UPDATE")
		if err != nil {
			return err
		}
		shape := "R" + mask(sent) + "/" + mask(where)
		return a.queue(ctx, p, shape, func() string { return p.replaceSQL(sent, where) }, append(vals, wv...),
			expect{what: "UPDATE (replacing the row: an identity ALWAYS column changed) of " + p.table.String() + key, rows: 1})
	case len(unknown) > 0 && !p.full:
		vals, err := values(ch.New, sent, p, "UPDATE")
		if err != nil {
			return err
		}
		shape := "UR" + mask(sent) + "/" + mask(where)
		return a.queue(ctx, p, shape, func() string { return p.updateOrReplaceSQL(sent, set, unknown, where) }, append(vals, wv...),
			expect{what: "UPDATE (in place or replacing the row, as its identity ALWAYS column says) of " + p.table.String() + key, rows: 1})
	}
	return a.updateRow(ctx, p, ch.New, where, wv, key)
}

// oldValue is column i's value before the UPDATE, when the change tells it: from the old row
// under REPLICA IDENTITY FULL, from the old key when the key changed, and for a key column the
// new value itself when no old key was sent (the key did not change).
func oldValue(p *plan, ch *cdc.Change, i int) (cdc.Value, bool) {
	switch {
	case ch.Old != nil && (p.full || ch.OldKind == 'O'):
		return ch.Old[i], ch.Old[i].Kind != cdc.ValueUnchanged
	case !slices.Contains(p.keys, i):
		return cdc.Value{}, false
	case ch.Old != nil:
		return ch.Old[i], true
	default:
		return ch.New[i], true
	}
}
