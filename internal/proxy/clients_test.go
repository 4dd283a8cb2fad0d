package proxy_test

import (
	"context"
	"encoding/binary"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/proxy"
)

// TestPgbenchModes: pgbench in simple, extended and prepared modes through the proxy.
func TestPgbenchModes(t *testing.T) {
	e := newEnv(t, false, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if out, err := e.pgbench(ctx, "-i", "-s", "1", "-q"); err != nil {
		t.Fatalf("pgbench -i: %v\n%s", err, out)
	}
	for _, mode := range []string{"simple", "extended", "prepared"} {
		out, err := e.pgbench(ctx, "-M", mode, "-c", "4", "-j", "2", "-T", "3", "-n")
		if err != nil {
			t.Fatalf("pgbench -M %s: %v\n%s", mode, err, out)
		}
		if m := failedRE.FindStringSubmatch(out); m == nil || m[1] != "0" {
			t.Errorf("pgbench -M %s: failed transactions %v\n%s", mode, m, out)
		}
		if m := processedRE.FindStringSubmatch(out); m == nil || m[1] == "0" {
			t.Errorf("pgbench -M %s processed nothing\n%s", mode, out)
		}
	}
}

// TestPsycopg runs a non-Go driver from Debian's packages (psycopg2, on libpq) through the
// proxy: parameters, COPY both ways, a server-side cursor, an error and recovery.
func TestPsycopg(t *testing.T) {
	python := "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import psycopg2").CombinedOutput(); err != nil {
		t.Fatalf("psycopg2 is missing (scripts/deps.sh installs python3-psycopg2): %v %s", err, out)
	}
	e := newEnv(t, false, nil)
	script := `
import io, sys, psycopg2
conn = psycopg2.connect(sys.argv[1])
cur = conn.cursor()
cur.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
cur.executemany("INSERT INTO t VALUES (%s, %s)", [(i, "v%d" % i) for i in range(100)])
conn.commit()
cur.copy_expert("COPY t FROM STDIN", io.StringIO("".join("%d\tc%d\n" % (i, i) for i in range(100, 200))))
conn.commit()
out = io.StringIO()
cur.copy_expert("COPY (SELECT id FROM t ORDER BY id) TO STDOUT", out)
assert out.getvalue().split() == [str(i) for i in range(200)], out.getvalue()[:100]
named = conn.cursor(name="big")
named.itersize = 7
named.execute("SELECT id FROM t ORDER BY id")
assert [r[0] for r in named] == list(range(200))
named.close()
conn.commit()
try:
    cur.execute("SELECT 1/0")
except psycopg2.errors.DivisionByZero:
    conn.rollback()
cur.execute("SELECT count(*), sum(id) FROM t WHERE v LIKE %s", ("c%",))
print(cur.fetchone())
conn.close()
`
	cmd := exec.Command(python, "-c", script, e.dsn(""))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("psycopg2 through the proxy: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "(100, 14950)" {
		t.Fatalf("psycopg2 result %q", got)
	}
}

