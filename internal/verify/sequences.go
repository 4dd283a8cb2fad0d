package verify

import (
	"context"
	"fmt"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// sequenceCheck compares each sequence's position: the target must not be behind the source,
// or the first insert after cutover reuses an id the source already handed out. A sequence
// never used (is_called false) counts as one step before its start value.
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
		// Position = the last value handed out, in units of the increment, so descending
		// sequences compare the right way round.
		sp, tp := seqPosition(s, step), seqPosition(t, step)
		if tp >= sp {
			continue
		}
		res.Diffs = append(res.Diffs, SequenceDiff{Name: s.ID.String(), Source: s.LastValue, Target: t.LastValue,
			Behind: sp - tp, Class: ClassSequence, seq: s.ID, srcCalled: s.IsCalled})
	}
	return res
}

// seqPosition is how many increments past its last value the sequence stands.
func seqPosition(s catalog.Sequence, step int64) int64 {
	p := s.LastValue / step
	if !s.IsCalled {
		p--
	}
	return p
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
