package apply

import (
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

func testPlan(ident byte, always ...bool) *plan {
	rel := &cdc.Relation{OID: 1, Table: pgtypes.TableID{Schema: "My Schema", Name: `we"ird`}, ReplicaIdentity: ident,
		Columns: []cdc.Column{{Name: "id", Key: true}, {Name: "Body"}, {Name: "n"}}}
	p := &plan{rel: rel, table: rel.Table, types: []string{"integer", "text", "character(5)"}, always: make([]bool, 3), keys: []int{0}, full: ident == 'f', stmts: map[string]string{}, uses: map[string]int{}}
	if ident == 'f' {
		p.keys = []int{0, 1, 2}
	}
	copy(p.always, always)
	return p
}

func TestStatementSQL(t *testing.T) {
	parted := testPlan('d')
	parted.partitioned = true
	zero := &plan{rel: &cdc.Relation{Table: pgtypes.TableID{Schema: "s", Name: "z"}, ReplicaIdentity: 'f'}, table: pgtypes.TableID{Schema: "s", Name: "z"}, full: true}
	keep := testPlan('d', false, false, true)
	keep.keep = []string{"target only"}
	cases := []struct {
		name, got, want string
	}{
		{"insert", testPlan('d').insertSQL(1),
			`INSERT INTO "My Schema"."we""ird" ("id", "Body", "n") VALUES ($1::integer, $2::text, $3::character(5))`},
		{"insert two rows", testPlan('d').insertSQL(2),
			`INSERT INTO "My Schema"."we""ird" ("id", "Body", "n") VALUES ($1::integer, $2::text, $3::character(5)), ($4::integer, $5::text, $6::character(5))`},
		{"insert identity always", testPlan('d', true).insertSQL(1),
			`INSERT INTO "My Schema"."we""ird" ("id", "Body", "n") OVERRIDING SYSTEM VALUE VALUES ($1::integer, $2::text, $3::character(5))`},
		{"insert without columns", zero.insertSQL(1), `INSERT INTO "s"."z" DEFAULT VALUES`},
		{"update by key, toast column left out", testPlan('d').updateSQL([]int{0, 2}, []int{0}),
			`UPDATE ONLY "My Schema"."we""ird" SET "id" = $1::integer, "n" = $2::character(5) WHERE "id" = $3::integer`},
		{"update of a partitioned table routes through it", parted.updateSQL([]int{1}, []int{0}),
			`UPDATE "My Schema"."we""ird" SET "Body" = $1::text WHERE "id" = $2::integer`},
		{"update many rows by key", testPlan('d').updateManySQL([]int{1, 2}, 2),
			`UPDATE ONLY "My Schema"."we""ird" AS pgshift_t SET "Body" = v.s0, "n" = v.s1 FROM (VALUES ($1::text, $2::character(5), $3::integer), ($4::text, $5::character(5), $6::integer)) AS v(s0, s1, k0) WHERE pgshift_t."id" = v.k0`},
		{"delete by key", testPlan('d').deleteSQL([]int{0}),
			`DELETE FROM ONLY "My Schema"."we""ird" WHERE "id" = $1::integer`},
		{"delete from a partitioned table", parted.deleteSQL([]int{0}),
			`DELETE FROM "My Schema"."we""ird" WHERE "id" = $1::integer`},
		{"update full: exactly one row by text form", testPlan('f').updateSQL([]int{1}, []int{0, 2}),
			`UPDATE ONLY "My Schema"."we""ird" AS t SET "Body" = $1::text FROM (SELECT tableoid AS pgshift_oid, ctid AS pgshift_ctid FROM ONLY "My Schema"."we""ird" WHERE "id"::text IS NOT DISTINCT FROM ($2::integer)::text AND "n"::text IS NOT DISTINCT FROM ($3::character(5))::text LIMIT 1) AS m WHERE t.tableoid = m.pgshift_oid AND t.ctid = m.pgshift_ctid`},
		{"delete full", testPlan('f').deleteSQL([]int{0}),
			`DELETE FROM ONLY "My Schema"."we""ird" AS t USING (SELECT tableoid AS pgshift_oid, ctid AS pgshift_ctid FROM ONLY "My Schema"."we""ird" WHERE "id"::text IS NOT DISTINCT FROM ($1::integer)::text LIMIT 1) AS m WHERE t.tableoid = m.pgshift_oid AND t.ctid = m.pgshift_ctid`},
		{"delete full without columns: any one row", zero.deleteSQL(nil),
			`DELETE FROM ONLY "s"."z" AS t USING (SELECT tableoid AS pgshift_oid, ctid AS pgshift_ctid FROM ONLY "s"."z" WHERE true LIMIT 1) AS m WHERE t.tableoid = m.pgshift_oid AND t.ctid = m.pgshift_ctid`},
		{"replace: identity key changed, unchanged toast and target-only columns kept", testPlan('d', true).replaceSQL([]int{0, 2}, []int{0}),
			`WITH pgshift_d AS (DELETE FROM ONLY "My Schema"."we""ird" AS pgshift_t WHERE "id" = $3::integer RETURNING pgshift_t.*) INSERT INTO "My Schema"."we""ird" ("id", "Body", "n") OVERRIDING SYSTEM VALUE SELECT $1::integer, pgshift_d."Body", $2::character(5) FROM pgshift_d`},
		{"update or replace: identity outside the key", keep.updateOrReplaceSQL([]int{0, 1, 2}, []int{0, 1}, []int{2}, []int{0}),
			`WITH pgshift_u AS (UPDATE ONLY "My Schema"."we""ird" AS pgshift_t SET "id" = $1::integer, "Body" = $2::text WHERE "id" = $4::integer AND pgshift_t."n" IS NOT DISTINCT FROM $3::character(5) RETURNING 1), ` +
				`pgshift_d AS (DELETE FROM ONLY "My Schema"."we""ird" AS pgshift_t WHERE "id" = $4::integer AND NOT (pgshift_t."n" IS NOT DISTINCT FROM $3::character(5)) RETURNING pgshift_t.*), ` +
				`pgshift_i AS (INSERT INTO "My Schema"."we""ird" ("id", "Body", "n", "target only") OVERRIDING SYSTEM VALUE SELECT $1::integer, $2::text, $3::character(5), pgshift_d."target only" FROM pgshift_d RETURNING 1) ` +
				`SELECT 1 FROM pgshift_u UNION ALL SELECT 1 FROM pgshift_i`},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.name, c.got, c.want)
		}
	}
}

