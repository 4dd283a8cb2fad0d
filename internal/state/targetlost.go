package state

// A rollback made while the target was unreachable (internal/cutover: rollbackWithoutTarget)
// cannot write the target's pgshift.cutover_state, which says traffic is live on the target.
// It records itself on the SOURCE instead, in pgshift.rollback_without_target, a singleton
// row, and that row is the operation's commit point: from the moment it is committed, traffic
// is live on the source whatever the target's row says. Whoever reads which side is live
// (the proxy of an agent that starts, the engine's recovery) reads this row too when the
// target says "target", and an agent that reaches the target again settles the target's
// state from it (live on the source, forward replication resumed from ResumeAt) and then
// deletes it. The row applies only to the cutover state it was made against (FromAttempt):
// one left behind by a settle that stopped before its delete is ignored, then removed.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

var targetLostDDL = []string{
	`CREATE SCHEMA IF NOT EXISTS pgshift`,
	`CREATE TABLE IF NOT EXISTS pgshift.rollback_without_target (
		id           int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
		from_attempt int NOT NULL,
		resume_lsn   pg_lsn NOT NULL,
		rolled_at    timestamptz NOT NULL,
		steps        jsonb NOT NULL DEFAULT '[]',
		detail       text NOT NULL DEFAULT ''
	)`,
}

// TargetLostRollback is the row of pgshift.rollback_without_target on the source.
type TargetLostRollback struct {
	// FromAttempt is the attempt of the target's cutover state it overrides (the cutover that
	// moved traffic to the target). The rollback's own attempt number is given when it is
	// settled on the target, which numbers attempts.
	FromAttempt int
	// ResumeAt is the source position forward replication resumes from: everything the source
	// holds before it was there at the cutover or came from reverse replication.
	ResumeAt pgtypes.LSN
	At       time.Time
	// Steps are the rollback's steps (their Attempt unset), written to the target's
	// pgshift.cutover_steps when it is settled.
	Steps  []CutoverStep
	Detail string
}

// SaveTargetLostRollback records r on the source (through q, in the caller's transaction when
// it has one). It fails, changing nothing, when a row for the same cutover state exists: the
// rollback was made already.
func SaveTargetLostRollback(ctx context.Context, q catalog.Querier, r TargetLostRollback) error {
	for _, stmt := range targetLostDDL {
		if _, err := q.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create pgshift.rollback_without_target on the source: %w", err)
		}
	}
	steps, err := json.Marshal(r.Steps)
	if err != nil {
		return err
	}
	tag, err := q.Exec(ctx, `INSERT INTO pgshift.rollback_without_target (id, from_attempt, resume_lsn, rolled_at, steps, detail)
		VALUES (1, $1::int4, $2::pg_lsn, $3::timestamptz, $4::jsonb, $5::text)
		ON CONFLICT (id) DO UPDATE SET from_attempt = EXCLUDED.from_attempt, resume_lsn = EXCLUDED.resume_lsn,
			rolled_at = EXCLUDED.rolled_at, steps = EXCLUDED.steps, detail = EXCLUDED.detail
		WHERE rollback_without_target.from_attempt < EXCLUDED.from_attempt`,
		r.FromAttempt, r.ResumeAt.String(), r.At, string(steps), r.Detail)
	if err != nil {
		return fmt.Errorf("record the rollback made without the target on the source: %w", err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: the source already records a rollback made without the target for cutover attempt %d", ErrStateConflict, r.FromAttempt)
	}
	return nil
}

// LoadTargetLostRollback reads the row from the source; ok is false when there is none.
func LoadTargetLostRollback(ctx context.Context, q catalog.Querier) (r TargetLostRollback, ok bool, err error) {
	if exists, err := tableExists(ctx, q, "pgshift.rollback_without_target"); err != nil || !exists {
		return r, false, err
	}
	var resume string
	var steps string
	err = q.QueryRow(ctx, `SELECT from_attempt, resume_lsn::text, rolled_at, steps::text, detail
		FROM pgshift.rollback_without_target WHERE id = 1`).Scan(&r.FromAttempt, &resume, &r.At, &steps, &r.Detail)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, false, nil
	}
	if err == nil {
		r.ResumeAt, err = pgtypes.ParseLSN(resume)
	}
	if err == nil {
		err = json.Unmarshal([]byte(steps), &r.Steps)
	}
	if err != nil {
		return r, false, fmt.Errorf("read pgshift.rollback_without_target on the source: %w", err)
	}
	return r, true, nil
}

// DeleteTargetLostRollback removes the row once the target's state has been settled from it.
func DeleteTargetLostRollback(ctx context.Context, q catalog.Querier) error {
	if _, err := q.Exec(ctx, `DELETE FROM pgshift.rollback_without_target`); err != nil {
		return fmt.Errorf("remove pgshift.rollback_without_target on the source: %w", err)
	}
	return nil
}

// LiveSide is which side traffic is live on, given the target's cutover state st and the
// source's rollback made without the target (ok false when none): such a rollback, made
// against st, overrides st.
func LiveSide(st CutoverState, r TargetLostRollback, ok bool) string {
	if ok && st.Live == LiveTarget && st.Op == OpNone && r.FromAttempt == st.Attempt {
		return LiveSource
	}
	return st.Live
}
