package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/verify"
)

// TestCopysideDefects runs the copy-side regressions (row security, reg* and aclitem values,
// is_called sequences, deferrable keys, INCLUDE columns, the snapshot holder's idle timeout)
// against one pair of clusters, a database pair per subtest.
func TestCopysideDefects(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "copyside_unused")
	t.Run("RowSecurity", func(t *testing.T) { testCopysideRowSecurity(t, src, dst) })
	t.Run("RegTypesAndACLs", func(t *testing.T) { testCopysideRegTypes(t, src, dst) })
	t.Run("SequenceNotCalled", func(t *testing.T) { testCopysideSequences(t, src, dst) })
	t.Run("DeferrableKey", func(t *testing.T) { testCopysideDeferrableKey(t, src, dst) })
	t.Run("IncludeColumnNulls", func(t *testing.T) { testCopysideIncludeNulls(t, src, dst) })
	t.Run("SnapshotHolderIdleTimeout", func(t *testing.T) { testCopysideIdleTimeout(t, src, dst) })
}

// withUser returns dsn connecting as user instead of the superuser.
func withUser(dsn, user string) string { return strings.Replace(dsn, "user=postgres", "user="+user, 1) }

// oracleDigests is cpTableDigests with every setting that changes a value's text fixed,
// search_path included, so reg* values print schema-qualified the same way on both sides.
func oracleDigests(t *testing.T, dsn string) map[string]string {
	t.Helper()
	conn := cpConnect(t, dsn)
	if _, err := conn.Exec(context.Background(), `SET search_path = pg_catalog; SET TimeZone = 'UTC'; SET DateStyle = ISO;
		SET extra_float_digits = 3; SET row_security = off`); err != nil {
		t.Fatal(err)
	}
	return cpTableDigests(t, conn)
}

// allRows counts a table's rows on dsn with row security off (the superuser sees them all).
func allRows(t *testing.T, dsn, table string) string {
	t.Helper()
	conn := cpConnect(t, dsn)
	if _, err := conn.Exec(context.Background(), `SET row_security = off`); err != nil {
		t.Fatal(err)
	}
	return cpQuery(t, conn, `SELECT count(*)::text FROM `+table)
}

// runVerify runs pgshift verify (one pass, nothing saved) and returns its report.
func runVerify(t *testing.T, cfg config.Config) *verify.Report {
	t.Helper()
	rep, err := Verify(context.Background(), cfg, VerifyOptions{Mode: verify.ModeChecksum, Live: "off", NoSave: true}, testLogger(t))
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	return rep
}

func reportText(rep *verify.Report) string {
	var b strings.Builder
	_ = rep.WriteText(&b, 20)
	return b.String()
}

