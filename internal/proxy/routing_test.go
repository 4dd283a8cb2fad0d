package proxy_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/proxy"
	"github.com/pgshift/pgshift/internal/proxy/route"
)

// splitEnv is a source replicated to a target, and a proxy in split mode whose progress is the
// subscription's replication origin on the target (the source position of the last
// transaction it applied) and a lag the test sets.
type splitEnv struct {
	*env
	lag atomic.Int64 // nanoseconds
	reg *prometheus.Registry
}

// statementCounts returns pgshift_proxy_statements_total as (route, reason, value) rows.
func (se *splitEnv) statementCounts(context.Context) [][3]string {
	mfs, err := se.reg.Gather()
	if err != nil {
		se.t.Fatal(err)
	}
	var out [][3]string
	for _, mf := range mfs {
		if mf.GetName() != "pgshift_proxy_statements_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var r [3]string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "route":
					r[0] = l.GetValue()
				case "reason":
					r[1] = l.GetValue()
				}
			}
			r[2] = fmt.Sprint(m.GetCounter().GetValue())
			out = append(out, r)
		}
	}
	return out
}

func atof(s string) float64 {
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

func newSplitEnv(t *testing.T, rules []route.Rule, tune func(*proxy.Config)) *splitEnv {
	se := &splitEnv{reg: prometheus.NewRegistry()}
	var mu sync.Mutex // the poller and the test's cleanup share the connection
	var dstConn *pgx.Conn
	progress := proxy.ProgressFunc(func(ctx context.Context) (pgtypes.LSN, time.Duration, bool, error) {
		mu.Lock()
		defer mu.Unlock()
		c := dstConn
		if c == nil {
			return 0, 0, false, nil
		}
		var lsn string
		err := c.QueryRow(ctx, `SELECT coalesce(max(remote_lsn)::text, '0/0') FROM pg_replication_origin_status`).Scan(&lsn)
		if err != nil {
			return 0, 0, false, err
		}
		l, err := pgtypes.ParseLSN(lsn)
		return l, time.Duration(se.lag.Load()), true, err
	})
	se.env = newEnvWith(t, true, func(c *proxy.Config) {
		c.Mode = proxy.ModeSplit
		c.Rules = rules
		c.ReadYourWrites = true
		c.PollInterval = 10 * time.Millisecond
		if tune != nil {
			tune(c)
		}
	}, proxy.Options{Progress: progress, Registerer: se.reg})
	ctx := context.Background()
	c, err := pgx.Connect(ctx, se.dstDSN)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		c.Close(context.Background())
		dstConn = nil
	})
	mu.Lock()
	dstConn = c
	mu.Unlock()
	return se
}

// setup creates the tables on the source, replicates them, and adds a trigger on the target
// that records every write not made by replication.
func (se *splitEnv) setup(ctx context.Context, sql string) {
	se.exec(se.src, sql)
	se.replicate(ctx)
	se.exec(se.dst, `CREATE TABLE direct_writes (tbl text, at timestamptz DEFAULT now());
		CREATE FUNCTION note_write() RETURNS trigger LANGUAGE plpgsql AS $$
		BEGIN INSERT INTO direct_writes (tbl) VALUES (TG_TABLE_NAME); RETURN NULL; END $$`)
	for _, tbl := range strings.Fields(se.exec(se.src, `SELECT string_agg(tablename, ' ') FROM pg_tables WHERE schemaname = 'public'`)) {
		se.exec(se.dst, fmt.Sprintf(`CREATE TRIGGER note AFTER INSERT OR UPDATE OR DELETE ON %s FOR EACH ROW EXECUTE FUNCTION note_write()`, tbl))
	}
}

// servedBy returns which server ran a read on c: the cluster's port tells.
func (se *splitEnv) servedBy(ctx context.Context, c *pgx.Conn, sql string) string {
	se.t.Helper()
	var port string
	if err := c.QueryRow(ctx, sql).Scan(&port); err != nil {
		se.t.Fatalf("%s: %v", sql, err)
	}
	switch port {
	case fmt.Sprint(se.src.Port):
		return "source"
	case fmt.Sprint(se.dst.Port):
		return "target"
	}
	se.t.Fatalf("port %s is neither server's", port)
	return ""
}

