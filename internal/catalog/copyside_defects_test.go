package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// TestCopysideCatalog runs the catalog regressions of the copy-side defects against one cluster.
func TestCopysideCatalog(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	t.Run("IdentityAsPostgres", func(t *testing.T) { testIdentityAsPostgres(t, c) })
	t.Run("KeyColumnsWithoutInclude", func(t *testing.T) { testKeyColumnsWithoutInclude(t, c) })
	t.Run("TypesQualifiedAndTextOnly", func(t *testing.T) { testTypesQualifiedAndTextOnly(t, c) })
	t.Run("RowSecurity", func(t *testing.T) { testRowSecurity(t, c) })
	t.Run("SequenceState", func(t *testing.T) { testSequenceState(t, c) })
}

// identityCases are tables whose replica identity PostgreSQL decides in different ways.
const identityCases = `
CREATE TABLE pk (id int PRIMARY KEY, v text);
CREATE TABLE pk_deferrable (id int PRIMARY KEY DEFERRABLE, v text);
CREATE TABLE pk_deferred (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text);
CREATE TABLE pk_deferrable_full (id int PRIMARY KEY DEFERRABLE, v text);
ALTER TABLE pk_deferrable_full REPLICA IDENTITY FULL;
CREATE TABLE pk_include (id int, extra text, v text, PRIMARY KEY (id) INCLUDE (extra));
CREATE TABLE uniq_nullable (a int UNIQUE, v text);
CREATE TABLE uniq_partial (a int NOT NULL, v text);
CREATE UNIQUE INDEX uniq_partial_a ON uniq_partial (a) WHERE a > 0;
CREATE TABLE uniq_deferrable (a int NOT NULL, v text, CONSTRAINT ud UNIQUE (a) DEFERRABLE);
CREATE TABLE ident_index (a int NOT NULL, b int NOT NULL, v text);
CREATE UNIQUE INDEX ident_index_ba ON ident_index (b, a) INCLUDE (v);
ALTER TABLE ident_index REPLICA IDENTITY USING INDEX ident_index_ba;
CREATE TABLE ident_index_dropped (a int NOT NULL, v text);
CREATE UNIQUE INDEX ident_index_dropped_a ON ident_index_dropped (a);
ALTER TABLE ident_index_dropped REPLICA IDENTITY USING INDEX ident_index_dropped_a;
DROP INDEX ident_index_dropped_a;
CREATE TABLE ident_nothing (id int PRIMARY KEY, v text);
ALTER TABLE ident_nothing REPLICA IDENTITY NOTHING;
CREATE TABLE pk_deferrable_ident_index (id int PRIMARY KEY DEFERRABLE, a int NOT NULL, v text);
CREATE UNIQUE INDEX pdi_a ON pk_deferrable_ident_index (a);
ALTER TABLE pk_deferrable_ident_index REPLICA IDENTITY USING INDEX pdi_a;
CREATE TABLE full_nokey (v text);
ALTER TABLE full_nokey REPLICA IDENTITY FULL;
`

// testIdentityAsPostgres checks HasUsableIdentity against PostgreSQL itself: every table is
// published, and an UPDATE and a DELETE (rolled back) either work or fail with 55000.
func testIdentityAsPostgres(t *testing.T, c *pgtest.Cluster) {
	ctx := context.Background()
	_, conn := c.NewDB(t, "ident")
	if _, err := conn.Exec(ctx, identityCases); err != nil {
		t.Fatal(err)
	}
	tables, err := Tables(ctx, conn, config.TableFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `CREATE PUBLICATION everything FOR ALL TABLES`); err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		var pgSays error
		for _, stmt := range []string{"UPDATE " + tb.ID.Sanitize() + " SET v = v", "DELETE FROM " + tb.ID.Sanitize()} {
			// PostgreSQL checks the identity when the statement starts (CheckValidResultRel),
			// with or without rows to change.
			err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
				_, err := tx.Exec(ctx, stmt)
				if err == nil {
					return errRollback
				}
				return err
			})
			var pe *pgconn.PgError
			switch {
			case errors.Is(err, errRollback):
			case errors.As(err, &pe) && pe.Code == "55000":
				pgSays = err
			default:
				t.Fatalf("%s: %s: %v", tb.ID, stmt, err)
			}
		}
		if got, want := tb.HasUsableIdentity(), pgSays == nil; got != want {
			t.Errorf("%s: HasUsableIdentity() = %v, but PostgreSQL says %v (error %v); issue %q", tb.ID, got, want, pgSays, tb.IdentityIssue)
		}
		if !tb.HasUsableIdentity() && tb.IdentityIssue == "" {
			t.Errorf("%s: no usable identity and no IdentityIssue", tb.ID)
		}
	}
	by := byName(tables)
	if is := by["pk_deferrable"].IdentityIssue; !strings.Contains(is, "DEFERRABLE") {
		t.Errorf("pk_deferrable: issue %q does not name the deferrable key", is)
	}
	if k := by["pk_deferrable"].PrimaryKey; len(k) != 1 || k[0] != "id" {
		t.Errorf("a deferrable primary key is still the table's key for comparisons: %v", k)
	}
	if k := by["ident_index"].IdentityKey; strings.Join(k, ",") != "b,a" {
		t.Errorf("ident_index identity key %v, want b,a (without the INCLUDE column)", k)
	}
	if k := by["pk_deferrable_ident_index"].IdentityKey; strings.Join(k, ",") != "a" {
		t.Errorf("pk_deferrable_ident_index identity key %v, want a", k)
	}
}

