package cdc

import (
	"errors"
	"testing"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// ddlLogCols are pgshift.ddl_log's columns as its relation message names them.
var ddlLogCols = []string{"id", "xid", "first", "command", "search_path", "role_name", "session_role", "time_zone", "date_style",
	"interval_style", "command_tag", "objects", "statement_at", "at"}

func ddlLogRelation(oid uint32) enc {
	e := enc{'R'}.u32(oid).str("pgshift").str("ddl_log").u8('d').u16(uint16(len(ddlLogCols)))
	for _, c := range ddlLogCols {
		e = e.u8(0).str(c).u32(25).u32(0xFFFFFFFF)
	}
	return e
}

func ddlLogInsert(oid uint32, vals map[string]string) enc {
	e := enc{'I'}.u32(oid).u8('N').u16(uint16(len(ddlLogCols)))
	for _, c := range ddlLogCols {
		e = e.text(vals[c])
	}
	return e
}

func tableRelation(oid uint32, name string) enc {
	return enc{'R'}.u32(oid).str("public").str(name).u8('d').u16(2).
		u8(1).str("id").u32(23).u32(0xFFFFFFFF).
		u8(0).str("v").u32(25).u32(0xFFFFFFFF)
}

// TestCapturedDDL: a row of pgshift's DDL log becomes a schema change with what it recorded;
// with FollowRenames, a migrated table renamed by a captured ALTER TABLE is followed under its
// new name, and without it the new name stops the stream as a table outside the migration.
func TestCapturedDDL(t *testing.T) {
	row := map[string]string{"id": "42", "xid": "900", "first": "t", "command": "ALTER TABLE t RENAME TO t2", "search_path": `"$user", public`,
		"role_name": "app", "session_role": "app", "time_zone": "UTC", "date_style": "ISO, MDY", "interval_style": "postgres",
		"command_tag": "ALTER TABLE", "objects": `[{"class": "pg_class", "objid": 7, "type": "table", "schema": "public", "identity": "public.t2", "tag": "ALTER TABLE"}]`,
		"statement_at": "2026-01-01 00:00:00+00", "at": "2026-01-01 00:00:00+00"}
	// The table's first change in this stream comes after the rename: only the DDL's objects
	// tell that OID 7 is the migrated t.
	msgs := []enc{beginMsg(0x100, 900), ddlLogRelation(50), ddlLogInsert(50, row),
		tableRelation(7, "t2"), insertMsg(false, 900, 7, "2", "b"), commitMsg(0x100, 0x108)}
	tables := map[pgtypes.TableID]bool{{Schema: "public", Name: "t"}: true}

	evs, _, _, err := run(t, Options{StartLSN: 0x10, Tables: tables, FollowRenames: true}, 0, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 4 || evs[1].Change == nil || evs[1].Change.Kind != Schema || evs[2].Change.Rel.Table.Name != "t2" {
		t.Fatalf("events %+v", evs)
	}
	d := evs[1].Change.DDL
	if d.ID != 42 || !d.First || d.Command != "ALTER TABLE t RENAME TO t2" || d.Role != "app" || d.SearchPath != `"$user", public` ||
		len(d.Objects) != 1 || d.Objects[0].ObjID != 7 || d.Objects[0].Identity != "public.t2" {
		t.Fatalf("DDL %+v", d)
	}
	if !tables[pgtypes.TableID{Schema: "public", Name: "t"}] || len(tables) != 1 {
		t.Fatalf("the caller's table set was changed: %v", tables)
	}

	_, _, _, err = run(t, Options{StartLSN: 0x10, Tables: tables}, 0, msgs...)
	if !errors.Is(err, ErrNotMigrated) {
		t.Fatalf("without FollowRenames: %v, want ErrNotMigrated", err)
	}

	bad := map[string]string{"id": "x"}
	_, _, _, err = run(t, Options{StartLSN: 0x10}, 0, beginMsg(0x100, 900), ddlLogRelation(50), ddlLogInsert(50, bad))
	if !errors.Is(err, ErrUnknownMessage) {
		t.Fatalf("a malformed row: %v, want ErrUnknownMessage", err)
	}
}
