package sqlparse

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestJudgeDDL: each kind the applier follows is accepted with what it must check or keep in
// step, and each kind it cannot prove safe is refused with its reason.
func TestJudgeDDL(t *testing.T) {
	for _, tc := range []struct {
		sql    string
		refuse string // a word of the reason; "" = accepted
		want   string // fmt of the accepted statements' interesting fields
	}{
		{sql: `ALTER TABLE t ADD COLUMN c int NOT NULL DEFAULT 7`, want: "ALTER TABLE||[]|[] [] [] []"},
		{sql: `ALTER TABLE t ADD COLUMN c text DEFAULT 'x'`, want: "ALTER TABLE||[]|[] [] [] []"},
		{sql: `ALTER TABLE t ADD COLUMN c timestamptz DEFAULT 'now'`, want: "ALTER TABLE||[{t c}]|[] [] [] []"},
		{sql: `ALTER TABLE s.t ADD COLUMN c timestamptz DEFAULT now()`, want: "ALTER TABLE||[{s.t c}]|[] [] [] []"},
		{sql: `ALTER TABLE t ADD COLUMN c int DEFAULT '5'::int`, want: "ALTER TABLE||[]|[] [] [] []"},
		{sql: `ALTER TABLE t ADD COLUMN id bigserial`, refuse: "physical order"},
		{sql: `ALTER TABLE t ADD COLUMN id int GENERATED ALWAYS AS IDENTITY`, refuse: "physical order"},
		{sql: `ALTER TABLE t DROP COLUMN c, RENAME COLUMN a TO b`, refuse: "does not parse"},
		{sql: `ALTER TABLE t DROP COLUMN c`, want: "ALTER TABLE||[]|[] [] [] []"},
		{sql: `ALTER TABLE t RENAME COLUMN a TO b`, want: "ALTER COLUMN RENAME||[]|[] [] [] []"},
		{sql: `ALTER TABLE t ALTER COLUMN v TYPE bigint`, want: "ALTER TABLE||[]|[] [] [] []"},
		{sql: `ALTER TABLE t ALTER COLUMN v TYPE int USING length(v) * 2`, want: "ALTER TABLE||[]|[length/1] [*] [] []"},
		{sql: `ALTER TABLE t ALTER v SET DEFAULT 3, ALTER v SET NOT NULL, ALTER w DROP NOT NULL`, want: "ALTER TABLE||[]|[] [] [] []"},
		{sql: `ALTER TABLE t ADD CONSTRAINT c CHECK (v > 0), ADD UNIQUE (w), ADD FOREIGN KEY (x) REFERENCES u (id)`, want: "ALTER TABLE||[]|[] [] [] []"},
		{sql: `ALTER TABLE t DROP CONSTRAINT c`, want: "ALTER TABLE||[]|[] [] [] []"},
		{sql: `CREATE INDEX CONCURRENTLY i ON t (v)`, want: "CREATE INDEX|CREATE INDEX i ON t USING btree (v)|[]|[] [] [] []"},
		{sql: `DROP INDEX CONCURRENTLY i`, want: "DROP INDEX|DROP INDEX i|[]|[] [] [] []"},
		{sql: `CREATE UNIQUE INDEX i ON t (v)`, want: "CREATE INDEX||[]|[] [] [] []"},
		{sql: `ALTER TABLE t RENAME TO u`, want: "ALTER TABLE RENAME||[]|[] [] [] [{t u}]"},
		{sql: `ALTER TABLE s.t SET SCHEMA r`, want: "ALTER TABLE SET SCHEMA||[]|[] [] [] [{s.t r.}]"},
		{sql: `DROP TABLE t, s.u CASCADE`, want: "DROP TABLE||[]|[] [] [t s.u] []"},
		{sql: `CREATE TYPE mood AS ENUM ('a', 'b'); ALTER TYPE mood ADD VALUE 'c'`, want: "CREATE TYPE||[]|[] [] [] []; ALTER TYPE||[]|[] [] [] []"},
		{sql: `CREATE OR REPLACE VIEW v AS SELECT 1`, want: "CREATE VIEW||[]|[] [] [] []"},
		{sql: `CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'`, want: "CREATE FUNCTION||[]|[] [] [] []"},
		{sql: `CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()`, want: "CREATE TRIGGER||[]|[] [] [] []"},
		{sql: `LOCK TABLE t; ALTER TABLE t ADD COLUMN c int`, want: "ALTER TABLE||[]|[] [] [] []"},
		{sql: `ALTER TABLE t ADD COLUMN c int; UPDATE t SET c = 1`, refuse: "mixes"},
		{sql: `DO $$BEGIN EXECUTE 'ALTER TABLE t ADD c int'; END$$`, refuse: "DO block"},
		{sql: `CALL p()`, refuse: "CALL"},
		{sql: `SELECT f()`, refuse: "function called from a query"},
		{sql: `SELECT * FROM t`, refuse: "mixes"},
		{sql: `BEGIN; ALTER TABLE t ADD c int; COMMIT`, refuse: "transaction control"},
		{sql: `SET search_path = s; SET ROLE app; ALTER TABLE t ADD c int`, want: "ALTER TABLE||[]|[] [] [] []"},
		{sql: `ALTER TABLE t ADD c int; SET ROLE app`, refuse: "SET"},
		{sql: `SET statement_timeout = 0; ALTER TABLE t ADD c int`, refuse: "SET"},
		{sql: `SET ROLE app`, refuse: "no schema change"},
		{sql: `ALTER TABLE t DISABLE TRIGGER pgshift_capture_truncate`, want: ""},
		{sql: `ALTER TABLE t DISABLE TRIGGER pgshift_capture_truncate, ADD COLUMN c int`, want: "ALTER TABLE||[]|[] [] [] []"},
		{sql: `CREATE TABLE n (id int)`, want: "CREATE TABLE||[]|[] [] [] []"},
		{sql: `CREATE TEMP TABLE n (id int)`, refuse: "temporary"},
		{sql: `SELECT 1 AS a INTO n`, refuse: "SELECT INTO"},
		{sql: `CREATE TABLE n AS EXECUTE q`, refuse: "EXECUTE"},
		{sql: `CREATE SCHEMA s CREATE TABLE n (id int)`, refuse: "inside CREATE SCHEMA"},
		{sql: `ALTER TABLE t ENABLE ALWAYS TRIGGER tr`, refuse: "ENABLE ALWAYS"},
		{sql: `ALTER TABLE t SET UNLOGGED`, refuse: "unlogged"},
		{sql: `ALTER TABLE p DETACH PARTITION c CONCURRENTLY`, refuse: "CHECK constraint"},
		{sql: `ALTER TABLE p DETACH PARTITION c FINALIZE`, refuse: "CONCURRENTLY (or FINALIZE)"},
		{sql: `DROP SCHEMA s CASCADE`, refuse: "CASCADE"},
		{sql: `ALTER SCHEMA s RENAME TO r`, refuse: "schema"},
		{sql: `VACUUM t`, refuse: "not a kind"},
		{sql: `CREATE PUBLICATION p FOR ALL TABLES`, want: ""},
		{sql: `CREATE ROLE r LOGIN; GRANT SELECT ON t TO r`, want: "GRANT||[]|[] [] [] []"},
		{sql: `ALTER PUBLICATION p SET (publish_via_partition_root = true); GRANT SELECT ON t TO r; DROP PUBLICATION q`, want: "GRANT||[]|[] [] [] []"},
	} {
		got, err := JudgeDDL(tc.sql)
		if tc.refuse != "" {
			var re *RefusedError
			if !errors.As(err, &re) || !strings.Contains(re.Reason, tc.refuse) || re.Fix == "" {
				t.Errorf("%s: got %v, %v; want refused for %q with a fix", tc.sql, got, err, tc.refuse)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: refused: %v", tc.sql, err)
			continue
		}
		parts := make([]string, len(got))
		for i, d := range got {
			sql := ""
			if d.Concurrently {
				sql = d.SQL
			}
			parts[i] = fmt.Sprintf("%s|%s|%v|%v %v %v %v", d.Kind, sql, d.CheckAdded, d.Functions, d.Operators, d.DropsTables, d.RenamesTables)
		}
		if s := strings.Join(parts, "; "); s != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.sql, s, tc.want)
		}
	}
}

