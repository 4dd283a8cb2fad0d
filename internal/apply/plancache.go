package apply

// The plan cache: one plan per relation (relation.go builds and checks them), found by the
// relation description's pointer in the common case, with the plans built in the open target
// transaction kept apart so a rollback can forget them.

import (
	"context"
	"fmt"

	"github.com/pgshift/pgshift/internal/cdc"
)

// planCache holds the applier's plans and names their prepared statements.
type planCache struct {
	plans   map[uint32]*plan        // the current plan of each relation OID
	byRel   map[*cdc.Relation]*plan // plans by relation description, for the common case
	txPlans []*plan                 // plans built in the open target transaction
	stmtSeq int
}

// plan returns the plan for a relation description. A description seen before (the same
// pointer) has its plan at once; a new one (a relation message) is checked: against the
// previous description of its table, and the target's columns when they differ.
func (a *Applier) plan(ctx context.Context, r *cdc.Relation) (*plan, error) {
	if p := a.byRel[r]; p != nil && !p.stale {
		return p, nil
	}
	// Both paths below read the source's catalog, which must show this transaction.
	if err := a.awaitVisible(ctx); err != nil {
		return nil, err
	}
	cur := a.plans[r.OID]
	if cur != nil && cur.stale {
		cur = nil // a schema change since: the target's columns are the judge (ddl.go)
	}
	if cur != nil && relKey(cur.rel) == relKey(r) {
		// Sent again with the same columns (pgoutput does after every invalidation of the
		// table on the source, e.g. by ANALYZE).
		if err := a.checkResent(ctx, cur, r); err != nil {
			return nil, err
		}
		a.rememberRel(r, cur)
		return cur, nil
	}
	if err := a.flush(ctx); err != nil { // buildPlan needs the connection to itself
		return nil, err
	}
	p, err := a.buildPlan(ctx, r, cur)
	if err != nil {
		return nil, err
	}
	p.prev = cur
	a.plans[r.OID] = p
	a.txPlans = append(a.txPlans, p)
	a.rememberRel(r, p)
	return p, nil
}

// discardTxPlans forgets the plans built in a target transaction that was rolled back: columns
// they added on the target are gone with it. Their prepared statements outlive the rollback
// (preparing is not transactional), so they are deallocated, and new plans prepare theirs under
// new names. conn must be idle.
func (a *Applier) discardTxPlans(ctx context.Context) error {
	for i := len(a.txPlans) - 1; i >= 0; i-- {
		p := a.txPlans[i]
		p.stale = true
		if a.plans[p.rel.OID] == p {
			if p.prev != nil {
				a.plans[p.rel.OID] = p.prev
			} else {
				delete(a.plans, p.rel.OID)
			}
		}
		for _, name := range p.stmts {
			if err := a.conn.PgConn().Deallocate(ctx, name); err != nil {
				return fmt.Errorf("deallocate %s on the target: %w", name, err)
			}
		}
		clear(p.stmts)
	}
	a.txPlans = a.txPlans[:0]
	return nil
}

// rememberRel caches the plan of a relation description by identity: the stream hands every
// change of one description the same pointer. The cache is bounded; descriptions come and go
// as the source re-sends relation messages.
func (a *Applier) rememberRel(r *cdc.Relation, p *plan) {
	if len(a.byRel) >= 4096 {
		clear(a.byRel)
	}
	a.byRel[r] = p
}
