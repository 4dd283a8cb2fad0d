package schema

import (
	"reflect"
	"testing"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

func TestParseEnable(t *testing.T) {
	cases := []struct {
		stmt string
		ok   bool
		want enableStmt
	}{
		{`ALTER TABLE public.t ENABLE ALWAYS TRIGGER "Aud Always";`, true,
			enableStmt{relKind: "TABLE", table: pgtypes.TableID{Schema: "public", Name: "t"}, action: "ENABLE ALWAYS", kind: "TRIGGER", name: "Aud Always"}},
		{`ALTER TABLE "Odd Schema"."My ""T""" ENABLE REPLICA TRIGGER trg;`, true,
			enableStmt{relKind: "TABLE", table: pgtypes.TableID{Schema: "Odd Schema", Name: `My "T"`}, action: "ENABLE REPLICA", kind: "TRIGGER", name: "trg"}},
		{`ALTER FOREIGN TABLE public.f DISABLE TRIGGER x;`, true,
			enableStmt{relKind: "FOREIGN TABLE", table: pgtypes.TableID{Schema: "public", Name: "f"}, action: "DISABLE", kind: "TRIGGER", name: "x"}},
		{`ALTER TABLE ONLY public.p2 ENABLE TRIGGER ptrg;`, true,
			enableStmt{relKind: "TABLE", only: true, table: pgtypes.TableID{Schema: "public", Name: "p2"}, action: "ENABLE", kind: "TRIGGER", name: "ptrg"}},
		{`ALTER TABLE public.t ENABLE ALWAYS RULE r1;`, true,
			enableStmt{relKind: "TABLE", table: pgtypes.TableID{Schema: "public", Name: "t"}, action: "ENABLE ALWAYS", kind: "RULE", name: "r1"}},
		{`ALTER TABLE public.t ENABLE ALWAYS TRIGGER ALL extra;`, false, enableStmt{}},
		{`ALTER TABLE public.t ENABLE ROW LEVEL SECURITY;`, false, enableStmt{}},
		{`CREATE TRIGGER x AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();`, false, enableStmt{}},
		{`ALTER TABLE public.t ENABLE ALWAYS TRIGGER;`, false, enableStmt{}},
	}
	for _, c := range cases {
		got, ok := parseEnable(c.stmt)
		if ok != c.ok || (ok && !reflect.DeepEqual(got, c.want)) {
			t.Errorf("parseEnable(%q) = %+v, %v; want %+v, %v", c.stmt, got, ok, c.want, c.ok)
		}
	}
}

func TestDeferReplicaEnables(t *testing.T) {
	plan := PostDataPlan{Other: []Item{
		{Type: "TRIGGER", Name: "t a", Schema: "public", Statements: []string{
			`CREATE TRIGGER a AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();`,
			`ALTER TABLE public.t ENABLE ALWAYS TRIGGER a;`}},
		{Type: "TRIGGER", Name: "t off", Schema: "public", Statements: []string{
			`CREATE TRIGGER off AFTER INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION public.f();`,
			`ALTER TABLE public.t DISABLE TRIGGER off;`}},
		{Type: "COMMENT", Name: "x", Statements: []string{`ALTER TABLE public.t ENABLE ALWAYS TRIGGER a;`}}, // not a trigger item: left alone
		{Type: "TRIGGER", Name: "p2 a", Schema: "public", Statements: []string{`ALTER TABLE public.p2 ENABLE TRIGGER a;`}},
		{Type: "RULE", Name: "t r", Schema: "public", Statements: []string{
			`CREATE RULE r AS ON UPDATE TO public.t DO NOTIFY t;`, `ALTER TABLE public.t ENABLE REPLICA RULE r;`}},
	}}
	out, kept := DeferReplicaEnables(plan)
	wantStmts := [][]string{
		{plan.Other[0].Statements[0], `ALTER TABLE "public"."t" DISABLE TRIGGER "a";`},
		plan.Other[1].Statements,
		plan.Other[2].Statements,
		plan.Other[3].Statements,
		{plan.Other[4].Statements[0], `ALTER TABLE "public"."t" DISABLE RULE "r";`},
	}
	for i, it := range out.Other {
		if !reflect.DeepEqual(it.Statements, wantStmts[i]) {
			t.Errorf("item %d statements %q, want %q", i, it.Statements, wantStmts[i])
		}
	}
	if plan.Other[0].Statements[1] != `ALTER TABLE public.t ENABLE ALWAYS TRIGGER a;` {
		t.Error("the input plan was modified")
	}
	type rec struct{ object, stmt string }
	var got []rec
	for _, it := range out.Other {
		for _, e := range kept[it.Key()] {
			got = append(got, rec{e.Object(), e.Statement})
			if e.Reason == "" {
				t.Errorf("%s kept back without a reason", e.Object())
			}
		}
	}
	want := []rec{
		{"trigger a on public.t", `ALTER TABLE public.t ENABLE ALWAYS TRIGGER a;`},
		{"trigger a on public.p2", `ALTER TABLE public.p2 ENABLE TRIGGER a;`},
		{"rule r on public.t", `ALTER TABLE public.t ENABLE REPLICA RULE r;`},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("kept back %q, want %q", got, want)
	}
	if len(kept) != 3 {
		t.Errorf("%d items with kept-back statements, want 3", len(kept))
	}
	// Deterministic: planning again gives the same keys (a resumed copy finds its records).
	again, _ := DeferReplicaEnables(plan)
	for i := range out.Other {
		if out.Other[i].Key() != again.Other[i].Key() {
			t.Errorf("item %d key changed between plans", i)
		}
	}
}
