package pgtest

import (
	"context"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestPairStartsLogicalClusters(t *testing.T) {
	src, dst, srcDSN, dstDSN := Pair(t, "app")
	ctx := context.Background()
	for _, dsn := range []string{srcDSN, dstDSN} {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		var wal, db string
		if err := conn.QueryRow(ctx, "select current_setting('wal_level'), current_database()").Scan(&wal, &db); err != nil {
			t.Fatal(err)
		}
		conn.Close(ctx)
		if wal != "logical" || db != "app" {
			t.Errorf("wal_level=%s db=%s", wal, db)
		}
	}
	if src.Port == dst.Port {
		t.Fatal("same port")
	}
	if err := src.Restart(ctx, true); err != nil {
		t.Fatal(err)
	}
	out, err := src.Psql(ctx, "app", "select 1+1")
	if err != nil || out != "2" {
		t.Fatalf("after restart: %q %v", out, err)
	}
}

func TestPasswordCluster(t *testing.T) {
	c := New(t, Options{Password: "s3cret"})
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.DSN("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	bad := strings.Replace(c.DSN("postgres"), "s3cret", "wrong", 1)
	if _, err := pgx.Connect(ctx, bad); err == nil {
		t.Fatal("wrong password accepted")
	}
}
