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
// A CREATE TABLE is also published at once: see publishNewTableDDL below; a partition attached
// or detached is recorded with what became of it: see partitionMovesDDL.
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
	"slices"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
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
			IF NOT mine AND tg_tag = 'CREATE TABLE' THEN
				-- Before any row of it can be written: see publishNewTableDDL.
				SELECT jsonb_agg(CASE WHEN o.v->>'class' = 'pg_class' AND o.v->>'type' = 'table'
						THEN o.v || jsonb_build_object('publish', pgshift.publish_new_table((o.v->>'objid')::oid)) ELSE o.v END ORDER BY o.i)
				INTO objs FROM jsonb_array_elements(objs) WITH ORDINALITY AS o(v, i);
			END IF;
			IF NOT mine AND tg_tag = 'ALTER TABLE' THEN
				-- A partition attached or detached: see partitionMovesDDL.
				SELECT objs || coalesce(jsonb_agg(m.v), '[]'::jsonb) INTO objs
				FROM jsonb_array_elements(objs) AS o(v)
				CROSS JOIN LATERAL jsonb_array_elements(pgshift.partition_moves((o.v->>'objid')::oid)) AS m(v)
				WHERE o.v->>'class' = 'pg_class' AND o.v->>'type' = 'table';
			END IF;
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