// TestEnumAcrossSwitch: a pgx client that registered an enum type (and its array) from the
// source keeps using its prepared statements after a switch to the target, where the enum has
// another OID; the proxy maps OIDs in Parse, ParameterDescription, RowDescription and inside
// binary arrays.
func TestEnumAcrossSwitch(t *testing.T) {
	e := newEnv(t, true, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	// Shift the target's OIDs so the same types get other numbers there.
	e.exec(e.dst, `CREATE TYPE filler AS ENUM ('x'); CREATE TABLE filler_t (a int); CREATE TYPE filler2 AS (a int, b text)`)
	e.exec(e.src, `CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
		CREATE TABLE people (name text PRIMARY KEY, m mood, ms mood[])`)
	e.replicate(ctx)
	srcOID := e.exec(e.src, `SELECT 'mood'::regtype::oid`)
	dstOID := e.exec(e.dst, `SELECT 'mood'::regtype::oid`)
	if srcOID == dstOID {
		t.Fatalf("the test needs different OIDs, both are %s", srcOID)
	}
	if err := e.p.Reload(ctx); err != nil {
		t.Fatal(err)
	}
	c := e.connect("")
	for _, name := range []string{"mood", "_mood"} {
		typ, err := c.LoadType(ctx, name)
		if err != nil {
			t.Fatalf("load type %s: %v", name, err)
		}
		c.TypeMap().RegisterType(typ)
	}
	if _, err := c.Prepare(ctx, "ins", `INSERT INTO people VALUES ($1, $2, $3)`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Prepare(ctx, "sel", `SELECT m, ms FROM people WHERE name = $1`); err != nil {
		t.Fatal(err)
	}
	check := func(name, m string, ms []string) {
		t.Helper()
		if _, err := c.Exec(ctx, "ins", name, m, ms); err != nil {
			t.Fatalf("insert %s: %v", name, err)
		}
		var gotM string
		var gotMs []string
		if err := c.QueryRow(ctx, "sel", name).Scan(&gotM, &gotMs); err != nil {
			t.Fatalf("select %s: %v", name, err)
		}
		if gotM != m || !slices.Equal(gotMs, ms) {
			t.Fatalf("%s: got %q %q, want %q %q", name, gotM, gotMs, m, ms)
		}
		// Statements pgx prepares and describes on the fly see the client's OIDs too.
		rows, err := c.Query(ctx, `SELECT m, ms FROM people WHERE name = $1`, name)
		if err != nil {
			t.Fatal(err)
		}
		fds := rows.FieldDescriptions()
		rows.Close()
		if got := strconv.FormatUint(uint64(fds[0].DataTypeOID), 10); got != srcOID {
			t.Errorf("RowDescription type OID %s, want the source's %s", got, srcOID)
		}
	}
	check("before", "ok", []string{"sad", "happy"})
	e.waitSynced(ctx)
	if err := e.p.SwitchNow(ctx, proxy.Target, 5*time.Second); err != nil {
		t.Fatalf("switch: %v", err)
	}
	check("after", "happy", []string{"ok", "ok", "sad"})
	// Binary results, with and without a RowDescription before the rows, and a binary array
	// parameter: the arrays carry the element type's OID inside each value.
	for _, q := range []string{`SELECT ms FROM people WHERE name = $1`, `SELECT ms /* new text */ FROM people WHERE name = $1`} {
		var got []string
		if err := c.QueryRow(ctx, q, pgx.QueryResultFormats{pgx.BinaryFormatCode}, "after").Scan(&got); err != nil {
			t.Fatalf("binary array result: %v", err)
		}
		if !slices.Equal(got, []string{"ok", "ok", "sad"}) {
			t.Errorf("binary array result %q", got)
		}
	}
	raw := c.PgConn().ExecParams(ctx, `SELECT ms FROM people WHERE name = 'after'`, nil, nil, nil, []int16{1}).Read()
	if raw.Err != nil {
		t.Fatal(raw.Err)
	}
	if len(raw.Rows) != 1 || len(raw.Rows[0][0]) < 12 {
		t.Fatalf("raw binary array: %v", raw.Rows)
	}
	if elem := binary.BigEndian.Uint32(raw.Rows[0][0][8:12]); strconv.FormatUint(uint64(elem), 10) != srcOID {
		t.Errorf("the binary array's element OID is %d, want the source's %s", elem, srcOID)
	}
	if got := strconv.FormatUint(uint64(raw.FieldDescriptions[0].DataTypeOID), 10); got == dstOID {
		t.Errorf("RowDescription shows the target's OID %s", got)
	}
	// A binary array parameter built with the source's element OID.
	arr := raw.Rows[0][0]
	if _, err := c.PgConn().ExecParams(ctx, `INSERT INTO people (name, ms) VALUES ('bin', $1::mood[])`, [][]byte{arr},
		[]uint32{mustOID(t, e.exec(e.src, `SELECT 'mood[]'::regtype::oid`))}, []int16{1}, nil).Close(); err != nil {
		t.Errorf("binary array parameter with the source's OIDs: %v", err)
	}
	if got := e.exec(e.dst, `SELECT m || ':' || ms::text FROM people WHERE name = 'after'`); got != "happy:{ok,ok,sad}" {
		t.Errorf("the target holds %q", got)
	}
	if got := e.exec(e.src, `SELECT count(*) FROM people WHERE name = 'after'`); got != "0" {
		t.Errorf("the write after the switch reached the source")
	}
	// A SET survives the switch; so does LISTEN.
	if _, err := c.Exec(ctx, `SET search_path = public, pg_catalog`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `LISTEN after_switch`); err != nil {
		t.Fatal(err)
	}
	if err := e.p.SwitchNow(ctx, proxy.Source, 5*time.Second); err != nil {
		t.Fatalf("switch back: %v", err)
	}
	var sp string
	if err := c.QueryRow(ctx, `SHOW search_path`).Scan(&sp); err != nil || sp != "public, pg_catalog" {
		t.Errorf("search_path after the switch: %v %q", err, sp)
	}
	var chans []string
	if err := c.QueryRow(ctx, `SELECT array_agg(c) FROM pg_listening_channels() c`).Scan(&chans); err != nil || !slices.Equal(chans, []string{"after_switch"}) {
		t.Errorf("LISTEN channels after the switch: %v %v", err, chans)
	}
}

func mustOID(t *testing.T, s string) uint32 {
	t.Helper()
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		t.Fatal(err)
	}
	return uint32(n)
}
