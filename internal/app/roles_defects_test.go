package app

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// rolesSourceSQL is a database as real ones are: objects owned by several roles, grants and
// revokes on tables, columns, sequences, functions, types and schemas (public's included),
// default privileges, a role's and the database's settings, policies (one forced), comments,
// and large objects with owners, privileges and a comment.
const rolesSourceSQL = `
CREATE ROLE app_owner NOLOGIN;
CREATE ROLE app_rw NOLOGIN;
CREATE ROLE app_user LOGIN PASSWORD 'app-secret' IN ROLE app_rw CONNECTION LIMIT 20;
CREATE ROLE reporting LOGIN PASSWORD 'report-secret' VALID UNTIL '2099-01-01';
CREATE ROLE auditor LOGIN CONNECTION LIMIT 7;
CREATE ROLE unrelated LOGIN;
COMMENT ON ROLE app_user IS 'the application';
GRANT app_rw TO reporting WITH ADMIN OPTION;
GRANT pg_read_all_stats TO reporting;
ALTER ROLE reporting SET work_mem = '64MB';
ALTER DATABASE shop OWNER TO app_owner;
ALTER DATABASE shop SET search_path = app, public;
ALTER ROLE app_user IN DATABASE shop SET statement_timeout = '7s';
REVOKE CONNECT, TEMPORARY ON DATABASE shop FROM PUBLIC;
GRANT CONNECT ON DATABASE shop TO app_user, reporting, auditor;
COMMENT ON DATABASE shop IS 'the shop';
ALTER SCHEMA public OWNER TO app_owner;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO app_rw;
CREATE SCHEMA app AUTHORIZATION app_owner;
GRANT USAGE ON SCHEMA app TO app_rw, reporting, auditor;
SET ROLE app_owner;
ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO reporting;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
CREATE DOMAIN app.money_amount AS numeric(12,2) CHECK (VALUE >= 0);
REVOKE USAGE ON DOMAIN app.money_amount FROM PUBLIC;
GRANT USAGE ON DOMAIN app.money_amount TO app_rw;
CREATE TABLE app.orders (id bigserial PRIMARY KEY, customer text NOT NULL, total app.money_amount);
CREATE TABLE app.log (at timestamptz DEFAULT now(), msg text);
CREATE TABLE app.items (id int PRIMARY KEY, name text);
CREATE TABLE app.secrets (id int PRIMARY KEY, v text);
CREATE TABLE public.audit (id int PRIMARY KEY, note text);
CREATE FUNCTION app.total() RETURNS numeric LANGUAGE sql AS 'SELECT sum(total) FROM app.orders';
CREATE FUNCTION app.hello() RETURNS text LANGUAGE sql AS 'SELECT ''hello''';
GRANT EXECUTE ON FUNCTION app.total() TO reporting;
GRANT EXECUTE ON FUNCTION app.hello() TO app_rw;
GRANT SELECT, INSERT, UPDATE ON app.orders TO app_rw;
GRANT USAGE ON SEQUENCE app.orders_id_seq TO app_rw;
GRANT SELECT (customer) ON app.orders TO reporting;
GRANT INSERT ON app.log TO app_rw;
REVOKE SELECT ON app.items FROM reporting;
GRANT SELECT ON app.items TO app_rw;
GRANT SELECT ON public.audit TO auditor;
ALTER TABLE app.orders ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON app.orders TO app_rw USING (customer = current_user) WITH CHECK (customer = current_user);
ALTER TABLE app.secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE app.secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY none_for_reporting ON app.secrets AS RESTRICTIVE TO reporting USING (false);
CREATE POLICY all_rows ON app.secrets USING (true);
GRANT SELECT ON app.secrets TO reporting, app_rw;
INSERT INTO app.orders (customer, total) VALUES ('app_user', 10), ('someone', 20), ('app_user', 5);
INSERT INTO app.log (msg) SELECT 'line ' || g FROM generate_series(1, 50) g;
INSERT INTO app.items SELECT g, 'item ' || g FROM generate_series(1, 10) g;
INSERT INTO app.secrets VALUES (1, 'a'), (2, 'b');
RESET ROLE;
INSERT INTO public.audit VALUES (1, 'x');
SELECT lo_from_bytea(424242, 'invoice scan');
ALTER LARGE OBJECT 424242 OWNER TO app_owner;
GRANT SELECT ON LARGE OBJECT 424242 TO app_rw;
COMMENT ON LARGE OBJECT 424242 IS 'scanned invoice';
SELECT lo_from_bytea(424243, decode(repeat('0123456789abcdef', 200000), 'hex'));
`

