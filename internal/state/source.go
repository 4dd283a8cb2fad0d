package state

// What pgshift changed on the SOURCE, kept on the source itself (in its own `pgshift` schema,
// which is never migrated), so that it survives anything done to the target, `copy --force`
// included, and `finish` can put it back.
//
// Today that is the replica identity of tables that had no key and no usable identity: with
// --replica-identity-full, copy sets REPLICA IDENTITY FULL on them before they are published,
// and each change is recorded in the same source transaction as the ALTER TABLE, so neither
// exists without the other.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// sourceDDL creates the source's record of pgshift's changes; idempotent.
var sourceDDL = []string{
	`CREATE SCHEMA IF NOT EXISTS pgshift`,
	`COMMENT ON SCHEMA pgshift IS 'pgshift: what pgshift changed on this source, restored and removed by pgshift finish'`,
	`CREATE TABLE IF NOT EXISTS pgshift.replica_identity_changes (
		schema_name    text NOT NULL,
		table_name     text NOT NULL,
		original       "char" NOT NULL,
		original_index text NOT NULL DEFAULT '',
		changed_at     timestamptz NOT NULL DEFAULT now(),
		restored_at    timestamptz,
		PRIMARY KEY (schema_name, table_name)
	)`,
}

// IdentityChange is one table whose replica identity pgshift changed on the source.
type IdentityChange struct {
	Table pgtypes.TableID
	// Original is the identity before: 'd' (default) or 'i' (USING INDEX OriginalIndex).
	Original      byte
	OriginalIndex string
	ChangedAt     time.Time
	RestoredAt    *time.Time
}

// Restore is the statement that puts the table's original replica identity back.
func (c IdentityChange) Restore() string {
	if c.Original == 'i' && c.OriginalIndex != "" {
		return "ALTER TABLE " + c.Table.Sanitize() + " REPLICA IDENTITY USING INDEX " + pgtypes.QuoteIdent(c.OriginalIndex)
	}
	return "ALTER TABLE " + c.Table.Sanitize() + " REPLICA IDENTITY DEFAULT"
}

// identityLockTimeout bounds how long ALTER TABLE ... REPLICA IDENTITY waits for its lock: it
// queues behind a long transaction on the table and every later query on the table queues
// behind it, so a busy source must see a short failure, not a stall.
const identityLockTimeout = "5s"