// testCopysideRowSecurity: a table whose policies hide rows from the migrating user is either
// copied whole or refused, never copied through its policies.
func testCopysideRowSecurity(t *testing.T, src, dst *pgtest.Cluster) {
	ctx := context.Background()
	const setup = `
		CREATE TABLE secret (id int PRIMARY KEY, owner_name text NOT NULL);
		INSERT INTO secret SELECT g, 'u' || (g % 3) FROM generate_series(1, 300) g;
		CREATE POLICY only_mine ON secret USING (owner_name = current_user);
		ALTER TABLE secret ENABLE ROW LEVEL SECURITY;
		ALTER TABLE secret FORCE ROW LEVEL SECURITY;
		CREATE TABLE open (id int PRIMARY KEY);
		INSERT INTO open SELECT generate_series(1, 10);`

	t.Run("SuperuserForceRLS", func(t *testing.T) {
		cfg := cpDB(t, src, dst, "rls_super", setup)
		if _, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t)); err != nil {
			t.Fatalf("copy: %v", err)
		}
		if got := allRows(t, cfg.Target, "secret"); got != "300" {
			t.Errorf("target has %s of 300 rows", got)
		}
		cpCompareDigests(t, oracleDigests(t, cfg.Source), oracleDigests(t, cfg.Target))
		if rep := runVerify(t, cfg); rep.ExitCode() != 0 {
			t.Errorf("verify exit %d:\n%s", rep.ExitCode(), reportText(rep))
		}
	})

	for _, c := range []struct{ name, grants string }{
		// The owner reads through its own policies under FORCE ROW LEVEL SECURITY.
		{"OwnerForceRLS", `ALTER TABLE secret OWNER TO %[1]s; ALTER TABLE open OWNER TO %[1]s; GRANT CREATE ON DATABASE %[2]s TO %[1]s;`},
		// Anyone but the owner reads through the policies once RLS is enabled.
		{"NonOwner", `GRANT SELECT ON ALL TABLES IN SCHEMA public TO %[1]s; GRANT CREATE ON DATABASE %[2]s TO %[1]s;`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dbname := "rls_" + strings.ToLower(c.name)
			role := "mig_" + strings.ToLower(c.name)
			cfg := cpDB(t, src, dst, dbname, setup)
			if _, err := src.Psql(ctx, dbname, fmt.Sprintf(`CREATE ROLE %[1]s LOGIN REPLICATION; `+c.grants, role, dbname)); err != nil {
				t.Fatal(err)
			}
			cfg.Source = withUser(cfg.Source, role)
			_, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t))
			if err == nil {
				t.Fatalf("copy as %s succeeded with %s of 300 rows of secret: it read through the row security policies", role,
					allRows(t, cfg.Target, "secret"))
			}
			for _, want := range []string{"public.secret", "row-level security", "BYPASSRLS"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q lacks %q", err, want)
				}
			}
			// The row-security blocker names only the table with policies (preflight may list
			// others, e.g. ownership, each on its own line).
			for _, line := range strings.Split(err.Error(), "\n") {
				if strings.Contains(line, "row-level security") && strings.Contains(line, "public.open") {
					t.Errorf("row-security blocker %q names a table without policies", line)
				}
			}
			tc := cpConnect(t, cfg.Target)
			if got := cpQuery(t, tc, `SELECT (to_regclass('pgshift.migration') IS NULL AND to_regclass('public.secret') IS NULL)::text`); got != "true" {
				t.Error("the refused copy created objects on the target")
			}
			sc := cpConnect(t, withUser(cfg.Source, "postgres"))
			if got := cpQuery(t, sc, `SELECT count(*)::text FROM pg_replication_slots WHERE database = current_database()`); got != "0" {
				t.Errorf("the refused copy left %s replication slot(s) on the source", got)
			}
			if c.name != "OwnerForceRLS" {
				return // a non-owner cannot create the publication anyway
			}
			// The fix the error names makes the copy work.
			if _, err := src.Psql(ctx, dbname, fmt.Sprintf(`ALTER ROLE %s BYPASSRLS`, role)); err != nil {
				t.Fatal(err)
			}
			if _, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t)); err != nil {
				t.Fatalf("copy after ALTER ROLE ... BYPASSRLS: %v", err)
			}
			cpCompareDigests(t, oracleDigests(t, withUser(cfg.Source, "postgres")), oracleDigests(t, cfg.Target))
		})
	}

	// verify reads both sides with row_security = off: a target whose policies hide rows from
	// the verifying user is refused, never compared through its policies.
	t.Run("VerifyThroughPolicies", func(t *testing.T) {
		cfg := cpDB(t, src, dst, "rls_verify", setup)
		if _, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t)); err != nil {
			t.Fatalf("copy: %v", err)
		}
		// A plain role on both sides: the policies hide every row from it.
		const role = "verifier_rls"
		for _, c := range []*pgtest.Cluster{src, dst} {
			if _, err := c.Psql(ctx, "rls_verify", `CREATE ROLE `+role+` LOGIN;
				GRANT SELECT ON ALL TABLES IN SCHEMA public TO `+role+`; GRANT SELECT ON ALL SEQUENCES IN SCHEMA public TO `+role); err != nil {
				t.Fatal(err)
			}
		}
		// The target loses rows; read through the policies, both sides look empty and alike.
		if _, err := dst.Psql(ctx, "rls_verify", `DELETE FROM secret WHERE id <= 100`); err != nil {
			t.Fatal(err)
		}
		c2 := cfg
		c2.Source, c2.Target = withUser(cfg.Source, role), withUser(cfg.Target, role)
		rep := runVerify(t, c2)
		if rep.ExitCode() == 0 {
			t.Fatalf("verify through row security policies said IDENTICAL although the target lost 100 rows:\n%s", reportText(rep))
		}
		var found bool
		for _, tr := range rep.Tables {
			if tr.Name == "public.secret" && strings.Contains(tr.Error, "BYPASSRLS") {
				found = true
			}
		}
		if !found {
			t.Errorf("verify did not name public.secret and the fix:\n%s", reportText(rep))
		}
		// As the superuser the difference is found.
		if rep := runVerify(t, cfg); rep.ExitCode() != 1 {
			t.Errorf("verify as superuser: exit %d, want 1:\n%s", rep.ExitCode(), reportText(rep))
		}
	})
}

