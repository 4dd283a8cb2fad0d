package pgtest

import (
	"context"
	"flag"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"
)

// TB is the part of testing.TB the helpers use. They take it rather than testing.TB so that
// the package does not import testing: the demo starts its clusters with this package, and
// the release binary must not carry the test framework (`go version -m`, `go tool nm`).
type TB interface {
	Helper()
	Name() string
	Skip(args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Failed() bool
	Cleanup(func())
}

// short reports short() without importing testing: the -test.short flag exists only
// in test binaries.
func short() bool {
	f := flag.Lookup("test.short")
	return f != nil && f.Value.String() == "true"
}

// New starts a cluster for a test and stops it when the test ends, whatever the outcome.
// Under `go test -short` the test is skipped: integration tests need real servers.
func New(t TB, opts Options) *Cluster {
	t.Helper()
	if short() {
		t.Skip("integration test: needs PostgreSQL (skipped with -short)")
	}
	if opts.Name == "" {
		opts.Name = t.Name()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := Start(ctx, opts)
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			if log, err := os.ReadFile(c.LogFile()); err == nil && len(log) > 0 {
				t.Logf("server log of %s:\n%s", opts.Name, tail(log, 4000))
			}
		}
		c.Stop()
	})
	return c
}

// Pair starts a source and a target cluster concurrently, each with a database named dbname,
// and returns the two clusters and the DSNs of those databases.
func Pair(t TB, dbname string) (src, dst *Cluster, srcDSN, dstDSN string) {
	t.Helper()
	return PairVersions(t, dbname, 0, 0)
}

// PairVersions is Pair with a source of major version srcMajor and a target of dstMajor (0:
// the newest installed). Binaries of a major the system lacks are fetched (BinDirFor); a
// version that cannot be had fails the test loudly, naming what was tried: a version matrix
// that silently tested fewer versions would claim support it never checked.
func PairVersions(t TB, dbname string, srcMajor, dstMajor int) (src, dst *Cluster, srcDSN, dstDSN string) {
	t.Helper()
	if short() {
		t.Skip("integration test: needs PostgreSQL (skipped with -short)")
	}
	// A first fetch of a version's binaries can take a minute on a slow link.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var g errgroup.Group
	g.Go(func() (err error) {
		src, err = Start(ctx, Options{Name: t.Name() + "-src", Version: srcMajor})
		return err
	})
	g.Go(func() (err error) {
		dst, err = Start(ctx, Options{Name: t.Name() + "-dst", Version: dstMajor})
		return err
	})
	err := g.Wait()
	t.Cleanup(func() { src.Stop(); dst.Stop() })
	if err != nil {
		t.Fatalf("start PostgreSQL: %v", err)
	}
	if srcDSN, err = src.CreateDB(ctx, dbname); err != nil {
		t.Fatal(err)
	}
	if dstDSN, err = dst.CreateDB(ctx, dbname); err != nil {
		t.Fatal(err)
	}
	return src, dst, srcDSN, dstDSN
}

// NewDB creates database name on the cluster and returns its DSN and a connection to it that is
// closed when the test ends.
func (c *Cluster) NewDB(t TB, name string) (string, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	dsn, err := c.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect to %s: %v", name, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return dsn, conn
}
