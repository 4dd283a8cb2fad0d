package state

// The cutover's durable state (pgshift.cutover_state, a singleton row on the target): which
// side the proxy sends traffic to, which operation (cutover or rollback) is in progress, and
// the reverse replication's slot and publication on the target. The cutover re-derives what
// to do from this row alone when an agent starts: an operation found in progress either
// completes (its switch was committed) or is rolled back (it was not). The switch of an
// operation is one target transaction that writes Live together with the phase and, for a
// rollback, the forward position; nothing else moves Live.
//
// On the SOURCE, reverse replication keeps the position it has applied of the target's slot
// in the source's own pgshift.position, and the column identities its applier planned in the
// source's pgshift.column_identity (EnsureReverse), each written in the source transaction
// that applies the rows, as the forward applier does on the target.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// Sides traffic can be live on (pgshift.cutover_state.live).
const (
	LiveSource = "source"
	LiveTarget = "target"
)

// Operations in progress (pgshift.cutover_state.op).
const (
	OpNone     = ""
	OpCutover  = "cutover"
	OpRollback = "rollback"
)

var cutoverDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgshift.cutover_state (
		id                  int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
		live                text NOT NULL DEFAULT 'source' CHECK (live IN ('source', 'target')),
		op                  text NOT NULL DEFAULT '' CHECK (op IN ('', 'cutover', 'rollback')),
		attempt             int NOT NULL DEFAULT 0,
		step_no             int NOT NULL DEFAULT 0,
		reverse_slot        text NOT NULL DEFAULT '',
		reverse_publication text NOT NULL DEFAULT '',
		reverse_start_lsn   pg_lsn,
		forward_final_lsn   pg_lsn,
		switched_at         timestamptz,
		updated_at          timestamptz NOT NULL DEFAULT now()
	)`,
}

// CutoverState is the row of pgshift.cutover_state; the zero value (no row yet) is live on the
// source with nothing in progress.
type CutoverState struct {
	Live    string
	Op      string
	Attempt int
	// StepNo is the step of Attempt that was running when the row was last written.
	StepNo int
	// ReverseSlot and ReversePublication name the reverse replication's objects on the target
	// once a cutover decided to create them ("" when none may exist).
	ReverseSlot        string
	ReversePublication string
	// ReverseStart is the reverse slot's consistent point: where reverse replication starts.
	ReverseStart pgtypes.LSN
	// ForwardFinal is the source position the target had applied when traffic moved to it.
	ForwardFinal pgtypes.LSN
	SwitchedAt   time.Time
}

// LoadCutoverState reads the row; no table or no row is the zero state, live on the source.
func LoadCutoverState(ctx context.Context, q catalog.Querier) (CutoverState, error) {
	st := CutoverState{Live: LiveSource}
	if ok, err := tableExists(ctx, q, "pgshift.cutover_state"); err != nil || !ok {
		return st, err
	}
	var rs, ff *string
	var sw *time.Time
	err := q.QueryRow(ctx, `SELECT live, op, attempt, step_no, reverse_slot, reverse_publication,
		reverse_start_lsn::text, forward_final_lsn::text, switched_at FROM pgshift.cutover_state WHERE id = 1`).
		Scan(&st.Live, &st.Op, &st.Attempt, &st.StepNo, &st.ReverseSlot, &st.ReversePublication, &rs, &ff, &sw)
	if errors.Is(err, pgx.ErrNoRows) {
		return CutoverState{Live: LiveSource}, nil
	}
	if err != nil {
		return st, fmt.Errorf("read cutover state: %w", err)
	}
	if rs != nil {
		if st.ReverseStart, err = pgtypes.ParseLSN(*rs); err != nil {
			return st, fmt.Errorf("read cutover state: %w", err)
		}
	}
	if ff != nil {
		if st.ForwardFinal, err = pgtypes.ParseLSN(*ff); err != nil {
			return st, fmt.Errorf("read cutover state: %w", err)
		}
	}
	if sw != nil {
		st.SwitchedAt = *sw
	}
	return st, nil
}

// SaveCutoverState writes the row as a compare-and-set: it fails with ErrStateConflict,
// changing nothing, unless the stored row still has prevLive and prevOp (no row counts as
// live on the source with nothing in progress). Call it inside the transaction that makes the
// change it records.
func SaveCutoverState(ctx context.Context, q catalog.Querier, prevLive, prevOp string, st CutoverState) error {
	lsn := func(l pgtypes.LSN) *string {
		if l == 0 {
			return nil
		}
		s := l.String()
		return &s
	}
	var sw *time.Time
	if !st.SwitchedAt.IsZero() {
		sw = &st.SwitchedAt
	}
	// The row is created in its zero state first, so the compare-and-set below is one UPDATE.
	if _, err := q.Exec(ctx, `INSERT INTO pgshift.cutover_state (id) VALUES (1) ON CONFLICT (id) DO NOTHING`); err != nil {
		return fmt.Errorf("record cutover state: %w", err)
	}
	tag, err := q.Exec(ctx, `UPDATE pgshift.cutover_state SET live = $3::text, op = $4::text, attempt = $5::int4,
			step_no = $6::int4, reverse_slot = $7::text, reverse_publication = $8::text, reverse_start_lsn = $9::pg_lsn,
			forward_final_lsn = $10::pg_lsn, switched_at = $11::timestamptz, updated_at = now()
		WHERE id = 1 AND live = $1::text AND op = $2::text`,
		prevLive, prevOp, st.Live, st.Op, st.Attempt, st.StepNo, st.ReverseSlot, st.ReversePublication,
		lsn(st.ReverseStart), lsn(st.ForwardFinal), sw)
	if err != nil {
		return fmt.Errorf("record cutover state (live on %s, %q in progress): %w", st.Live, st.Op, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: the cutover state is no longer live on the %s with %q in progress; another pgshift agent may be running (pgshift status shows it)",
			ErrStateConflict, prevLive, prevOp)
	}
	return nil
}

// NextCutoverAttempt is the number of the next attempt: one above the highest recorded in
// pgshift.cutover_steps or the state row.
func NextCutoverAttempt(ctx context.Context, q catalog.Querier) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT greatest(coalesce((SELECT max(attempt) FROM pgshift.cutover_steps), 0),
		coalesce((SELECT attempt FROM pgshift.cutover_state WHERE id = 1), 0)) + 1`).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("read cutover attempts: %w", err)
	}
	return n, nil
}

