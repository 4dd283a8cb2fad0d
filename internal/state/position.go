package state

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// Position is the source position the target has applied: the end LSN of the last source
// transaction whose changes are committed on the target, and that transaction's commit time.
type Position struct {
	AppliedLSN pgtypes.LSN
	CommitTime time.Time
	UpdatedAt  time.Time
}

// LoadPosition reads the applied position; a zero Position (and no error) means nothing applied yet.
func LoadPosition(ctx context.Context, q catalog.Querier) (Position, error) {
	var p Position
	var lsn string
	var ct *time.Time
	err := q.QueryRow(ctx, `SELECT applied_lsn::text, commit_time, updated_at FROM pgshift.position WHERE id = 1`).
		Scan(&lsn, &ct, &p.UpdatedAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return Position{}, nil
	}
	if err != nil {
		return p, fmt.Errorf("read applied position: %w", err)
	}
	if ct != nil {
		p.CommitTime = *ct
	}
	p.AppliedLSN, err = pgtypes.ParseLSN(lsn)
	return p, err
}

// SavePosition records the applied position. Call it inside the target transaction that applies
// the changes up to lsn, so the rows and the position commit (or vanish) together. The position
// only moves forward: saving one below the stored position is an ErrStateConflict (and the
// caller's transaction must roll back), so a stale applier can never rewind it.
func SavePosition(ctx context.Context, tx pgx.Tx, lsn pgtypes.LSN, commitTime time.Time) error {
	tag, err := tx.Exec(ctx, `INSERT INTO pgshift.position (id, applied_lsn, commit_time, updated_at)
		VALUES (1, $1::pg_lsn, $2::timestamptz, now())
		ON CONFLICT (id) DO UPDATE SET applied_lsn = excluded.applied_lsn, commit_time = excluded.commit_time, updated_at = now()
		WHERE pgshift.position.applied_lsn <= excluded.applied_lsn`,
		lsn.String(), commitTime)
	if err != nil {
		return fmt.Errorf("save applied position %s: %w", lsn, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("%w: save applied position %s: the target has already applied beyond it; another pgshift agent may be running (pgshift status shows it)",
			ErrStateConflict, lsn)
	}
	return nil
}