// roleStatements are what the application and reporting roles run, on each side as that role
// (connected as it): their outcomes must be the same on both sides.
var roleStatements = map[string][]string{
	"app_user": {
		"SHOW search_path", "SHOW statement_timeout",
		"SELECT count(*) FROM orders", "SELECT count(*) FROM app.orders WHERE customer = 'someone'",
		"INSERT INTO orders (customer, total) VALUES ('app_user', 3) RETURNING id",
		"INSERT INTO orders (customer, total) VALUES ('someone', 3)",
		"UPDATE orders SET total = 11 WHERE customer = 'app_user' AND total = 10",
		"DELETE FROM orders", "SELECT count(*) FROM app.log", "INSERT INTO app.log (msg) VALUES ('x')",
		"SELECT app.total()", "SELECT app.hello()", "SELECT count(*) FROM app.items", "SELECT count(*) FROM app.secrets",
		"CREATE TABLE public.mine (id int)", "CREATE TEMP TABLE t (id int)", "SELECT count(*) FROM public.audit",
		"SELECT encode(lo_get(424242), 'escape')", "SELECT length(lo_get(424243))", "SELECT lo_put(424242, 0, 'x')",
		"SELECT 1::app.money_amount",
	},
	"reporting": {
		"SHOW work_mem", "SELECT customer FROM app.orders ORDER BY 1", "SELECT total FROM app.orders",
		"SELECT app.total()", "SELECT count(*) FROM app.log", "SELECT count(*) FROM app.items",
		"SELECT count(*) FROM app.secrets", "SELECT 1::app.money_amount", "SELECT pg_has_role('pg_read_all_stats', 'USAGE')",
		"SELECT encode(lo_get(424242), 'escape')",
	},
	"auditor": {"SELECT count(*) FROM public.audit", "SELECT count(*) FROM app.orders", "SELECT count(*) FROM app.items"},
}

