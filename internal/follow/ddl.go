package follow

import (
	"context"
	"fmt"

	"github.com/pgshift/pgshift/internal/catalog"
)

// ddlCaptureSQL tells whether pgshift's DDL log is in the publication $1 and whether its event
// trigger $2 fires in the source applications' sessions ('O' origin, 'A' always).
const ddlCaptureSQL = `
SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE pubname = $1::text AND schemaname = $3::text AND tablename = $4::text),
       coalesce((SELECT evtenabled::text FROM pg_event_trigger WHERE evtname = $2::text), '')`

// followsDDL decides whether this session replays the source's schema changes: ddl: follow is
// configured and copy installed the capture (state.CaptureDDL: the event trigger enabled and its
// log published). Configured but missing, the session follows as with ddl: stop, and says why
// once per run: a schema change then stops the agent with the DDL to run on the target.
func (s *session) followsDDL(ctx context.Context) (bool, error) {
	if !s.cfg.FollowDDL() {
		return false, nil
	}
	var published bool
	var enabled string
	if err := s.srcPool.QueryRow(ctx, ddlCaptureSQL, s.mig.Publication, catalog.DDLTrigger, catalog.StateSchema, catalog.DDLLogName).Scan(&published, &enabled); err != nil {
		return false, s.source.Describe(fmt.Errorf("read pgshift's DDL capture on the source: %w", err))
	}
	why := ""
	switch {
	case enabled == "":
		why = "the source has no event trigger " + catalog.DDLTrigger + " (copy could not create it: it needs a superuser on the source; or copy ran with ddl: stop)"
	case enabled != "O" && enabled != "A":
		why = "event trigger " + catalog.DDLTrigger + " is disabled on the source (ALTER EVENT TRIGGER " + catalog.DDLTrigger + " ENABLE)"
	case !published:
		why = fmt.Sprintf("%s.%s is not in publication %s", catalog.StateSchema, catalog.DDLLogName, s.mig.Publication)
	}
	if why != "" {
		if s.opts.Apply.Warned.First("ddl-capture") {
			s.log.Warn("ddl: follow is configured, but schema changes on the source are not captured: they stop the agent with the DDL to run on the target, as with ddl: stop", "why", why)
		}
		return false, nil
	}
	return true, nil
}
