package proxy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/proxy"
)

// TestProxyOldSource puts the proxy in front of a PostgreSQL 10 and an 11 source with a 15
// target: it reads both servers' catalogs (the OID map and the read-only functions; pg_proc has
// no prokind before 11, which failed the read on 10) and relays queries to the source.
func TestProxyOldSource(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs PostgreSQL 10 and 11 (skipped with -short)")
	}
	for _, major := range []int{10, 11} {
		t.Run(fmt.Sprint(major), func(t *testing.T) {
			e := &env{t: t}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			e.src = pgtest.New(t, pgtest.Options{Password: testPassword, Name: t.Name() + "-src", Version: major})
			e.dst = pgtest.New(t, pgtest.Options{Password: testPassword, Name: t.Name() + "-dst"})
			var err error
			if e.srcDSN, err = e.src.CreateDB(ctx, "app"); err != nil {
				t.Fatal(err)
			}
			if e.dstDSN, err = e.dst.CreateDB(ctx, "app"); err != nil {
				t.Fatal(err)
			}
			e.authFile = filepath.Join(t.TempDir(), "userlist.txt")
			if err := os.WriteFile(e.authFile, []byte(fmt.Sprintf("\"postgres\" \"%s\"\n", testPassword)), 0o600); err != nil {
				t.Fatal(err)
			}
			e.start(proxy.Config{Listen: "127.0.0.1:0", Source: e.srcDSN, Target: e.dstDSN, AuthFile: e.authFile, ConnectTimeout: 10 * time.Second})
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(e.logBuf.String(), "catalogs loaded") {
				if strings.Contains(e.logBuf.String(), "could not read the servers' catalogs") || time.Now().After(deadline) {
					t.Fatalf("the proxy did not load the catalogs of a %d source:\n%s", major, e.logBuf.String())
				}
				time.Sleep(50 * time.Millisecond)
			}
			conn := e.connect("")
			var v int
			if err := conn.QueryRow(ctx, `SELECT current_setting('server_version_num')::int`).Scan(&v); err != nil || v/10000 != major {
				t.Fatalf("query through the proxy: %d %v", v, err)
			}
		})
	}
}
