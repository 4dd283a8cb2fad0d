package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
)

// VerifyRun is one saved `pgshift verify` result: the whole report as JSON, plus the columns
// `status` and the migration report read without parsing it.
type VerifyRun struct {
	ID          int64
	StartedAt   time.Time
	FinishedAt  time.Time
	Mode        string
	Differences int64
	Result      json.RawMessage
}

// SaveVerifyRun appends a verify result to pgshift.verify_runs and returns its id. The state
// schema must exist (Ensure).
func SaveVerifyRun(ctx context.Context, q catalog.Querier, r VerifyRun) (int64, error) {
	var id int64
	err := q.QueryRow(ctx, `INSERT INTO pgshift.verify_runs (started_at, finished_at, mode, differences, result)
		VALUES ($1, now(), $2, $3, $4::jsonb) RETURNING id`, r.StartedAt, r.Mode, r.Differences, string(r.Result)).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("save verify result: %w", err)
	}
	return id, nil
}

// ErrNoVerifyRun means no verify result has been saved on the target.
var ErrNoVerifyRun = errors.New("no verify result saved on the target (run `pgshift verify`)")

// LatestVerifyRun reads the most recent verify result, or ErrNoVerifyRun.
func LatestVerifyRun(ctx context.Context, q catalog.Querier) (VerifyRun, error) {
	var r VerifyRun
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('pgshift.verify_runs') IS NOT NULL`).Scan(&exists); err != nil {
		return r, fmt.Errorf("read verify results: %w", err)
	}
	if !exists {
		return r, ErrNoVerifyRun
	}
	var result string
	err := q.QueryRow(ctx, `SELECT id, started_at, finished_at, mode, differences, result::text
		FROM pgshift.verify_runs ORDER BY id DESC LIMIT 1`).
		Scan(&r.ID, &r.StartedAt, &r.FinishedAt, &r.Mode, &r.Differences, &result)
	if errors.Is(err, pgx.ErrNoRows) {
		return r, ErrNoVerifyRun
	}
	if err != nil {
		return r, fmt.Errorf("read verify results: %w", err)
	}
	r.Result = json.RawMessage(result)
	return r, nil
}
