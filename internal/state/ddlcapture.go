package state

// DDL capture, for ddl: follow. An event trigger on ddl_command_end records every schema change
// made on the source into pgshift.ddl_log, which is published: the row is written in the DDL's
// own transaction, after the DDL and before every later change, so it arrives in the stream
// exactly where the schema changed, and the applier replays the recorded query string on the
// target at that place (apply/ddl.go).
//
// What is recorded: the query string as the client sent it (current_query(), possibly several
// statements), the session's search_path, the role it ran as (SET ROLE's role, else the session
// user: inside the SECURITY DEFINER function current_user is pgshift's), the settings that
// change how values are read (TimeZone, DateStyle, IntervalStyle), the command tag and the
// objects pg_event_trigger_ddl_commands() reports. A query string of several commands fires the
// trigger once per command; every firing is recorded (its objects belong to it), and first
// marks the one row the applier replays the string at: a second firing in the same transaction
// with the same text and statement_timestamp() is the same query string.
//
// Not recorded, as they change nothing pgshift migrates: commands on objects in pgshift's own
// schema or in temporary schemas, pgshift's TRUNCATE capture triggers, publications and
// subscriptions, user mappings (their options carry passwords, which pgshift never stores or
// logs), commands that reported no object (CREATE ... IF NOT EXISTS of one that
// exists; DROP commands report none and are recorded), and pgshift's own sessions, which set
// pgshift.capture = off.
//
// The function is SECURITY DEFINER (owned by the user pgshift connects as), its search_path
// fixed for all but its first reads, and only that user may write the log: a row of it is a statement pgshift will
// run on the target, so no one else must be able to forge one. Event triggers need a superuser
// to create; a source that refuses keeps ddl: stop's behaviour (copy warns, the follow session
// says so at start).

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/catalog"
)