// TestJudgeDDLKeepsEachStatementsText: several statements of one query string run one by one,
// each with its own text.
func TestJudgeDDLKeepsEachStatementsText(t *testing.T) {
	got, err := JudgeDDL("ALTER TABLE t ADD c int ;\n  CREATE INDEX ON t (c);")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].SQL != "ALTER TABLE t ADD c int" || got[1].SQL != "CREATE INDEX ON t (c)" {
		t.Fatalf("got %+v", got)
	}
}

// TestJudgeDDLRelation: the relation a statement changes is named, so the applier can skip one
// the target does not have.
func TestJudgeDDLRelation(t *testing.T) {
	for sql, want := range map[string]string{
		`ALTER TABLE s.t ADD COLUMN c int`: "s.t",
		`CREATE INDEX i ON t (v)`:          "t",
		`CREATE TRIGGER tr AFTER INSERT ON s.t FOR EACH ROW EXECUTE FUNCTION f()`: "s.t",
		`ALTER TABLE t RENAME COLUMN a TO b`:                                      "t",
		`ALTER TABLE t SET SCHEMA r`:                                              "t",
		`CREATE TYPE x AS ENUM ('a')`:                                             "",
	} {
		got, err := JudgeDDL(sql)
		if err != nil || len(got) != 1 {
			t.Fatalf("%s: %v %v", sql, got, err)
		}
		name := ""
		if got[0].Relation != nil {
			name = got[0].Relation.String()
		}
		if name != want {
			t.Errorf("%s: relation %q, want %q", sql, name, want)
		}
	}
}

