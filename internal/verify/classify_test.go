package verify

import (
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

func sp(s string) *string { return &s }

func TestClassify(t *testing.T) {
	cases := []struct {
		typ      string
		src, tgt *string
		want     string
	}{
		{"text", sp("a"), sp("a"), ""},
		{"text", nil, nil, ""},
		{"text", sp(""), nil, ClassNullEmpty},
		{"text", nil, sp(""), ClassNullEmpty},
		{"text", sp("x"), nil, ClassValue},
		{"timestamp without time zone", sp("2024-01-01 10:00:00.123456"), sp("2024-01-01 10:00:00.123"), ClassTimestamp},
		{"timestamp(3) with time zone", sp("2024-01-01 10:00:00.123456+00"), sp("2024-01-01 10:00:00.123+00"), ClassTimestamp},
		{"timestamp with time zone", sp("2024-01-01 10:00:00.5+00"), sp("2024-01-01 10:00:01+00"), ClassTimestamp},
		{"timestamp with time zone", sp("2024-01-01 10:00:00+00"), sp("2024-01-02 11:00:00+00"), ClassValue},
		{"time without time zone", sp("10:00:00.123456"), sp("10:00:00.123"), ClassTimestamp},
		{"double precision", sp("0.3333333333333333"), sp("0.3333333432674408"), ClassFloat},
		{"double precision", sp("1"), sp("2"), ClassValue},
		{"double precision", sp("NaN"), sp("0"), ClassValue},
		{"real", sp("-0"), sp("0"), ClassFloat},
		{"numeric(20,6)", sp("12.345678"), sp("12.350000"), ClassNumeric},
		{"numeric", sp("1.005"), sp("1.01"), ClassNumeric},
		{"numeric", sp("1.5"), sp("2.5"), ClassValue},
		{"numeric", sp("1.50"), sp("1.5"), ClassNumeric},
		{"character(8)", sp("ab      "), sp("ab"), ClassCharPadding},
		{"text", sp("ab "), sp("ab"), ClassCharPadding},
		{"text", sp("café"), sp("cafÃ©"), ClassEncoding},
		{"text", sp("e\u0301"), sp("\u00e9"), ClassEncoding},
		{"text", sp("naïve"), sp("na?ve"), ClassEncoding},
		{"text", sp("naïve"), sp("na\uFFFDve"), ClassEncoding},
		{"text", sp("a?c"), sp("abc"), ClassValue},
		{"text", sp("Straße"), sp("STRASSE"), ClassValue},
		{"text", sp("Hello"), sp("hello"), ClassCollation},
		{"jsonb", sp(`{"k": 1}`), sp(`{"k": 2}`), ClassValue},
		{"integer[]", sp("{}"), nil, ClassNullEmpty},
	}
	for _, c := range cases {
		if got := Classify(c.typ, c.src, c.tgt); got != c.want {
			t.Errorf("Classify(%q, %v, %v) = %q, want %q", c.typ, deref(c.src), deref(c.tgt), got, c.want)
		}
	}
}

func deref(s *string) string {
	if s == nil {
		return "NULL"
	}
	return *s
}

func FuzzClassify(f *testing.F) {
	f.Add("timestamp", "2024-01-01 10:00:00", "2024-01-01 10:00:00.1")
	f.Add("numeric", "1.5", "1.50")
	f.Add("text", "é", "Ã©")
	f.Add("double precision", "1e308", "-1e308")
	f.Fuzz(func(t *testing.T, typ, a, b string) {
		c := Classify(typ, &a, &b)
		if a == b && c != "" {
			t.Fatalf("equal values classified %q", c)
		}
		if a != b && c == "" {
			t.Fatalf("different values %q %q not classified", a, b)
		}
	})
}

func TestTruncate(t *testing.T) {
	long := strings.Repeat("é", 100)
	got := *truncate(&long, 11)
	if !strings.HasPrefix(got, strings.Repeat("é", 5)+"…") || !strings.Contains(got, "200 bytes") {
		t.Errorf("truncate = %q", got)
	}
	if truncate(nil, 5) != nil {
		t.Error("truncate(nil) not nil")
	}
}

func TestQuantileBounds(t *testing.T) {
	var sample [][]string
	for _, s := range []string{"a", "b", "b", "b", "c", "d", "e", "f", "g", "h"} {
		sample = append(sample, []string{s})
	}
	got := quantileBounds(sample, 5)
	// Boundaries at every 2nd sample key, repeats dropped: b (idx 1), b (idx 3, dropped), d (5), f (7).
	want := []string{"b", "d", "f"}
	if len(got) != len(want) {
		t.Fatalf("quantileBounds = %v, want %v", got, want)
	}
	for i := range want {
		if got[i][0] != want[i] {
			t.Errorf("bound %d = %v, want %s", i, got[i], want[i])
		}
	}
	if quantileBounds(nil, 4) != nil || quantileBounds(sample, 1) != nil {
		t.Error("no bounds expected")
	}
}

func TestBucketSQL(t *testing.T) {
	q := newTableSQL(pgtypes.TableID{Schema: "s", Name: `My "T"`}, []string{"k", "v"}, []string{binaryHash[25], ""}, []string{"k"}, []string{"text"}, []bool{true}, hashFast)
	sql, args := q.bucketHashSQL([]string{"a"}, nil, [][]string{{"m"}, {"t"}})
	if !strings.Contains(sql, `"s"."My ""T"""`) || !strings.Contains(sql, `COLLATE "C" > $1::text::text COLLATE "C"`) ||
		!strings.Contains(sql, `(coalesce(hashtextextended(x."k" COLLATE "C", 1), -7046029254386353131) # hashtextextended(ROW(x."v")::text COLLATE "C", 0))`) || len(args) != 3 {
		t.Errorf("bucket SQL: %s %v", sql, args)
	}
	// The CASE tree: keys ≤ t ($2) split again at m ($3) into buckets 0 and 1, the rest are 2.
	if !strings.Contains(sql, `<= $2::text::text COLLATE "C" THEN CASE WHEN`) || !strings.Contains(sql, "THEN 0 ELSE 1 END ELSE 2 END") ||
		args[1] != "t" || args[2] != "m" {
		t.Errorf("bucket tree: %s %v", sql, args)
	}
	multi := newTableSQL(pgtypes.TableID{Schema: "s", Name: "t"}, []string{"a", "b"}, nil, []string{"a", "b"}, []string{"integer", "text"}, []bool{false, true}, hashPortable)
	sql, _ = multi.leafSQL([]string{"1", "x"}, []string{"2", "y"}, false)
	if !strings.Contains(sql, `(x."a", x."b" COLLATE "C") > ($1::text::integer, $2::text::text COLLATE "C")`) ||
		!strings.Contains(sql, "convert_to(ROW") {
		t.Errorf("composite range SQL: %s", sql)
	}
}

func TestDiffSchema(t *testing.T) {
	obj := func(kind, name, def string) schemaObject { return schemaObject{kind: kind, name: name, def: def} }
	src := map[string]schemaObject{}
	tgt := map[string]schemaObject{}
	add := func(m map[string]schemaObject, o schemaObject) { m[o.kind+" "+o.name] = o }
	add(src, obj("table", "public.a", "table"))
	add(src, obj("column", "public.a.ts", "timestamp without time zone"))
	add(tgt, obj("table", "public.a", "table"))
	add(tgt, obj("column", "public.a.ts", "timestamp(3) without time zone"))
	add(src, obj("table", "public.gone", "table"))
	add(src, obj("column", "public.gone.x", "integer"))
	add(tgt, obj("index", "public.extra_idx", "CREATE INDEX ..."))
	res := diffSchema(src, tgt, 100)
	if len(res.Diffs) != 3 {
		t.Fatalf("diffs: %+v", res.Diffs)
	}
	if res.Diffs[0].Kind != "table" || res.Diffs[0].Issue != "missing on target" {
		t.Errorf("first diff %+v", res.Diffs[0])
	}
	if res.Diffs[1].Class != ClassTimestamp || res.Diffs[2].Issue != "extra on target" {
		t.Errorf("diffs %+v", res.Diffs)
	}
}

func TestCompareSequences(t *testing.T) {
	id := func(n string) pgtypes.TableID { return pgtypes.TableID{Schema: "public", Name: n} }
	src := []catalog.Sequence{
		{ID: id("up"), LastValue: 100, IsCalled: true},
		{ID: id("down"), LastValue: -50, IsCalled: true},
		{ID: id("fresh"), LastValue: 1, IsCalled: false},
		{ID: id("ahead"), LastValue: 5, IsCalled: true},
	}
	tgt := []catalog.Sequence{
		{ID: id("up"), LastValue: 90, IsCalled: true},
		{ID: id("down"), LastValue: -40, IsCalled: true},
		{ID: id("fresh"), LastValue: 1, IsCalled: false},
		{ID: id("ahead"), LastValue: 9, IsCalled: true},
	}
	res := compareSequences(src, tgt, map[pgtypes.TableID]int64{id("down"): -1}, false)
	// A target ahead is a difference too (negative Behind): its next value is not the source's.
	if res.Compared != 4 || len(res.Diffs) != 3 || res.Diffs[0].Behind != 10 || res.Diffs[1].Behind != 10 ||
		res.Diffs[2].Name != "public.ahead" || res.Diffs[2].Behind != -4 {
		t.Fatalf("compareSequences = %+v", res)
	}
}
