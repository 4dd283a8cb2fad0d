package sqlparse

import (
	"fmt"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	c := NewClassifier(ClassifierOptions{AllowFunctions: []string{"public.safe_fn", "reporting.total"}})
	cases := []struct {
		sql      string
		readOnly bool
		reason   string
		tables   []string
	}{
		{"SELECT 1", true, "select", nil},
		{"select * from orders o join public.items i on i.id = o.item_id where o.id = $1", true, "select", []string{"orders", "public.items"}},
		{"WITH r AS (SELECT * FROM orders) SELECT count(*) FROM r", true, "select", []string{"orders"}},
		{"SELECT 1 UNION ALL SELECT 2 FROM t", true, "select", []string{"t"}},
		{"VALUES (1), (2)", true, "select", nil},
		{"TABLE orders", true, "select", []string{"orders"}},
		{"SELECT now(), lower(name), count(*) FROM t GROUP BY 2", true, "select", []string{"t"}},
		{"SELECT public.safe_fn(1)", true, "select", nil},
		{"SELECT * FROM orders FOR UPDATE", false, "locking", nil},
		{"SELECT * FROM orders FOR SHARE SKIP LOCKED", false, "locking", nil},
		{"SELECT * FROM (SELECT * FROM t FOR UPDATE) s", false, "locking", nil},
		{"WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", false, "cte-write", nil},
		{"WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT 1", false, "cte-write", nil},
		{"SELECT nextval('s')", false, "function", nil},
		{"SELECT setval('s', 10)", false, "function", nil},
		{"SELECT currval('s')", false, "function", nil},
		{"SELECT pg_advisory_lock(1)", false, "function", nil},
		{"SELECT pg_try_advisory_xact_lock(1)", false, "function", nil},
		{"SELECT set_config('a.b', 'c', false)", false, "function", nil},
		{"SELECT my_user_function(1)", false, "function", nil},
		{"SELECT other.safe_fn(1)", false, "function", nil},
		{"SELECT * FROM t WHERE a = (SELECT nextval('s'))", false, "function", nil},
		{"SELECT * INTO newt FROM t", false, "into", nil},
		{"INSERT INTO t VALUES (1)", false, "write", nil},
		{"UPDATE t SET a = 1", false, "write", nil},
		{"DELETE FROM t", false, "write", nil},
		{"SELECT 1; INSERT INTO t VALUES (1)", false, "write", nil},
		{"SET search_path = x", false, "session", nil},
		{"BEGIN", false, "transaction", nil},
		{"EXPLAIN ANALYZE DELETE FROM t", false, "utility", nil},
		{"SELEC garbage", false, "parse-error", nil},
		{"", false, "empty", nil},
	}
	for _, tc := range cases {
		st := c.Classify(tc.sql)
		if st.ReadOnly != tc.readOnly || st.Reason != tc.reason {
			t.Errorf("%q: read-only %v reason %q, want %v %q", tc.sql, st.ReadOnly, st.Reason, tc.readOnly, tc.reason)
		}
		if tc.readOnly && fmt.Sprint(st.Tables) != fmt.Sprint(tc.tables) {
			t.Errorf("%q: tables %v, want %v", tc.sql, st.Tables, tc.tables)
		}
	}
	if st := c.Classify("BEGIN READ ONLY"); !st.BeginReadOnly || st.ReadOnly {
		t.Errorf("BEGIN READ ONLY: %+v", st)
	}
	if st := c.Classify("START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"); !st.BeginReadOnly {
		t.Errorf("START TRANSACTION ... READ ONLY: %+v", st)
	}
	if st := c.Classify("BEGIN READ WRITE"); st.BeginReadOnly {
		t.Errorf("BEGIN READ WRITE counted as read only")
	}
	if st := c.Classify("CREATE TEMP TABLE x (a int)"); !st.TempObjects {
		t.Errorf("CREATE TEMP TABLE: %+v", st)
	}
	if st := c.Classify("COPY t FROM STDIN"); !st.CopyFromStdin {
		t.Errorf("COPY FROM STDIN: %+v", st)
	}
	if st := c.Classify("COPY t TO STDOUT"); st.CopyFromStdin {
		t.Errorf("COPY TO STDOUT counted as copy-in")
	}
	if st := c.Classify("DEALLOCATE ALL"); !st.DeallocateAll {
		t.Errorf("DEALLOCATE ALL: %+v", st)
	}
	if st := c.Classify("DEALLOCATE p1"); len(st.Deallocate) != 1 || st.Deallocate[0] != "p1" {
		t.Errorf("DEALLOCATE p1: %+v", st)
	}
	// With catalog functions: stable functions the catalog vouches for are accepted.
	cc := NewClassifier(ClassifierOptions{CatalogFunctions: map[string]bool{"inet_server_port": true, "nextval": true}})
	if !cc.Classify("SELECT inet_server_port()").ReadOnly {
		t.Errorf("a catalog function was refused")
	}
	if cc.Classify("SELECT nextval('s')").ReadOnly {
		t.Errorf("the deny list must win over the catalog")
	}
	// The cache returns the same answer.
	if c.Classify("SELECT 1") != c.Classify("SELECT 1") || c.ClassifyBytes([]byte("SELECT 1")) != c.Classify("SELECT 1") {
		t.Errorf("cache miss on a repeated text")
	}
}