var errRollback = errors.New("rollback")

func byName(tables []Table) map[string]Table {
	out := map[string]Table{}
	for _, tb := range tables {
		out[tb.ID.Name] = tb
	}
	return out
}

// testKeyColumnsWithoutInclude: a primary key's INCLUDE columns are not key columns.
func testKeyColumnsWithoutInclude(t *testing.T, c *pgtest.Cluster) {
	ctx := context.Background()
	_, conn := c.NewDB(t, "include")
	if _, err := conn.Exec(ctx, `CREATE TABLE t (a int, b text, c int, note text, PRIMARY KEY (b, a) INCLUDE (c, note))`); err != nil {
		t.Fatal(err)
	}
	tables, err := Tables(ctx, conn, config.TableFilter{})
	if err != nil {
		t.Fatal(err)
	}
	tb := tables[0]
	if got := strings.Join(tb.PrimaryKey, ","); got != "b,a" {
		t.Errorf("primary key %s, want b,a", got)
	}
	if got := strings.Join(tb.IdentityKey, ","); got != "b,a" {
		t.Errorf("identity key %s, want b,a", got)
	}
}

// testTypesQualifiedAndTextOnly: column types are rendered schema-qualified whatever the
// session's search_path, and TextOnly marks types without a portable binary COPY form.
func testTypesQualifiedAndTextOnly(t *testing.T, c *pgtest.Cluster) {
	ctx := context.Background()
	_, conn := c.NewDB(t, "types")
	_, err := conn.Exec(ctx, `
		CREATE TYPE mood AS ENUM ('sad', 'ok');
		CREATE SCHEMA "My Schema";
		CREATE TYPE "My Schema"."Pair" AS (a int, b text);
		CREATE DOMAIN rc AS regclass;
		CREATE TABLE t (
		  i int, n numeric(12,2), v varchar(40)[], m mood, ma mood[], p "My Schema"."Pair", pa "My Schema"."Pair"[],
		  d rc, j jsonb, ts tsvector, u uuid[],
		  r1 regclass, r2 regtype, r3 regproc, r4 regprocedure, r5 regoper, r6 regoperator, r7 regconfig,
		  r8 regdictionary, r9 regnamespace, r10 regrole, r11 regcollation, ra regclass[],
		  acl aclitem, acls aclitem[], ns pg_namespace, o oid)`)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"public, \"My Schema\"", "pg_catalog"} {
		if _, err := conn.Exec(ctx, "SET search_path = "+path); err != nil {
			t.Fatal(err)
		}
		tables, err := Tables(ctx, conn, config.TableFilter{})
		if err != nil {
			t.Fatal(err)
		}
		cols := map[string]Column{}
		for _, col := range tables[0].Columns {
			cols[col.Name] = col
		}
		wantType := map[string]string{"i": "integer", "n": "numeric(12,2)", "v": "character varying(40)[]",
			"m": "public.mood", "ma": "public.mood[]", "p": `"My Schema"."Pair"`, "pa": `"My Schema"."Pair"[]`,
			"d": "public.rc", "j": "jsonb", "r1": "regclass", "ra": "regclass[]"}
		for name, want := range wantType {
			if got := cols[name].Type; got != want {
				t.Errorf("search_path %s: column %s type %q, want %q", path, name, got, want)
			}
		}
		binary := map[string]bool{"i": true, "n": true, "v": true, "j": true, "ts": true, "u": true, "o": true}
		for name, col := range cols {
			if col.TextOnly == binary[name] {
				t.Errorf("column %s (%s): TextOnly = %v", name, col.Type, col.TextOnly)
			}
		}
	}
}