// regObjects are the objects the reg* values of testCopysideRegTypes name.
const regObjects = `
		CREATE SCHEMA app;
		CREATE TABLE app.target_table (id int PRIMARY KEY);
		CREATE TYPE app.kind AS ENUM ('a', 'b');
		CREATE FUNCTION app.f(int) RETURNS int LANGUAGE sql AS 'SELECT $1';
		CREATE FUNCTION app.g(text) RETURNS text LANGUAGE sql AS 'SELECT $1';
		CREATE OPERATOR app.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq);
		CREATE TEXT SEARCH DICTIONARY app.dict (TEMPLATE = simple);
		CREATE TEXT SEARCH CONFIGURATION app.cfg (COPY = simple);
		CREATE COLLATION app.coll (provider = icu, locale = 'und');`

func testCopysideRegTypes(t *testing.T, src, dst *pgtest.Cluster) {
	ctx := context.Background()
	// Roles are cluster-wide: create the ones the values name on both servers, in a different
	// order so that their OIDs differ.
	for i, c := range []*pgtest.Cluster{src, dst} {
		roles := []string{"reg_alice", "reg_bob"}
		if i == 1 {
			roles = []string{"reg_pad", "reg_bob", "reg_alice"}
		}
		for _, r := range roles {
			if _, err := c.Psql(ctx, "postgres", `CREATE ROLE `+r); err != nil {
				t.Fatal(err)
			}
		}
	}
	// Each table alone: one column of a type that is not built in (the domain) already made
	// the whole table go as text, which would hide the built-in reg* types' problem.
	const data = `
		CREATE TABLE regs (
		  id int PRIMARY KEY,
		  c regclass, ty regtype, p regproc, pp regprocedure, o regoper, oo regoperator, cf regconfig,
		  d regdictionary, ns regnamespace, r regrole, co regcollation,
		  ca regclass[], tya regtype[]);
		INSERT INTO regs VALUES
		  (1, 'app.target_table', 'app.kind', 'app.f', 'app.g(text)', 'app.===', 'app.===(int,int)', 'app.cfg',
		   'app.dict', 'app', 'reg_alice', 'app.coll',
		   ARRAY['app.target_table', 'pg_class']::regclass[], ARRAY['app.kind', 'int4']::regtype[]),
		  (2, 'pg_class', 'int4', 'int4eq', 'int4eq(int,int)', '||/', '=(int,int)', 'simple', 'simple', 'pg_catalog', 'reg_bob', '"C"',
		   NULL, NULL),
		  (3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
		CREATE TABLE reg_one (id int PRIMARY KEY, c regclass);
		INSERT INTO reg_one VALUES (1, 'app.target_table');
		CREATE TABLE reg_array (id int PRIMARY KEY, ca regclass[]);
		INSERT INTO reg_array VALUES (1, ARRAY['app.target_table']::regclass[]);
		CREATE DOMAIN app.rel AS regclass;
		CREATE TABLE reg_domain (id int PRIMARY KEY, dom app.rel, doma app.rel[]);
		INSERT INTO reg_domain VALUES (1, 'app.target_table', ARRAY['app.target_table']::app.rel[]);
		CREATE TABLE acls (id int PRIMARY KEY, a aclitem, aa aclitem[]);
		INSERT INTO acls VALUES (1, 'reg_alice=r/reg_bob', ARRAY['reg_bob=arw/reg_alice', '=r/reg_alice']::aclitem[]), (2, NULL, NULL);
		CREATE TABLE plain (id int PRIMARY KEY, v text);
		INSERT INTO plain SELECT g, md5(g::text) FROM generate_series(1, 1000) g;`
	cfg := cpDB(t, src, dst, "regtypes", regObjects+data)
	if out, err := dst.Psql(ctx, "regtypes", `DO $$ BEGIN FOR i IN 1..200 LOOP EXECUTE format('CREATE TABLE pad_%s (x int)', i); EXECUTE format('DROP TABLE pad_%s', i); END LOOP; END $$;`); err != nil {
		t.Fatal(err, out)
	}
	if _, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t)); err != nil {
		t.Fatalf("copy: %v", err)
	}
	sc, tc := cpConnect(t, cfg.Source), cpConnect(t, cfg.Target)
	// The objects do have other OIDs on the target, or the test proves nothing.
	q := `SELECT 'app.target_table'::regclass::oid::text || ',' || 'reg_alice'::regrole::oid::text`
	if s, d := cpQuery(t, sc, q), cpQuery(t, tc, q); s == d {
		t.Fatalf("the referenced objects have the same OIDs on both sides (%s): the test cannot tell", s)
	}
	cpCompareDigests(t, oracleDigests(t, cfg.Source), oracleDigests(t, cfg.Target))
	// The values name the same objects: resolved on the target, not just the same text.
	if got := cpQuery(t, tc, `SELECT (c = 'app.target_table'::regclass AND r = 'reg_alice'::regrole AND ca[1] = 'app.target_table'::regclass
		AND (SELECT dom = 'app.target_table'::regclass FROM reg_domain) AND (SELECT c = 'app.target_table'::regclass FROM reg_one)
		AND (SELECT ca[1] = 'app.target_table'::regclass FROM reg_array))::text FROM regs WHERE id = 1`); got != "true" {
		t.Errorf("reg* values on the target do not name the target's objects")
	}
	if rep := runVerify(t, cfg); rep.ExitCode() != 0 {
		t.Errorf("verify exit %d:\n%s", rep.ExitCode(), reportText(rep))
	}
	// verify sees a reg* value that names another object on the target.
	if _, err := tc.Exec(ctx, `UPDATE regs SET c = 'pg_class' WHERE id = 1; UPDATE acls SET a = 'reg_bob=r/reg_bob' WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	if rep := runVerify(t, cfg); rep.ExitCode() != 1 || rep.Summary.RowDifferences != 2 {
		t.Errorf("verify after changing two values: exit %d, %d row differences:\n%s", rep.ExitCode(), rep.Summary.RowDifferences, reportText(rep))
	}
}

// testCopysideSequences: a sequence set with is_called = false is copied as it is, and verify
// compares the next value a sequence gives (last_value and is_called).
func testCopysideSequences(t *testing.T, src, dst *pgtest.Cluster) {
	ctx := context.Background()
	cfg := cpDB(t, src, dst, "seqcalled", `
		CREATE SEQUENCE s; SELECT setval('s', 101, false);
		CREATE SEQUENCE called; SELECT setval('called', 50, true);
		CREATE TABLE t (id bigserial PRIMARY KEY, v text);
		SELECT setval('t_id_seq', 7, false);`)
	if _, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t)); err != nil {
		t.Fatalf("copy: %v", err)
	}
	sc, tc := cpConnect(t, cfg.Source), cpConnect(t, cfg.Target)
	for _, seq := range []string{"s", "called", "t_id_seq"} {
		q := `SELECT last_value || '/' || is_called FROM ` + seq
		if s, d := cpQuery(t, sc, q), cpQuery(t, tc, q); s != d {
			t.Errorf("sequence %s: source %s, target %s", seq, s, d)
		}
	}
	if got := cpQuery(t, tc, `SELECT nextval('s')::text`); got != "101" {
		t.Errorf("nextval on the target gave %s, want 101", got)
	}
	if _, err := tc.Exec(ctx, `SELECT setval('s', 101, false)`); err != nil {
		t.Fatal(err)
	}
	if rep := runVerify(t, cfg); rep.ExitCode() != 0 {
		t.Fatalf("verify after copy: exit %d\n%s", rep.ExitCode(), reportText(rep))
	}
	// The target differs only in is_called, either way round.
	for _, c := range []struct{ seq, set string }{{"s", "SELECT setval('s', 101, true)"}, {"called", "SELECT setval('called', 50, false)"}} {
		if _, err := tc.Exec(ctx, c.set); err != nil {
			t.Fatal(err)
		}
		rep := runVerify(t, cfg)
		if rep.ExitCode() != 1 || rep.Sequences == nil || len(rep.Sequences.Diffs) != 1 || rep.Sequences.Diffs[0].Name != "public."+c.seq {
			t.Errorf("target %s differing only in is_called: exit %d\n%s", c.seq, rep.ExitCode(), reportText(rep))
		}
		if _, err := tc.Exec(ctx, `SELECT setval('s', 101, false), setval('called', 50, true)`); err != nil {
			t.Fatal(err)
		}
	}
}

// identityTables are tables copy must accept: each has an identity PostgreSQL uses.
const identityTables = `
	CREATE TABLE pk (id int PRIMARY KEY, v text);
	CREATE TABLE pk_include (id int, note text, v text, PRIMARY KEY (id) INCLUDE (note));
	CREATE TABLE deferrable_full (id int PRIMARY KEY DEFERRABLE, v text);
	ALTER TABLE deferrable_full REPLICA IDENTITY FULL;
	CREATE TABLE deferrable_index (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, code int NOT NULL, v text);
	CREATE UNIQUE INDEX deferrable_index_code ON deferrable_index (code);
	ALTER TABLE deferrable_index REPLICA IDENTITY USING INDEX deferrable_index_code;
	CREATE TABLE nokey_full (v text);
	ALTER TABLE nokey_full REPLICA IDENTITY FULL;
	INSERT INTO pk SELECT g, 'v' FROM generate_series(1, 10) g;
	INSERT INTO pk_include SELECT g, NULL, 'v' FROM generate_series(1, 10) g;
	INSERT INTO deferrable_full SELECT g, 'v' FROM generate_series(1, 10) g;
	INSERT INTO deferrable_index SELECT g, g, 'v' FROM generate_series(1, 10) g;
	INSERT INTO nokey_full SELECT 'v' FROM generate_series(1, 10) g;`

// testCopysideDeferrableKey: a table whose only key is DEFERRABLE has no replica identity;
// copy refuses it before creating anything, and every table copy accepts can still be
// updated and deleted from on the source once published.
func testCopysideDeferrableKey(t *testing.T, src, dst *pgtest.Cluster) {
	ctx := context.Background()
	cfg := cpDB(t, src, dst, "deferrable", identityTables+`
		CREATE TABLE "Deferred Key" (id int PRIMARY KEY DEFERRABLE, v text);
		INSERT INTO "Deferred Key" VALUES (1, 'v');`)
	_, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t))
	if err == nil {
		t.Error(`copy accepted "Deferred Key", whose DEFERRABLE primary key is no replica identity`)
	} else {
		for _, want := range []string{`public."Deferred Key"`, "DEFERRABLE", "REPLICA IDENTITY FULL", "USING INDEX"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
		tc := cpConnect(t, cfg.Target)
		sc := cpConnect(t, cfg.Source)
		if got := cpQuery(t, tc, `SELECT (to_regclass('pgshift.migration') IS NULL)::text`); got != "true" {
			t.Error("the refused copy created the pgshift state on the target")
		}
		if got := cpQuery(t, sc, `SELECT ((SELECT count(*) FROM pg_publication) + (SELECT count(*) FROM pg_replication_slots WHERE database = current_database()))::text`); got != "0" {
			t.Error("the refused copy created a publication or slot on the source")
		}
		cfg.Exclude = []string{"Deferred Key"}
		if _, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t)); err != nil {
			t.Fatalf("copy without the refused table: %v", err)
		}
	}
	// Every table copy accepted: the application's UPDATE and DELETE still work on the source.
	sc := cpConnect(t, cfg.Source)
	for _, table := range []string{"pk", "pk_include", "deferrable_full", "deferrable_index", "nokey_full", `"Deferred Key"`} {
		var published bool
		if err := sc.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication_tables WHERE tablename = $1::text)`,
			strings.Trim(table, `"`)).Scan(&published); err != nil {
			t.Fatal(err)
		}
		if !published {
			continue
		}
		err := pgx.BeginFunc(ctx, sc, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, `UPDATE `+table+` SET v = v || 'x'`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `DELETE FROM `+table+` WHERE v = 'nothing'`); err != nil {
				return err
			}
			return errRolledBack
		})
		if !errors.Is(err, errRolledBack) {
			t.Errorf("published table %s: the application's UPDATE/DELETE fail on the source: %v", table, err)
		}
	}
}

