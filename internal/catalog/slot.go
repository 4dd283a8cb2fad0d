package catalog

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// SlotState is what the source says about one replication slot, read in one statement with
// the server's current WAL position, so the two are consistent with each other.
type SlotState struct {
	Name      string
	Exists    bool   // false: no slot of that name (every other field is zero)
	Type      string // "logical" or "physical"
	Plugin    string // "pgoutput"; empty for a physical slot
	Database  string // empty for a physical slot
	Temporary bool
	Active    bool
	ActivePID int // 0 when no session streams from it
	// ConfirmedFlush is what the consumer confirmed (0 when the server reports none); changes
	// committed after it are still sent. RestartLSN is the oldest WAL the slot keeps (0 when
	// none: a lost slot on 13+).
	ConfirmedFlush, RestartLSN pgtypes.LSN
	// WALStatus is "reserved", "extended", "unreserved" or "lost"; empty before PostgreSQL 13,
	// which keeps all WAL a slot needs and never loses a slot (Version.HasWALStatus).
	WALStatus string
	// SafeWALSize is how many more bytes of WAL can be written before the slot is in danger of
	// losing WAL; nil before 13, and when max_slot_wal_keep_size is -1 (no limit).
	SafeWALSize *int64
	// Failover is the slot's failover flag (17+: synchronised to standbys); false before 17.
	Failover bool
	// CurrentLSN is the server's WAL position (on a standby: the last WAL received) when the
	// slot was read; RetainedBytes is CurrentLSN - RestartLSN, the WAL the slot holds, 0 when
	// it holds none.
	CurrentLSN    pgtypes.LSN
	RetainedBytes int64
	// ServerTime is the server's clock (clock_timestamp()) when the slot was read: lag in
	// seconds is measured against it, never against this machine's clock.
	ServerTime time.Time
}

// Lost reports whether the source invalidated the slot after it fell more than
// max_slot_wal_keep_size behind (13+; never before 13).
func (s SlotState) Lost() bool { return s.WALStatus == "lost" }

// slotSQL reads pg_replication_slots the same way on every version from 10 on: the columns
// later versions added (wal_status and safe_wal_size in 13, failover in 17) are read through
// to_jsonb of the row, which yields NULL where the column does not exist, so one statement
// serves every version and no caller names a column an older server lacks.
const slotSQL = `
SELECT s.slot_name, s.slot_type, coalesce(s.plugin, ''), coalesce(s.database::text, ''), s.temporary, s.active,
       coalesce(s.active_pid, 0), coalesce(s.confirmed_flush_lsn::text, ''), coalesce(s.restart_lsn::text, ''),
       coalesce(to_jsonb(s) ->> 'wal_status', ''), (to_jsonb(s) ->> 'safe_wal_size')::bigint,
       coalesce((to_jsonb(s) ->> 'failover')::boolean, false), w.lsn::text, w.now
FROM pg_replication_slots s,
     (SELECT CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END AS lsn,
             clock_timestamp() AS now) w`

// Slot reads the state of the replication slot name. A missing slot is not an error: the
// result has Exists false (and CurrentLSN still set).
func Slot(ctx context.Context, q Querier, name string) (SlotState, error) {
	rows, err := q.Query(ctx, slotSQL+` WHERE s.slot_name = $1::text`, name)
	if err != nil {
		return SlotState{Name: name}, fmt.Errorf("read replication slot %s: %w", name, err)
	}
	slots, err := collectSlots(rows)
	if err != nil {
		return SlotState{Name: name}, fmt.Errorf("read replication slot %s: %w", name, err)
	}
	if len(slots) == 1 {
		return slots[0], nil
	}
	st := SlotState{Name: name}
	var cur string
	err = q.QueryRow(ctx, `SELECT (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_receive_lsn() ELSE pg_current_wal_lsn() END)::text,
		clock_timestamp()`).Scan(&cur, &st.ServerTime)
	if err != nil {
		return st, fmt.Errorf("read the WAL position: %w", err)
	}
	st.CurrentLSN, err = pgtypes.ParseLSN(cur)
	return st, err
}

// Slots reads every replication slot on the server, ordered by name.
func Slots(ctx context.Context, q Querier) ([]SlotState, error) {
	rows, err := q.Query(ctx, slotSQL+` ORDER BY s.slot_name`)
	if err != nil {
		return nil, fmt.Errorf("list replication slots: %w", err)
	}
	slots, err := collectSlots(rows)
	if err != nil {
		return nil, fmt.Errorf("list replication slots: %w", err)
	}
	return slots, nil
}

func collectSlots(rows pgx.Rows) ([]SlotState, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (SlotState, error) {
		s := SlotState{Exists: true}
		var confirmed, restart string
		var cur *string
		if err := r.Scan(&s.Name, &s.Type, &s.Plugin, &s.Database, &s.Temporary, &s.Active, &s.ActivePID, &confirmed, &restart,
			&s.WALStatus, &s.SafeWALSize, &s.Failover, &cur, &s.ServerTime); err != nil {
			return s, err
		}
		var err error
		for _, f := range []struct {
			text string
			dst  *pgtypes.LSN
		}{{confirmed, &s.ConfirmedFlush}, {restart, &s.RestartLSN}, {deref(cur), &s.CurrentLSN}} {
			if f.text == "" {
				continue
			}
			if *f.dst, err = pgtypes.ParseLSN(f.text); err != nil {
				return s, fmt.Errorf("slot %s: %w", s.Name, err)
			}
		}
		if s.RestartLSN != 0 && s.CurrentLSN > s.RestartLSN {
			s.RetainedBytes = int64(s.CurrentLSN - s.RestartLSN)
		}
		return s, nil
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}
