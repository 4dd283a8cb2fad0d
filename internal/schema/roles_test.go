package schema

import (
	"errors"
	"strings"
	"testing"
)

func TestFilterRoleStatement(t *testing.T) {
	create := map[string]bool{"app_user": true, "Odd Role": true}
	byName := map[string]Role{
		"app_user": {Name: "app_user"}, "Odd Role": {Name: "Odd Role"}, "app_rw": {Name: "app_rw", Exists: true},
		"reporting": {Name: "reporting", Exists: true}, "pg_read_all_stats": {Name: "pg_read_all_stats", Predefined: true, Exists: true},
	}
	exists := func(n string) bool { return create[n] || byName[n].Exists }
	cases := []struct {
		in, want string
		err      bool
	}{
		{in: "SET default_transaction_read_only = off;", want: "SET default_transaction_read_only = off;"},
		{in: "CREATE ROLE app_user;", want: "CREATE ROLE app_user;"},
		{in: `CREATE ROLE "Odd Role";`, want: `CREATE ROLE "Odd Role";`},
		{in: "CREATE ROLE postgres;"},                                                   // not to create (bootstrap, or existing)
		{in: "CREATE ROLE unrelated;"},                                                  // not referenced
		{in: "ALTER ROLE reporting WITH NOSUPERUSER LOGIN PASSWORD 'SCRAM-SHA-256$x';"}, // exists: left alone
		{in: "ALTER ROLE app_user WITH LOGIN PASSWORD 'md5abc';", want: "ALTER ROLE app_user WITH LOGIN PASSWORD 'md5abc';"},
		{in: "ALTER ROLE app_user SET work_mem TO '64MB';", want: "ALTER ROLE app_user SET work_mem TO '64MB';"},
		{in: "ALTER ROLE app_user IN DATABASE other SET work_mem TO '1MB';"}, // the database step's, or another database's
		{in: "COMMENT ON ROLE app_user IS 'x y';", want: "COMMENT ON ROLE app_user IS 'x y';"},
		{in: "SECURITY LABEL FOR dummy ON ROLE app_user IS 'classified';", want: "SECURITY LABEL FOR dummy ON ROLE app_user IS 'classified';"},
		{in: "GRANT app_rw TO app_user GRANTED BY postgres;", want: "GRANT app_rw TO app_user;"}, // no grantor postgres on the target
		{in: "GRANT app_rw TO app_user WITH ADMIN OPTION GRANTED BY reporting;", want: "GRANT app_rw TO app_user WITH ADMIN OPTION GRANTED BY reporting;"},
		{in: "GRANT pg_read_all_stats TO app_user GRANTED BY app_rw;", want: "GRANT pg_read_all_stats TO app_user GRANTED BY app_rw;"},
		{in: "GRANT app_rw TO reporting GRANTED BY postgres;"}, // both exist on the target: left alone
		{in: "GRANT app_rw TO unrelated;"},
		{in: "GRANT SET ON PARAMETER work_mem TO app_user;", want: "GRANT SET ON PARAMETER work_mem TO app_user;"},
		{in: "GRANT SET ON PARAMETER work_mem TO reporting;"},
		{in: "DROP ROLE app_user;", err: true},
		{in: "CREATE TABLE t (id int);", err: true},
	}
	for _, c := range cases {
		got, _, err := filterRoleStatement(c.in, create, byName, exists)
		if c.err {
			if !errors.Is(err, errUnknownRoleStatement) {
				t.Errorf("%q: want an unknown-statement error, got %q, %v", c.in, got, err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("%q: got %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestWithoutSuperuserDefaults(t *testing.T) {
	in := "ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'NOSUPERUSER';"
	want := "ALTER ROLE app WITH INHERIT NOCREATEROLE NOCREATEDB LOGIN PASSWORD 'NOSUPERUSER';"
	if got := withoutSuperuserDefaults(in); got != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
	if got := withoutSuperuserDefaults("ALTER ROLE app SET work_mem TO '1MB';"); got != "ALTER ROLE app SET work_mem TO '1MB';" {
		t.Errorf("settings changed: %q", got)
	}
}

func TestRedactPasswords(t *testing.T) {
	got := RedactPasswords("ALTER ROLE a WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc==$x:y' VALID UNTIL 'infinity';")
	if strings.Contains(got, "SCRAM") || !strings.Contains(got, "VALID UNTIL 'infinity'") {
		t.Errorf("got %q", got)
	}
	e := &StatementError{Object: "ROLES", Statement: "ALTER ROLE a PASSWORD 'md5secret';", Err: errors.New("boom")}
	if strings.Contains(e.Error(), "md5secret") {
		t.Errorf("statement error shows the verifier: %s", e.Error())
	}
}

// A pg_dump --create script as pg_dump 15.14+ writes it: \restrict pairs around each \connect.
const createScript = `--
-- PostgreSQL database dump
--
\restrict KEY1
SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);
--
-- Name: "Shop DB"; Type: DATABASE; Schema: -; Owner: app_owner
--
CREATE DATABASE "Shop DB" WITH TEMPLATE = template0 ENCODING = 'UTF8';
ALTER DATABASE "Shop DB" OWNER TO app_owner;
\unrestrict KEY1
\connect -reuse-previous=on "dbname='Shop DB'"
\restrict KEY1
SET statement_timeout = 0;
SELECT pg_catalog.set_config('search_path', '', false);
--
-- Name: DATABASE "Shop DB"; Type: COMMENT; Schema: -; Owner: app_owner
--
COMMENT ON DATABASE "Shop DB" IS 'the shop';
--
-- Name: "Shop DB"; Type: DATABASE PROPERTIES; Schema: -; Owner: app_owner
--
ALTER DATABASE "Shop DB" SET search_path TO 'app', 'public';
ALTER ROLE app_user IN DATABASE "Shop DB" SET statement_timeout TO '5s';
ALTER ROLE gone IN DATABASE "Shop DB" SET work_mem TO '1MB';
--
-- Name: DATABASE "Shop DB"; Type: ACL; Schema: -; Owner: app_owner
--
REVOKE CONNECT,TEMPORARY ON DATABASE "Shop DB" FROM PUBLIC;
GRANT CONNECT ON DATABASE "Shop DB" TO app_user;
\unrestrict KEY1
`

func TestPlanDatabase(t *testing.T) {
	if _, err := Parse(createScript); !errors.Is(err, ErrMetaCommand) {
		t.Fatalf("Parse must refuse \\connect, got %v", err)
	}
	s, err := ParseDatabase(createScript)
	if err != nil {
		t.Fatal(err)
	}
	p, err := PlanDatabase(s, "Shop DB", "shop", func(n string) bool { return n != "gone" })
	if err != nil {
		t.Fatal(err)
	}
	p.dropOwnerChangeTo("postgres") // not the owner in the script: kept
	if len(p.Preamble) != 2 {
		t.Errorf("preamble %q", p.Preamble)
	}
	want := []string{
		`ALTER DATABASE "shop" OWNER TO app_owner;`,
		"SET statement_timeout = 0;", "SELECT pg_catalog.set_config('search_path', '', false);",
		`COMMENT ON DATABASE "shop" IS 'the shop';`,
		`ALTER DATABASE "shop" SET search_path TO 'app', 'public';`,
		`ALTER ROLE app_user IN DATABASE "shop" SET statement_timeout TO '5s';`,
		`REVOKE CONNECT,TEMPORARY ON DATABASE "shop" FROM PUBLIC;`,
		`GRANT CONNECT ON DATABASE "shop" TO app_user;`,
	}
	if strings.Join(p.Statements, "\n") != strings.Join(want, "\n") {
		t.Errorf("statements:\n%s\nwant:\n%s", strings.Join(p.Statements, "\n"), strings.Join(want, "\n"))
	}
	if p.Settings != 2 || len(p.Dropped) != 1 || !strings.Contains(p.Dropped[0], "gone") {
		t.Errorf("settings %d, dropped %v", p.Settings, p.Dropped)
	}
	p.dropOwnerChangeTo("app_owner")
	for _, st := range p.Statements {
		if strings.Contains(st, "OWNER TO") {
			t.Errorf("owner change to the current owner kept: %s", st)
		}
	}
	// A statement naming another database, or of an unknown form, stops the plan.
	for _, bad := range []string{`ALTER DATABASE other SET x TO 1;`, `DROP DATABASE "Shop DB";`} {
		s, err := ParseDatabase("--\n-- Name: x; Type: DATABASE PROPERTIES; Schema: -; Owner: a\n--\n" + bad + "\n")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := PlanDatabase(s, "Shop DB", "shop", func(string) bool { return true }); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
	// \encoding after \connect (a SQL_ASCII database, found by the torture harness) is dropped
	// like \connect; with anything but an encoding name it is refused.
	if _, err := ParseDatabase("\\restrict K\nSELECT 1;\n\\unrestrict K\n\\connect x\n\\encoding SQL_ASCII\n\\restrict K\nSELECT 2;\n\\unrestrict K\n"); err != nil {
		t.Errorf("\\encoding after \\connect refused: %v", err)
	}
	if _, err := ParseDatabase("\\encoding SQL_ASCII; \\! id\n"); !errors.Is(err, ErrMetaCommand) {
		t.Errorf("\\encoding with a shell command accepted: %v", err)
	}
	// Meta-commands other than \connect are still refused, also between \unrestrict and \restrict.
	if _, err := ParseDatabase("\\restrict K\nSELECT 1;\n\\unrestrict K\n\\! echo pwned\n"); !errors.Is(err, ErrMetaCommand) {
		t.Errorf("\\! accepted: %v", err)
	}
	if _, err := ParseDatabase("\\restrict K\n\\connect x\n\\unrestrict K\n"); !errors.Is(err, ErrMetaCommand) {
		t.Errorf("\\connect inside \\restrict accepted: %v", err)
	}
}