// TestCopyRolesOwnersPrivileges: after copy, the target is a database the application can use
// as it used the source. Oracles of the test's own: pg_dump --schema-only of both sides (and
// of the database itself with --create) are identical, the roles' attributes, password
// verifiers and memberships are identical, every statement of the application's roles has
// the same outcome on both sides, run as those roles; and a post-data step that fails once
// resumes with grants and owners intact. Before the fix, pg_dump ran with --no-owner
// --no-privileges and no role was created.
func TestCopyRolesOwnersPrivileges(t *testing.T) {
	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "shop")
	ctx := context.Background()
	if out, err := src.Psql(ctx, "shop", rolesSourceSQL); err != nil {
		t.Fatalf("source setup: %v\n%s", err, out)
	}
	// A role the target already has, with other attributes: left as it is.
	if out, err := dst.Psql(ctx, "shop", `CREATE ROLE auditor NOLOGIN`); err != nil {
		t.Fatalf("target setup: %v\n%s", err, out)
	}
	// A post-data step fails once (an event trigger refuses the first CREATE POLICY), so the
	// copy stops after its roles, pre-data and some post-data steps committed, and resumes.
	if out, err := dst.Psql(ctx, "shop", `
		CREATE SEQUENCE public.fail_once;
		CREATE FUNCTION public.fail_policy() RETURNS event_trigger LANGUAGE plpgsql AS $$
		BEGIN IF NOT (SELECT is_called FROM public.fail_once) THEN
			PERFORM setval('public.fail_once', 1, true); -- not rolled back with the failure
			RAISE EXCEPTION 'injected failure';
		END IF; END $$;
		CREATE EVENT TRIGGER fail_policy ON ddl_command_start WHEN TAG IN ('CREATE POLICY') EXECUTE FUNCTION public.fail_policy();`); err != nil {
		t.Fatalf("target setup: %v\n%s", err, out)
	}
	cfg := testConfig(srcDSN, dstDSN)
	cfg.ReplicaIdentityFull = true // app.log has no key
	_, err := Copy(ctx, cfg, CopyOptions{NoProgress: true}, testLogger(t))
	if err == nil || !strings.Contains(err.Error(), "injected failure") {
		t.Fatalf("first copy: want the injected post-data failure, got %v", err)
	}
	if out, err := dst.Psql(ctx, "shop", `DROP EVENT TRIGGER fail_policy; DROP FUNCTION public.fail_policy(); DROP SEQUENCE public.fail_once;`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	sum, err := Copy(ctx, cfg, CopyOptions{NoProgress: true}, testLogger(t))
	if err != nil {
		t.Fatalf("resumed copy: %v", err)
	}
	if !sum.Resumed || sum.LargeObjects != 0 {
		t.Logf("summary: %+v", sum)
	}

	// 1. The schemas, owners and privileges: pg_dump of both sides.
	if s, d := dumpSchema(t, src, "shop"), dumpSchema(t, dst, "shop"); s != d {
		t.Errorf("pg_dump --schema-only differs:\n%s", lineDiff(s, d))
	}
	// 2. The database's owner, settings, comment and privileges.
	if s, d := dumpDatabaseProps(t, src, "shop"), dumpDatabaseProps(t, dst, "shop"); s != d {
		t.Errorf("pg_dump --create (database properties) differs:\n%s", lineDiff(s, d))
	}
	// 3. The roles: attributes, verifiers, settings, comments and memberships.
	const rolesSQL = `SELECT string_agg(format('%s super=%s login=%s connlimit=%s until=%s password=%s comment=%s config=%s member_of=%s',
		a.rolname, a.rolsuper, a.rolcanlogin, a.rolconnlimit, a.rolvaliduntil, a.rolpassword, shobj_description(a.oid, 'pg_authid'),
		(SELECT setconfig FROM pg_db_role_setting WHERE setrole = a.oid AND setdatabase = 0),
		(SELECT string_agg(r.rolname || CASE WHEN m.admin_option THEN ' (admin)' ELSE '' END, ',' ORDER BY r.rolname)
		 FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.roleid WHERE m.member = a.oid)), E'\n' ORDER BY a.rolname)
		FROM pg_authid a WHERE a.rolname IN ('app_owner', 'app_rw', 'app_user', 'reporting')`
	if s, d := psqlOut(t, src, "shop", rolesSQL), psqlOut(t, dst, "shop", rolesSQL); s != d {
		t.Errorf("roles differ:\nsource:\n%s\ntarget:\n%s", s, d)
	}
	if got := psqlOut(t, dst, "shop", `SELECT rolcanlogin::text || ' ' || rolconnlimit FROM pg_roles WHERE rolname = 'auditor'`); got != "false -1" {
		t.Errorf("the target's own role auditor was changed: login, connlimit = %s", got)
	}
	if got := psqlOut(t, dst, "shop", `SELECT count(*) FROM pg_roles WHERE rolname = 'unrelated'`); got != "0" {
		t.Errorf("role unrelated, which the database does not reference, was created on the target")
	}
	// 4. What the roles can do, as themselves (auditor cannot log in on the target: the
	// target's own role, left alone, is NOLOGIN).
	for _, role := range []string{"app_user", "reporting"} {
		s := runAsRole(t, src, "shop", role, roleStatements[role])
		d := runAsRole(t, dst, "shop", role, roleStatements[role])
		for i := range s {
			if s[i] != d[i] {
				t.Errorf("as %s, %q: source %s, target %s", role, roleStatements[role][i], s[i], d[i])
			}
		}
	}
	// pgshift's own verify agrees: no false alarm from owners, grants, settings, roles or large
	// objects, and the one real difference, the target's own auditor role, is named.
	rep, err := Verify(ctx, cfg, VerifyOptions{}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Schema == nil || len(rep.Schema.Diffs) != 1 || rep.Schema.Diffs[0].Kind != "role" || rep.Schema.Diffs[0].Name != "auditor" {
		t.Errorf("verify's schema diff after the copy: %+v", rep.Schema)
	}
	// 5. Large objects: contents, owners, privileges, comments.
	const loSQL = `SELECT string_agg(format('%s %s %s %s %s', oid, lomowner::regrole, lomacl, md5(lo_get(oid)), obj_description(oid, 'pg_largeobject')), E'\n' ORDER BY oid) FROM pg_largeobject_metadata`
	if s, d := psqlOut(t, src, "shop", loSQL), psqlOut(t, dst, "shop", loSQL); s != d {
		t.Errorf("large objects differ:\nsource:\n%s\ntarget:\n%s", s, d)
	}
}

// TestCopyRolesPreflight: a target user that may not create roles or give objects to their
// owners is refused before anything is created, with what it lacks; --no-owner --no-privileges
// --no-roles let it copy. Before the fix there was no such check (and no roles at all).
func TestCopyRolesPreflight(t *testing.T) {
	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "shop")
	ctx := context.Background()
	if out, err := src.Psql(ctx, "shop", `CREATE ROLE app_owner NOLOGIN; CREATE ROLE app_rw NOLOGIN;
		CREATE SCHEMA app AUTHORIZATION app_owner; SET ROLE app_owner;
		CREATE TABLE app.t (id int PRIMARY KEY); GRANT SELECT ON app.t TO app_rw; INSERT INTO app.t VALUES (1);`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := dst.Psql(ctx, "shop", `CREATE ROLE migrator LOGIN; GRANT CREATE ON DATABASE shop TO migrator; ALTER SCHEMA public OWNER TO migrator;`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	cfg := testConfig(srcDSN, strings.Replace(dstDSN, "user=postgres", "user=migrator", 1))
	_, err := Copy(ctx, cfg, CopyOptions{NoProgress: true}, testLogger(t))
	for _, want := range []string{"CREATEROLE", `"app_owner", "app_rw"`, "nothing was created", "--no-roles"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("copy as a plain target user: want an error with %q, got %v", want, err)
		}
	}
	if got := psqlOut(t, dst, "shop", `SELECT count(*) FROM pg_namespace WHERE nspname IN ('pgshift', 'app')`); got != "0" {
		t.Errorf("the refused copy created schemas on the target (%s)", got)
	}
	// With CREATEROLE it could create the roles, but the policies of a FORCE ROW LEVEL SECURITY
	// table would apply on the target to the user applying changes, even as (a member of) its
	// owner: refused before anything is created.
	if out, err := dst.Psql(ctx, "shop", `ALTER ROLE migrator CREATEROLE`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := src.Psql(ctx, "shop", `SET ROLE app_owner; CREATE TABLE app.guarded (id int PRIMARY KEY);
		ALTER TABLE app.guarded ENABLE ROW LEVEL SECURITY; ALTER TABLE app.guarded FORCE ROW LEVEL SECURITY;
		CREATE POLICY p ON app.guarded USING (true);`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	_, err = Copy(ctx, cfg, CopyOptions{NoProgress: true}, testLogger(t))
	for _, want := range []string{"row-level security", "app.guarded", "BYPASSRLS", "nothing was created"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("copy with a forced-RLS table as a plain target user: want an error with %q, got %v", want, err)
		}
	}
	if got := psqlOut(t, dst, "shop", `SELECT count(*) FROM pg_roles WHERE rolname IN ('app_owner', 'app_rw')`); got != "0" {
		t.Errorf("the refused copy created roles on the target (%s)", got)
	}
	// With BYPASSRLS it creates the roles and, not being a superuser, grants itself the owner
	// role so it can give it its objects.
	if out, err := dst.Psql(ctx, "shop", `ALTER ROLE migrator BYPASSRLS`); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := Copy(ctx, cfg, CopyOptions{NoProgress: true}, testLogger(t)); err != nil {
		t.Fatalf("copy with CREATEROLE: %v", err)
	}
	if got := psqlOut(t, dst, "shop", `SELECT relowner::regrole::text || ' ' || relacl::text FROM pg_class WHERE oid = 'app.t'::regclass`); got != "app_owner {app_owner=arwdDxt/app_owner,app_rw=r/app_owner}" {
		t.Errorf("app.t on the target: owner and privileges %s", got)
	}
}

func testConfig(srcDSN, dstDSN string) config.Config {
	cfg := config.Defaults()
	cfg.Source, cfg.Target, cfg.Jobs = srcDSN, dstDSN, 2
	return cfg
}

var restrictLine = regexp.MustCompile(`(?m)^\\(un)?restrict .*$`)

// dumpSchema is pg_dump --schema-only of a database, without pgshift's schema, publications
// and the random \restrict key.
func dumpSchema(t *testing.T, c *pgtest.Cluster, db string) string {
	t.Helper()
	return pgDumpOut(t, c, "--schema-only", "--exclude-schema=pgshift", "--no-publications", "--dbname="+c.DSN(db))
}

// dumpDatabaseProps is the database's own part of pg_dump --create.
func dumpDatabaseProps(t *testing.T, c *pgtest.Cluster, db string) string {
	t.Helper()
	return pgDumpOut(t, c, "--create", "--schema-only", "--exclude-schema=*", "--no-publications", "--no-blobs", "--dbname="+c.DSN(db))
}

func pgDumpOut(t *testing.T, c *pgtest.Cluster, args ...string) string {
	t.Helper()
	out, err := exec.Command(filepath.Join(c.BinDir(), "pg_dump"), args...).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("pg_dump: %v: %s", err, ee.Stderr)
		}
		t.Fatalf("pg_dump: %v", err)
	}
	// pgshift's own event trigger (ddl: follow) is on the source only: not the application's.
	return captureTrigger.ReplaceAllString(restrictLine.ReplaceAllString(string(out), ""), "")
}