// TestRedact: a query string that may carry a secret is shown with its constants replaced; any
// other is shown as it is.
func TestRedact(t *testing.T) {
	for _, sql := range []string{
		`CREATE ROLE app LOGIN PASSWORD 'hunter2'; GRANT SELECT ON t TO app`,
		`ALTER USER app WITH PASSWORD 'hunter2'`,
		`CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'u', password 'hunter2')`,
		`ALTER SUBSCRIPTION s CONNECTION 'host=h password=hunter2'`,
		`CREATE ROLE app PASSWORD 'hunter2' unparsable (`,
	} {
		if got := Redact(sql); strings.Contains(got, "hunter2") {
			t.Errorf("Redact(%q) = %q: the password is in it", sql, got)
		}
	}
	if sql := `ALTER TABLE t ADD COLUMN c text DEFAULT 'x'`; Redact(sql) != sql {
		t.Errorf("Redact changed %q: %q", sql, Redact(sql))
	}
}

// TestJudgeDDLUsingProbes: every USING expression of an ALTER COLUMN TYPE is rendered, with
// the new type and collation, as a stored generated column of the probe table, for the
// applier to let the target's own rule judge its immutability.
func TestJudgeDDLUsingProbes(t *testing.T) {
	for sql, want := range map[string]string{
		`ALTER TABLE t ALTER COLUMN v TYPE int USING v + 0`: "ALTER TABLE pg_temp.pgshift_using_probe ADD COLUMN pgshift_using_probe int GENERATED ALWAYS AS (v + 0) STORED",
		`ALTER TABLE s.t ALTER v TYPE text COLLATE "C" USING lower(v::text), ALTER w TYPE numeric(10,2) USING w * 1.5`: "ALTER TABLE pg_temp.pgshift_using_probe ADD COLUMN pgshift_using_probe text GENERATED ALWAYS AS (lower(v::text)) STORED COLLATE \"C\"" +
			" | ALTER TABLE pg_temp.pgshift_using_probe ADD COLUMN pgshift_using_probe numeric(10, 2) GENERATED ALWAYS AS (w * 1.5) STORED",
		`ALTER TABLE t ALTER COLUMN v TYPE bigint`: "",
	} {
		got, err := JudgeDDL(sql)
		if err != nil || len(got) != 1 {
			t.Fatalf("%s: %v %v", sql, got, err)
		}
		if s := strings.Join(got[0].UsingProbes, " | "); s != want {
			t.Errorf("%s:\n got %s\nwant %s", sql, s, want)
		}
	}
}

