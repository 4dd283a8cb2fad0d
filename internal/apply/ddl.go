package apply

// Schema changes captured on the source (ddl: follow; state.CaptureDDL, cdc.Schema changes).
//
// A captured query string is a barrier: the source transactions before its own in the open
// target transaction are committed first (commitBefore), the rest of its own is applied change
// by change without compaction, and the statement runs in that same target transaction, at its
// place among the rows: the rows before it were written for the schema before it, the rows after
// it for the schema after it, and a kill anywhere leaves both or neither. The statement runs
// under the role that ran it on the source (when the target has that role and pgshift may take
// it) and with its session's search_path, TimeZone, DateStyle and IntervalStyle, then the
// applier's own settings are put back. Every plan is then stale: the next change of each table
// is planned against the target's new columns, and the relation checks (relation.go) judge that
// the source's description matches them.
//
// What is replayed was judged first (sqlparse.JudgeDDL): anything it refuses stops with
// *ErrDDL, the fix, and the transactions before it committed, like a schema stop. What the
// parser cannot settle alone the applier proves against the catalogs: a function or operator in
// an ALTER COLUMN TYPE ... USING must be immutable on the target; an ADD COLUMN whose default is
// not a plain constant must have given the existing rows the same value on both sides (the same
// missing value in pg_attribute, or no rows). CONCURRENTLY cannot run inside a transaction; the
// index is built (or dropped) plainly in the applier's transaction, which holds back apply while
// it builds, but keeps it in order with the rows.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/sqlparse"
	"github.com/pgshift/pgshift/internal/state"
)

// ErrDDL is a schema change captured on the source that the applier cannot replay safely; the
// message says why and what to do. Like *ErrSchema it is not retried.
type ErrDDL struct {
	ID      int64  // the pgshift.ddl_log row on the source
	Command string // the captured query string (shown through sqlparse.Redact)
	Msg     string
	Fix     string
}

func (e *ErrDDL) Error() string {
	cmd := strings.Join(strings.Fields(sqlparse.Redact(e.Command)), " ")
	if len(cmd) > 200 {
		cmd = cmd[:200] + "…"
	}
	s := fmt.Sprintf("schema change on the source (pgshift.ddl_log id %d: %s): %s", e.ID, cmd, e.Msg)
	if e.Fix != "" {
		s += "; fix: " + e.Fix + ", then run pgshift run again"
	}
	return s
}

// fixDDLByHand is the fix when the target itself refused a replayed statement.
const fixDDLByHand = "make the target's schema match the source's by hand, then run pgshift with ddl: stop until the agent has passed this transaction (ddl: follow again afterwards)"

