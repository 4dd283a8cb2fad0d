package pgtest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
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

// TestLeavesTempDirOwnerAlone starts a cluster under a temporary directory of the test's own
// and checks that the directory's owner is the same afterwards: pgtest may only change the
// owner of directories it created (run as root, the server's files go to the postgres user).
func TestLeavesTempDirOwnerAlone(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL (skipped with -short)")
	}
	// A directory of the test's own, reachable by the server's OS user as the system's temp
	// directory is (t.TempDir's parent is private to root).
	parent, err := os.MkdirTemp("", "pgtest-owner-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	if err := os.Chmod(parent, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", parent)
	before, err := os.Stat(parent)
	if err != nil {
		t.Fatal(err)
	}
	c := New(t, Options{})
	if out, err := c.Psql(context.Background(), "postgres", "select 1"); err != nil || out != "1" {
		t.Fatalf("query: %q %v", out, err)
	}
	after, err := os.Stat(parent)
	if err != nil {
		t.Fatal(err)
	}
	b, a := before.Sys().(*syscall.Stat_t), after.Sys().(*syscall.Stat_t)
	if b.Uid != a.Uid || b.Gid != a.Gid || before.Mode() != after.Mode() {
		t.Fatalf("owner of %s changed from %d:%d %v to %d:%d %v", parent, b.Uid, b.Gid, before.Mode(), a.Uid, a.Gid, after.Mode())
	}
}

// TestUnreachableTempDir: a temp directory the server's OS user cannot enter is an error that
// names the fix, not an initdb failure deep inside it, and its owner and mode stay as they were.
func TestUnreachableTempDir(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL (skipped with -short)")
	}
	if os.Geteuid() != 0 {
		t.Skip("only root runs the server as another OS user")
	}
	parent := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", parent)
	_, err := Start(context.Background(), Options{Name: "unreachable"})
	if err == nil || !strings.Contains(err.Error(), "TMPDIR") {
		t.Fatalf("want an error naming TMPDIR, got %v", err)
	}
	fi, err := os.Stat(parent)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 || fi.Mode().Perm() != 0o700 {
		t.Fatalf("temp directory changed: uid %d mode %v", st.Uid, fi.Mode())
	}
}
