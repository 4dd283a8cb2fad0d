package catalog

import (
	"strings"
	"testing"
)

// TestCheckSource: sources from 10 on are accepted (10 and 11 were refused before their
// catalog reads went through Version); an older one is refused naming its version and the way
// out.
func TestCheckSource(t *testing.T) {
	for _, v := range []Version{100023, 110022, 120022, 180004} {
		if err := v.CheckSource(); err != nil {
			t.Errorf("source %s refused: %v", v, err)
		}
	}
	err := Version(90624).CheckSource()
	if err == nil || !strings.Contains(err.Error(), "PostgreSQL 9.6.24") || !strings.Contains(err.Error(), "pg_upgrade") {
		t.Errorf("a 9.6 source: %v", err)
	}
}

// TestVersionSQL: the expressions that stand in for catalog columns and functions an old
// server lacks are used exactly where the server lacks them.
func TestVersionSQL(t *testing.T) {
	cases := []struct {
		got, want string
	}{
		{Version(100023).ProKindSQL("p"), "proisagg"},
		{Version(110022).ProKindSQL("p"), "p.prokind"},
		{Version(110022).AttGeneratedSQL("a"), `''::"char"`},
		{Version(120022).AttGeneratedSQL("a"), "a.attgenerated"},
		{Version(110022).PartitionRootSQL("c.oid"), "pg_inherits"},
		{Version(120022).PartitionRootSQL("c.oid"), "pg_partition_root(c.oid)"},
		{Version(110022).PartitionTreeSQL("x"), "pg_inherits"},
		{Version(120022).PartitionTreeSQL("x"), "pg_partition_tree(x)"},
		{keysSQL(100023), "i.indnatts"},
		{keysSQL(110022), "i.indnkeyatts"},
		{columnsSQL(110022), "false, a.attidentity"},
		{Version(110022).TriggerDefSQL("t"), "EXECUTE FUNCTION"},
		{Version(120022).TriggerDefSQL("t"), "pg_get_triggerdef(t.oid)"},
	}
	for _, c := range cases {
		if !strings.Contains(c.got, c.want) {
			t.Errorf("want %q in:\n%s", c.want, c.got)
		}
	}
}