// ddl applies one captured schema change (see the top of this file).
func (a *Applier) ddl(ctx context.Context, ch *cdc.Change) error {
	d := ch.DDL
	if !a.opts.FollowDDL || !d.First {
		// ddl: stop: the relation checks judge the change when its rows arrive. A later
		// command of a query string already replayed at its first.
		return nil
	}
	stmts, err := sqlparse.JudgeDDL(d.Command)
	if re, ok := errors.AsType[*sqlparse.RefusedError](err); ok {
		return &ErrDDL{ID: d.ID, Command: d.Command, Msg: re.Reason, Fix: re.Fix}
	}
	if err != nil {
		return err
	}
	if err := a.ddlBarrier(ctx); err != nil {
		return err
	}
	role, err := a.enterDDLSession(ctx, d)
	if err != nil {
		return err
	}
	var ran, created, partitions []string
	for _, st := range stmts {
		if st.Relation != nil {
			found, err := a.resolveTables(ctx, []sqlparse.Name{*st.Relation})
			if err != nil {
				return fmt.Errorf("schema change %d: %w", d.ID, err)
			}
			if len(found) == 0 {
				// Not on the target: a table left out of the migration (exclude). One the
				// migration has meets the relation checks when its rows arrive.
				a.log.Warn("skipped a schema change of a relation the target does not have (not migrated)", "ddl_id", d.ID, "relation", st.Relation.String(), "statement", st.Kind)
				continue
			}
		}
		if st.Attaches != nil {
			if err := a.attachable(ctx, d, st); err != nil {
				return err
			}
		}
		if len(st.DropsTables) > 0 {
			if found, err := a.resolveTables(ctx, st.DropsTables); err != nil {
				return fmt.Errorf("schema change %d: %w", d.ID, err)
			} else if len(found) == 0 {
				a.log.Warn("skipped a DROP TABLE of tables the target does not have (not migrated)", "ddl_id", d.ID, "statement", st.SQL)
				continue
			}
		}
		var nt newTable
		if st.CreatesTable != nil {
			if nt, err = a.newTable(ctx, d, st); err != nil {
				return err
			}
			if nt.publish == publishExcluded {
				a.log.Info("skipped a table created on the source that is not part of the migration (include/exclude, or its partition tree is not migrated)",
					"ddl_id", d.ID, "table", nt.id.String())
				continue
			}
		}
		if err := a.runDDL(ctx, d, st); err != nil {
			return err
		}
		ran = append(ran, st.SQL)
		if st.CreatesTable != nil {
			ts, err := a.registerNewTable(ctx, d, st, nt)
			if err != nil {
				return err
			}
			created = append(created, nt.id.String()+":"+ts)
		}
		if st.Attaches != nil || st.Detaches != nil {
			moved, err := a.movePartition(ctx, d, st)
			if err != nil {
				return err
			}
			partitions = append(partitions, moved)
		}
	}
	if len(ran) == 0 {
		return a.leaveDDLSession(ctx)
	}
	if err := a.leaveDDLSession(ctx); err != nil {
		return err
	}
	if err := a.invalidatePlans(ctx); err != nil {
		return err
	}
	entry := map[string]any{"ddl_id": d.ID, "command": sqlparse.Redact(d.Command), "statements": ran, "role": role,
		"source_role": d.Role, "search_path": d.SearchPath, "commit_lsn": a.cur.CommitLSN.String(), "xid": a.cur.Xid}
	if len(created) > 0 {
		entry["new_tables"] = created // table:state in the migration (done: streamed; pending: to be copied)
	}
	if len(partitions) > 0 {
		entry["partitions"] = partitions // attached or detached: table:kept (followed on) or table:pending (to be copied)
	}
	detail, err := json.Marshal(entry)
	if err != nil {
		return err
	}
	if _, err := state.RecordAudit(ctx, a.tx, state.AuditEntry{Actor: "agent", Action: "ddl.apply", Outcome: "ok", Detail: detail}); err != nil {
		return err
	}
	a.pendingCh++
	a.pendingDDL++
	a.log.Info("applied a schema change of the source", "ddl_id", d.ID, "statements", len(ran), "role", role, "commit_lsn", a.cur.CommitLSN.String())
	if a.opts.AfterDDL != nil {
		return a.opts.AfterDDL()
	}
	return nil
}

// ddlBarrier leaves the open target transaction holding only the current source transaction,
// everything before the DDL written, and the rest of it applied change by change: compaction
// merges rows across the statement otherwise, and a redo would replay rows without it. (A target
// transaction that holds earlier source transactions without a recording of them, after a
// conflict's redo, keeps them: they commit with the DDL's, still in order.)
func (a *Applier) ddlBarrier(ctx context.Context) error {
	return a.unrecordedFromHere(ctx, a.recording() && a.txCount > 0 && a.rawAtBegin <= len(a.raw))
}

// ddlSettings are the source session's settings a schema change runs under.
var ddlSettings = []string{"search_path", "TimeZone", "DateStyle", "IntervalStyle"}

