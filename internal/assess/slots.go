package assess

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/state"
)

// namePrefix starts every slot and publication name pgshift chooses by default
// (snapshot.DefaultName); objects with it are presumed to be pgshift's.
const namePrefix = "pgshift_"

// minWALRateAge is how long pg_stat_wal must have been counting before its average write rate
// is trusted: right after a reset a single burst would dominate it.
const minWALRateAge = 600 // seconds

// Slot is a replication slot on the source that pgshift created, or that the target's
// migration state names.
type Slot struct {
	Name string
	// Type is "logical" or "physical"; Database is empty for a physical slot.
	Type, Database string
	Active         bool
	ActivePID      int
	// RetainedBytes is the WAL the slot keeps on the source: current LSN - restart_lsn.
	RetainedBytes int64
	// WALStatus is pg_replication_slots.wal_status ("reserved", "extended", "unreserved",
	// "lost"); empty before PostgreSQL 13.
	WALStatus string
}

// TargetMigration is the pgshift migration the target's state schema records.
type TargetMigration struct {
	SourceDatabase, Slot, Publication, Phase string
}

// readSlotLimits reads max_slot_wal_keep_size (PostgreSQL 13+) and the average WAL write rate
// (pg_stat_wal, PostgreSQL 14+) into s.
func readSlotLimits(ctx context.Context, q catalog.Querier, s *Server) error {
	if s.VersionNum >= 130000 {
		// pg_settings gives the value in its unit (MB); pg_size_bytes turns "1024 MB" into bytes.
		var keep int64
		if err := q.QueryRow(ctx, `SELECT CASE WHEN setting = '-1' THEN -1 ELSE pg_size_bytes(setting || ' ' || coalesce(unit, '')) END
			FROM pg_settings WHERE name = 'max_slot_wal_keep_size'`).Scan(&keep); err != nil {
			return fmt.Errorf("read max_slot_wal_keep_size: %w", err)
		}
		s.MaxSlotWALKeepBytes = &keep
	}
	if s.VersionNum >= 140000 {
		if err := q.QueryRow(ctx, `SELECT CASE WHEN extract(epoch FROM now() - stats_reset) >= $1
			THEN wal_bytes::float8 / extract(epoch FROM now() - stats_reset)::float8 ELSE 0 END FROM pg_stat_wal`, minWALRateAge).
			Scan(&s.WALBytesPerSec); err != nil {
			return fmt.Errorf("read WAL write rate (pg_stat_wal): %w", err)
		}
	}
	return nil
}

// readPgshiftObjects reads the slots and publications on the source that belong to pgshift:
// those with pgshift's name prefix, and those the target's migration state names (which may
// have been chosen with --slot/--publication). It runs after the target's state is read.
func readPgshiftObjects(ctx context.Context, q catalog.Querier, f *Facts) error {
	var slot, pub string
	if m := f.TargetMigration; m != nil {
		slot, pub = m.Slot, m.Publication
	}
	slots, err := catalog.Slots(ctx, q)
	if err != nil {
		return err
	}
	for _, s := range slots {
		// Temporary slots vanish with their session.
		if s.Temporary || !strings.HasPrefix(s.Name, namePrefix) && s.Name != slot {
			continue
		}
		f.PgshiftSlots = append(f.PgshiftSlots, Slot{Name: s.Name, Type: s.Type, Database: s.Database, Active: s.Active,
			ActivePID: s.ActivePID, RetainedBytes: s.RetainedBytes, WALStatus: s.WALStatus})
	}
	if err := collect(ctx, q, `SELECT pubname FROM pg_publication WHERE left(pubname, length($1::text)) = $1::text OR pubname = $2::text ORDER BY 1`,
		[]any{namePrefix, pub}, func(r scanner) error {
			var n string
			if err := r.Scan(&n); err != nil {
				return err
			}
			f.PgshiftPublications = append(f.PgshiftPublications, n)
			return nil
		}); err != nil {
		return fmt.Errorf("list publications: %w", err)
	}
	return nil
}

// readTargetMigration reads the migration the target's pgshift state records, nil when none.
func readTargetMigration(ctx context.Context, q catalog.Querier) (*TargetMigration, error) {
	m, err := state.Load(ctx, q)
	if errors.Is(err, state.ErrNoMigration) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return &TargetMigration{SourceDatabase: m.SourceDatabase, Slot: m.Slot, Publication: m.Publication, Phase: m.Phase.String()}, nil
}

// sqlLiteral quotes s as a SQL string literal for a statement shown to the user.
func sqlLiteral(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
