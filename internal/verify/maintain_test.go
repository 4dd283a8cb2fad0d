package verify

import "testing"

// TestWithoutMaintain: a 15 → 17 migration's table privileges differ only by 17's MAINTAIN
// (the owner's and GRANT ALL's); verify reported every table (found by the version matrix).
func TestWithoutMaintain(t *testing.T) {
	objs := map[string]schemaObject{
		"privileges table public.a":   {kind: "privileges", def: "app=arwdDxtm/postgres,postgres=arwdDxtm*/postgres,ro=r/postgres"},
		"privileges schema public":    {kind: "privileges", def: "pg_database_owner=UC/pg_database_owner"},
		"owner table public.a":        {kind: "owner", def: "maintainer_m"},
		"default privileges postgres": {kind: "default privileges", def: "app=arwdDxtm/postgres"},
	}
	withoutMaintain(objs)
	for id, want := range map[string]string{
		"privileges table public.a":   "app=arwdDxt/postgres,postgres=arwdDxt/postgres,ro=r/postgres",
		"privileges schema public":    "pg_database_owner=UC/pg_database_owner",
		"owner table public.a":        "maintainer_m",
		"default privileges postgres": "app=arwdDxt/postgres",
	} {
		if got := objs[id].def; got != want {
			t.Errorf("%s: %q, want %q", id, got, want)
		}
	}
}