// enterDDLSession sets, for the open target transaction, what the statement ran under on the
// source, and returns the role it runs as.
func (a *Applier) enterDDLSession(ctx context.Context, d *cdc.DDL) (string, error) {
	a.ddlSaved = map[string]string{}
	for _, k := range ddlSettings {
		var v string
		if err := a.tx.QueryRow(ctx, `SELECT pg_catalog.current_setting($1::text)`, k).Scan(&v); err != nil {
			return "", fmt.Errorf("schema change %d: read %s on the target: %w", d.ID, k, err)
		}
		a.ddlSaved[k] = v
	}
	for k, v := range map[string]string{"search_path": d.SearchPath, "TimeZone": d.TimeZone, "DateStyle": d.DateStyle, "IntervalStyle": d.IntervalStyle} {
		if _, err := a.tx.Exec(ctx, `SELECT pg_catalog.set_config($1::text, $2::text, true)`, k, v); err != nil {
			return "", fmt.Errorf("schema change %d: set %s = '%s' on the target: %w", d.ID, k, v, err)
		}
	}
	var can bool
	if err := a.tx.QueryRow(ctx, `SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1::text)
		THEN pg_catalog.pg_has_role(current_user, $1::text, 'MEMBER') ELSE false END`, d.Role).Scan(&can); err != nil {
		return "", fmt.Errorf("schema change %d: look up role %s on the target: %w", d.ID, d.Role, err)
	}
	var me string
	if err := a.tx.QueryRow(ctx, `SELECT current_user::text`).Scan(&me); err != nil {
		return "", fmt.Errorf("schema change %d: %w", d.ID, err)
	}
	if !can || d.Role == me {
		if d.Role != me && a.opts.Warned.First("ddl-role:"+d.Role) {
			a.log.Warn("a schema change of the source runs as pgshift's user on the target: the role that made it is missing there or pgshift may not take it; objects it creates are owned by pgshift's user",
				"role", d.Role, "user", me)
		}
		return me, nil
	}
	if _, err := a.tx.Exec(ctx, `SELECT pg_catalog.set_config('role', $1::text, true)`, d.Role); err != nil {
		return "", fmt.Errorf("schema change %d: SET ROLE %s on the target: %w", d.ID, d.Role, err)
	}
	return d.Role, nil
}

// leaveDDLSession puts the applier's own settings and role back for the rest of the transaction.
func (a *Applier) leaveDDLSession(ctx context.Context) error {
	if _, err := a.tx.Exec(ctx, `SELECT pg_catalog.set_config('role', 'none', true)`); err != nil {
		return fmt.Errorf("reset the role on the target after a schema change: %w", err)
	}
	for _, k := range ddlSettings {
		if _, err := a.tx.Exec(ctx, `SELECT pg_catalog.set_config($1::text, $2::text, true)`, k, a.ddlSaved[k]); err != nil {
			return fmt.Errorf("restore %s on the target after a schema change: %w", k, err)
		}
	}
	return nil
}

