package apply

import (
	"testing"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

func testPlan(ident byte, always ...bool) *plan {
	rel := &cdc.Relation{OID: 1, Table: pgtypes.TableID{Schema: "My Schema", Name: `we"ird`}, ReplicaIdentity: ident,
		Columns: []cdc.Column{{Name: "id", Key: true}, {Name: "Body"}, {Name: "n"}}}
	p := &plan{rel: rel, table: rel.Table, types: []string{"integer", "text", "character(5)"}, always: make([]bool, 3), keys: []int{0}, full: ident == 'f', stmts: map[string]string{}}
	if ident == 'f' {
		p.keys = []int{0, 1, 2}
	}
	copy(p.always, always)
	return p
}

func TestStatementSQL(t *testing.T) {
	cases := []struct {
		name, got, want string
	}{
		{"insert", testPlan('d').insertSQL(1),
			`INSERT INTO "My Schema"."we""ird" ("id", "Body", "n") VALUES ($1, $2, $3)`},
		{"insert two rows", testPlan('d').insertSQL(2),
			`INSERT INTO "My Schema"."we""ird" ("id", "Body", "n") VALUES ($1, $2, $3), ($4, $5, $6)`},
		{"insert identity always", testPlan('d', true).insertSQL(1),
			`INSERT INTO "My Schema"."we""ird" ("id", "Body", "n") OVERRIDING SYSTEM VALUE VALUES ($1, $2, $3)`},
		{"update by key, toast column left out", testPlan('d').updateSQL([]int{0, 2}, []int{0}),
			`UPDATE "My Schema"."we""ird" SET "id" = $1, "n" = $2 WHERE "id" = $3`},
		{"update many rows by key", testPlan('d').updateManySQL([]int{1, 2}, 2),
			`UPDATE "My Schema"."we""ird" AS pgshift_t SET "Body" = v.s0, "n" = v.s1 FROM (VALUES ($1::text, $2::character(5), $3::integer), ($4::text, $5::character(5), $6::integer)) AS v(s0, s1, k0) WHERE pgshift_t."id" = v.k0`},
		{"delete by key", testPlan('d').deleteSQL([]int{0}),
			`DELETE FROM "My Schema"."we""ird" WHERE "id" = $1`},
		{"update full: exactly one row by text form", testPlan('f').updateSQL([]int{1}, []int{0, 2}),
			`UPDATE "My Schema"."we""ird" AS t SET "Body" = $1 FROM (SELECT tableoid AS pgshift_oid, ctid AS pgshift_ctid FROM "My Schema"."we""ird" WHERE "id"::text IS NOT DISTINCT FROM ($2::integer)::text AND "n"::text IS NOT DISTINCT FROM ($3::character(5))::text LIMIT 1) AS m WHERE t.tableoid = m.pgshift_oid AND t.ctid = m.pgshift_ctid`},
		{"delete full", testPlan('f').deleteSQL([]int{0}),
			`DELETE FROM "My Schema"."we""ird" AS t USING (SELECT tableoid AS pgshift_oid, ctid AS pgshift_ctid FROM "My Schema"."we""ird" WHERE "id"::text IS NOT DISTINCT FROM ($1::integer)::text LIMIT 1) AS m WHERE t.tableoid = m.pgshift_oid AND t.ctid = m.pgshift_ctid`},
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
	if got := present(row, []int{0, 1, 2}); len(got) != 2 || got[0] != 0 || got[1] != 2 {
		t.Fatalf("present = %v", got)
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
