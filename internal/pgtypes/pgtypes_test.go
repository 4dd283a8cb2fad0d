package pgtypes

import "testing"

func TestLSNRoundTrip(t *testing.T) {
	for _, s := range []string{"0/0", "0/16B3748", "1/0", "FFFFFFFF/FFFFFFFF", "A/B"} {
		l, err := ParseLSN(s)
		if err != nil {
			t.Fatalf("ParseLSN(%q): %v", s, err)
		}
		if got := l.String(); got != s {
			t.Errorf("round trip %q -> %q", s, got)
		}
	}
	l, _ := ParseLSN("1/2")
	if l != 1<<32|2 {
		t.Errorf("ParseLSN(1/2) = %d", l)
	}
	for _, bad := range []string{"", "12", "x/1", "1/100000000"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
	var s LSN
	if err := s.Scan([]byte("0/10")); err != nil || s != 16 {
		t.Errorf("Scan: %v %d", err, s)
	}
	if err := s.Scan(nil); err != nil || s != 0 {
		t.Errorf("Scan(nil): %v %d", err, s)
	}
}

func TestTableIDQuoting(t *testing.T) {
	cases := []struct {
		id        TableID
		sanitized string
		display   string
	}{
		{TableID{"public", "orders"}, `"public"."orders"`, "public.orders"},
		{TableID{"My Schema", `we"ird`}, `"My Schema"."we""ird"`, `"My Schema"."we""ird"`},
		{TableID{"public", "Order"}, `"public"."Order"`, `public."Order"`},
		{TableID{"s", "1x"}, `"s"."1x"`, `s."1x"`},
	}
	for _, c := range cases {
		if got := c.id.Sanitize(); got != c.sanitized {
			t.Errorf("Sanitize(%v) = %s, want %s", c.id, got, c.sanitized)
		}
		if got := c.id.String(); got != c.display {
			t.Errorf("String(%v) = %s, want %s", c.id, got, c.display)
		}
	}
}

func TestPhaseOrder(t *testing.T) {
	if !PhaseFollowing.AtLeast(PhaseCopied) || PhaseData.AtLeast(PhaseCopied) {
		t.Error("phase order wrong")
	}
	if Phase("bogus").Valid() {
		t.Error("bogus phase valid")
	}
}

// TruncateOnly gives every table its own ONLY: in "TRUNCATE ONLY a, b" the ONLY is a's alone,
// and b's inheritance children are emptied with it.
func TestTruncateOnly(t *testing.T) {
	got := TruncateOnly([]TableID{{Schema: "public", Name: "small"}, {Schema: "public", Name: "Parent"}})
	if want := `TRUNCATE ONLY "public"."small", ONLY "public"."Parent"`; got != want {
		t.Fatalf("%s, want %s", got, want)
	}
}