// TestJudgeDDLCreatesTable: a new table is named for the applier to make part of the migration;
// a partition names its parent (skipped when the target does not have it); CREATE TABLE AS is
// created empty on the target, its rows to be copied.
func TestJudgeDDLCreatesTable(t *testing.T) {
	for sql, want := range map[string]string{
		`CREATE TABLE s.n (id int PRIMARY KEY)`:                       "CREATE TABLE s.n <nil> false CREATE TABLE s.n (id int PRIMARY KEY)",
		`CREATE UNLOGGED TABLE n (id int)`:                            "CREATE TABLE n <nil> false CREATE UNLOGGED TABLE n (id int)",
		`CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (10) TO (20)`: "CREATE TABLE ... PARTITION OF p2 p false CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (10) TO (20)",
		`CREATE TABLE n AS SELECT id, v FROM t WHERE v > 0`:           "CREATE TABLE AS n <nil> true CREATE TABLE n AS SELECT id, v FROM t WHERE v > 0  WITH NO DATA",
		`CREATE TABLE IF NOT EXISTS n AS SELECT 1 AS a WITH DATA`:     "CREATE TABLE AS n <nil> true CREATE TABLE IF NOT EXISTS n AS SELECT 1 AS a  WITH NO DATA",
	} {
		got, err := JudgeDDL(sql)
		if err != nil || len(got) != 1 || got[0].CreatesTable == nil {
			t.Fatalf("%s: %+v %v", sql, got, err)
		}
		d := got[0]
		parent := "<nil>"
		if d.Relation != nil {
			parent = d.Relation.String()
		}
		if s := fmt.Sprintf("%s %s %s %v %s", d.Kind, d.CreatesTable, parent, d.CopyRows, d.SQL); s != want {
			t.Errorf("%s:\n got %s\nwant %s", sql, s, want)
		}
	}
}

// TestJudgePartitionDDL: ATTACH and DETACH PARTITION name the partition they move.
func TestJudgePartitionDDL(t *testing.T) {
	for _, tc := range []struct {
		sql, kind, sqlOut string
		attach, detach    string
	}{
		{sql: `ALTER TABLE p ATTACH PARTITION s.c FOR VALUES IN (1)`, kind: "ALTER TABLE ... ATTACH PARTITION", sqlOut: `ALTER TABLE p ATTACH PARTITION s.c FOR VALUES IN (1)`, attach: "s.c"},
		{sql: `ALTER TABLE p DETACH PARTITION c`, kind: "ALTER TABLE ... DETACH PARTITION", sqlOut: `ALTER TABLE p DETACH PARTITION c`, detach: "c"},
	} {
		got, err := JudgeDDL(tc.sql)
		if err != nil || len(got) != 1 {
			t.Fatalf("%s: %v, %v", tc.sql, got, err)
		}
		st := got[0]
		name := func(n *Name) string {
			if n == nil {
				return ""
			}
			return n.String()
		}
		if st.Kind != tc.kind || st.SQL != tc.sqlOut || name(st.Attaches) != tc.attach || name(st.Detaches) != tc.detach ||
			st.Concurrently || name(st.Relation) != "p" {
			t.Errorf("%s: got kind %q sql %q attaches %q detaches %q concurrently %v relation %q", tc.sql, st.Kind, st.SQL,
				name(st.Attaches), name(st.Detaches), st.Concurrently, name(st.Relation))
		}
	}
}
