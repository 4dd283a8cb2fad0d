package snapshot

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

func TestCopySQLFormatPerTable(t *testing.T) {
	table := func(cols ...catalog.Column) *catalog.Table {
		return &catalog.Table{Columns: cols}
	}
	for _, c := range []struct {
		name   string
		t      *catalog.Table
		binary bool
	}{
		{"built-in types", table(catalog.Column{Name: "id", TypeOID: 23}, catalog.Column{Name: "v", TypeOID: 25}), true},
		{"a reg* column", table(catalog.Column{Name: "id", TypeOID: 23}, catalog.Column{Name: "c", TypeOID: 2205, TextOnly: true}), false},
		{"a user type", table(catalog.Column{Name: "id", TypeOID: 23}, catalog.Column{Name: "m", TypeOID: 16390, TextOnly: true}), false},
		{"a generated reg* column is not copied", table(catalog.Column{Name: "id", TypeOID: 23},
			catalog.Column{Name: "c", TypeOID: 2205, TextOnly: true, Generated: true}), true},
	} {
		out, in := CopySQL(Chunk{Table: c.t, Whole: true, Of: 1}, true)
		if got := strings.Contains(out, "binary") && strings.Contains(in, "binary"); got != c.binary {
			t.Errorf("%s: binary %v, want %v (%s / %s)", c.name, got, c.binary, out, in)
		}
		if out, _ := CopySQL(Chunk{Table: c.t, Whole: true, Of: 1}, false); strings.Contains(out, "binary") {
			t.Errorf("%s: binary although not allowed", c.name)
		}
	}
}

func TestSnapshotGone(t *testing.T) {
	for code, want := range map[string]bool{"22023": true, "42704": true, "55000": true, "42501": false, "08006": false} {
		if got := SnapshotGone(fmt.Errorf("wrapped: %w", &pgconn.PgError{Code: code})); got != want {
			t.Errorf("%s: %v, want %v", code, got, want)
		}
	}
	if SnapshotGone(fmt.Errorf("no server error")) {
		t.Error("a non-server error is not a lost snapshot")
	}
}

// TestCopyWorkersRowSecurity: copy workers never read or write through row-level security
// policies. On the source, a read the policies would filter fails (row_security = off) with
// the table and the fix; on the target, COPY FROM into a table whose policies apply fails
// (PostgreSQL never filters COPY FROM) with the same.
func TestCopyWorkersRowSecurity(t *testing.T) {
	src, dst, srcDSN, dstDSN := pgtest.Pair(t, "rls")
	ctx := context.Background()
	const table = `CREATE TABLE t (id int PRIMARY KEY, who text NOT NULL);
		CREATE POLICY mine ON t USING (who = current_user) WITH CHECK (who = current_user);`
	for _, c := range []*pgtest.Cluster{src, dst} {
		if out, err := c.Psql(ctx, "rls", table+`
			CREATE ROLE mover LOGIN; GRANT CREATE ON DATABASE rls TO mover; GRANT SELECT ON t TO mover;`); err != nil {
			t.Fatal(err, out)
		}
	}
	if _, err := src.Psql(ctx, "rls", `INSERT INTO t SELECT g, 'someone' FROM generate_series(1, 300) g; ALTER TABLE t ENABLE ROW LEVEL SECURITY`); err != nil {
		t.Fatal(err)
	}
	asMover := func(dsn string) string { return strings.Replace(dsn, "user=postgres", "user=mover", 1) }

	run := func(t *testing.T, srcEP, dstEP db.Endpoint) (Result, error) {
		t.Helper()
		// An exported snapshot from a plain transaction: enough for the workers.
		holder, err := pgx.Connect(ctx, srcDSN)
		if err != nil {
			t.Fatal(err)
		}
		defer holder.Close(ctx)
		var snap string
		if _, err := holder.Exec(ctx, `BEGIN ISOLATION LEVEL REPEATABLE READ`); err != nil {
			t.Fatal(err)
		}
		if err := holder.QueryRow(ctx, `SELECT pg_export_snapshot()`).Scan(&snap); err != nil {
			t.Fatal(err)
		}
		tc, err := dstEP.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tc.Close(ctx)
		if err := state.Ensure(ctx, tc); err != nil {
			t.Fatal(err)
		}
		sc, err := srcEP.Connect(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close(ctx)
		tables, err := catalog.Tables(ctx, sc, config.TableFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tc.Exec(ctx, `TRUNCATE pgshift.tables, pgshift.chunks, pgshift.migration`); err != nil {
			t.Fatal(err)
		}
		// Table states move only while a migration copies tables (compare-and-set transitions).
		if err := state.Create(ctx, tc, state.Migration{SourceSystemID: "1", SourceDatabase: "rls", Slot: "rls_test",
			Publication: "rls_test", Phase: pgtypes.PhaseData}); err != nil {
			t.Fatal(err)
		}
		if err := state.RegisterTables(ctx, tc, []state.TableProgress{{ID: tables[0].ID, Root: tables[0].ID, Kind: state.KindData}}, 1); err != nil {
			t.Fatal(err)
		}
		items := Plan(DataTables(tables), PlanOptions{Jobs: 1})
		return Copy(ctx, srcEP, dstEP, items, CopyOptions{Jobs: 1, Snapshot: snap, Binary: true})
	}
	rows := func(t *testing.T) string {
		out, err := dst.Psql(ctx, "rls", `SELECT count(*) FROM t`)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}

	t.Run("SourcePoliciesApply", func(t *testing.T) {
		res, err := run(t, db.Endpoint{Role: db.Source, DSN: asMover(srcDSN)}, db.Endpoint{Role: db.Target, DSN: dstDSN})
		if err == nil {
			t.Fatalf("copy through the source's policies succeeded: %d rows copied, %s of 300 on the target", res.Rows, rows(t))
		}
		for _, want := range []string{"public.t", "row-level security", "BYPASSRLS"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	})
	t.Run("TargetPoliciesApply", func(t *testing.T) {
		if _, err := dst.Psql(ctx, "rls", `TRUNCATE t; ALTER TABLE t OWNER TO mover; ALTER TABLE t ENABLE ROW LEVEL SECURITY; ALTER TABLE t FORCE ROW LEVEL SECURITY;
			DROP SCHEMA IF EXISTS pgshift CASCADE`); err != nil {
			t.Fatal(err)
		}
		_, err := run(t, db.Endpoint{Role: db.Source, DSN: srcDSN}, db.Endpoint{Role: db.Target, DSN: asMover(dstDSN)})
		if err == nil {
			t.Fatalf("copy into a table whose policies apply succeeded, %s of 300 rows on the target", rows(t))
		}
		for _, want := range []string{"public.t", "into the target", "row-level security", "NO FORCE ROW LEVEL SECURITY"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		if got := rows(t); got != "0" {
			t.Errorf("%s rows on the target after the failed copy", got)
		}
	})
}