// runDDL runs one judged statement, with the proofs it needs and the migration's table list
// kept in step.
func (a *Applier) runDDL(ctx context.Context, d *cdc.DDL, st sqlparse.DDL) error {
	refuse := func(format string, args ...any) error {
		return &ErrDDL{ID: d.ID, Command: d.Command, Msg: fmt.Sprintf(format, args...), Fix: fixDDLByHand}
	}
	proved, err := a.proveUsing(ctx, d, st)
	if err != nil {
		return err
	}
	for _, f := range st.Functions {
		if proved {
			break
		}
		// Every overload the call could mean (by name, schema and number of arguments) must be
		// immutable: pgshift does not resolve argument types.
		ok, err := a.immutable(ctx, `SELECT count(*) FILTER (WHERE p.provolatile <> 'i'), count(*) FROM pg_catalog.pg_proc p
			JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace WHERE p.proname = $1::text AND ($2::text = '' OR n.nspname = $2::text)
			AND p.pronargs - p.pronargdefaults <= $3::int AND (p.pronargs >= $3::int OR p.provariadic <> 0)`, f.Name.Name, f.Name.Schema, f.Args)
		if err != nil {
			return fmt.Errorf("schema change %d: look up function %s on the target: %w", d.ID, f, err)
		}
		if !ok {
			return refuse("%s rewrites the rows with function %s, which is not immutable on the target (or unknown): the rows could get other values than on the source", st.Kind, f)
		}
	}
	for _, op := range st.Operators {
		if proved {
			break
		}
		ok, err := a.immutable(ctx, `SELECT count(*) FILTER (WHERE p.provolatile <> 'i'), count(*) FROM pg_catalog.pg_operator o
			JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode WHERE o.oprname = $1::text`, op)
		if err != nil {
			return fmt.Errorf("schema change %d: look up operator %s on the target: %w", d.ID, op, err)
		}
		if !ok {
			return refuse("%s rewrites the rows with operator %s, of which some variant is not immutable (pgshift does not resolve which one is used): the rows could get other values than on the source", st.Kind, op)
		}
	}
	dropped, err := a.resolveTables(ctx, st.DropsTables)
	if err != nil {
		return fmt.Errorf("schema change %d: %w", d.ID, err)
	}
	var renames [][2]pgtypes.TableID
	for _, r := range st.RenamesTables {
		from, err := a.resolveTables(ctx, []sqlparse.Name{r.From})
		if err != nil {
			return fmt.Errorf("schema change %d: %w", d.ID, err)
		}
		if len(from) == 1 {
			to := from[0]
			if r.To.Schema != "" {
				to.Schema = r.To.Schema
			}
			if r.To.Name != "" {
				to.Name = r.To.Name
			}
			renames = append(renames, [2]pgtypes.TableID{from[0], to})
		}
	}
	if _, err := a.tx.Exec(ctx, st.SQL); err != nil {
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok {
			return refuse("the target refused %s (%s): %v", st.Kind, st.SQL, pgErr)
		}
		return fmt.Errorf("schema change %d: %s on the target: %w", d.ID, st.SQL, err)
	}
	if st.Concurrently {
		a.log.Info("a schema change the source ran CONCURRENTLY runs plainly on the target, in order with the rows (apply waits for it)", "ddl_id", d.ID, "statement", st.SQL)
	}
	for _, c := range st.CheckAdded {
		if err := a.checkAddedDefault(ctx, d, c); err != nil {
			return err
		}
	}
	for _, t := range dropped {
		if err := state.RetireTable(ctx, a.tx, t, a.cur.CommitLSN); err != nil {
			return err
		}
	}
	for _, r := range renames {
		if err := state.RenameTable(ctx, a.tx, r[0], r[1]); errors.Is(err, state.ErrDeferredOnRenamed) {
			return refuse("%s: %v; they would name a table that no longer exists at cutover", st.Kind, err)
		} else if err != nil {
			return err
		}
		if snap, ok := a.opts.Snapshots[r[0]]; ok {
			a.opts.Snapshots = maps.Clone(a.opts.Snapshots) // the caller's map is not the applier's to change
			delete(a.opts.Snapshots, r[0])
			a.opts.Snapshots[r[1]] = snap
		}
	}
	return nil
}

