package verify

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
)

// batchKeys is how many keys one by-key statement carries.
const batchKeys = 1000

// fetchValues reads the differing rows' values on both sides and names the differing columns
// and the class of each difference. Only rows already known to differ are read.
func (v *verifier) fetchValues(ctx context.Context, plans []*tablePlan, snapshot bool) error {
	for _, p := range plans {
		if len(p.diffs) == 0 {
			continue
		}
		var err error
		if p.keyed {
			err = v.keyedValues(ctx, p, snapshot)
		} else {
			err = v.multisetValues(ctx, p, snapshot)
		}
		if err != nil {
			if ctx.Err() != nil {
				return err
			}
			p.fail(fmt.Errorf("read differing rows of %s: %w", p.id, err))
		}
		classifyCollation(p)
	}
	return nil
}

// valuesByKey reads the compared columns of the given keys on one side.
func (v *verifier) valuesByKey(ctx context.Context, s *side, q *tableSQL, nkey int, keys [][]string, snapshot bool) (map[string][]*string, error) {
	out := map[string][]*string{}
	for start := 0; start < len(keys); start += batchKeys {
		batch := keys[start:min(start+batchKeys, len(keys))]
		err := s.read(ctx, snapshot, func(tx pgx.Tx) error {
			sql, a := q.valuesByKeySQL(batch)
			rows, err := tx.Query(ctx, sql, a...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				vals := make([]*string, nkey+len(q.cols))
				ptrs := make([]any, len(vals))
				for i := range vals {
					ptrs[i] = &vals[i]
				}
				if err := rows.Scan(ptrs...); err != nil {
					return err
				}
				k := make([]string, nkey)
				for i := range k {
					k[i] = *vals[i]
				}
				out[keyString(k)] = vals[nkey:]
			}
			return rows.Err()
		})
		if err != nil {
			return nil, s.Endpoint.Describe(err)
		}
	}
	return out, nil
}

func (v *verifier) keyedValues(ctx context.Context, p *tablePlan, snapshot bool) error {
	var keys [][]string
	for _, d := range p.diffs {
		if d.Kind != KindUnstable {
			keys = append(keys, d.keyVals)
		}
	}
	src, err := v.valuesByKey(ctx, v.src, p.src, len(p.keyCols), keys, snapshot)
	if err != nil {
		return err
	}
	tgt, err := v.valuesByKey(ctx, v.tgt, p.tgt, len(p.keyCols), keys, snapshot)
	if err != nil {
		return err
	}
	for _, d := range p.diffs {
		d.Key = p.keyDisplay(d.keyVals)
		if d.Kind == KindUnstable {
			continue
		}
		ks := keyString(d.keyVals)
		sv, sok := src[ks]
		tv, tok := tgt[ks]
		switch {
		case sok && !tok:
			d.Kind, d.Class, d.Cols = KindMissing, ClassMissingRow, nil
		case !sok && tok:
			d.Kind, d.Class, d.Cols = KindExtra, ClassExtraRow, nil
		case sok && tok:
			d.Kind = KindDifferent
			d.Cols = p.columnDiffs(sv, tv)
			d.Class = rowClass(d.Cols)
		}
	}
	return nil
}

// columnDiffs compares two rows' column texts and classifies each difference.
func (p *tablePlan) columnDiffs(sv, tv []*string) []ColumnDiff {
	var out []ColumnDiff
	for i, c := range p.cols {
		a, b := sv[i], tv[i]
		if (a == nil) == (b == nil) && (a == nil || *a == *b) {
			continue
		}
		typ := c.Type
		if tt := p.tgtTypes[c.Name]; strings.HasPrefix(tt, "character(") || strings.HasPrefix(tt, "character ") {
			typ = tt
		}
		out = append(out, ColumnDiff{Column: c.Name, Source: truncate(a, p.valueLimit), Target: truncate(b, p.valueLimit),
			Class: Classify(typ, a, b)})
	}
	return out
}

