package apply

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/sqlparse"
)

// ddlChange is a captured schema change as cdc delivers it.
func ddlChange(id int64, command, role string) *cdc.Change {
	return &cdc.Change{Kind: cdc.Schema, DDL: &cdc.DDL{ID: id, First: true, Command: command, Tag: "ALTER TABLE",
		SearchPath: `"$user", public`, Role: role, SessionRole: role, TimeZone: "UTC", DateStyle: "ISO, MDY", IntervalStyle: "postgres"}}
}

// TestDDLBarrier: a captured schema change commits the source transactions before its own on
// their own, runs in its own source transaction's target transaction between the rows before
// and after it (a rename: the rows before name the old column, the rows after the new one), and
// is in the audit log; the next transaction gets a target transaction of its own.
func TestDDLBarrier(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	const schema = `CREATE TABLE u (id int PRIMARY KEY, email text, n int); INSERT INTO u VALUES (1, 'x', 0), (2, 'y', 0);`
	e := newRedoEnv(t, cl, "ddlbarrier", schema+`ALTER TABLE u RENAME COLUMN n TO m;`, schema)
	e.a.opts.FollowDDL = true
	before := e.rel("u", 'd', colID, colText("email"), colInt("n"))
	after := e.rel("u", 'd', colID, colText("email"), colInt("m"))
	upd := func(rel *cdc.Relation, id, n string) *cdc.Change {
		return &cdc.Change{Kind: cdc.Update, Rel: rel, New: []cdc.Value{txt(id), txt("e"), txt(n)}}
	}
	var me string
	if err := e.dst.QueryRow(ctx, `SELECT current_user`).Scan(&me); err != nil {
		t.Fatal(err)
	}
	err := e.a.chunk(ctx, batch(0x1000,
		[]*cdc.Change{upd(before, "1", "5")},
		[]*cdc.Change{upd(before, "2", "6"), ddlChange(7, `ALTER TABLE u RENAME COLUMN n TO m`, me), upd(after, "2", "9")},
		[]*cdc.Change{upd(after, "1", "8")},
	))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.a.commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.target(`SELECT string_agg(id || ':' || m, ' ' ORDER BY id) FROM public.u`); got != "1:8 2:9" {
		t.Fatalf("u = %q, want 1:8 2:9", got)
	}
	// The first transaction, the DDL's, and the last: three target transactions.
	if n := e.a.stats.TargetTxs.Load(); n != 3 {
		t.Errorf("%d target transactions, want 3 (the one before the DDL, the DDL's, the one after)", n)
	}
	if n := e.a.stats.DDL.Load(); n != 1 {
		t.Errorf("%d schema changes counted, want 1", n)
	}
	if got := e.target(`SELECT detail->>'command' || ' / ' || (detail->>'ddl_id') FROM pgshift.audit_log WHERE action = 'ddl.apply'`); got != "ALTER TABLE u RENAME COLUMN n TO m / 7" {
		t.Errorf("audit log: %q", got)
	}
	// The applier's own settings are back after it: search_path empty, no role taken.
	if got := e.target(`SELECT current_setting('search_path') || '|' || current_user`); got != "|"+me {
		t.Errorf("after the DDL the session has search_path|user %q", got)
	}
}

