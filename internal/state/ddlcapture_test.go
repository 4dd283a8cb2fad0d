package state

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestCaptureDDL: the event trigger records each command of a query string with the caller's
// search_path and role (not the SECURITY DEFINER function's), marks the first of a query string,
// leaves out temporary objects, pgshift's own DDL and commands that changed nothing, and no one
// but pgshift's user may write the log. Installed twice, it is there once.
func TestCaptureDDL(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	dsn, conn := c.NewDB(t, "capture")
	ctx := context.Background()
	if out, err := c.Psql(ctx, "capture", `CREATE ROLE app_capture LOGIN; CREATE SCHEMA app AUTHORIZATION app_capture;
		CREATE TABLE app.a (id int PRIMARY KEY); ALTER TABLE app.a OWNER TO app_capture; GRANT CREATE ON DATABASE capture TO app_capture`); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	for range 2 {
		if err := CaptureDDL(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	app, err := pgx.Connect(ctx, strings.Replace(dsn, "user="+c.User, "user=app_capture", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close(ctx)
	for _, sql := range []string{
		`SET search_path = app, public`,
		`ALTER TABLE a ADD COLUMN x int; ALTER TABLE a ADD COLUMN y int`, // one query string, two commands
		`CREATE TEMP TABLE scratch (v int)`,
		`CREATE TABLE IF NOT EXISTS a (id int)`,
		`CREATE INDEX a_x ON a (x)`,
	} {
		if _, err := app.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	// pgshift's own: not recorded.
	if err := CaptureTruncates(ctx, conn, nil); err != nil {
		t.Fatal(err)
	}
	var got string
	if err := conn.QueryRow(ctx, `SELECT string_agg(concat_ws('|', first, command_tag, search_path, role_name, session_role, command,
		(SELECT string_agg(o->>'identity', ',') FROM jsonb_array_elements(objects) o)), E'\n' ORDER BY id) FROM pgshift.ddl_log`).Scan(&got); err != nil {
		t.Fatal(err)
	}
	const want = "t|ALTER TABLE|app, public|app_capture|app_capture|ALTER TABLE a ADD COLUMN x int; ALTER TABLE a ADD COLUMN y int|app.a\n" +
		"f|ALTER TABLE|app, public|app_capture|app_capture|ALTER TABLE a ADD COLUMN x int; ALTER TABLE a ADD COLUMN y int|app.a\n" +
		"t|CREATE INDEX|app, public|app_capture|app_capture|CREATE INDEX a_x ON a (x)|app.a_x"
	if got != want {
		t.Fatalf("ddl_log:\n%s\nwant:\n%s", got, want)
	}
	// The caller's search_path is back after the trigger ran.
	var sp string
	if err := app.QueryRow(ctx, `SELECT current_setting('search_path')`).Scan(&sp); err != nil || sp != "app, public" {
		t.Fatalf("caller's search_path after the trigger: %q %v", sp, err)
	}
	// No one else writes the log: a row of it is a statement pgshift runs on the target.
	if _, err := app.Exec(ctx, `INSERT INTO pgshift.ddl_log (xid, first, command, search_path, role_name, session_role, time_zone,
		date_style, interval_style, command_tag, objects, statement_at) VALUES (1, true, 'DROP TABLE x', '', 'postgres', '', '', '', '', '', '[]', now())`); err == nil {
		t.Fatal("a non-owner could write pgshift.ddl_log")
	}
	// Removed, DDL is no longer recorded.
	if err := RemoveDDLCapture(ctx, conn); err != nil {
		t.Fatal(err)
	}
	if _, err := app.Exec(ctx, `ALTER TABLE a ADD COLUMN z int`); err != nil {
		t.Fatal(err)
	}
}

// TestCaptureDDLNeedsSuperuser: a user that may not create event triggers gets ErrNoDDLCapture,
// which copy turns into a warning and ddl: stop's behaviour.
func TestCaptureDDLNeedsSuperuser(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	dsn, _ := c.NewDB(t, "nosuper")
	ctx := context.Background()
	if out, err := c.Psql(ctx, "nosuper", `CREATE ROLE plain_user LOGIN; GRANT CREATE ON DATABASE nosuper TO plain_user`); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	conn, err := pgx.Connect(ctx, strings.Replace(dsn, "user="+c.User, "user=plain_user", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := CaptureDDL(ctx, conn); !errors.Is(err, ErrNoDDLCapture) || !strings.Contains(err.Error(), "superuser") {
		t.Fatalf("got %v, want ErrNoDDLCapture naming the superuser", err)
	}
}
