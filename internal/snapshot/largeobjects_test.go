package snapshot

import (
	"context"
	"testing"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// loDigestSQL is the test's own oracle: every large object with its owner, privileges,
// comment and the md5 of its whole contents.
const loDigestSQL = `SELECT coalesce(string_agg(format('%s owner=%s acl=%s md5=%s size=%s comment=%s', oid, lomowner::regrole,
	array_to_string(ARRAY(SELECT a::text FROM unnest(coalesce(lomacl, acldefault('L', lomowner))) a ORDER BY 1), ','),
	md5(lo_get(oid)), length(lo_get(oid)), obj_description(oid, 'pg_largeobject')), E'\n' ORDER BY oid), '(none)') FROM pg_largeobject_metadata`

// TestSyncLargeObjects copies large objects (empty, exactly 1 MiB, several MiB, with owners,
// privileges granted by the owner and by another grantor, comments), then re-syncs after the
// source changed contents, metadata, added and removed objects and the target gained one of
// its own, in small batches; a third run finds everything equal. Before, large objects were
// not copied at all.
func TestSyncLargeObjects(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	srcDSN, err := c.CreateDB(ctx, "lo_src")
	if err != nil {
		t.Fatal(err)
	}
	dstDSN, err := c.CreateDB(ctx, "lo_dst")
	if err != nil {
		t.Fatal(err)
	}
	psql := func(db, sql string) string {
		t.Helper()
		out, err := c.Psql(ctx, db, sql)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return out
	}
	psql("lo_src", `CREATE ROLE lo_owner; CREATE ROLE lo_reader; CREATE ROLE lo_delegate;
		SELECT lo_from_bytea(1001, '');
		SELECT lo_from_bytea(1002, decode(repeat('ab', 1048576), 'hex'));
		SELECT lo_from_bytea(1003, decode(repeat('0123456789', 350000), 'hex') || 'tail'::bytea);
		SELECT lo_from_bytea(1004, 'small');
		SELECT lo_from_bytea(1005, 'to be removed');
		SELECT lo_from_bytea(1006, 'metadata changes');
		ALTER LARGE OBJECT 1004 OWNER TO lo_owner;
		GRANT SELECT ON LARGE OBJECT 1004 TO lo_reader;
		GRANT UPDATE ON LARGE OBJECT 1004 TO lo_delegate WITH GRANT OPTION;
		SET ROLE lo_delegate; GRANT UPDATE ON LARGE OBJECT 1004 TO lo_reader; RESET ROLE;
		COMMENT ON LARGE OBJECT 1004 IS 'a ''quoted'' comment';`)
	src, dst := db.Endpoint{Role: db.Source, DSN: srcDSN}, db.Endpoint{Role: db.Target, DSN: dstDSN}
	opts := LargeObjectOptions{BatchCount: 2, BatchBytes: 1 << 20}
	res, err := SyncLargeObjects(ctx, src, dst, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 6 || res.Bytes != 2798614 {
		t.Errorf("first sync: %+v, want 6 copied, 2798614 bytes", res)
	}
	if s, d := psql("lo_src", loDigestSQL), psql("lo_dst", loDigestSQL); s != d {
		t.Fatalf("after the copy:\nsource:\n%s\ntarget:\n%s", s, d)
	}

	psql("lo_src", `SELECT lo_put(1003, 5, 'changed'); SELECT lo_unlink(1005); SELECT lo_from_bytea(1007, 'new');
		ALTER LARGE OBJECT 1006 OWNER TO lo_owner; GRANT SELECT ON LARGE OBJECT 1006 TO PUBLIC; COMMENT ON LARGE OBJECT 1006 IS 'now with a comment';
		SET ROLE lo_delegate; REVOKE UPDATE ON LARGE OBJECT 1004 FROM lo_reader; RESET ROLE;`)
	psql("lo_dst", `SELECT lo_from_bytea(2001, 'only on the target')`)
	res, err = SyncLargeObjects(ctx, src, dst, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Copied != 2 || res.Removed != 2 || res.Updated != 2 || res.Unchanged != 2 {
		t.Errorf("re-sync: %+v, want 2 copied (changed, new), 2 removed, 2 updated (metadata), 2 unchanged", res)
	}
	if s, d := psql("lo_src", loDigestSQL), psql("lo_dst", loDigestSQL); s != d {
		t.Fatalf("after the re-sync:\nsource:\n%s\ntarget:\n%s", s, d)
	}
	res, err = SyncLargeObjects(ctx, src, dst, opts)
	if err != nil || res.Copied+res.Removed+res.Updated != 0 || res.Unchanged != 6 {
		t.Errorf("third sync: %+v, %v", res, err)
	}
}

// TestRecopyUnlogged: unlogged tables, stale on the target after changes on the source, are
// equal after RecopyUnlogged, one referenced by another's foreign key included; logged tables
// are not touched.
func TestRecopyUnlogged(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	schema := `CREATE UNLOGGED TABLE cache (id int PRIMARY KEY, v text);
		CREATE UNLOGGED TABLE cache_ref (id int PRIMARY KEY, cache_id int REFERENCES cache (id));
		CREATE TABLE logged (id int PRIMARY KEY);
		INSERT INTO cache SELECT g, 'v' || g FROM generate_series(1, 1000) g;
		INSERT INTO cache_ref SELECT g, g FROM generate_series(1, 10) g;
		INSERT INTO logged VALUES (1);`
	var dsns [2]string
	for i, name := range []string{"u_src", "u_dst"} {
		dsn, err := c.CreateDB(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		dsns[i] = dsn
		if out, err := c.Psql(ctx, name, schema); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}
	if out, err := c.Psql(ctx, "u_src", `UPDATE cache SET v = 'new' WHERE id < 100; DELETE FROM cache_ref WHERE id = 3; DELETE FROM cache WHERE id = 3;
		INSERT INTO cache VALUES (5000, 'added'); INSERT INTO logged VALUES (2);`); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	src, dst := db.Endpoint{Role: db.Source, DSN: dsns[0]}, db.Endpoint{Role: db.Target, DSN: dsns[1]}
	sc, err := src.Connect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close(ctx)
	tables, err := catalogTables(ctx, sc)
	if err != nil {
		t.Fatal(err)
	}
	res, err := RecopyUnlogged(ctx, src, dst, tables, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Tables != 2 || res.Rows != 1000+9 {
		t.Errorf("recopy: %+v", res)
	}
	digest := `SELECT (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM cache t) || ' ' || (SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM cache_ref t) || ' ' || (SELECT count(*) FROM logged)`
	s, _ := c.Psql(ctx, "u_src", digest)
	d, _ := c.Psql(ctx, "u_dst", digest)
	if s[:65] != d[:65] {
		t.Errorf("unlogged tables differ after the re-copy: source %s, target %s", s, d)
	}
	if s[66:] != "2" || d[66:] != "1" {
		t.Errorf("logged table touched: source %s, target %s", s[66:], d[66:])
	}
}

func catalogTables(ctx context.Context, q catalog.Querier) ([]catalog.Table, error) {
	return catalog.Tables(ctx, q, config.TableFilter{})
}
