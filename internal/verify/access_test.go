package verify

import (
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// accessSchema is set up identically on both sides; accessInject then changes the target.
const accessSchema = `
CREATE ROLE acc_owner NOLOGIN; CREATE ROLE acc_app LOGIN; CREATE ROLE acc_ro NOLOGIN;
ALTER ROLE acc_app SET work_mem = '32MB';
ALTER DATABASE access SET search_path = app, public;
ALTER ROLE acc_app IN DATABASE access SET statement_timeout = '5s';
CREATE SCHEMA app AUTHORIZATION acc_owner;
GRANT USAGE ON SCHEMA app TO acc_app, acc_ro;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
CREATE TABLE app.t (id int PRIMARY KEY, owner_name text, v int);
CREATE TABLE app.log (at int, msg text);
ALTER TABLE app.log REPLICA IDENTITY FULL;
ALTER TABLE app.t OWNER TO acc_owner;
GRANT SELECT, INSERT ON app.t TO acc_app;
GRANT SELECT (v) ON app.t TO acc_ro;
ALTER TABLE app.t ENABLE ROW LEVEL SECURITY;
CREATE POLICY mine ON app.t TO acc_app USING (owner_name = current_user);
CREATE FUNCTION app.f() RETURNS int LANGUAGE sql AS 'SELECT 1';
REVOKE EXECUTE ON FUNCTION app.f() FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE acc_owner IN SCHEMA app GRANT SELECT ON TABLES TO acc_ro;
SELECT lo_from_bytea(5150, 'contents');
ALTER LARGE OBJECT 5150 OWNER TO acc_owner;`

const accessInject = `
REVOKE INSERT ON app.t FROM acc_app;
REVOKE SELECT (v) ON app.t FROM acc_ro;
ALTER TABLE app.t OWNER TO postgres;
DROP POLICY mine ON app.t;
ALTER TABLE app.t FORCE ROW LEVEL SECURITY;
ALTER TABLE app.log REPLICA IDENTITY DEFAULT;
GRANT EXECUTE ON FUNCTION app.f() TO PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE acc_owner IN SCHEMA app REVOKE SELECT ON TABLES FROM acc_ro;
ALTER DATABASE access RESET search_path;
ALTER ROLE acc_app IN DATABASE access SET statement_timeout = '9s';
ALTER ROLE acc_app SET work_mem = '1MB';
GRANT CREATE ON SCHEMA public TO PUBLIC;
SELECT lo_put(5150, 0, 'C');`

// TestSchemaDiffAccess: verify's schema diff names every difference in who may do what — a
// revoked grant, a column privilege, an owner, a policy, FORCE ROW LEVEL SECURITY, a replica
// identity, default privileges, database and role settings, schema public's privileges, a
// large object's contents. Before, none of them was compared: the target was IDENTICAL.
func TestSchemaDiffAccess(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newPairEnv(t, src, dst, "access", accessSchema)
	if rep := e.run(Options{Schema: true}); rep.Schema == nil || len(rep.Schema.Diffs) != 0 || rep.ExitCode() != 0 {
		t.Fatalf("identical sides differ: %+v", rep.Schema)
	}
	e.target(accessInject)
	rep := e.run(Options{Schema: true})
	if rep.ExitCode() != 1 {
		t.Errorf("exit code %d, want 1", rep.ExitCode())
	}
	got := map[string]bool{}
	for _, d := range rep.Schema.Diffs {
		got[d.Kind+" "+d.Name] = true
	}
	for _, want := range []string{
		"privileges table app.t", "privileges column app.t.v", "owner table app.t", "policy app.t.mine", "row security app.t",
		"replica identity app.log", "privileges function app.f()", "default privileges acc_owner in app on tables",
		"setting database", "setting role acc_app in database", "role acc_app", "privileges schema public", "large object 5150",
	} {
		if !got[want] {
			t.Errorf("difference %q not reported; got %v", want, got)
		}
	}
	var b strings.Builder
	_ = rep.WriteText(&b, 50)
	t.Logf("%s", b.String())
}
