package cutover

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// ForeignWriteError is a write on the source, while traffic was live on the target, that did
// not come from reverse replication: a writer that bypassed the proxy. The target does not
// have it, and a rollback would carry on as if the source held only the target's data.
type ForeignWriteError struct {
	CommitLSN pgtypes.LSN
	Table     pgtypes.TableID
	Origin    string
}

func (e *ForeignWriteError) Error() string {
	origin := "no replication origin"
	if e.Origin != "" {
		origin = "replication origin " + e.Origin
	}
	return fmt.Sprintf("a transaction committed on the source at %s, while traffic was on the target, changed %s and did not come from reverse replication (%s): "+
		"a writer bypassed the proxy. The target does not have that change, so rolling back would leave the two sides apart; find the writer and stop it, "+
		"reconcile %s by hand (pgshift verify shows the differing rows), then run finish and a new migration, or keep traffic on the target",
		e.CommitLSN, e.Table, origin, e.Table)
}

// checkForward decodes the forward slot on the source, without consuming it, up to upto and
// returns a *ForeignWriteError for the first transaction committed at or after from (the
// cutover's final forward position) that changed a migrated table without carrying reverse
// replication's origin. Rows of pgshift's own tables on the source are not writes of the
// application's: ddl: follow's capture logs each schema change made on the source into
// pgshift.ddl_log — among them the very change the stop of reverse replication names as its
// fix, made on the source while traffic is on the target —, and the slot is advanced past
// them below, so they are never replayed forward. Protocol 1 is used, so every transaction arrives whole, after its
// commit, with its Origin message. Then the slot is advanced to upto (everything before it is
// checked and is reverse replication's), so a later check decodes only what came since. The
// forward session must not be streaming the slot.
func checkForward(ctx context.Context, src *pgx.Conn, slot, pub string, from, upto pgtypes.LSN) error {
	rows, err := src.Query(ctx, `SELECT data FROM pg_catalog.pg_logical_slot_peek_binary_changes($1::name, $2::pg_lsn, NULL,
		'proto_version', '1', 'publication_names', $3::text)`, slot, upto.String(), pub)
	if err != nil {
		return fmt.Errorf("decode the forward slot %s on the source up to %s: %w", slot, upto, err)
	}
	defer rows.Close()
	rels := map[uint32]pgtypes.TableID{}
	var found *ForeignWriteError
	var commit pgtypes.LSN
	origin := ""
	for rows.Next() && found == nil {
		var data []byte
		if err := rows.Scan(&data); err != nil {
			return err
		}
		msg, err := cdc.Decode(data, false)
		if err != nil {
			return fmt.Errorf("decode the forward slot %s: %w", slot, err)
		}
		var rel uint32
		switch m := msg.(type) {
		case *cdc.BeginMsg:
			commit, origin = m.FinalLSN, ""
			continue
		case *cdc.OriginMsg:
			origin = m.Name
			continue
		case *cdc.RelationMsg:
			rels[m.Rel.OID] = m.Rel.Table
			continue
		case *cdc.InsertMsg:
			rel = m.RelID
		case *cdc.UpdateMsg:
			rel = m.RelID
		case *cdc.DeleteMsg:
			rel = m.RelID
		case *cdc.TruncateMsg:
			if len(m.RelIDs) > 0 {
				rel = m.RelIDs[0]
			}
		default:
			continue
		}
		if commit >= from && origin != cdc.PgshiftOrigin && rels[rel].Schema != catalog.StateSchema {
			found = &ForeignWriteError{CommitLSN: commit, Table: rels[rel], Origin: origin}
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("decode the forward slot %s on the source: %w", slot, err)
	}
	if found != nil {
		return found
	}
	if _, err := src.Exec(ctx, `SELECT pg_catalog.pg_replication_slot_advance($1::name, $2::pg_lsn)`, slot, upto.String()); err != nil {
		return fmt.Errorf("advance the forward slot %s on the source to %s: %w", slot, upto, err)
	}
	return nil
}

// checkForwardNow is checkForward up to the source's current WAL position, which it returns.
func checkForwardNow(ctx context.Context, src *pgx.Conn, slot, pub string, from pgtypes.LSN) (pgtypes.LSN, error) {
	var s string
	if err := src.QueryRow(ctx, `SELECT pg_catalog.pg_current_wal_insert_lsn()::text`).Scan(&s); err != nil {
		return 0, fmt.Errorf("read the source's WAL position: %w", err)
	}
	upto, err := pgtypes.ParseLSN(s)
	if err != nil {
		return 0, err
	}
	return upto, checkForward(ctx, src, slot, pub, from, upto)
}
