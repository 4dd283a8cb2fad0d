package proxy_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// TestRelayBasics runs psql and pgx through the proxy in source mode: simple and extended
// queries, an error inside a pipeline, COPY both ways, NOTIFY, notices.
func TestRelayBasics(t *testing.T) {
	e := newEnv(t, false, nil)
	e.exec(e.src, `CREATE TABLE items (id int PRIMARY KEY, name text)`)
	out, err := e.psql("-c", "INSERT INTO items VALUES (1, 'a'), (2, 'b')", "-c", "SELECT count(*) FROM items")
	if err != nil || !strings.HasSuffix(out, "2") {
		t.Fatalf("psql: %v: %s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := e.connect("")
	var name string
	if err := c.QueryRow(ctx, `SELECT name FROM items WHERE id = $1`, 2).Scan(&name); err != nil || name != "b" {
		t.Fatalf("extended query: %v %q", err, name)
	}
	// An error in the middle of a batch, then the session works again.
	b := &pgx.Batch{}
	b.Queue(`SELECT 1`)
	b.Queue(`SELECT 1/0`)
	b.Queue(`SELECT 3`)
	err = c.SendBatch(ctx, b).Close()
	if err == nil || !strings.Contains(err.Error(), "division by zero") {
		t.Fatalf("batch error: %v", err)
	}
	var n int
	if err := c.QueryRow(ctx, `SELECT count(*) FROM items`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("after error: %v %d", err, n)
	}
	// COPY in and out.
	tag, err := c.PgConn().CopyFrom(ctx, strings.NewReader("10\tx\n11\ty\n"), `COPY items FROM STDIN`)
	if err != nil || tag.RowsAffected() != 2 {
		t.Fatalf("copy from: %v %v", err, tag)
	}
	var sb strings.Builder
	if _, err := c.PgConn().CopyTo(ctx, &sb, `COPY (SELECT id FROM items ORDER BY id) TO STDOUT`); err != nil {
		t.Fatal(err)
	}
	if sb.String() != "1\n2\n10\n11\n" {
		t.Fatalf("copy to: %q", sb.String())
	}
	// psql's \copy uses COPY FROM STDIN in the simple protocol.
	if out, err := e.psql("-c", `\copy items from program 'printf "20\tz\n"'`); err != nil {
		t.Fatalf("psql \\copy: %v %s", err, out)
	}
	// LISTEN / NOTIFY between two proxied sessions.
	l := e.connect("")
	if _, err := l.Exec(ctx, `LISTEN chan1`); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Exec(ctx, `NOTIFY chan1, 'hello'`); err != nil {
		t.Fatal(err)
	}
	nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
	defer ncancel()
	notif, err := l.WaitForNotification(nctx)
	if err != nil || notif.Payload != "hello" {
		t.Fatalf("notification: %v %+v", err, notif)
	}
	// A notice reaches the client.
	if out, _ := e.psql("-c", `DO $$ BEGIN RAISE NOTICE 'hi there'; END $$`); !strings.Contains(out, "hi there") {
		t.Fatalf("notice not relayed: %q", out)
	}
}
