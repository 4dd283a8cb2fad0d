package follow

import (
	"context"
	"fmt"
	"strings"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// captureStateSQL lists every table of the publication $1 (pgshift's log table among them) with
// the state of pgshift's TRUNCATE trigger $2 on it: "" when it has none, else
// pg_trigger.tgenabled ('O' and 'A' fire in the source applications' sessions, 'D' and 'R' do
// not).
const captureStateSQL = `
SELECT pt.schemaname::text, pt.tablename::text,
       coalesce((SELECT t.tgenabled::text FROM pg_trigger t
                 WHERE t.tgrelid = format('%I.%I', pt.schemaname, pt.tablename)::regclass AND t.tgname = $2::text), '')
FROM pg_publication_tables pt WHERE pt.pubname = $1::text
ORDER BY 1, 2`

// checkTruncateCapture stops following, on a source whose pgoutput sends no TRUNCATE
// (catalog.Version.TruncateReplicated), when pgshift's capture no longer sees every TRUNCATE of
// a published table: a trigger dropped or disabled, or the log table left the publication. A
// TRUNCATE then would leave its rows on the target with nothing in the stream to say so. The
// stop names the table and the statement that restores the capture; the next run checks again.
func (s *session) checkTruncateCapture(ctx context.Context) error {
	if s.srcVer.TruncateReplicated() {
		return nil
	}
	rows, err := s.srcPool.Query(ctx, captureStateSQL, s.mig.Publication, catalog.TruncateTrigger)
	if err != nil {
		return s.source.Describe(fmt.Errorf("read pgshift's TRUNCATE capture on the source: %w", err))
	}
	defer rows.Close()
	var missing, disabled []pgtypes.TableID
	logPublished := false
	for rows.Next() {
		var id pgtypes.TableID
		var enabled string
		if err := rows.Scan(&id.Schema, &id.Name, &enabled); err != nil {
			return s.source.Describe(fmt.Errorf("read pgshift's TRUNCATE capture on the source: %w", err))
		}
		switch {
		case catalog.IsTruncateLog(id):
			logPublished = true
		case id.Schema == catalog.StateSchema:
			// pgshift's own tables on the source (a publication FOR ALL TABLES holds them) are
			// never migrated.
		case enabled == "":
			missing = append(missing, id)
		case enabled != "O" && enabled != "A":
			disabled = append(disabled, id)
		}
	}
	if err := rows.Err(); err != nil {
		return s.source.Describe(fmt.Errorf("read pgshift's TRUNCATE capture on the source: %w", err))
	}
	const why = "PostgreSQL %d does not replicate TRUNCATE, and pgshift's capture of it %s: a TRUNCATE would leave its rows on the target, unseen. " +
		"Fix on the source: %s; then run pgshift run again, and pgshift verify once it has caught up (a TRUNCATE made meanwhile is not on the target: recopy that table)"
	if !logPublished {
		return fatalf(why, s.srcVer.Major(), fmt.Sprintf("is off: %s.%s is not in publication %s", catalog.StateSchema, catalog.TruncateLogName, s.mig.Publication),
			fmt.Sprintf("ALTER PUBLICATION %s ADD TABLE %s.%s", pgtypes.QuoteIdent(s.mig.Publication), pgtypes.QuoteIdent(catalog.StateSchema), pgtypes.QuoteIdent(catalog.TruncateLogName)))
	}
	if len(missing) > 0 {
		fixes := make([]string, len(missing))
		for i, id := range missing {
			fixes[i] = "CREATE TRIGGER " + pgtypes.QuoteIdent(catalog.TruncateTrigger) + " BEFORE TRUNCATE ON " + id.Sanitize() +
				" FOR EACH STATEMENT EXECUTE PROCEDURE " + catalog.StateSchema + ".capture_truncate()"
		}
		return fatalf(why, s.srcVer.Major(), "has no trigger "+catalog.TruncateTrigger+" on "+idList(missing), strings.Join(fixes, "; "))
	}
	if len(disabled) > 0 {
		fixes := make([]string, len(disabled))
		for i, id := range disabled {
			fixes[i] = "ALTER TABLE " + id.Sanitize() + " ENABLE TRIGGER " + pgtypes.QuoteIdent(catalog.TruncateTrigger)
		}
		return fatalf(why, s.srcVer.Major(), "is disabled on "+idList(disabled)+" (trigger "+catalog.TruncateTrigger+")", strings.Join(fixes, "; "))
	}
	return nil
}
