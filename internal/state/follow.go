package state

// Follow status: the running agent's latest lag measurement, one row in pgshift.follow_status,
// so `pgshift status` can show lag from the target alone.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// followDDL adds the follow phase's table; Ensure runs it with the rest of the state schema.
var followDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgshift.follow_status (
		id             int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
		source_lsn     pg_lsn NOT NULL,
		applied_lsn    pg_lsn NOT NULL,
		confirmed_lsn  pg_lsn,
		restart_lsn    pg_lsn,
		lag_bytes      bigint NOT NULL,
		lag_seconds    double precision NOT NULL,
		retained_bytes bigint NOT NULL,
		apply_rate     double precision NOT NULL,
		eta_seconds    double precision,
		txs_applied    bigint NOT NULL,
		changes_applied bigint NOT NULL,
		measured_at    timestamptz NOT NULL
	)`,
}

// FollowStatus is one lag measurement by the running agent.
type FollowStatus struct {
	SourceLSN     pgtypes.LSN // pg_current_wal_lsn() on the source when measured
	AppliedLSN    pgtypes.LSN
	ConfirmedLSN  pgtypes.LSN // the slot's confirmed_flush_lsn
	RestartLSN    pgtypes.LSN // the slot's restart_lsn: WAL from here on is retained
	LagBytes      int64
	LagSeconds    float64 // now − commit time of the last applied transaction; 0 when caught up
	RetainedBytes int64   // source WAL the slot holds
	ApplyRate     float64 // source WAL bytes applied per second, recent average
	ETASeconds    float64 // time to catch up at the current rates; -1 when not catching up
	TxsApplied    int64   // since the agent started
	Changes       int64
	MeasuredAt    time.Time
}

// SaveFollowStatus records the latest measurement.
func SaveFollowStatus(ctx context.Context, q catalog.Querier, s FollowStatus) error {
	_, err := q.Exec(ctx, `INSERT INTO pgshift.follow_status (id, source_lsn, applied_lsn, confirmed_lsn, restart_lsn,
		lag_bytes, lag_seconds, retained_bytes, apply_rate, eta_seconds, txs_applied, changes_applied, measured_at)
		VALUES (1, $1::pg_lsn, $2::pg_lsn, $3::pg_lsn, $4::pg_lsn, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT (id) DO UPDATE SET source_lsn = excluded.source_lsn, applied_lsn = excluded.applied_lsn,
		confirmed_lsn = excluded.confirmed_lsn, restart_lsn = excluded.restart_lsn, lag_bytes = excluded.lag_bytes,
		lag_seconds = excluded.lag_seconds, retained_bytes = excluded.retained_bytes, apply_rate = excluded.apply_rate,
		eta_seconds = excluded.eta_seconds, txs_applied = excluded.txs_applied, changes_applied = excluded.changes_applied,
		measured_at = excluded.measured_at`,
		s.SourceLSN.String(), s.AppliedLSN.String(), s.ConfirmedLSN.String(), s.RestartLSN.String(),
		s.LagBytes, s.LagSeconds, s.RetainedBytes, s.ApplyRate, s.ETASeconds, s.TxsApplied, s.Changes, s.MeasuredAt)
	if err != nil {
		return fmt.Errorf("save follow status: %w", err)
	}
	return nil
}

// LoadFollowStatus reads the latest measurement; ok is false when the agent never recorded one.
func LoadFollowStatus(ctx context.Context, q catalog.Querier) (s FollowStatus, ok bool, err error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('pgshift.follow_status') IS NOT NULL`).Scan(&exists); err != nil {
		return s, false, fmt.Errorf("read follow status: %w", err)
	}
	if !exists {
		return s, false, nil
	}
	var eta *float64
	err = q.QueryRow(ctx, `SELECT source_lsn::text, applied_lsn::text, coalesce(confirmed_lsn::text, '0/0'),
		coalesce(restart_lsn::text, '0/0'), lag_bytes, lag_seconds, retained_bytes, apply_rate, eta_seconds,
		txs_applied, changes_applied, measured_at FROM pgshift.follow_status WHERE id = 1`).
		Scan(&s.SourceLSN, &s.AppliedLSN, &s.ConfirmedLSN, &s.RestartLSN, &s.LagBytes, &s.LagSeconds, &s.RetainedBytes,
			&s.ApplyRate, &eta, &s.TxsApplied, &s.Changes, &s.MeasuredAt)
	if errors.Is(err, pgx.ErrNoRows) {
		return s, false, nil
	}
	if err != nil {
		return s, false, fmt.Errorf("read follow status: %w", err)
	}
	if eta != nil {
		s.ETASeconds = *eta
	}
	return s, true, nil
}