// ReturnToFollowing moves the migration's phase from cutover back to following, as a
// compare-and-set: the one backward move phases make, when a rollback has moved traffic back
// to the source and the target follows it again. Call it in the rollback's switch transaction.
func ReturnToFollowing(ctx context.Context, q catalog.Querier) error {
	tag, err := q.Exec(ctx, `UPDATE pgshift.migration SET phase = $2::text, updated_at = now() WHERE id = 1 AND phase = $1::text`,
		string(pgtypes.PhaseCutover), string(pgtypes.PhaseFollowing))
	if err != nil {
		return fmt.Errorf("set migration phase %s: %w", pgtypes.PhaseFollowing, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: moving it back from phase %s to %s after a rollback, found another phase", ErrStateConflict,
			pgtypes.PhaseCutover, pgtypes.PhaseFollowing)
	}
	return nil
}

// SetPosition records the forward applied position lsn outside an applier, in the caller's
// transaction: the rollback's switch moves it to the source's position when traffic returns
// there (see the package comment of internal/cutover for why nothing in between is lost).
func SetPosition(ctx context.Context, tx pgx.Tx, lsn pgtypes.LSN) error {
	return SavePosition(ctx, tx, lsn, time.Now())
}

// reverseDDL is what reverse replication keeps on the source: its applied position of the
// target's reverse slot and its applier's column identities (the same tables as on the
// target, in the source's pgshift schema, which is never published).
var reverseDDL = []string{
	`CREATE SCHEMA IF NOT EXISTS pgshift`,
	`CREATE TABLE IF NOT EXISTS pgshift.position (
		id           int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
		applied_lsn  pg_lsn NOT NULL,
		commit_time  timestamptz,
		updated_at   timestamptz NOT NULL DEFAULT now()
	)`,
	columnsDDL[0],
}

// EnsureReverse creates, on the source, the tables the reverse applier writes; idempotent.
func EnsureReverse(ctx context.Context, q catalog.Querier) error {
	for _, stmt := range reverseDDL {
		if _, err := q.Exec(ctx, stmt); err != nil {
			return fmt.Errorf("create reverse replication state (schema pgshift) on the source: %w", err)
		}
	}
	return nil
}