func FuzzClassify(f *testing.F) {
	for _, s := range []string{"SELECT 1", "select * from t for update", "WITH x AS (DELETE FROM t RETURNING 1) SELECT 1",
		"BEGIN READ ONLY", "SELECT nextval('x')", "COPY t FROM STDIN", "\x00", "SELECT $1::int", "DEALLOCATE ALL"} {
		f.Add(s)
	}
	c := NewClassifier(ClassifierOptions{})
	f.Fuzz(func(t *testing.T, sql string) {
		st := c.Classify(sql)
		if st.ReadOnly && (st.TxControl || st.SessionState || st.TempObjects || st.CopyFromStdin) {
			t.Fatalf("%q: read-only and also %+v", sql, st)
		}
		if st.ReadOnly && containsWriteKeyword(sql) && !strings.Contains(strings.ToLower(sql), "select") {
			t.Fatalf("%q classified read-only", sql)
		}
	})
}

func containsWriteKeyword(s string) bool {
	l := strings.ToLower(s)
	for _, w := range []string{"insert", "update", "delete", "merge", "truncate"} {
		if strings.HasPrefix(strings.TrimSpace(l), w) {
			return true
		}
	}
	return false
}

// BenchmarkClassifyCold is the parser's cost for a statement seen for the first time.
func BenchmarkClassifyCold(b *testing.B) {
	for i := 0; i < b.N; i++ {
		c := NewClassifier(ClassifierOptions{})
		c.Classify("SELECT abalance FROM pgbench_accounts WHERE aid = $1")
	}
}

// BenchmarkClassifyCached is the cost for a statement the cache holds (the steady state).
func BenchmarkClassifyCached(b *testing.B) {
	c := NewClassifier(ClassifierOptions{})
	q := []byte("SELECT abalance FROM pgbench_accounts WHERE aid = 12345;")
	c.ClassifyBytes(q)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.ClassifyBytes(q)
	}
}

func TestCacheKey(t *testing.T) {
	for in, want := range map[string]string{
		"SELECT abalance FROM pgbench_accounts WHERE aid = 12345;":          "SELECT abalance FROM pgbench_accounts WHERE aid = 0;",
		"select * from t1 where a = 'x''y' and b = E'q\\'r' and c = 1.5e-3": "select * from t1 where a = '' and b = E'' and c = 0",
		`SELECT "col 1""x", $1, $$lit$$, $tag$a$b$tag$ FROM t`:              `SELECT "col 1""x", $1, '', '' FROM t`,
		"SELECT 1 /* a /* nested */ 2 */ FOR UPDATE -- 3":                   "SELECT 0 /* a /* nested */ 2 */ FOR UPDATE -- 3",
		"SELECT 'unterminated": "SELECT 'unterminated",
		"SELECT x1, 2x FROM t": "SELECT x1, 0 FROM t",
	} {
		if got := string(cacheKey(nil, []byte(in))); got != want {
			t.Errorf("cacheKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzCacheKey: two texts with the same key must classify the same.
func FuzzCacheKey(f *testing.F) {
	f.Add("SELECT 1", "SELECT 2")
	f.Add("SELECT 'a' FOR UPDATE", "SELECT 'b'")
	f.Add("SELECT E'\\'' FROM t", "SELECT E'x' FROM t")
	f.Fuzz(func(t *testing.T, a, b string) {
		if string(cacheKey(nil, []byte(a))) != string(cacheKey(nil, []byte(b))) {
			return
		}
		ca := NewClassifier(ClassifierOptions{}).classify(a)
		cb := NewClassifier(ClassifierOptions{}).classify(b)
		if ca.ReadOnly != cb.ReadOnly || fmt.Sprint(ca.Tables) != fmt.Sprint(cb.Tables) {
			t.Fatalf("same key, different classes: %q %+v vs %q %+v", a, ca, b, cb)
		}
	})
}