// SetReplicaIdentityFull sets REPLICA IDENTITY FULL on each table (on the source, through
// conn) whose identity is still what the caller saw, recording the original in
// pgshift.replica_identity_changes in the same transaction. A table already FULL is left
// alone and not recorded (it was not pgshift's doing, or it is recorded already). It returns
// the tables it changed now.
func SetReplicaIdentityFull(ctx context.Context, conn *pgx.Conn, tables []pgtypes.TableID) ([]IdentityChange, error) {
	if len(tables) == 0 {
		return nil, nil
	}
	for _, stmt := range sourceDDL {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			return nil, fmt.Errorf("create pgshift's record of source changes (schema pgshift) on the source: %w", err)
		}
	}
	var out []IdentityChange
	for _, t := range tables {
		var ch IdentityChange
		changed := false
		err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, CaptureOff); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config('lock_timeout', $1::text, true)`, identityLockTimeout); err != nil {
				return err
			}
			// ALTER TABLE ... REPLICA IDENTITY takes this lock anyway; taken first, the identity
			// read below cannot change before the ALTER.
			if _, err := tx.Exec(ctx, "LOCK TABLE ONLY "+t.Sanitize()+" IN ACCESS EXCLUSIVE MODE"); err != nil {
				return err
			}
			var ident string
			var index *string
			err := tx.QueryRow(ctx, `SELECT c.relreplident::text,
				(SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid WHERE i.indrelid = c.oid AND i.indisreplident)
				FROM pg_class c WHERE c.oid = $1::text::regclass`, t.Sanitize()).Scan(&ident, &index)
			if err != nil {
				return err
			}
			if ident == "f" {
				return nil
			}
			if ident == "n" {
				return fmt.Errorf("table %s has REPLICA IDENTITY NOTHING (insert-only by the user's choice): pgshift does not change it", t)
			}
			ch = IdentityChange{Table: t, Original: ident[0]}
			if index != nil {
				ch.OriginalIndex = *index // USING INDEX names an index of the table's schema, unqualified
			}
			if _, err := tx.Exec(ctx, `INSERT INTO pgshift.replica_identity_changes (schema_name, table_name, original, original_index)
				VALUES ($1::text, $2::text, $3::text::"char", $4::text)
				ON CONFLICT (schema_name, table_name) DO UPDATE SET original = EXCLUDED.original, original_index = EXCLUDED.original_index,
					changed_at = now(), restored_at = NULL`, t.Schema, t.Name, string(ch.Original), ch.OriginalIndex); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, "ALTER TABLE "+t.Sanitize()+" REPLICA IDENTITY FULL"); err != nil {
				return err
			}
			changed = true
			return nil
		})
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "55P03" {
				return out, fmt.Errorf("set REPLICA IDENTITY FULL on %s on the source: its lock was not granted within %s (a long transaction holds the table?); run again when it is quieter: %w",
					t, identityLockTimeout, err)
			}
			return out, fmt.Errorf("set REPLICA IDENTITY FULL on %s on the source: %w", t, err)
		}
		if changed {
			out = append(out, ch)
		}
	}
	return out, nil
}

// IdentityChanges lists what SetReplicaIdentityFull recorded on the source (none when it never
// ran there).
func IdentityChanges(ctx context.Context, q catalog.Querier) ([]IdentityChange, error) {
	var exists bool
	if err := q.QueryRow(ctx, `SELECT to_regclass('pgshift.replica_identity_changes') IS NOT NULL`).Scan(&exists); err != nil {
		return nil, fmt.Errorf("read pgshift's replica identity changes on the source: %w", err)
	}
	if !exists {
		return nil, nil
	}
	rows, err := q.Query(ctx, `SELECT schema_name, table_name, original::text, original_index, changed_at, restored_at
		FROM pgshift.replica_identity_changes ORDER BY schema_name, table_name`)
	if err != nil {
		return nil, fmt.Errorf("read pgshift's replica identity changes on the source: %w", err)
	}
	defer rows.Close()
	var out []IdentityChange
	for rows.Next() {
		var c IdentityChange
		var orig string
		if err := rows.Scan(&c.Table.Schema, &c.Table.Name, &orig, &c.OriginalIndex, &c.ChangedAt, &c.RestoredAt); err != nil {
			return nil, fmt.Errorf("read pgshift's replica identity changes on the source: %w", err)
		}
		c.Original = orig[0]
		out = append(out, c)
	}
	return out, rows.Err()
}

// RestoreResult says what RestoreReplicaIdentities did.
type RestoreResult struct {
	Restored []pgtypes.TableID // put back to their original identity on the source
	// Left are tables whose identity is no longer FULL (changed by someone since) or that no
	// longer exist: nothing was done to them, and they say why.
	Left []string
}

// RestoreReplicaIdentities puts back the replica identity of every table pgshift set to FULL
// on the source (src), and marks each restored, in the same source transaction; with target
// non-nil it also restores the target's copy of the table, which pre-data gave the FULL
// identity the source had at the copy. A table whose identity someone changed since (no
// longer FULL) is left as it is and reported, never overwritten. It is idempotent: restored
// tables are skipped, so finish can run it again after an interruption. For `pgshift finish`.
func RestoreReplicaIdentities(ctx context.Context, src *pgx.Conn, target catalog.Querier) (RestoreResult, error) {
	var res RestoreResult
	changes, err := IdentityChanges(ctx, src)
	if err != nil {
		return res, err
	}
	for _, c := range changes {
		if c.RestoredAt != nil {
			continue
		}
		if target != nil {
			if why, err := restoreIdentity(ctx, target, c); err != nil {
				return res, fmt.Errorf("restore the replica identity of %s on the target: %w", c.Table, err)
			} else if why != "" {
				res.Left = append(res.Left, "target: "+why)
			}
		}
		var why string
		err := pgx.BeginFunc(ctx, src, func(tx pgx.Tx) error {
			var err error
			if why, err = restoreIdentity(ctx, tx, c); err != nil {
				return err
			}
			_, err = tx.Exec(ctx, `UPDATE pgshift.replica_identity_changes SET restored_at = now() WHERE schema_name = $1::text AND table_name = $2::text`,
				c.Table.Schema, c.Table.Name)
			return err
		})
		if err != nil {
			return res, fmt.Errorf("restore the replica identity of %s on the source: %w", c.Table, err)
		}
		if why != "" {
			res.Left = append(res.Left, "source: "+why)
		} else {
			res.Restored = append(res.Restored, c.Table)
		}
	}
	return res, nil
}

// restoreIdentity restores one table through q when it is still FULL; otherwise it says why not.
func restoreIdentity(ctx context.Context, q catalog.Querier, c IdentityChange) (string, error) {
	var ident *string
	if err := q.QueryRow(ctx, `SELECT (SELECT relreplident::text FROM pg_class WHERE oid = to_regclass($1::text))`, c.Table.Sanitize()).Scan(&ident); err != nil {
		return "", err
	}
	switch {
	case ident == nil:
		return fmt.Sprintf("%s no longer exists", c.Table), nil
	case *ident != "f":
		return fmt.Sprintf("%s is no longer REPLICA IDENTITY FULL (changed since pgshift set it): left as it is", c.Table), nil
	}
	if _, err := q.Exec(ctx, c.Restore()); err != nil {
		return "", err
	}
	return "", nil
}

// TRUNCATE capture, for sources whose pgoutput sends no TRUNCATE (PostgreSQL 10, see
// catalog.Version.TruncateReplicated). An event trigger cannot see a TRUNCATE, but a
// statement-level TRUNCATE trigger can: pgshift puts one on every published table, and it
// records the table in pgshift.truncates, which is published too. The row is written in the
// TRUNCATE's own transaction, before the TRUNCATE and after every earlier change, so it arrives
// in the stream exactly where the TRUNCATE happened, and the follow session applies it as a
// TRUNCATE of that table (cdc turns it into one). A TRUNCATE of several tables, or one that
// cascades or reaches partitions, fires the trigger of each table it empties.
//
// The function is SECURITY DEFINER (owned by the user pgshift connects as), so a role that may
// TRUNCATE a table but not write to pgshift's schema still can; its search_path is fixed.

// truncateCaptureDDL creates the log table and the trigger function; idempotent.
var truncateCaptureDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgshift.truncates (
		id          bigserial PRIMARY KEY,
		schema_name text NOT NULL,
		table_name  text NOT NULL,
		at          timestamptz NOT NULL DEFAULT now()
	)`,
	`CREATE OR REPLACE FUNCTION pgshift.capture_truncate() RETURNS trigger
		LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	BEGIN
		INSERT INTO pgshift.truncates (schema_name, table_name) VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME);
		RETURN NULL;
	END
	$$`,
	`REVOKE ALL ON FUNCTION pgshift.capture_truncate() FROM PUBLIC`,
}

