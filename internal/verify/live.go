package verify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// rowState is what one side holds for a key (or, keyless, for a row hash) at one moment.
type rowState struct {
	present bool
	digest  string // row hash (keyed) or count (keyless)
	version string // source only: xmin of the row version(s); changes whenever the row is written
}

// recheck re-compares the first pass's differing rows after the target has caught up with the
// source, round by round, until every one is resolved (it was lag), confirmed (it held on a
// source row that did not change during the round), or the rounds run out (unstable). The
// argument for why a confirmed difference is real is in the package documentation.
func (v *verifier) recheck(ctx context.Context, plans []*tablePlan) (*LiveResult, error) {
	live := &LiveResult{Following: v.opts.Following}
	deadline := time.Now().Add(v.opts.RecheckTimeout)
	pending := map[*tablePlan][]*RowDiff{}
	for _, p := range plans {
		if len(p.diffs) > 0 {
			pending[p] = append([]*RowDiff(nil), p.diffs...)
		}
	}
	resolved := map[*RowDiff]bool{}
	for round := 1; round <= v.opts.RecheckRounds && len(pending) > 0; round++ {
		live.Rounds = round
		before, err := v.recheckRead(ctx, v.src, pending, true)
		if err != nil {
			return nil, err
		}
		x, err := currentLSN(ctx, v.src.Pool)
		if err != nil {
			return nil, v.src.Endpoint.Describe(err)
		}
		if v.opts.Heartbeat != nil {
			if err := v.opts.Heartbeat(ctx); err != nil {
				v.log.Warn("cannot write a heartbeat on the source; the re-check waits for the next replicated change", "err", err)
			}
		}
		if err := v.waitApplied(ctx, x, deadline); err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			live.Note = err.Error()
			live.Lagging = true
			break
		}
		tgt, err := v.recheckRead(ctx, v.tgt, pending, false)
		if err != nil {
			return nil, err
		}
		after, err := v.recheckRead(ctx, v.src, pending, true)
		if err != nil {
			return nil, err
		}
		for p, diffs := range pending {
			var still []*RowDiff
			for _, d := range diffs {
				id := d.recheckID()
				a, t, b := before[p][id], tgt[p][id], after[p][id]
				switch {
				case t.present == b.present && t.digest == b.digest:
					resolved[d] = true
					live.Resolved++
				case a == b:
					live.Confirmed++
					d.confirm(b, t, p.keyed)
				default:
					still = append(still, d)
				}
			}
			if len(still) == 0 {
				delete(pending, p)
			} else {
				pending[p] = still
			}
		}
		v.log.Info("verify re-check round", "round", round, "source_lsn", x.String(),
			"resolved", live.Resolved, "confirmed", live.Confirmed, "pending", countPending(pending))
	}
	for _, diffs := range pending {
		for _, d := range diffs {
			d.Kind, d.Class, d.Cols = KindUnstable, ClassUnstable, nil
			if live.Lagging {
				// Not shown to be changing: the target never caught up, so nothing is known.
				d.Class = ClassLagging
			}
			live.Unstable++
		}
	}
	for _, p := range plans {
		if len(p.diffs) == 0 {
			continue
		}
		p.mu.Lock()
		kept := p.diffs[:0]
		for _, d := range p.diffs {
			if !resolved[d] {
				kept = append(kept, d)
			}
		}
		// Rows beyond the listing cap were never re-checked; they stay counted as differences.
		p.res.Differences -= int64(len(p.diffs) - len(kept))
		p.diffs = kept
		p.mu.Unlock()
	}
	return live, nil
}

func countPending(m map[*tablePlan][]*RowDiff) int {
	n := 0
	for _, d := range m {
		n += len(d)
	}
	return n
}

// recheckID identifies the row across rounds: its key, or for keyless tables its row hash.
func (d *RowDiff) recheckID() string {
	if d.keyVals != nil {
		return keyString(d.keyVals)
	}
	return d.digest
}

// confirm records the verdict of a round in which the source row did not change.
func (d *RowDiff) confirm(src, tgt rowState, keyed bool) {
	if !keyed {
		sc, tc := parseCount(src), parseCount(tgt)
		*d = *multisetDiff(d.digest, sc, tc)
		return
	}
	switch {
	case src.present && !tgt.present:
		d.Kind, d.Class = KindMissing, ClassMissingRow
	case !src.present && tgt.present:
		d.Kind, d.Class = KindExtra, ClassExtraRow
	default:
		d.Kind, d.Class = KindDifferent, ""
	}
}

func parseCount(s rowState) int64 {
	if !s.present {
		return 0
	}
	var n int64
	_, _ = fmt.Sscan(s.digest, &n)
	return n
}

// recheckRead reads the current state of the pending rows on one side (a fresh snapshot).
func (v *verifier) recheckRead(ctx context.Context, s *side, pending map[*tablePlan][]*RowDiff, withXmin bool) (map[*tablePlan]map[string]rowState, error) {
	out := map[*tablePlan]map[string]rowState{}
	for p, diffs := range pending {
		q := p.src
		if s == v.tgt {
			q = p.tgt
		}
		m := map[string]rowState{}
		out[p] = m
		if !p.keyed {
			hashes := make([]int64, len(diffs))
			for i, d := range diffs {
				hashes[i] = d.hash()
			}
			rows, err := v.multisetRows(ctx, s, q, hashes, withXmin, false)
			if err != nil {
				return nil, err
			}
			for h, r := range rows {
				m[fmt.Sprint(h)] = rowState{present: true, digest: fmt.Sprint(r.count), version: r.xmins}
			}
			continue
		}
		keys := make([][]string, len(diffs))
		for i, d := range diffs {
			keys[i] = d.keyVals
		}
		for start := 0; start < len(keys); start += batchKeys {
			batch := keys[start:min(start+batchKeys, len(keys))]
			err := s.read(ctx, false, func(tx pgx.Tx) error {
				sql, a := q.recheckSQL(batch, withXmin)
				rows, err := tx.Query(ctx, sql, a...)
				if err != nil {
					return err
				}
				defer rows.Close()
				n := len(p.keyCols)
				for rows.Next() {
					k := make([]string, n)
					var st rowState
					ptrs := make([]any, n+2)
					for i := range k {
						ptrs[i] = &k[i]
					}
					ptrs[n], ptrs[n+1] = &st.digest, &st.version
					if err := rows.Scan(ptrs...); err != nil {
						return err
					}
					st.present = true
					m[keyString(k)] = st
				}
				return rows.Err()
			})
			if err != nil {
				return nil, fmt.Errorf("re-check %s: %w", p.id, s.Endpoint.Describe(err))
			}
		}
	}
	return out, nil
}

// errLag means the target did not reach the wanted source position in time.
var errLag = errors.New("target did not catch up")

// waitApplied blocks until the target has applied the source up to x, or the deadline.
func (v *verifier) waitApplied(ctx context.Context, x pgtypes.LSN, deadline time.Time) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last pgtypes.LSN
	for {
		applied, err := v.opts.Applied(ctx)
		if err != nil {
			return fmt.Errorf("read the target's applied position: %w", err)
		}
		last = applied
		if applied >= x {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: applied %s, wanted %s before the re-check deadline; rows still in question are reported as unstable (raise --recheck-timeout)",
				errLag, last, x)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
