package verify

import "testing"

// TestKeepDeferred: a trigger whose only difference is an enable state pgshift keeps back is
// listed as deferred; a deferred trigger that differs otherwise, or a trigger not deferred,
// stays a difference.
func TestKeepDeferred(t *testing.T) {
	src := map[string]schemaObject{}
	tgt := map[string]schemaObject{}
	add := func(m map[string]schemaObject, kind, name, def string) {
		m[kind+" "+name] = schemaObject{kind: kind, name: name, def: def}
	}
	add(src, "trigger", "public.t.audit", "CREATE TRIGGER audit ... [ENABLE ALWAYS]")
	add(tgt, "trigger", "public.t.audit", "CREATE TRIGGER audit ... [DISABLE]")
	add(src, "trigger", "public.t.changed", "CREATE TRIGGER changed AFTER INSERT ... [ENABLE REPLICA]")
	add(tgt, "trigger", "public.t.changed", "CREATE TRIGGER changed AFTER UPDATE ... [DISABLE]")
	add(src, "trigger", "public.t.drift", "CREATE TRIGGER drift ... [ENABLE ALWAYS]")
	add(tgt, "trigger", "public.t.drift", "CREATE TRIGGER drift ...")
	add(src, "rule", "public.t.r", "CREATE RULE r ... [ENABLE ALWAYS]")
	add(tgt, "rule", "public.t.r", "CREATE RULE r ... [DISABLE]")
	res := diffSchema(src, tgt, 100)
	res.keepDeferred(src, tgt, map[string]bool{"trigger public.t.audit": true, "trigger public.t.changed": true, "rule public.t.r": true})
	if len(res.Deferred) != 2 || res.Deferred[0].Name != "public.t.audit" || res.Deferred[1].Kind != "rule" || res.Deferred[0].Class != ClassDeferred {
		t.Errorf("deferred %+v", res.Deferred)
	}
	if len(res.Diffs) != 2 || res.Diffs[0].Name != "public.t.changed" || res.Diffs[1].Name != "public.t.drift" {
		t.Errorf("diffs %+v", res.Diffs)
	}
}