// Tables created while following. The event trigger adds a new table to the migration's
// publication in the CREATE TABLE's own transaction, at ddl_command_end, before any row of it
// can be written: every row of it is then in the stream, those written later in the same
// transaction included (logical decoding reads the publication with the transaction's own
// catalog changes), so it needs no copy — the applier creates it on the target when it
// replays the CREATE TABLE and applies its rows from that transaction's commit on
// (apply/ddl.go). What it decided is recorded with the table's object in the log row
// ("publish"), and the applier acts on that record, never on a decision of its own:
//
//	added        added to the publication now
//	root         a partition whose tree's root the publication names (13+): published already
//	partitioned  a partitioned table before 13, which no publication can name: its leaves are
//	             added as they are created
//	excluded     the migration's include/exclude patterns leave it out, or it is a partition of
//	             a tree the migration does not have
//	unlogged     its rows are not in the WAL
//	keyless      no primary key: published, the application's UPDATEs and DELETEs of it would
//	             fail on the source (pgshift never changes a table's identity on its own)
//	unconfigured pgshift.ddl_follow has no publication yet (ConfigureDDLFollow)
//	error: ...   ALTER PUBLICATION failed: the user's CREATE TABLE must never fail for pgshift
//
// Anything but added, root, partitioned, excluded or unlogged leaves rows unpublished: the
// applier creates the table and has it copied in a snapshot of its own (follow's adopt).
//
// The patterns are pgshift's (config.TableFilter.SQLPatterns, matched on the table's tree
// root), stored with the publication's name in pgshift.ddl_follow by ConfigureDDLFollow.
var publishNewTableDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgshift.ddl_follow (
		id                int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
		publication       text NOT NULL,
		include_re        text[] NOT NULL,
		include_qualified bool[] NOT NULL,
		exclude_re        text[] NOT NULL,
		exclude_qualified bool[] NOT NULL,
		updated_at        timestamptz NOT NULL DEFAULT now()
	)`,
	`REVOKE ALL ON pgshift.ddl_follow FROM PUBLIC`,
	`CREATE OR REPLACE FUNCTION pgshift.publish_new_table(rel pg_catalog.oid) RETURNS pg_catalog.text
		LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	DECLARE
		s    record;
		c    record;
		root oid := rel;
		nsp  text;
		nam  text;
		subj text;
		inc  bool;
		ver  int := current_setting('server_version_num')::int;
	BEGIN
		SELECT * INTO s FROM pgshift.ddl_follow WHERE id = 1;
		IF NOT FOUND THEN
			RETURN 'unconfigured';
		END IF;
		SELECT r.relkind::text AS kind, r.relpersistence::text AS persistence, r.relispartition AS part, n.nspname::text AS nsp, r.relname::text AS name
		INTO c FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = rel;
		IF NOT FOUND OR c.kind NOT IN ('r', 'p') THEN
			RETURN 'excluded';
		END IF;
		IF c.persistence <> 'p' THEN
			RETURN 'unlogged';
		END IF;
		IF c.part THEN
			WITH RECURSIVE up(p) AS (SELECT inhparent FROM pg_inherits WHERE inhrelid = rel
				UNION SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.p)
			SELECT up.p INTO root FROM up JOIN pg_class pc ON pc.oid = up.p WHERE NOT pc.relispartition;
			IF ver >= 130000 THEN
				IF EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
						WHERE p.pubname = s.publication AND pr.prrelid = root) THEN
					RETURN 'root';
				END IF;
				RETURN 'excluded';
			END IF;
		END IF;
		SELECT n.nspname::text, r.relname::text INTO nsp, nam FROM pg_class r JOIN pg_namespace n ON n.oid = r.relnamespace WHERE r.oid = root;
		subj := nsp || '.' || nam;
		inc := cardinality(s.include_re) = 0 OR EXISTS (SELECT 1 FROM unnest(s.include_re, s.include_qualified) AS f(re, q)
			WHERE (CASE WHEN f.q THEN subj ELSE nam END) ~ f.re);
		IF NOT inc OR EXISTS (SELECT 1 FROM unnest(s.exclude_re, s.exclude_qualified) AS f(re, q)
				WHERE (CASE WHEN f.q THEN subj ELSE nam END) ~ f.re) THEN
			RETURN 'excluded';
		END IF;
		IF c.kind = 'p' AND ver < 130000 THEN
			RETURN 'partitioned';
		END IF;
		IF NOT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = rel AND indisprimary) THEN
			RETURN 'keyless';
		END IF;
		BEGIN
			IF ver < 110000 AND to_regprocedure('pgshift.capture_truncate()') IS NOT NULL AND c.kind = 'r' THEN
				-- No TRUNCATE in the stream before 11: pgshift's capture, before it is published.
				EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I.%I FOR EACH STATEMENT EXECUTE PROCEDURE pgshift.capture_truncate()',
					'` + catalog.TruncateTrigger + `', c.nsp, c.name);
			END IF;
			EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I', s.publication, c.nsp, c.name);
		EXCEPTION WHEN OTHERS THEN
			RETURN 'error: ' || SQLERRM;
		END;
		RETURN 'added';
	END
	$$`,
	`REVOKE ALL ON FUNCTION pgshift.publish_new_table(pg_catalog.oid) FROM PUBLIC`,
}

// Partitions attached or detached while following. pg_event_trigger_ddl_commands() reports
// an ALTER TABLE ... ATTACH or DETACH PARTITION as a command on the parent alone, so the
// capture finds the partition by what the command changed in this transaction: an attached
// one has a pg_inherits row under the parent, a detached one a pg_class row that is no longer
// a partition, written by this transaction (a row visible to it whose xmin is still in
// progress can only be its own, or its subtransactions'). Each is recorded as an object of
// its own in the log row, with "partition": "attached" or "detached", so that the stream knows
// its changes belong to the migration from here on (cdc follows the relations a captured
// ALTER TABLE names), and with what became of its rows ("publish"):
//
//	attached  nothing is done: on 13+ the root's membership publishes it from this transaction
//	          on; before 13 its rows, like those it had, reach the target through the copy
//	          the applier has made of it (follow's adopt, which adds it to the publication)
//	member    detached, and the publication names it itself: it stays published
//	added     detached from a tree the publication names by its root (13+), and added to the
//	          publication now, before any later row of it is written, as publish_new_table
//	          decides for a table of its own (keyless, excluded, ... otherwise)
//	partitioned  detached before 13, a partitioned table whose leaves the publication names
//	excluded  detached from a tree the migration does not have (or before 13, not published)
//
// The applier acts on the record (apply/partition.go): a detached partition that is still
// published keeps its copy and its snapshot LSN; any other is copied again in a snapshot of its
// own. Other tables this transaction wrote (created before the ALTER) may be recorded too; the
// applier reads only the partition its statement names.
var partitionMovesDDL = []string{
	// written_here: a catalog row's xmin (32 bits) is this transaction's (top is its txid) or
	// one of its subtransactions', which are assigned after it. A visible row whose xmin is
	// still in progress can only be ours. txid_status fails for an xid not assigned yet (a row
	// of the previous epoch read as this one's): that is not ours either.
	`CREATE OR REPLACE FUNCTION pgshift.written_here(x pg_catalog.xid, top pg_catalog.int8) RETURNS pg_catalog.bool
		LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
	DECLARE
		f int8 := (top >> 32 << 32) | x::text::int8;
	BEGIN
		IF f < top OR f > top + 1000000 THEN
			RETURN false;
		END IF;
		RETURN coalesce(txid_status(f) = 'in progress', false);
	EXCEPTION WHEN OTHERS THEN
		RETURN false;
	END
	$$`,
	`REVOKE ALL ON FUNCTION pgshift.written_here(pg_catalog.xid, pg_catalog.int8) FROM PUBLIC`,
	`CREATE OR REPLACE FUNCTION pgshift.partition_moves(parent pg_catalog.oid) RETURNS pg_catalog.jsonb
		LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
	DECLARE
		s    record;
		m    record;
		cur  int8 := txid_current();
		ver  int := current_setting('server_version_num')::int;
		root oid;
		out  jsonb := '[]';
		dec  text;
	BEGIN
		SELECT * INTO s FROM pgshift.ddl_follow WHERE id = 1;
		IF NOT FOUND OR NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = parent AND relkind = 'p') THEN
			RETURN out;
		END IF;
		FOR m IN SELECT c.oid, c.relkind::text AS kind, c.relispartition AS part, n.nspname::text AS nsp, c.relname::text AS name
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE c.relkind IN ('r', 'p') AND c.oid <> parent AND n.nspname <> 'pgshift' AND n.nspname NOT LIKE 'pg\_%'
			  AND n.nspname <> 'information_schema'
			  AND pgshift.written_here(c.xmin, cur)
			  AND (NOT c.relispartition OR EXISTS (SELECT 1 FROM pg_inherits i WHERE i.inhrelid = c.oid AND i.inhparent = parent
				AND pgshift.written_here(i.xmin, cur)))
		LOOP
			IF m.part THEN
				dec := 'attached';
			ELSIF EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
					WHERE p.pubname = s.publication AND pr.prrelid = m.oid) THEN
				dec := 'member';
			ELSIF ver < 130000 THEN
				dec := CASE WHEN m.kind = 'p' THEN 'partitioned' ELSE 'excluded' END;
			ELSE
				WITH RECURSIVE up(p) AS (SELECT parent UNION SELECT i.inhparent FROM pg_inherits i JOIN up ON i.inhrelid = up.p)
				SELECT up.p INTO root FROM up JOIN pg_class pc ON pc.oid = up.p WHERE NOT pc.relispartition;
				IF EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
						WHERE p.pubname = s.publication AND pr.prrelid = root) THEN
					dec := pgshift.publish_new_table(m.oid);
				ELSE
					dec := 'excluded';
				END IF;
			END IF;
			out := out || jsonb_build_object('class', 'pg_class', 'objid', m.oid::int8, 'type', 'table', 'schema', m.nsp,
				'identity', format('%I.%I', m.nsp, m.name), 'tag', 'ALTER TABLE',
				'partition', CASE WHEN m.part THEN 'attached' ELSE 'detached' END, 'publish', dec);
		END LOOP;
		RETURN out;
	EXCEPTION WHEN OTHERS THEN
		-- The user's ALTER TABLE must never fail for pgshift: with no record of the partition,
		-- the applier copies it again.
		RETURN jsonb_build_array(jsonb_build_object('class', 'pgshift', 'type', 'error', 'identity', SQLERRM));
	END
	$$`,
	`REVOKE ALL ON FUNCTION pgshift.partition_moves(pg_catalog.oid) FROM PUBLIC`,
}

// installCapture creates or updates the capture's tables and functions in tx, unseen by the
// capture itself.
func installCapture(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, CaptureOff); err != nil {
		return err
	}
	for _, stmt := range captureStatements() {
		if _, err := tx.Exec(ctx, stmt); err != nil {
			return err
		}
	}
	return nil
}

// captureStatements are the statements that create (or update) the capture, in order: the
// trigger's function calls publish_new_table and partition_moves, which calls publish_new_table.
func captureStatements() []string {
	return slices.Concat(sourceDDL, publishNewTableDDL, partitionMovesDDL, ddlCaptureDDL)
}

// CaptureOff marks the transaction's DDL as pgshift's own, which the event trigger skips: run it
// first in every transaction of pgshift's that changes the source's schema (replica identities,
// the deferred triggers at cutover), or its own changes would be replayed as the application's.
const CaptureOff = `SELECT pg_catalog.set_config('pgshift.capture', 'off', true)`

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
		if err := installCapture(ctx, tx); err != nil {
			return err
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
		for _, stmt := range []string{`DROP EVENT TRIGGER IF EXISTS ` + catalog.DDLTrigger, `DROP FUNCTION IF EXISTS pgshift.capture_ddl()`,
			`DROP FUNCTION IF EXISTS pgshift.publish_new_table(pg_catalog.oid)`,
			`DROP FUNCTION IF EXISTS pgshift.partition_moves(pg_catalog.oid)`,
			`DROP FUNCTION IF EXISTS pgshift.written_here(pg_catalog.xid, pg_catalog.int8)`, `DROP TABLE IF EXISTS pgshift.ddl_log`, `DROP TABLE IF EXISTS pgshift.ddl_follow`} {
			if _, err := tx.Exec(ctx, stmt); err != nil {
				return fmt.Errorf("remove pgshift's DDL capture from the source: %w", err)
			}
		}
		return nil
	})
}

// ConfigureDDLFollow tells the source's capture (through db) which publication a table created
// while following joins and which tables the migration's include/exclude patterns leave out;
// it also brings the capture's functions up to this version of pgshift (a migration whose copy
// an older one made). Run it once the publication exists, and again on each follow start: the
// patterns in force are those of the agent that follows. Idempotent.
func ConfigureDDLFollow(ctx context.Context, db interface {
	Begin(ctx context.Context) (pgx.Tx, error)
}, publication string, f config.TableFilter) error {
	inc, exc := f.SQLPatterns()
	split := func(ps []config.SQLPattern) ([]string, []bool) {
		re, q := make([]string, len(ps)), make([]bool, len(ps))
		for i, p := range ps {
			re[i], q[i] = p.Regexp, p.Qualified
		}
		return re, q
	}
	incRe, incQ := split(inc)
	excRe, excQ := split(exc)
	err := pgx.BeginFunc(ctx, db, func(tx pgx.Tx) error {
		if err := installCapture(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO pgshift.ddl_follow (id, publication, include_re, include_qualified, exclude_re, exclude_qualified)
			VALUES (1, $1::text, $2::text[], $3::bool[], $4::text[], $5::bool[])
			ON CONFLICT (id) DO UPDATE SET publication = EXCLUDED.publication, include_re = EXCLUDED.include_re,
				include_qualified = EXCLUDED.include_qualified, exclude_re = EXCLUDED.exclude_re,
				exclude_qualified = EXCLUDED.exclude_qualified, updated_at = now()`, publication, incRe, incQ, excRe, excQ)
		return err
	})
	if err != nil {
		return fmt.Errorf("configure pgshift's DDL capture on the source for tables created while following (publication %s): %w", publication, err)
	}
	return nil
}