// testRowSecurity: RowSecurityApplies says whether the current user's reads would go through
// the table's policies, as PostgreSQL decides it.
func testRowSecurity(t *testing.T, c *pgtest.Cluster) {
	ctx := context.Background()
	_, conn := c.NewDB(t, "rls")
	_, err := conn.Exec(ctx, `
		CREATE ROLE rls_owner; CREATE ROLE rls_reader; CREATE ROLE rls_bypass BYPASSRLS;
		CREATE TABLE forced (id int PRIMARY KEY); CREATE TABLE enabled (id int PRIMARY KEY); CREATE TABLE plain (id int PRIMARY KEY);
		ALTER TABLE forced OWNER TO rls_owner; ALTER TABLE enabled OWNER TO rls_owner; ALTER TABLE plain OWNER TO rls_owner;
		ALTER TABLE forced ENABLE ROW LEVEL SECURITY; ALTER TABLE forced FORCE ROW LEVEL SECURITY;
		ALTER TABLE enabled ENABLE ROW LEVEL SECURITY;
		GRANT SELECT ON ALL TABLES IN SCHEMA public TO rls_reader, rls_bypass;`)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]map[string]bool{ // role → table → policies apply
		"postgres":   {"forced": false, "enabled": false, "plain": false},
		"rls_owner":  {"forced": true, "enabled": false, "plain": false},
		"rls_reader": {"forced": true, "enabled": true, "plain": false},
		"rls_bypass": {"forced": false, "enabled": false, "plain": false},
	}
	for role, tables := range want {
		if _, err := conn.Exec(ctx, "SET ROLE "+role); err != nil {
			t.Fatal(err)
		}
		got, err := Tables(ctx, conn, config.TableFilter{})
		if err != nil {
			t.Fatal(err)
		}
		for _, tb := range got {
			if tb.RowSecurityApplies != tables[tb.ID.Name] {
				t.Errorf("as %s: %s RowSecurityApplies = %v", role, tb.ID.Name, tb.RowSecurityApplies)
			}
			if tb.Owner != "rls_owner" {
				t.Errorf("%s owner %q", tb.ID.Name, tb.Owner)
			}
		}
	}
	if _, err := conn.Exec(ctx, "RESET ROLE"); err != nil {
		t.Fatal(err)
	}
}

// testSequenceState: last_value and is_called come from the sequence itself, so a sequence
// set with setval(s, v, false) reads as (v, false), not as its start value.
func testSequenceState(t *testing.T, c *pgtest.Cluster) {
	ctx := context.Background()
	_, conn := c.NewDB(t, "seqs")
	_, err := conn.Exec(ctx, `
		CREATE SEQUENCE not_called; SELECT setval('not_called', 101, false);
		CREATE SEQUENCE called START 5; SELECT nextval('called'); SELECT nextval('called');
		CREATE SEQUENCE fresh START 100;
		CREATE SCHEMA "Odd"; CREATE SEQUENCE "Odd"."Seq" INCREMENT -1 START -10; SELECT setval('"Odd"."Seq"', -20, false);`)
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := Sequences(ctx, conn, config.TableFilter{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[pgtypes.TableID]Sequence{}
	for _, s := range seqs {
		got[s.ID] = s
	}
	want := map[pgtypes.TableID]Sequence{
		{Schema: "public", Name: "not_called"}: {LastValue: 101, IsCalled: false},
		{Schema: "public", Name: "called"}:     {LastValue: 6, IsCalled: true},
		{Schema: "public", Name: "fresh"}:      {LastValue: 100, IsCalled: false},
		{Schema: "Odd", Name: "Seq"}:           {LastValue: -20, IsCalled: false},
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok || g.LastValue != w.LastValue || g.IsCalled != w.IsCalled {
			t.Errorf("%s: got %+v, want last_value %d is_called %v", id, g, w.LastValue, w.IsCalled)
		}
	}
	// A sequence the user may not read is an error naming it, never a guessed value.
	if _, err := conn.Exec(ctx, `CREATE ROLE seq_nobody; GRANT USAGE ON SCHEMA "Odd" TO seq_nobody; SET ROLE seq_nobody`); err != nil {
		t.Fatal(err)
	}
	defer conn.Exec(ctx, "RESET ROLE")
	_, err = Sequences(ctx, conn, config.TableFilter{})
	if err == nil || !strings.Contains(err.Error(), "SELECT") {
		t.Errorf("unreadable sequences: error %v, want one naming the sequence and the missing SELECT privilege", err)
	}
}
