package verify

import (
	"context"
	"fmt"
	"math"
	"math/big"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// sequenceCheck compares each sequence's state as the value nextval() would return next,
// which depends on last_value AND is_called: a sequence at (101, false) gives 101, one at
// (101, true) gives 101 + increment. The target must not be behind the source, or the first
// insert after cutover reuses an id the source already handed out; a target ahead of the
// source is a difference too (its sequence was used, or set wrongly), though a harmless one.
func (v *verifier) sequenceCheck(ctx context.Context) (*SequenceResult, error) {
	src, err := catalog.Sequences(ctx, v.src.Pool, v.opts.Filter)
	if err != nil {
		return nil, v.src.Endpoint.Describe(err)
	}
	tgt, err := catalog.Sequences(ctx, v.tgt.Pool, v.opts.Filter)
	if err != nil {
		return nil, v.tgt.Endpoint.Describe(err)
	}
	inc, err := sequenceIncrements(ctx, v.src.Pool)
	if err != nil {
		return nil, v.src.Endpoint.Describe(err)
	}
	return compareSequences(src, tgt, inc, v.opts.Following), nil
}

// compareSequences is the pure part of sequenceCheck.
func compareSequences(src, tgt []catalog.Sequence, inc map[pgtypes.TableID]int64, following bool) *SequenceResult {
	res := &SequenceResult{Expected: following}
	byID := map[pgtypes.TableID]catalog.Sequence{}
	for _, s := range tgt {
		byID[s.ID] = s
	}
	for _, s := range src {
		t, ok := byID[s.ID]
		if !ok {
			continue // reported by the schema diff
		}
		res.Compared++
		step := inc[s.ID]
		if step == 0 {
			step = 1
		}
		behind := stepsBehind(s, t, step)
		if behind == 0 {
			continue
		}
		res.Diffs = append(res.Diffs, SequenceDiff{Name: s.ID.String(), Source: s.LastValue, Target: t.LastValue,
			SourceCalled: s.IsCalled, TargetCalled: t.IsCalled, Behind: behind, Class: ClassSequence, seq: s.ID})
	}
	return res
}

// stepsBehind is how many increments the target's next value trails the source's (negative:
// the target is ahead), at least one either way when the next values differ at all. It is
// computed without overflow near the type's limits.
func stepsBehind(s, t catalog.Sequence, step int64) int64 {
	next := func(q catalog.Sequence) *big.Int {
		n := big.NewInt(q.LastValue)
		if q.IsCalled {
			n.Add(n, big.NewInt(step))
		}
		return n
	}
	d := new(big.Int).Sub(next(s), next(t))
	if d.Sign() == 0 {
		return 0
	}
	q := new(big.Int).Quo(d, big.NewInt(step))
	switch {
	case q.Sign() == 0: // not a whole number of increments apart
		if (d.Sign() > 0) == (step > 0) {
			return 1
		}
		return -1
	case !q.IsInt64():
		if q.Sign() > 0 {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return q.Int64()
}

func sequenceIncrements(ctx context.Context, q catalog.Querier) (map[pgtypes.TableID]int64, error) {
	rows, err := q.Query(ctx, `SELECT schemaname, sequencename, increment_by FROM pg_sequences`)
	if err != nil {
		return nil, fmt.Errorf("read sequence increments: %w", err)
	}
	defer rows.Close()
	out := map[pgtypes.TableID]int64{}
	for rows.Next() {
		var id pgtypes.TableID
		var inc int64
		if err := rows.Scan(&id.Schema, &id.Name, &inc); err != nil {
			return nil, fmt.Errorf("read sequence increments: %w", err)
		}
		out[id] = inc
	}
	return out, rows.Err()
}
