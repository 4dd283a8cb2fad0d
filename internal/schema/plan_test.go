package schema

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

func TestItemTable(t *testing.T) {
	cases := []struct {
		stmt string
		want pgtypes.TableID
		ok   bool
	}{
		{"CREATE INDEX i ON public.t USING btree (a);", pgtypes.TableID{Schema: "public", Name: "t"}, true},
		{"CREATE UNIQUE INDEX \"My Idx\" ON ONLY \"My Schema\".\"Ta\"\"ble\" USING btree (a);", pgtypes.TableID{Schema: "My Schema", Name: `Ta"ble`}, true},
		{"ALTER TABLE ONLY public.big\n    ADD CONSTRAINT big_pkey PRIMARY KEY (id);", pgtypes.TableID{Schema: "public", Name: "big"}, true},
		{"ALTER TABLE public.\"a.b\"\n    ADD CONSTRAINT c CHECK (x > 0) NOT VALID;", pgtypes.TableID{Schema: "public", Name: "a.b"}, true},
		{"CREATE TRIGGER x BEFORE INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION f();", pgtypes.TableID{}, false},
		{"ALTER TABLE ONLY t ADD CONSTRAINT c UNIQUE (a);", pgtypes.TableID{}, false}, // unqualified: unknown
	}
	for _, c := range cases {
		got, ok := ItemTable(Item{Statements: []string{c.stmt}})
		if ok != c.ok || got != c.want {
			t.Errorf("ItemTable(%q) = %v, %v; want %v, %v", c.stmt, got, ok, c.want, c.ok)
		}
	}
}

func TestPlanPostData(t *testing.T) {
	s := Script{Items: []Item{
		{Statements: []string{"SET x = 1;"}},
		{Name: "small_pkey", Type: "CONSTRAINT", Statements: []string{"ALTER TABLE ONLY public.small ADD CONSTRAINT small_pkey PRIMARY KEY (id);"}},
		{Name: "big_pkey", Type: "CONSTRAINT", Statements: []string{"ALTER TABLE ONLY public.big ADD CONSTRAINT big_pkey PRIMARY KEY (id);"}},
		{Name: "big_grp", Type: "INDEX", Statements: []string{"CREATE INDEX big_grp ON public.big USING btree (grp);"}},
		{Name: "p1_pkey", Type: "INDEX ATTACH", Statements: []string{"ALTER INDEX public.p_pkey ATTACH PARTITION public.p1_pkey;"}},
		{Name: "fk", Type: "FK CONSTRAINT", Statements: []string{"ALTER TABLE ONLY public.small ADD CONSTRAINT fk FOREIGN KEY (b) REFERENCES public.big(id);"}},
		{Name: "trg", Type: "TRIGGER", Statements: []string{"CREATE TRIGGER trg ...;"}},
		{Name: "mv", Type: "MATERIALIZED VIEW DATA", Statements: []string{"REFRESH MATERIALIZED VIEW public.mv;"}},
	}}
	sizes := map[string]int64{"big": 1000, "small": 10}
	p := PlanPostData(s, func(id pgtypes.TableID) int64 { return sizes[id.Name] })
	names := func(items []Item) string {
		var out []string
		for _, it := range items {
			out = append(out, it.Name)
		}
		return strings.Join(out, ",")
	}
	if got := names(p.Indexes); got != "big_pkey,big_grp,small_pkey" {
		t.Errorf("indexes %s: want the big table's first", got)
	}
	if names(p.Attach) != "p1_pkey" || names(p.ForeignKeys) != "fk" || names(p.Other) != "trg" || names(p.MatViews) != "mv" {
		t.Errorf("plan %+v", p)
	}
	if len(p.Preamble) != 1 {
		t.Errorf("preamble %q", p.Preamble)
	}
	if p.Indexes[0].Key() == p.Indexes[1].Key() {
		t.Error("distinct items share a key")
	}
}

func TestParseVersion(t *testing.T) {
	for out, want := range map[string][2]int{
		"pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n": {15, 18},
		"pg_dump (PostgreSQL) 17.6":                             {17, 6},
		"pg_dump (PostgreSQL) 18beta1":                          {18, 0},
		"pg_dump (PostgreSQL) 9.6.24":                           {9, 6},
	} {
		ma, mi, err := ParseVersion(out)
		if err != nil || ma != want[0] || mi != want[1] {
			t.Errorf("ParseVersion(%q) = %d.%d, %v", out, ma, mi, err)
		}
	}
	if _, _, err := ParseVersion("something else"); err == nil {
		t.Error("garbage accepted")
	}
}

func TestFindPgDump(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fake := func(name, version string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!/bin/sh\necho 'pg_dump (PostgreSQL) "+version+"'\n"), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	old, cur := fake("old", "14.2"), fake("cur", "16.1")
	if _, err := FindPgDump(ctx, old, 150004); !errors.Is(err, ErrPgDumpTooOld) || !strings.Contains(err.Error(), "14.2") || !strings.Contains(err.Error(), "postgresql-client-15") {
		t.Errorf("old pg_dump: %v", err)
	}
	d, err := FindPgDump(ctx, cur, 150004)
	if err != nil || d.Major != 16 || d.Path != cur {
		t.Errorf("newer pg_dump: %+v %v", d, err)
	}
	if _, err := FindPgDump(ctx, filepath.Join(dir, "missing"), 150004); !errors.Is(err, ErrPgDumpMissing) {
		t.Errorf("missing pg_dump: %v", err)
	}
}

func TestSplitPassword(t *testing.T) {
	cases := []struct{ in, dsn, pw string }{
		{"host=h port=5 user=u password=s3cret dbname=d", "host=h port=5 user=u  dbname=d", "s3cret"},
		{"host=h password='a b\\'c' dbname=d", "host=h  dbname=d", "a b'c"},
		{"postgres://u:p%40ss@h:5/d?sslmode=disable", "postgres://u@h:5/d?sslmode=disable", "p@ss"},
		{"postgres://u@h/d?password=x&sslmode=require", "postgres://u@h/d?sslmode=require", "x"},
		{"host=h dbname=d", "host=h dbname=d", ""},
	}
	for _, c := range cases {
		dsn, pw, err := splitPassword(c.in)
		if err != nil || dsn != c.dsn || pw != c.pw {
			t.Errorf("splitPassword(%q) = %q, %q, %v; want %q, %q", c.in, dsn, pw, err, c.dsn, c.pw)
		}
	}
}

func TestDumpPattern(t *testing.T) {
	if got := dumpPattern(pgtypes.TableID{Schema: "a*b", Name: `we"ird.x`}); got != `"a*b"."we""ird.x"` {
		t.Errorf("dumpPattern = %s", got)
	}
}