var errRolledBack = errors.New("rolled back on purpose")

// testCopysideIncludeNulls: verify keys rows by the primary key's key columns only; an INCLUDE
// column with NULLs is no key.
func testCopysideIncludeNulls(t *testing.T, src, dst *pgtest.Cluster) {
	ctx := context.Background()
	cfg := cpDB(t, src, dst, "includenulls", `
		CREATE TABLE inc (id int, note text, v text, PRIMARY KEY (id) INCLUDE (note));
		INSERT INTO inc SELECT g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'n' || g END, 'v' || g FROM generate_series(1, 5000) g;
		ANALYZE inc;`)
	if _, err := Copy(ctx, cfg, CopyOptions{}, testLogger(t)); err != nil {
		t.Fatalf("copy: %v", err)
	}
	opts := VerifyOptions{Mode: verify.ModeChecksum, Live: "off", NoSave: true, ChunkRows: 500, LeafRows: 20}
	rep, err := Verify(ctx, cfg, opts, testLogger(t))
	if err != nil || rep.ExitCode() != 0 {
		t.Fatalf("verify: %v, report:\n%s", err, reportTextOrNil(rep))
	}
	tc := cpConnect(t, cfg.Target)
	if _, err := tc.Exec(ctx, `UPDATE inc SET note = 'changed' WHERE id = 3; UPDATE inc SET v = NULL WHERE id = 4000`); err != nil {
		t.Fatal(err)
	}
	rep, err = Verify(ctx, cfg, opts, testLogger(t))
	if err != nil || rep.ExitCode() != 1 || rep.Summary.RowDifferences != 2 {
		t.Fatalf("verify after two changes: %v, report:\n%s", err, reportTextOrNil(rep))
	}
}