func TestValues(t *testing.T) {
	p := testPlan('d')
	row := []cdc.Value{{Kind: 't', Data: []byte("1")}, {Kind: 'u'}, {Kind: 'n'}}
	got, err := values(row, []int{0, 2}, p, "UPDATE")
	if err != nil || string(got[0]) != "1" || got[1] != nil {
		t.Fatalf("values = %q, %v", got, err)
	}
	if _, err := values(row, []int{1}, p, "UPDATE key"); err == nil {
		t.Fatal("an unchanged TOAST placeholder was accepted as a value")
	}
	if _, err := values([]cdc.Value{{Kind: 'b', Data: []byte{1}}}, nil, p, "INSERT"); err == nil {
		t.Fatal("a binary value was accepted")
	}
}

func TestRelKeyDistinguishesDescriptions(t *testing.T) {
	a := testPlan('d').rel
	b := *a
	b.Columns = append([]cdc.Column(nil), a.Columns...)
	if relKey(a) != relKey(&b) {
		t.Fatal("equal descriptions got different keys")
	}
	b.Columns[2].TypeOID = 99
	if relKey(a) == relKey(&b) {
		t.Fatal("a changed column type kept the same key")
	}
}

func TestFullWhere(t *testing.T) {
	p := testPlan('f')
	if got, err := fullWhere(p, []cdc.Value{{Kind: 't', Data: []byte("1")}, {Kind: 'n'}, {Kind: 't', Data: []byte("x")}}); err != nil || len(got) != 3 {
		t.Fatalf("fullWhere = %v, %v; want all three columns", got, err)
	}
	if _, err := fullWhere(p, []cdc.Value{{Kind: 't', Data: []byte("1")}, {Kind: 'u'}, {Kind: 'n'}}); err == nil || !strings.Contains(err.Error(), `"Body"`) {
		t.Fatalf("an old row with an unchanged TOAST placeholder was accepted (err %v)", err)
	}
	zero := &plan{rel: &cdc.Relation{}, full: true}
	if got, err := fullWhere(zero, nil); err != nil || len(got) != 0 {
		t.Fatalf("fullWhere of a table without columns = %v, %v", got, err)
	}
}
