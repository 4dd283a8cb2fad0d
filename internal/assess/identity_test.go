package assess

import (
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// tree builds a partition tree in the catalog's terms: a root and two leaves, with the given
// replica identities ('d', 'f', 'i', 'n') and keys.
func tree(rootIdent byte, rootKey []string, leafIdent byte, leafKey []string) []catalog.Table {
	cols := []catalog.Column{{Name: "id", Num: 1}, {Name: "at", Num: 2}, {Name: "v", Num: 3}}
	mk := func(name string, kind byte, ident byte, key []string, parent string) catalog.Table {
		t := catalog.Table{ID: pgtypes.TableID{Schema: "public", Name: name}, Kind: kind, Persistence: 'p', ReplicaIdentity: ident, Columns: cols}
		if ident == 'd' {
			t.PrimaryKey, t.IdentityKey = key, key
		}
		if ident == 'i' {
			t.IdentityKey = key
		}
		if parent != "" {
			t.IsPartition, t.Parent = true, pgtypes.TableID{Schema: "public", Name: parent}
		}
		return t
	}
	return []catalog.Table{
		mk("ev", catalog.KindPartitioned, rootIdent, rootKey, ""),
		mk("ev_mid", catalog.KindPartitioned, rootIdent, rootKey, "ev"),
		mk("ev_a", catalog.KindTable, leafIdent, leafKey, "ev_mid"),
		mk("ev_b", catalog.KindTable, leafIdent, leafKey, "ev"),
	}
}

func TestIdentityFindings(t *testing.T) {
	id, idAt := []string{"id"}, []string{"id", "at"}
	cases := []struct {
		name    string
		tables  []catalog.Table
		viaRoot bool
		want    map[string]Severity // object → severity of its identity finding
		say     []string            // in every blocker's message or fix
	}{
		{"keyed tree", tree('d', idAt, 'd', idAt), false, map[string]Severity{}, nil},
		{"root without key, keyed leaves, leaves published as themselves", tree('d', nil, 'd', id), false, map[string]Severity{}, nil},
		{"FULL root, keyed leaves, leaves published as themselves", tree('f', idAt, 'd', idAt), false, map[string]Severity{}, nil},
		{"leaf without identity", tree('d', nil, 'd', nil), false,
			map[string]Severity{"public.ev_a": Blocker, "public.ev_b": Blocker},
			[]string{"partition of public.ev", "REPLICA IDENTITY FULL", "--exclude public.ev", "cannot be left out alone"}},
		{"leaf with REPLICA IDENTITY NOTHING", tree('d', idAt, 'n', nil), false,
			map[string]Severity{"public.ev_a": Warning, "public.ev_b": Warning}, nil},
		{"FULL leaves", tree('d', nil, 'f', nil), false,
			map[string]Severity{"public.ev_a": Warning, "public.ev_b": Warning}, nil},
		// Published through the root, pgoutput describes the rows with the root's identity.
		{"via root: root without key", tree('d', nil, 'd', id), true,
			map[string]Severity{"public.ev_a": Blocker, "public.ev_b": Blocker}, []string{"root public.ev", "no replica identity", "publish_via_partition_root = false"}},
		{"via root: FULL root over keyed leaves", tree('f', idAt, 'd', idAt), true,
			map[string]Severity{"public.ev_a": Blocker, "public.ev_b": Blocker}, []string{"REPLICA IDENTITY FULL", "logs only its key (id, at)"}},
		{"via root: root key wider than the leaves' identity", tree('d', idAt, 'i', id), true,
			map[string]Severity{"public.ev_a": Blocker, "public.ev_b": Blocker}, []string{"column at"}},
		{"via root: same keys", tree('d', idAt, 'd', idAt), true, map[string]Severity{}, nil},
		{"via root: FULL leaves under a keyed root", tree('d', idAt, 'f', nil), true,
			map[string]Severity{"public.ev_a": Warning, "public.ev_b": Warning}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := map[string]Severity{}
			for _, f := range IdentityFindings(TablesFromCatalog(c.tables), c.viaRoot) {
				if f.Code != CodeNoReplicaIdentity && f.Code != CodeReplicaIdentityFull && f.Code != CodeReplicaIdentityNothing {
					t.Errorf("unexpected finding %+v", f)
				}
				got[f.Object] = f.Severity
				if f.Severity == Blocker {
					for _, s := range c.say {
						if !strings.Contains(f.Message+" "+f.Fix, s) {
							t.Errorf("%s: %q not in %q / %q", f.Object, s, f.Message, f.Fix)
						}
					}
				}
			}
			if len(got) != len(c.want) {
				t.Errorf("findings %v, want %v", got, c.want)
			}
			for obj, sev := range c.want {
				if got[obj] != sev {
					t.Errorf("%s: %q, want %q (all: %v)", obj, got[obj], sev, got)
				}
			}
		})
	}
}

// The rule Evaluate applies is the same one: partitions are judged by their own identity.
func TestEvaluateJudgesLeavesByTheirOwnIdentity(t *testing.T) {
	f := readyFacts()
	f.Tables = append(f.Tables, TablesFromCatalog(tree('d', nil, 'd', []string{"id"}))...)
	for i := range f.Tables {
		f.Tables[i].CanSelect, f.Tables[i].OwnedByUser = true, true
	}
	for _, fd := range Evaluate(f) {
		if fd.Code == CodeNoReplicaIdentity {
			t.Errorf("keyed leaves under a root without key blocked: %+v", fd)
		}
	}
	f.Tables[len(f.Tables)-1].UsableIdentity = false
	var blocked []string
	for _, fd := range Evaluate(f) {
		if fd.Code == CodeNoReplicaIdentity {
			blocked = append(blocked, fd.Object)
		}
	}
	if strings.Join(blocked, ",") != "public.ev_b" {
		t.Errorf("blocked %v, want the leaf without identity only", blocked)
	}
}

func TestTablesFromCatalogRoots(t *testing.T) {
	got := map[string]string{}
	for _, tb := range TablesFromCatalog(tree('d', nil, 'd', nil)) {
		got[tb.ID()] = tb.Root
	}
	want := map[string]string{"public.ev": "", "public.ev_mid": "public.ev", "public.ev_a": "public.ev", "public.ev_b": "public.ev"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("root of %s = %q, want %q", k, got[k], v)
		}
	}
}