// proveUsing lets the target judge whether the USING expressions of an ALTER COLUMN TYPE are
// immutable (sqlparse.DDL.UsingProbes): each probe adds a stored generated column computed by
// one expression to an empty temporary copy of the table's columns, in a savepoint rolled back
// at once. True: every expression resolves only to immutable functions, operators and casts.
// A probe the target refuses as not immutable refuses the statement. A probe that cannot run
// (a target before 12, which has no generated columns, or any other error) returns false, and
// the rule by name decides.
func (a *Applier) proveUsing(ctx context.Context, d *cdc.DDL, st sqlparse.DDL) (bool, error) {
	if len(st.UsingProbes) == 0 || st.Relation == nil {
		return false, nil
	}
	var version int
	if err := a.tx.QueryRow(ctx, `SELECT pg_catalog.current_setting('server_version_num')::int`).Scan(&version); err != nil {
		return false, fmt.Errorf("schema change %d: read the target's version: %w", d.ID, err)
	}
	if version < 120000 {
		return false, nil
	}
	table := pgtypes.QuoteIdent(st.Relation.Name)
	if st.Relation.Schema != "" {
		table = pgtypes.QuoteIdent(st.Relation.Schema) + "." + table
	}
	for _, probe := range st.UsingProbes {
		if _, err := a.tx.Exec(ctx, `SAVEPOINT pgshift_using_probe`); err != nil {
			return false, fmt.Errorf("schema change %d: %w", d.ID, err)
		}
		_, err := a.tx.Exec(ctx, `CREATE TEMP TABLE pg_temp.`+sqlparse.ProbeTable+` (LIKE `+table+`)`)
		if err == nil {
			_, err = a.tx.Exec(ctx, probe)
		}
		if _, rerr := a.tx.Exec(ctx, `ROLLBACK TO SAVEPOINT pgshift_using_probe`); rerr != nil {
			return false, fmt.Errorf("schema change %d: roll back the USING probe: %w", d.ID, rerr)
		}
		if _, rerr := a.tx.Exec(ctx, `RELEASE SAVEPOINT pgshift_using_probe`); rerr != nil {
			return false, fmt.Errorf("schema change %d: %w", d.ID, rerr)
		}
		if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == "42P17" {
			return false, &ErrDDL{ID: d.ID, Command: d.Command, Fix: fixDDLByHand,
				Msg: fmt.Sprintf("%s rewrites the rows with an expression that is not immutable on the target (%s): the rows could get other values than on the source", st.Kind, pgErr.Message)}
		}
		if err != nil {
			a.log.Debug("the USING probe of a schema change did not run; judging its functions and operators by name", "ddl_id", d.ID, "error", err)
			return false, nil
		}
	}
	return true, nil
}

// immutable runs a query returning (not immutable, all) counts and reports whether some
// matched and all are immutable.
func (a *Applier) immutable(ctx context.Context, sql string, args ...any) (bool, error) {
	var bad, all int
	if err := a.tx.QueryRow(ctx, sql, args...).Scan(&bad, &all); err != nil {
		return false, err
	}
	return all > 0 && bad == 0, nil
}

// resolveTables finds the relations names name on the target, under the statement's
// search_path (set by enterDDLSession): the target's schema is the source's at this point of
// the stream. Names the target does not have are left out.
func (a *Applier) resolveTables(ctx context.Context, names []sqlparse.Name) ([]pgtypes.TableID, error) {
	var out []pgtypes.TableID
	for _, n := range names {
		text := pgtypes.QuoteIdent(n.Name)
		if n.Schema != "" {
			text = pgtypes.QuoteIdent(n.Schema) + "." + text
		}
		var id pgtypes.TableID
		var found bool
		err := a.tx.QueryRow(ctx, `SELECT coalesce(n.nspname::text, ''), coalesce(c.relname::text, ''), c.oid IS NOT NULL
			FROM (SELECT pg_catalog.to_regclass($1::text) AS oid) r LEFT JOIN pg_catalog.pg_class c ON c.oid = r.oid
			LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace`, text).Scan(&id.Schema, &id.Name, &found)
		if err != nil {
			return nil, fmt.Errorf("resolve table %s on the target: %w", n, err)
		}
		if found {
			out = append(out, id)
		}
	}
	return out, nil
}

