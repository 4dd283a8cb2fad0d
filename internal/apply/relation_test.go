package apply

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// TestReconcile checks which relation changes are applied by themselves (a provable ADD COLUMN
// of nullable columns without default) and which stop, and what the error says.
func TestReconcile(t *testing.T) {
	tbl := pgtypes.TableID{Schema: "public", Name: "t"}
	rc := func(spec ...string) []relColumn { // "name type attnum"
		var out []relColumn
		for _, s := range spec {
			f := strings.Fields(s)
			out = append(out, relColumn{Name: f[0], Type: f[1], Attnum: int16(f[2][0] - '0')})
		}
		return out
	}
	tc := func(spec ...string) []targetColumn { // "name type [gen|notnull]"
		var out []targetColumn
		for _, s := range spec {
			f := strings.Fields(s)
			c := targetColumn{Name: f[0], Type: f[1]}
			if len(f) > 2 {
				c.Generated = f[2] == "gen"
				c.NotNull = f[2] == "notnull"
			}
			out = append(out, c)
		}
		return out
	}
	src := map[string]sourceColumn{
		"id": {Attnum: 1, Type: "integer"}, "a": {Attnum: 2, Type: "text"}, "b": {Attnum: 3, Type: "text"},
		"c": {Attnum: 4, Type: "text"}, "d": {Attnum: 5, Type: "integer", HasDef: true}, "g": {Attnum: 6, Type: "integer", Generated: true},
		"n": {Attnum: 7, Type: "text"}, "k": {Attnum: 8, Type: "integer", HasDef: true, Default: "7", Missing: "{7}"},
		"v": {Attnum: 9, Type: "timestamptz", HasDef: true, Default: "now()", Missing: "{\"2026-12-01 10:00:00+00\"}"},
	}
	withDef := func(name, typ, def, missing string) targetColumn {
		return targetColumn{Name: name, Type: typ, HasDef: def != "", Default: def, Missing: missing}
	}
	cases := []struct {
		name       string
		msg, prev  []relColumn
		tgt        []targetColumn
		add        []int
		targetOnly []string
		err        []string // words the error must contain; nil: no error
	}{
		{name: "same", msg: rc("id integer 1", "a text 2"), tgt: tc("id integer", "a text")},
		{name: "generated on both sides is no target-only column", msg: rc("id integer 1", "a text 2"), tgt: tc("id integer", "a text", "g integer gen")},
		{name: "real target-only column", msg: rc("id integer 1", "a text 2"), tgt: tc("id integer", "a text", "x text"), targetOnly: []string{"x"}},
		{name: "target-only NOT NULL without default", msg: rc("id integer 1"), tgt: tc("id integer", "x text notnull"), err: []string{`"x"`, "NOT NULL"}},
		{name: "add at the end", msg: rc("id integer 1", "a text 2", "b text 3", "c text 4"), prev: rc("id integer 1", "a text 2"), tgt: tc("id integer", "a text"), add: []int{2, 3}},
		{name: "add without a previous description", msg: rc("id integer 1", "a text 2", "b text 3"), tgt: tc("id integer", "a text", "g integer gen"), add: []int{2}},
		{name: "add with a default", msg: rc("id integer 1", "d integer 5"), tgt: tc("id integer"), err: []string{`"d"`, "default"}},
		{name: "rename", msg: rc("id integer 1", "b text 2"), prev: rc("id integer 1", "a text 2"), tgt: tc("id integer", "a text"),
			err: []string{"renamed", `RENAME COLUMN "a" TO "b"`, `DROP COLUMN "a", ADD COLUMN "b" text`}},
		{name: "rename at start without previous", msg: rc("id integer 1", "b text 2"), tgt: tc("id integer", "a text"), err: []string{"renamed"}},
		{name: "drop and add of another name", msg: rc("id integer 1", "c text 4"), tgt: tc("id integer", "a text", "b text"), err: []string{`"c"`, "not columns added at the end"}},
		{name: "type change", msg: rc("id integer 1", "a integer 2"), tgt: tc("id integer", "a text"), err: []string{`ALTER COLUMN "a" TYPE integer`}},
		{name: "reorder (dropped and added at the end)", msg: rc("id integer 1", "b text 3", "a text 4"), tgt: tc("id integer", "a text", "b text"), err: []string{"dropped and added again"}},
		{name: "dropped and added again, same place", msg: rc("id integer 1", "a text 4"), prev: rc("id integer 1", "a text 2"), tgt: tc("id integer", "a text"), err: []string{"dropped and added again", "attnum 2, now 4"}},
		{name: "dropped while followed", msg: rc("id integer 1"), prev: rc("id integer 1", "a text 2"), tgt: tc("id integer", "a text"), err: []string{`no longer sends column "a"`, `DROP COLUMN "a"`}},
		{name: "dropped before this run: only a warning", msg: rc("id integer 1"), tgt: tc("id integer", "a text"), targetOnly: []string{"a"}},
		{name: "added where the target had it, not on the source any more", msg: rc("id integer 1", "x text 7"), prev: rc("id integer 1"), tgt: tc("id integer", "x text"), err: []string{`column "x" text`, "no longer has it"}},
		{name: "added on both sides without default", msg: rc("id integer 1", "n text 7"), prev: rc("id integer 1"), tgt: tc("id integer", "n text")},
		{name: "added on the source without, on the target with a default", msg: rc("id integer 1", "n text 7"), prev: rc("id integer 1"),
			tgt: []targetColumn{{Name: "id", Type: "integer"}, withDef("n", "text", "'x'::text", "{x}")}, err: []string{`added column "n"`, "no default", "DEFAULT 'x'::text"}},
		{name: "added on both sides with the same constant default", msg: rc("id integer 1", "k integer 8"), prev: rc("id integer 1"),
			tgt: []targetColumn{{Name: "id", Type: "integer"}, withDef("k", "integer", "7", "{7}")}},
		{name: "added on both sides with another default", msg: rc("id integer 1", "k integer 8"), prev: rc("id integer 1"),
			tgt: []targetColumn{{Name: "id", Type: "integer"}, withDef("k", "integer", "8", "{8}")}, err: []string{"DEFAULT 7", "DEFAULT 8"}},
		{name: "added on both sides with DEFAULT now()", msg: rc("id integer 1", "v timestamptz 9"), prev: rc("id integer 1"),
			tgt: []targetColumn{{Name: "id", Type: "integer"}, withDef("v", "timestamptz", "now()", `{"2026-12-01 10:00:05+00"}`)}, err: []string{"now()", "older rows"}},
		{name: "added on the target after a volatile default rewrote the source", msg: rc("id integer 1", "k integer 8"), prev: rc("id integer 1"),
			tgt: []targetColumn{{Name: "id", Type: "integer"}, withDef("k", "integer", "7", "")}, err: []string{"written with their values"}},
		{name: "add behind a target-only column", msg: rc("id integer 1", "b text 3"), tgt: tc("id integer", "x text"), err: []string{"renamed"}},
		{name: "previous description differs from the target", msg: rc("id integer 1", "a text 2", "b text 3"), prev: rc("id integer 1"), tgt: tc("id integer", "a text"), err: []string{"not columns added at the end"}},
		{name: "generated on the target, sent by the source", msg: rc("id integer 1", "a text 2"), tgt: tc("id integer", "a text gen"), err: []string{"generated on the target"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			add, targetOnly, err := reconcile(tbl, c.msg, c.prev, c.tgt, src)
			if c.err == nil {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if !slices.Equal(add, c.add) || !slices.Equal(targetOnly, c.targetOnly) {
					t.Fatalf("add %v, target-only %v; want %v, %v", add, targetOnly, c.add, c.targetOnly)
				}
				return
			}
			var se *ErrSchema
			if !errors.As(err, &se) {
				t.Fatalf("got %v (add %v), want a schema error", err, add)
			}
			for _, w := range c.err {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}