func psqlOut(t *testing.T, c *pgtest.Cluster, db, sql string) string {
	t.Helper()
	out, err := c.Psql(context.Background(), db, sql)
	if err != nil {
		t.Fatalf("%s: %v\n%s", sql, err, out)
	}
	return out
}

// runAsRole connects as role and runs each statement in a transaction of its own (rolled back,
// so both sides see the same data in every statement), returning "ok <first value>" or
// "error <SQLSTATE>" for each.
func runAsRole(t *testing.T, c *pgtest.Cluster, db, role string, stmts []string) []string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, strings.Replace(c.DSN(db), "user="+c.User, "user="+role, 1))
	if err != nil {
		t.Fatalf("connect as %s: %v", role, err)
	}
	defer conn.Close(ctx)
	out := make([]string, len(stmts))
	for i, st := range stmts {
		tx, err := conn.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		err = tx.QueryRow(ctx, st, pgx.QueryExecModeSimpleProtocol).Scan(&v)
		var pgErr *pgconn.PgError
		switch {
		case errors.As(err, &pgErr):
			out[i] = "error " + pgErr.Code
		case errors.Is(err, pgx.ErrNoRows):
			out[i] = "ok (no rows)"
		case err != nil:
			t.Fatalf("as %s, %s: %v", role, st, err)
		default:
			out[i] = fmt.Sprintf("ok %v", v)
		}
		_ = tx.Rollback(ctx)
	}
	return out
}

// lineDiff shows the lines only one side has (as many times as they are missing).
func lineDiff(a, b string) string {
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for l, n := range count {
		for ; n > 0; n-- {
			out = append(out, "- "+l)
		}
		for ; n < 0; n++ {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}