// ddlCaptureDDL creates the log table and the event trigger's function; idempotent.
var ddlCaptureDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgshift.ddl_log (
		id             bigserial PRIMARY KEY,
		xid            bigint NOT NULL,
		first          boolean NOT NULL,
		command        text NOT NULL,
		search_path    text NOT NULL,
		role_name      text NOT NULL,
		session_role   text NOT NULL,
		time_zone      text NOT NULL,
		date_style     text NOT NULL,
		interval_style text NOT NULL,
		command_tag    text NOT NULL,
		objects        jsonb NOT NULL,
		statement_at   timestamptz NOT NULL,
		at             timestamptz NOT NULL DEFAULT now()
	)`,
	`REVOKE ALL ON pgshift.ddl_log FROM PUBLIC`,
	// The trigger looks up its transaction's earlier rows on every firing.
	`CREATE INDEX IF NOT EXISTS ddl_log_xid ON pgshift.ddl_log (xid)`,
	// The function cannot fix its search_path with SET, as other SECURITY DEFINER functions
	// do: it would hide the caller's, which is what it records. It reads the caller's settings
	// with schema-qualified calls only, then sets pg_catalog, pg_temp for the rest of its body
	// and puts the caller's back before it returns.
	`CREATE OR REPLACE FUNCTION pgshift.capture_ddl() RETURNS event_trigger
		LANGUAGE plpgsql SECURITY DEFINER AS $$
	DECLARE
		caller_path pg_catalog.text := pg_catalog.current_setting('search_path');
		caller_role pg_catalog.text := pg_catalog.current_setting('role');
		skip        pg_catalog.text := pg_catalog.current_setting('pgshift.capture', true);
		objs        pg_catalog.jsonb;
		mine        pg_catalog.bool;
		q           pg_catalog.text;
		stmt        pg_catalog.timestamptz;
		x           pg_catalog.int8;
	BEGIN
		PERFORM pg_catalog.set_config('search_path', 'pg_catalog, pg_temp', true);
		q := current_query();
		stmt := statement_timestamp();
		x := txid_current();
		IF coalesce(skip, '') <> 'off' AND tg_tag NOT LIKE '% PUBLICATION' AND tg_tag NOT LIKE '% SUBSCRIPTION'
			AND tg_tag NOT LIKE '% USER MAPPING' THEN
			SELECT coalesce(jsonb_agg(jsonb_build_object('class', d.classid::regclass::text, 'objid', d.objid::int8, 'type', d.object_type,
					'schema', d.schema_name, 'identity', d.object_identity, 'tag', d.command_tag)), '[]'::jsonb),
				coalesce(bool_and(d.schema_name = 'pgshift' OR d.schema_name LIKE 'pg\_temp%'
					OR (d.object_type = 'trigger' AND d.object_identity LIKE 'pgshift\_capture\_truncate on %')), false)
			INTO objs, mine
			FROM pg_event_trigger_ddl_commands() d;
			IF NOT mine AND (jsonb_array_length(objs) > 0 OR tg_tag LIKE 'DROP %') THEN
				IF caller_role IS NULL OR caller_role = 'none' THEN
					caller_role := session_user;
				END IF;
				INSERT INTO pgshift.ddl_log (xid, first, command, search_path, role_name, session_role, time_zone, date_style,
					interval_style, command_tag, objects, statement_at)
				VALUES (x, NOT EXISTS (SELECT 1 FROM pgshift.ddl_log l WHERE l.xid = x AND l.statement_at = stmt AND l.command = q),
					q, caller_path, caller_role, session_user, current_setting('TimeZone'), current_setting('DateStyle'),
					current_setting('IntervalStyle'), tg_tag, objs, stmt);
			END IF;
		END IF;
		PERFORM pg_catalog.set_config('search_path', caller_path, true);
	END
	$$`,
	`REVOKE ALL ON FUNCTION pgshift.capture_ddl() FROM PUBLIC`,
}

// captureOff marks the transaction's DDL as pgshift's own, which the event trigger skips.
const captureOff = `SELECT pg_catalog.set_config('pgshift.capture', 'off', true)`

// ErrNoDDLCapture marks a source that refused the event trigger (not a superuser).
var ErrNoDDLCapture = errors.New("the source refused pgshift's event trigger")

// CaptureDDL creates pgshift's DDL capture on the source (through db): the log, its function
// and the event trigger. It must run before the publication and the slot are created, so that
// no schema change after the slot's consistent point escapes it. Idempotent. A source where the
// user may not create event triggers returns an error wrapping ErrNoDDLCapture.
func CaptureDDL(ctx context.Context, db interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}) error {
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, captureOff); err != nil {
			return err
		}
		for _, stmt := range append(append([]string{}, sourceDDL...), ddlCaptureDDL...) {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return err
			}
		}
		var has bool
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = $1::text)`, catalog.DDLTrigger).Scan(&has); err != nil || has {
			return err
		}
		_, err := tx.Exec(ctx, `CREATE EVENT TRIGGER `+catalog.DDLTrigger+` ON ddl_command_end EXECUTE PROCEDURE pgshift.capture_ddl()`)
		return err
	})
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "42501" {
		return fmt.Errorf("%w: creating event trigger %s needs a superuser on the source: %w", ErrNoDDLCapture, catalog.DDLTrigger, err)
	}
	if err != nil {
		return fmt.Errorf("create pgshift's DDL capture (event trigger %s, schema pgshift) on the source: %w", catalog.DDLTrigger, err)
	}
	return nil
}

// RemoveDDLCapture drops pgshift's event trigger, its function and log from the source, for
// when the migration is over; idempotent. The publication must no longer be streamed.
func RemoveDDLCapture(ctx context.Context, db interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}) error {
	return pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		for _, stmt := range []string{`DROP EVENT TRIGGER IF EXISTS ` + catalog.DDLTrigger, `DROP FUNCTION IF EXISTS pgshift.capture_ddl()`, `DROP TABLE IF EXISTS pgshift.ddl_log`} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("remove pgshift's DDL capture from the source: %w", err)
			}
		}
		return nil
	})
}
