package route

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestRuleKinds(t *testing.T) {
	rs, err := NewRules([]Rule{
		{Name: "inventory", Tables: []string{"inventory.*", "stock"}, Percent: 100},
		{Name: "reports", Users: []string{"report*"}, Percent: 100},
		{Name: "db", Databases: []string{"analytics"}, Percent: 100},
		{Name: "app", Applications: []string{"dashboard"}, Percent: 100},
		{Name: "net", Addresses: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16")}, Percent: 100},
		{Name: "off", Users: []string{"nobody"}, Percent: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	lo := netip.MustParseAddr("127.0.0.1")
	cases := []struct {
		s      Session
		tables []string
		rule   string
		target bool
	}{
		{Session{User: "app", Database: "shop", ClientAddr: lo}, []string{"inventory.items", "stock"}, "inventory", true},
		{Session{User: "app", Database: "shop", ClientAddr: lo}, []string{"inventory.items", "orders"}, "", false},
		{Session{User: "reporter", Database: "shop", ClientAddr: lo}, []string{"orders"}, "reports", true},
		{Session{User: "app", Database: "analytics", ClientAddr: lo}, []string{"orders"}, "db", true},
		{Session{User: "app", Database: "shop", ApplicationName: "dashboard", ClientAddr: lo}, nil, "app", true},
		{Session{User: "app", Database: "shop", ClientAddr: netip.MustParseAddr("10.1.2.3")}, []string{"x"}, "net", true},
		{Session{User: "app", Database: "shop", ClientAddr: netip.MustParseAddr("10.2.2.3")}, []string{"x"}, "", false},
		{Session{User: "nobody", Database: "shop", ClientAddr: lo}, []string{"x"}, "off", false},
	}
	for i, tc := range cases {
		d := rs.ForSession(tc.s).Decide(tc.tables)
		if d.Rule != tc.rule || d.Target != tc.target {
			t.Errorf("case %d: %+v, want rule %q target %v", i, d, tc.rule, tc.target)
		}
	}
	for _, bad := range []Rule{{Percent: 10}, {Name: "x", Percent: 101}, {Name: "x", Key: "nope"}, {Name: "x", Key: KeyParam}, {Name: "x", Users: []string{"["}}} {
		if _, err := NewRules([]Rule{bad}); err == nil {
			t.Errorf("rule %+v accepted", bad)
		}
	}
}

// rolloutKeys returns which of 1000 keys a 30% rule sends to the target, as a string of 0/1.
func rolloutKeys() string {
	var b strings.Builder
	for i := 0; i < 1000; i++ {
		if InPercent("orders-rollout", fmt.Sprintf("tenant-%d", i), 30) {
			b.WriteByte('1')
		} else {
			b.WriteByte('0')
		}
	}
	return b.String()
}

// TestRolloutStable: a 30% rule routes 30% ± 5% of 1000 distinct keys, every key the same way
// each time and in another process.
func TestRolloutStable(t *testing.T) {
	if os.Getenv("PGSHIFT_ROLLOUT_CHILD") == "1" {
		fmt.Println(rolloutKeys())
		return
	}
	a := rolloutKeys()
	n := strings.Count(a, "1")
	if n < 250 || n > 350 {
		t.Errorf("30%% rule routed %d of 1000 keys", n)
	}
	if b := rolloutKeys(); a != b {
		t.Errorf("the same keys got different answers in one process")
	}
	// Another process (new runtime, new map seeds, new everything).
	cmd := exec.Command(os.Args[0], "-test.run=^TestRolloutStable$")
	cmd.Env = append(os.Environ(), "PGSHIFT_ROLLOUT_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child process: %v", err)
	}
	child := strings.TrimSpace(strings.Split(string(out), "\n")[0])
	if child != a {
		t.Errorf("another process routes the keys differently")
	}
	// Independent rules pick independent key sets.
	same := 0
	for i := 0; i < 1000; i++ {
		k := fmt.Sprintf("tenant-%d", i)
		if InPercent("r1", k, 50) == InPercent("r2", k, 50) {
			same++
		}
	}
	if same < 400 || same > 600 {
		t.Errorf("two 50%% rules agree on %d of 1000 keys: not independent", same)
	}
}
