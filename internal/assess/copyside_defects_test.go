package assess

import (
	"context"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestCopysideFindings: a DEFERRABLE primary key is no replica identity (a blocker with the
// fix), and row-level security policies that apply to the migrating user are a blocker.
func TestCopysideFindings(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	ctx := context.Background()
	if _, err := src.Psql(ctx, "postgres", `CREATE ROLE rls_mover LOGIN REPLICATION`); err != nil {
		t.Fatal(err)
	}
	const keyed = `CREATE TABLE public.items (id int PRIMARY KEY, v text); INSERT INTO public.items SELECT g, 'v' FROM generate_series(1, 100) g; ANALYZE;`
	t.Run("deferrable key", func(t *testing.T) {
		sc := scenario{source: keyed + `
			CREATE TABLE public.ledger (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, v text);
			CREATE TABLE public.ledger_full (id int PRIMARY KEY DEFERRABLE, v text);
			ALTER TABLE public.ledger_full REPLICA IDENTITY FULL;`,
			want: []want{
				{CodeNoReplicaIdentity, Blocker, "public.ledger"},
				{CodeReplicaIdentityFull, Warning, "public.ledger_full"},
			}}
		rep := run(t, src, dst, sc)
		check(t, rep, sc)
		for _, f := range rep.Findings {
			if f.Code != CodeNoReplicaIdentity {
				continue
			}
			for _, want := range []string{"DEFERRABLE", "REPLICA IDENTITY FULL", "REPLICA IDENTITY USING INDEX"} {
				if !strings.Contains(f.Message+" "+f.Fix, want) {
					t.Errorf("finding %q / %q lacks %q", f.Message, f.Fix, want)
				}
			}
		}
		for _, tb := range rep.Tables {
			if tb.Name == "ledger" && (tb.UsableIdentity || keyLabel(tb) != "NONE") {
				t.Errorf("ledger reported with a usable identity: %+v (%s)", tb, keyLabel(tb))
			}
		}
	})
	t.Run("row security", func(t *testing.T) {
		sc := scenario{sourceUser: "rls_mover", source: keyed + `
			CREATE TABLE public.secret (id int PRIMARY KEY, who text);
			CREATE POLICY mine ON public.secret USING (who = current_user);
			ALTER TABLE public.secret ENABLE ROW LEVEL SECURITY; ALTER TABLE public.secret FORCE ROW LEVEL SECURITY;
			CREATE TABLE public.enabled_only (id int PRIMARY KEY);
			ALTER TABLE public.enabled_only ENABLE ROW LEVEL SECURITY;
			ALTER TABLE public.items OWNER TO rls_mover; ALTER TABLE public.secret OWNER TO rls_mover; ALTER TABLE public.enabled_only OWNER TO rls_mover;
			GRANT CREATE ON DATABASE a_row_security TO rls_mover;`,
			want: []want{{CodeRowSecurity, Blocker, "public.secret"}}}
		rep := run(t, src, dst, sc)
		check(t, rep, sc)
		for _, f := range rep.Findings {
			if f.Code == CodeRowSecurity && (!strings.Contains(f.Fix, "BYPASSRLS") || !strings.Contains(f.Fix, "NO FORCE ROW LEVEL SECURITY")) {
				t.Errorf("row security fix %q", f.Fix)
			}
		}
	})
}