// checkAddedDefault proves that an ADD COLUMN whose default is not a plain constant gave the
// table's existing rows the same value on both servers: the target's table has no rows, or both
// servers stored the same missing value (a non-volatile default evaluated once: an immutable
// expression gives the same, now() does not). A volatile default rewrote the table on each side
// with values of its own, which nothing can compare short of the rows themselves.
func (a *Applier) checkAddedDefault(ctx context.Context, d *cdc.DDL, c sqlparse.AddedColumn) error {
	fail := func(why string) error {
		return &ErrDDL{ID: d.ID, Command: d.Command,
			Msg: fmt.Sprintf("ADD COLUMN %s to %s with a default that is not a constant: %s; the existing rows would hold other values on the target than on the source",
				pgtypes.QuoteIdent(c.Column), c.Table, why),
			Fix: "re-copy the table once the column exists on both sides (pgshift copy --force), or add the column on the source without the default (then SET DEFAULT, and UPDATE the existing rows, which is streamed)"}
	}
	ids, err := a.resolveTables(ctx, []sqlparse.Name{c.Table})
	if err != nil || len(ids) != 1 {
		return errors.Join(err, fail("the table cannot be found on the target"))
	}
	t := ids[0]
	var empty bool
	if err := a.tx.QueryRow(ctx, "SELECT NOT EXISTS (SELECT 1 FROM ONLY "+t.Sanitize()+")").Scan(&empty); err != nil {
		return fmt.Errorf("schema change %d: read %s on the target: %w", d.ID, t, err)
	}
	if empty {
		return nil
	}
	v, err := a.sourceVersion(ctx)
	if err != nil {
		return err
	}
	if !v.HasMissingValues() {
		return fail("the source (before 11) rewrote the table with it, and its values cannot be compared")
	}
	const missingSQL = `SELECT a.atthasmissing, coalesce(a.attmissingval::text, '') FROM pg_catalog.pg_attribute a
		WHERE a.attrelid = $1::oid AND a.attname = $2::text AND NOT a.attisdropped`
	var srcOID uint32
	var identity string // as pg_event_trigger_ddl_commands() names it: quote_ident of each part
	if err := a.tx.QueryRow(ctx, `SELECT pg_catalog.format('%I.%I', $1::text, $2::text)`, t.Schema, t.Name).Scan(&identity); err != nil {
		return fmt.Errorf("schema change %d: %w", d.ID, err)
	}
	for _, o := range d.Objects {
		if o.Class == "pg_class" && o.Type == "table" && o.Identity == identity {
			srcOID = o.ObjID
		}
	}
	if srcOID == 0 {
		return fail("the source's table is not among the objects the command reported")
	}
	var tgtOID uint32
	if err := a.tx.QueryRow(ctx, `SELECT $1::regclass::oid`, t.Sanitize()).Scan(&tgtOID); err != nil {
		return fmt.Errorf("schema change %d: %w", d.ID, err)
	}
	var tHas, sHas bool
	var tVal, sVal string
	if err := a.tx.QueryRow(ctx, missingSQL, tgtOID, c.Column).Scan(&tHas, &tVal); err != nil {
		return fmt.Errorf("schema change %d: read column %s of %s on the target: %w", d.ID, c.Column, t, err)
	}
	if err := a.awaitVisible(ctx); err != nil {
		return err
	}
	if err := a.source.QueryRow(ctx, missingSQL, srcOID, c.Column).Scan(&sHas, &sVal); err != nil {
		return errors.Join(fail("the column can no longer be read on the source"), err)
	}
	switch {
	case !tHas || !sHas:
		return fail("the default is volatile (each server rewrote the table with values of its own), or the source's table was rewritten since")
	case tVal != sVal:
		return fail(fmt.Sprintf("the source gave the rows %s, the target %s", sVal, tVal))
	}
	return nil
}

// invalidatePlans makes every plan stale after a schema change: the next change of each table
// is planned against the target's columns as they are now, without comparing with the
// description before the change (which the change explains). Their prepared statements are
// deallocated; conn must be idle.
func (a *Applier) invalidatePlans(ctx context.Context) error {
	for _, ps := range [][]*plan{slices.Collect(maps.Values(a.plans)), a.txPlans} {
		for _, p := range ps {
			p.stale = true
			for _, name := range p.stmts {
				if err := a.conn.PgConn().Deallocate(ctx, name); err != nil {
					return fmt.Errorf("deallocate %s on the target: %w", name, err)
				}
			}
			clear(p.stmts)
		}
	}
	clear(a.plans)
	clear(a.byRel)
	return nil
}