// CaptureTruncates creates pgshift's TRUNCATE capture on the source (through db) and its
// trigger on each of tables that lacks it. It must run before the tables are published and
// before the slot is created, so that no TRUNCATE after the slot's consistent point escapes it.
// Each trigger is created in a transaction of its own: CREATE TRIGGER locks its table against
// writes, and one transaction holding several such locks deadlocks with the source's own
// transactions that write to several of the tables (each waiting for a table the other holds).
// A table created halfway is harmless: nothing is published before all are done. Idempotent.
func CaptureTruncates(ctx context.Context, db interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, tables []pgtypes.TableID) error {
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// pgshift's own DDL is not captured as the source's (state.CaptureDDL).
		for _, stmt := range append(append([]string{CaptureOff}, sourceDDL...), truncateCaptureDDL...) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("create pgshift's TRUNCATE capture (schema pgshift) on the source: %w", err)
	}
	for _, t := range tables {
		sql := "CREATE TRIGGER " + pgtypes.QuoteIdent(catalog.TruncateTrigger) + " BEFORE TRUNCATE ON " + t.Sanitize() +
			" FOR EACH STATEMENT EXECUTE PROCEDURE pgshift.capture_truncate()"
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, CaptureOff); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config('lock_timeout', $1::text, true)`, identityLockTimeout); err != nil {
				return err
			}
			var has bool
			if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1::text) AND tgname = $2::text)`,
				t.Sanitize(), catalog.TruncateTrigger).Scan(&has); err != nil || has {
				return err
			}
			_, err := tx.Exec(ctx, sql)
			return err
		})
		if err != nil {
			return fmt.Errorf("create the TRUNCATE capture trigger of %s on the source (%s; it needs the table's owner or a superuser, "+
				"and a moment without long transactions on the table): %w", t, sql, err)
		}
	}
	return nil
}

// RemoveTruncateCapture drops pgshift's TRUNCATE triggers, function and log from the source,
// for when the migration is over; idempotent. The publication must no longer be streamed. Each
// trigger is dropped in a transaction of its own, for the reason CaptureTruncates gives.
func RemoveTruncateCapture(ctx context.Context, db interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}) error {
	rows, err := db.Query(ctx, `SELECT n.nspname::text, c.relname::text FROM pg_trigger t
		JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE t.tgfoid = to_regprocedure('pgshift.capture_truncate()') ORDER BY 1, 2`)
	if err != nil {
		return fmt.Errorf("list pgshift's TRUNCATE triggers on the source: %w", err)
	}
	tables, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (pgtypes.TableID, error) {
		var id pgtypes.TableID
		return id, r.Scan(&id.Schema, &id.Name)
	})
	if err != nil {
		return fmt.Errorf("list pgshift's TRUNCATE triggers on the source: %w", err)
	}
	for _, t := range tables {
		err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, CaptureOff); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `SELECT pg_catalog.set_config('lock_timeout', $1::text, true)`, identityLockTimeout); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "DROP TRIGGER IF EXISTS "+pgtypes.QuoteIdent(catalog.TruncateTrigger)+" ON "+t.Sanitize())
			return err
		})
		if err != nil {
			return fmt.Errorf("drop pgshift's TRUNCATE trigger on %s on the source: %w", t, err)
		}
	}
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		// CASCADE takes a trigger made since the list above with it.
		for _, stmt := range []string{`DROP FUNCTION IF EXISTS pgshift.capture_truncate() CASCADE`, `DROP TABLE IF EXISTS pgshift.truncates`} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("remove pgshift's TRUNCATE capture from the source: %w", err)
			}
		}
		return nil
	})
}