// rowClass is the most telling class among a row's column differences: a specific class wins
// over the generic "value changed".
func rowClass(cols []ColumnDiff) string {
	class := ClassValue
	for _, c := range cols {
		if c.Class != "" && c.Class != ClassValue {
			return c.Class
		}
	}
	return class
}

// keyDisplay renders a key as id=42 or (a, b)=(1, x).
func (p *tablePlan) keyDisplay(k []string) string {
	if len(p.keyCols) == 1 {
		return p.keyCols[0].Name + "=" + *truncate(&k[0], p.valueLimit)
	}
	names := make([]string, len(p.keyCols))
	vals := make([]string, len(k))
	for i := range p.keyCols {
		names[i] = p.keyCols[i].Name
		vals[i] = *truncate(&k[i], p.valueLimit)
	}
	return "(" + strings.Join(names, ", ") + ")=(" + strings.Join(vals, ", ") + ")"
}

// multisetRow is one distinct row of a keyless table: how often it occurs and its values.
type multisetRow struct {
	count int64
	xmins string
	vals  []*string
}

func (v *verifier) multisetRows(ctx context.Context, s *side, q *tableSQL, hashes []int64, withXmin, snapshot bool) (map[int64]multisetRow, error) {
	out := map[int64]multisetRow{}
	for start := 0; start < len(hashes); start += batchKeys {
		batch := hashes[start:min(start+batchKeys, len(hashes))]
		err := s.read(ctx, snapshot, func(tx pgx.Tx) error {
			sql, a := q.multisetRowsSQL(batch, withXmin)
			rows, err := tx.Query(ctx, sql, a...)
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var hs string
				var r multisetRow
				if err := rows.Scan(&hs, &r.count, &r.xmins, &r.vals); err != nil {
					return err
				}
				h, err := strconv.ParseInt(hs, 10, 64)
				if err != nil {
					return fmt.Errorf("row hash %q: %w", hs, err)
				}
				out[h] = r
			}
			return rows.Err()
		})
		if err != nil {
			return nil, s.Endpoint.Describe(err)
		}
	}
	return out, nil
}

func (d *RowDiff) hash() int64 {
	h, _ := strconv.ParseInt(d.digest, 10, 64)
	return h
}

func (v *verifier) multisetValues(ctx context.Context, p *tablePlan, snapshot bool) error {
	var hashes []int64
	for _, d := range p.diffs {
		hashes = append(hashes, d.hash())
	}
	src, err := v.multisetRows(ctx, v.src, p.src, hashes, false, snapshot)
	if err != nil {
		return err
	}
	tgt, err := v.multisetRows(ctx, v.tgt, p.tgt, hashes, false, snapshot)
	if err != nil {
		return err
	}
	for _, d := range p.diffs {
		r, ok := src[d.hash()]
		if !ok {
			r = tgt[d.hash()]
		}
		d.Key = p.rowDisplay(r.vals)
	}
	return nil
}

// rowDisplay renders a keyless row as (v1, v2, ...), each value truncated.
func (p *tablePlan) rowDisplay(vals []*string) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		if v == nil {
			parts[i] = "NULL"
			continue
		}
		parts[i] = *truncate(v, p.valueLimit)
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// classifyCollation renames missing/extra pairs whose keys differ only in letter case: the
// target's collation or a case-folding step merged or split them.
func classifyCollation(p *tablePlan) {
	if !p.keyed {
		return
	}
	extra := map[string]*RowDiff{}
	for _, d := range p.diffs {
		if d.Kind == KindExtra {
			extra[strings.ToLower(keyString(d.keyVals))] = d
		}
	}
	if len(extra) == 0 {
		return
	}
	for _, d := range p.diffs {
		if d.Kind != KindMissing {
			continue
		}
		if e, ok := extra[strings.ToLower(keyString(d.keyVals))]; ok {
			d.Class, e.Class = ClassCollation, ClassCollation
		}
	}
}