// TestDDLRefusedKeepsEarlier: a captured change the parser refuses stops with *ErrDDL, the
// source transactions before it committed with their position, nothing of its own.
func TestDDLRefusedKeepsEarlier(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	const schema = `CREATE TABLE u (id int PRIMARY KEY, email text, n int); INSERT INTO u VALUES (1, 'x', 0), (2, 'y', 0);`
	e := newRedoEnv(t, cl, "ddlrefused", schema, schema)
	e.a.opts.FollowDDL = true
	rel := e.rel("u", 'd', colID, colText("email"), colInt("n"))
	upd := func(id, n string) *cdc.Change {
		return &cdc.Change{Kind: cdc.Update, Rel: rel, New: []cdc.Value{txt(id), txt("e"), txt(n)}}
	}
	err := e.a.chunk(ctx, batch(0x1000,
		[]*cdc.Change{upd("1", "5")},
		[]*cdc.Change{upd("2", "6"), ddlChange(3, `DO $$BEGIN EXECUTE 'ALTER TABLE u ADD COLUMN z int'; END$$`, "nobody")},
	))
	var de *ErrDDL
	if !errors.As(err, &de) || de.ID != 3 || !strings.Contains(err.Error(), "DO block") {
		t.Fatalf("got %v, want the DO block refusal of ddl_log id 3", err)
	}
	if got := e.target(`SELECT string_agg(id || ':' || n, ' ' ORDER BY id) FROM public.u`); got != "1:5 2:0" {
		t.Fatalf("u = %q, want the transaction before the stop applied and the stopping one not", got)
	}
	if got := e.target(`SELECT applied_lsn::text FROM pgshift.position`); got != "0/1008" {
		t.Fatalf("applied position %s, want 0/1008 (the end of the first transaction)", got)
	}
}

// TestDDLIgnored: under ddl: stop the captured rows change nothing (the relation checks judge
// the change), and a later command of a query string already replayed is not replayed again.
func TestDDLIgnored(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	const schema = `CREATE TABLE u (id int PRIMARY KEY, email text, n int);`
	e := newRedoEnv(t, cl, "ddlignored", schema, schema)
	later := ddlChange(2, `ALTER TABLE u ADD COLUMN z int`, "nobody")
	later.DDL.First = false
	if err := e.a.chunk(ctx, batch(0x1000, []*cdc.Change{ddlChange(1, `ALTER TABLE u ADD COLUMN y int`, "nobody")})); err != nil {
		t.Fatal(err)
	}
	e.a.opts.FollowDDL = true
	if err := e.a.chunk(ctx, batch(0x2000, []*cdc.Change{later})); err != nil {
		t.Fatal(err)
	}
	if err := e.a.commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.target(`SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'public.u'::regclass AND attnum > 0`); got != "id,email,n" {
		t.Fatalf("u has columns %s, want the ignored changes not applied", got)
	}
}

// TestDDLRole: the statement runs as the role that made it on the source when the target has
// it, else as pgshift's user; either way the session's role is pgshift's afterwards.
func TestDDLRole(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	e := newRedoEnv(t, cl, "ddlrole", `SELECT 1;`, `CREATE ROLE ddl_owner_apply; GRANT CREATE ON SCHEMA public TO ddl_owner_apply;`)
	e.a.opts.FollowDDL = true
	var me string
	if err := e.dst.QueryRow(ctx, `SELECT current_user`).Scan(&me); err != nil {
		t.Fatal(err)
	}
	err := e.a.chunk(ctx, batch(0x1000,
		[]*cdc.Change{ddlChange(1, `CREATE TYPE mood AS ENUM ('a')`, "ddl_owner_apply")},
		[]*cdc.Change{ddlChange(2, `CREATE TYPE color AS ENUM ('red')`, "no_such_role_here")},
	))
	if err != nil {
		t.Fatal(err)
	}
	if e.a.tx != nil {
		t.Fatal("a DDL's transaction is left open: it commits on its own")
	}
	if got := e.target(`SELECT string_agg(typname || ':' || pg_get_userbyid(typowner), ' ' ORDER BY typname) FROM pg_type WHERE typname IN ('mood', 'color')`); got != "color:"+me+" mood:ddl_owner_apply" {
		t.Fatalf("owners %q, want mood by the source's role and color by pgshift's user", got)
	}
}

// TestTruncateCaptureTriggerName: sqlparse skips toggles of pgshift's TRUNCATE capture trigger
// by the name catalog gives it.
func TestTruncateCaptureTriggerName(t *testing.T) {
	if sqlparse.TruncateCaptureTrigger != catalog.TruncateTrigger {
		t.Fatalf("sqlparse.TruncateCaptureTrigger %q, catalog.TruncateTrigger %q", sqlparse.TruncateCaptureTrigger, catalog.TruncateTrigger)
	}
}
