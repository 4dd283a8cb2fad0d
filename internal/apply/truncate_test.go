package apply

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// TestTruncatePlan checks the statements a TRUNCATE becomes on a real target: ONLY for exactly
// the relations listed, partitioned tables by their leaves, no CASCADE, DELETE for tables a
// table not emptied references, identities restarted only where emptied.
func TestTruncatePlan(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	const schema = `
CREATE TABLE ev (id int, r text) PARTITION BY LIST (r);
CREATE TABLE ev_a PARTITION OF ev FOR VALUES IN ('a');
CREATE TABLE ev_b PARTITION OF ev FOR VALUES IN ('b') PARTITION BY RANGE (id);
CREATE TABLE ev_b1 PARTITION OF ev_b FOR VALUES FROM (0) TO (10);
CREATE TABLE parent (id serial PRIMARY KEY);
CREATE TABLE child (pid int REFERENCES parent (id)) INHERITS (parent);
CREATE TABLE kid (id int PRIMARY KEY, pid int REFERENCES parent (id));`
	e := newRedoEnv(t, cl, "truncplan", schema, schema)
	rel := func(name string) *cdc.Relation {
		return &cdc.Relation{Table: pgtypes.TableID{Schema: "public", Name: name}}
	}
	plan := func(snap map[string]pgtypes.LSN, restart bool, names ...string) ([]string, error) {
		ch := &cdc.Change{Kind: cdc.Trunc, Cascade: true, RestartIdentity: restart}
		for _, n := range names {
			ch.Truncated = append(ch.Truncated, rel(n))
		}
		e.a.opts.Snapshots = map[pgtypes.TableID]pgtypes.LSN{}
		for n, l := range snap {
			e.a.opts.Snapshots[pgtypes.TableID{Schema: "public", Name: n}] = l
		}
		e.a.cur = &cdc.Tx{CommitLSN: 0x1000}
		stmts, err := e.a.truncatePlan(context.Background(), ch)
		var out []string
		for _, s := range stmts {
			out = append(out, s.sql)
		}
		return out, err
	}
	cases := []struct {
		name    string
		snap    map[string]pgtypes.LSN
		restart bool
		list    []string
		want    string
	}{
		{name: "root only (published via the root)", list: []string{"ev"},
			want: `TRUNCATE ONLY "public"."ev_a", ONLY "public"."ev_b1"`},
		{name: "root, intermediate and leaves (published by partition)", list: []string{"ev", "ev_a", "ev_b", "ev_b1"},
			want: `TRUNCATE ONLY "public"."ev_a", ONLY "public"."ev_b1"`},
		{name: "intermediate parent and its leaf", list: []string{"ev_b", "ev_b1"}, want: `TRUNCATE ONLY "public"."ev_b1"`},
		{name: "a leaf with a newer copy", list: []string{"ev"}, snap: map[string]pgtypes.LSN{"ev_a": 0x2000},
			want: `TRUNCATE ONLY "public"."ev_b1"`},
		{name: "inheritance parent alone", list: []string{"parent"}, want: `DELETE FROM ONLY "public"."parent"`},
		{name: "parent and all referencing tables, restart", list: []string{"parent", "child", "kid"}, restart: true,
			want: `TRUNCATE ONLY "public"."parent", ONLY "public"."child", ONLY "public"."kid" RESTART IDENTITY`},
		{name: "referencing table skipped (newer copy), restart", list: []string{"parent", "child", "kid"}, restart: true, snap: map[string]pgtypes.LSN{"kid": 0x2000},
			want: `TRUNCATE ONLY "public"."child" RESTART IDENTITY; DELETE FROM ONLY "public"."parent"; ALTER SEQUENCE "public"."parent_id_seq" RESTART`},
		{name: "everything skipped", list: []string{"kid"}, snap: map[string]pgtypes.LSN{"kid": 0x2000}, want: ``},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := plan(c.snap, c.restart, c.list...)
			if err != nil {
				t.Fatal(err)
			}
			if s := strings.Join(got, "; "); s != c.want {
				t.Fatalf("got  %s\nwant %s", s, c.want)
			}
		})
	}
	t.Run("partitions that differ", func(t *testing.T) {
		_, err := plan(nil, false, "ev", "ev_a")
		var se *ErrSchema
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "ev_b1") {
			t.Fatalf("got %v, want a schema error naming the partition not listed", err)
		}
	})
	t.Run("missing on the target", func(t *testing.T) {
		_, err := plan(nil, false, "nope")
		var se *ErrSchema
		if !errors.As(err, &se) {
			t.Fatalf("got %v, want a schema error", err)
		}
	})
}
