package state

import (
	"context"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// TestRestoreReplicaIdentitiesLeavesUserChanges: a table whose identity someone changed after
// pgshift set it FULL is left as it is and reported; an index identity comes back as USING
// INDEX.
func TestRestoreReplicaIdentitiesLeavesUserChanges(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	_, conn := c.NewDB(t, "ident")
	ctx := context.Background()
	if out, err := c.Psql(ctx, "ident", `CREATE TABLE a (x int); CREATE TABLE b (x int);
		CREATE TABLE c (x int NOT NULL); CREATE UNIQUE INDEX c_x ON c (x); ALTER TABLE c REPLICA IDENTITY USING INDEX c_x;`); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	ids := []string{"a", "b", "c"}
	var tables []pgtypes.TableID
	for _, n := range ids {
		tables = append(tables, pgtypes.TableID{Schema: "public", Name: n})
	}
	changed, err := SetReplicaIdentityFull(ctx, conn, tables)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != 3 || changed[2].Original != 'i' || changed[2].OriginalIndex != "c_x" {
		t.Fatalf("changed: %+v", changed)
	}
	// Again: already FULL, nothing to do, the record kept.
	if again, err := SetReplicaIdentityFull(ctx, conn, tables); err != nil || len(again) != 0 {
		t.Fatalf("second set: %+v, %v", again, err)
	}
	if out, err := c.Psql(ctx, "ident", `ALTER TABLE b REPLICA IDENTITY NOTHING`); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	res, err := RestoreReplicaIdentities(ctx, conn, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Restored) != 2 || len(res.Left) != 1 || !strings.Contains(res.Left[0], "public.b") {
		t.Errorf("restore: %+v", res)
	}
	got, _ := c.Psql(ctx, "ident", `SELECT string_agg(relname || '=' || relreplident::text, ' ' ORDER BY relname) FROM pg_class WHERE relname IN ('a', 'b', 'c')`)
	if got != "a=d b=n c=i" {
		t.Errorf("identities: %s", got)
	}
	if got, _ := c.Psql(ctx, "ident", `SELECT indexrelid::regclass::text FROM pg_index WHERE indisreplident`); got != "c_x" {
		t.Errorf("identity index: %s", got)
	}
}