const portQuery = `SELECT setting FROM pg_settings WHERE name = 'port'`

// TestSplitRouting: each rule kind, writes never on the target (checked there by a trigger),
// reads under a lag over the limit all on the source, BEGIN READ ONLY whole on the target.
func TestSplitRouting(t *testing.T) {
	rules := []route.Rule{
		{Name: "items-reads", Tables: []string{"items"}, Percent: 100},
		{Name: "reports", Applications: []string{"report*"}, Percent: 100},
		{Name: "analyst", Users: []string{"analyst"}, Percent: 100},
		{Name: "office", Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, Percent: 100},
	}
	se := newSplitEnv(t, rules, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	roles := `CREATE ROLE analyst LOGIN PASSWORD 'analyst-pw'; CREATE ROLE plain LOGIN PASSWORD 'plain-pw'`
	se.exec(se.src, roles)
	se.exec(se.dst, roles)
	se.setup(ctx, `CREATE TABLE items (id int PRIMARY KEY, v text); CREATE TABLE orders (id int PRIMARY KEY);
		INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, 10) g;
		GRANT SELECT ON ALL TABLES IN SCHEMA public TO analyst; GRANT ALL ON ALL TABLES IN SCHEMA public TO plain`)
	af := fmt.Sprintf("\"postgres\" \"%s\"\n\"analyst\" \"analyst-pw\"\n\"plain\" \"plain-pw\"\n", testPassword)
	if err := os.WriteFile(se.authFile, []byte(af), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := se.p.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	waitLag := func() {
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if st := se.p.Stats(); st.LagSeconds >= 0 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Fatalf("the lag guard never saw a measurement")
	}
	waitLag()
	plain := se.connect("user=plain password=plain-pw")
	report := se.connect("user=plain password=plain-pw application_name=report-daily")
	analyst := se.connect("user=analyst password=analyst-pw")
	// Tables rule: a read of items alone goes to the target, of orders (or both) not.
	if got := se.servedBy(ctx, plain, `SELECT (SELECT setting FROM pg_settings WHERE name = 'port') FROM items LIMIT 1`); got != "source" {
		// pg_settings is a table of the statement too, so the items rule does not match.
		t.Errorf("read of items and pg_settings went to the %s", got)
	}
	var n int
	if err := plain.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 10 {
		t.Fatalf("count items: %v %d", err, n)
	}
	if got := se.servedBy(ctx, plain, portQuery); got != "source" {
		t.Errorf("plain session read without a matching rule went to the %s", got)
	}
	if got := se.servedBy(ctx, report, portQuery); got != "target" {
		t.Errorf("application_name rule: read went to the %s", got)
	}
	if got := se.servedBy(ctx, analyst, portQuery); got != "target" {
		t.Errorf("user rule: read went to the %s", got)
	}
	// Locking reads, nextval, writes: the source, even for routed sessions.
	if got := se.servedBy(ctx, report, portQuery+` FOR UPDATE`); got != "source" {
		t.Errorf("SELECT ... FOR UPDATE went to the %s", got)
	}
	for _, w := range []string{`INSERT INTO items VALUES (100, 'w')`, `UPDATE items SET v = 'u' WHERE id = 1`,
		`WITH d AS (DELETE FROM items WHERE id = 2 RETURNING *) SELECT count(*) FROM d`, `DELETE FROM items WHERE id = 3`} {
		if _, err := report.Exec(ctx, w); err != nil {
			t.Fatalf("%s: %v", w, err)
		}
	}
	// Right after its writes the session reads from the source (read-your-writes) ...
	if got := se.servedBy(ctx, report, portQuery); got != "source" {
		t.Logf("read right after a write went to the %s (the target had already applied it)", got)
	}
	// ... and once the target has applied them, BEGIN READ ONLY goes whole to the target.
	se.waitSynced(ctx)
	time.Sleep(100 * time.Millisecond)
	tx, err := report.BeginTx(ctx, pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	var port string
	if err := tx.QueryRow(ctx, `SELECT current_setting('port')`).Scan(&port); err != nil || port != fmt.Sprint(se.dst.Port) {
		t.Errorf("BEGIN READ ONLY: port %s (%v), want the target's", port, err)
	}
	_ = tx.Commit(ctx)
	// Lag over the limit: everything on the source, until it recovers.
	se.lag.Store(int64(time.Minute))
	time.Sleep(100 * time.Millisecond)
	if got := se.servedBy(ctx, report, portQuery); got != "source" {
		t.Errorf("lag over the limit: read went to the %s", got)
	}
	se.lag.Store(0)
	time.Sleep(100 * time.Millisecond)
	se.waitSynced(ctx)
	time.Sleep(100 * time.Millisecond)
	if got := se.servedBy(ctx, report, portQuery); got != "target" {
		t.Errorf("lag recovered: read went to the %s", got)
	}
	// No write ever reached the target except through replication.
	if got := se.exec(se.dst, `SELECT count(*) FROM direct_writes`); got != "0" {
		t.Errorf("%s writes reached the target directly", got)
	}
	if got := se.exec(se.src, `SELECT count(*) FROM items WHERE id = 100`); got != "1" {
		t.Errorf("the write did not reach the source")
	}
	// The console shows the routes with their counts.
	adm := se.admin()
	rows, err := adm.Query(ctx, "SHOW ROUTES")
	if err != nil {
		t.Fatal(err)
	}
	var table [][]string
	for rows.Next() {
		vals, _ := rows.Values()
		row := make([]string, len(vals))
		for i, v := range vals {
			row[i] = fmt.Sprint(v)
		}
		table = append(table, row)
	}
	rows.Close()
	if len(table) != len(rules) || table[1][0] != "reports" || table[1][8] == "0" {
		t.Errorf("SHOW ROUTES: %v", table)
	}
}

// TestReadYourWrites runs pgbench in split mode with every read routed: each transaction
// writes a new key and reads it back at once and after a short sleep. Read-your-writes keeps
// the reads on the source until the target applied the write, so none fails (a read that
// misses the row divides by zero); some reads do reach the target.
func TestReadYourWrites(t *testing.T) {
	se := newSplitEnv(t, []route.Rule{{Name: "all", Percent: 100}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	se.setup(ctx, `CREATE TABLE ryw (k bigint PRIMARY KEY, at timestamptz DEFAULT now())`)
	script := filepath.Join(t.TempDir(), "ryw.sql")
	if err := os.WriteFile(script, []byte(`\set k random(1, 1000000000000)
INSERT INTO ryw (k) VALUES (:k) ON CONFLICT DO NOTHING;
SELECT 1 / count(*) FROM ryw WHERE k = :k;
\sleep 50 ms
SELECT 1 / count(*) FROM ryw WHERE k = :k;
`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"simple", "extended"} {
		out, err := se.pgbench(ctx, "-n", "-M", mode, "-c", "4", "-j", "2", "-T", "4", "-f", script)
		if err != nil {
			t.Fatalf("pgbench -M %s: %v\n%s", mode, err, out)
		}
		if m := failedRE.FindStringSubmatch(out); m == nil || m[1] != "0" {
			t.Errorf("pgbench -M %s: failed transactions %v\n%s", mode, m, out)
		}
	}
	if got := se.exec(se.dst, `SELECT count(*) FROM direct_writes`); got != "0" {
		t.Errorf("%s writes reached the target directly", got)
	}
	var target, ryw float64
	for _, row := range se.statementCounts(ctx) {
		switch {
		case row[0] == "target":
			target += atof(row[2])
		case row[1] == "read-your-writes":
			ryw += atof(row[2])
		}
	}
	t.Logf("reads on the target: %.0f, held on the source by read-your-writes: %.0f", target, ryw)
	if target == 0 || ryw == 0 {
		t.Errorf("want reads on both sides: target %.0f, read-your-writes %.0f", target, ryw)
	}
}