func reportTextOrNil(rep *verify.Report) string {
	if rep == nil {
		return "(none)"
	}
	return reportText(rep)
}

// testCopysideIdleTimeout: the replication connection that holds the exported snapshot is idle
// in a transaction while pre-data runs; a short idle_in_transaction_session_timeout (for the
// role, then for the server) must not end it.
func testCopysideIdleTimeout(t *testing.T, src, dst *pgtest.Cluster) {
	ctx := context.Background()
	const setup = `
		CREATE TABLE slow (id int PRIMARY KEY, v text);
		INSERT INTO slow SELECT g, md5(g::text) FROM generate_series(1, 1000) g;`
	for _, c := range []struct{ name, set, reset string }{
		{"RoleSetting", `ALTER ROLE postgres IN DATABASE DB SET idle_in_transaction_session_timeout = '1s'`,
			`ALTER ROLE postgres IN DATABASE DB RESET idle_in_transaction_session_timeout`},
		{"ServerSetting", `ALTER SYSTEM SET idle_in_transaction_session_timeout = '1s'; SELECT pg_reload_conf()`,
			`ALTER SYSTEM RESET idle_in_transaction_session_timeout; SELECT pg_reload_conf()`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dbname := "idle_" + strings.ToLower(c.name)
			cfg := cpDB(t, src, dst, dbname, setup)
			for _, stmt := range strings.Split(strings.ReplaceAll(c.set, "DB", dbname), "; ") { // ALTER SYSTEM runs alone
				if _, err := src.Psql(ctx, "postgres", stmt); err != nil {
					t.Fatal(err)
				}
			}
			t.Cleanup(func() {
				for _, stmt := range strings.Split(strings.ReplaceAll(c.reset, "DB", dbname), "; ") {
					_, _ = src.Psql(ctx, "postgres", stmt)
				}
			})
			// Once the slot exists, hold a lock that makes pre-data wait for 3 s: the snapshot
			// holder is idle in its transaction meanwhile.
			locker, err := pgx.Connect(ctx, cfg.Source+" options='-c idle_in_transaction_session_timeout=0'")
			if err != nil {
				t.Fatal(err)
			}
			defer locker.Close(ctx)
			var wg sync.WaitGroup
			var lockErr error
			held := make(chan struct{})
			wg.Add(1)
			go func() {
				defer wg.Done()
				lockErr = holdLockAfterSlot(ctx, locker, held)
			}()
			_, err = Copy(ctx, cfg, CopyOptions{}, testLogger(t))
			wg.Wait()
			if lockErr != nil {
				t.Fatalf("lock: %v", lockErr)
			}
			select {
			case <-held:
			default:
				t.Fatal("the lock was never held: the test did not delay pre-data")
			}
			if err != nil {
				t.Fatalf("copy with idle_in_transaction_session_timeout = 1s: %v", err)
			}
			cpCompareDigests(t, oracleDigests(t, cfg.Source), oracleDigests(t, cfg.Target))
		})
	}
}

// holdLockAfterSlot waits for a replication slot to appear, then locks table slow for 3 s.
func holdLockAfterSlot(ctx context.Context, conn *pgx.Conn, held chan<- struct{}) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		var n int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_replication_slots WHERE database = current_database()`).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			return errors.New("no slot was created")
		}
		time.Sleep(2 * time.Millisecond)
	}
	tx, err := conn.Begin(ctx)
	if err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `LOCK TABLE slow IN ACCESS EXCLUSIVE MODE`); err != nil {
		var pe *pgconn.PgError
		_ = tx.Rollback(ctx)
		if errors.As(err, &pe) {
			return fmt.Errorf("%s: %w", pe.Code, err)
		}
		return err
	}
	close(held)
	time.Sleep(3 * time.Second)
	return tx.Rollback(ctx)
}
