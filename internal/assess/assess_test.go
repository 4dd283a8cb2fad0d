package assess

import (
	"context"
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// want is one expected finding.
type want struct {
	code   string
	sev    Severity
	object string
}

func (w want) String() string { return fmt.Sprintf("%s/%s/%s", w.code, w.sev, w.object) }

// scenario is one condition on real servers and exactly the findings it must produce.
type scenario struct {
	name string
	// source is run in a fresh source database; target in the matching fresh target database.
	source, target string
	// targetCreate, when set, creates the target database instead of the default (it gets the name as %s).
	targetCreate string
	// sourceUser/targetUser, when set, connect as that role instead of the superuser.
	sourceUser, targetUser string
	// noTarget assesses the source alone.
	noTarget bool
	want     []want
}

// baseline findings appear in every assessment of their kind; scenarios assert everything else exactly.
// max_slot_wal_keep_size is a note about the source cluster's setting, the same for every
// database; its own subtest checks it. not_replicated (sequences and DDL) is said for every server.
var baseline = map[string]bool{CodeTargetSpace: true, CodeNoTarget: true, CodeMaxSlotWALKeepSize: true, CodeNotReplicated: true}

func connect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, ctx context.Context, dsn, sql string) {
	t.Helper()
	if strings.TrimSpace(sql) == "" {
		return
	}
	conn := connect(t, ctx, dsn)
	if _, err := conn.Exec(ctx, sql); err != nil {
		t.Fatalf("setup: %v\n%s", err, sql)
	}
}

func asUser(dsn, role string) string {
	return strings.Replace(dsn, "user=postgres", "user="+role, 1)
}

func dbName(t *testing.T) string {
	n := strings.ToLower(t.Name())
	n = n[strings.LastIndex(n, "/")+1:]
	return "a_" + strings.NewReplacer("-", "_", " ", "_").Replace(n)
}

// run creates the scenario's databases on src and dst and returns the assessment.
func run(t *testing.T, src, dst *pgtest.Cluster, sc scenario) Report {
	t.Helper()
	ctx := context.Background()
	name := dbName(t)
	srcDSN, err := src.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	exec(t, ctx, srcDSN, sc.source)
	var dstConn *pgx.Conn
	if !sc.noTarget {
		var dstDSN string
		if sc.targetCreate != "" {
			if _, err := dst.Psql(ctx, "postgres", fmt.Sprintf(sc.targetCreate, name)); err != nil {
				t.Fatal(err)
			}
			dstDSN = dst.DSN(name)
		} else if dstDSN, err = dst.CreateDB(ctx, name); err != nil {
			t.Fatal(err)
		}
		exec(t, ctx, dstDSN, sc.target)
		if sc.targetUser != "" {
			dstDSN = asUser(dstDSN, sc.targetUser)
		}
		dstConn = connect(t, ctx, dstDSN)
	}
	if sc.sourceUser != "" {
		srcDSN = asUser(srcDSN, sc.sourceUser)
	}
	rep, err := Run(ctx, connect(t, ctx, srcDSN), dstConn, Options{Jobs: 4})
	if err != nil {
		t.Fatalf("assess: %v", err)
	}
	return rep
}

func check(t *testing.T, rep Report, sc scenario) {
	t.Helper()
	var got, exp []string
	for _, f := range rep.Findings {
		if !baseline[f.Code] {
			got = append(got, want{f.Code, f.Severity, f.Object}.String())
		}
		if f.Message == "" || (f.Severity != Info && f.Fix == "") {
			t.Errorf("finding without message or fix: %+v", f)
		}
	}
	for _, w := range sc.want {
		exp = append(exp, w.String())
	}
	slices.Sort(got)
	slices.Sort(exp)
	if !slices.Equal(got, exp) {
		t.Errorf("findings:\n got  %v\n want %v", got, exp)
		for _, f := range rep.Findings {
			t.Logf("  %s %s %s: %s", f.Severity, f.Code, f.Object, f.Message)
		}
	}
	blockers := slices.ContainsFunc(sc.want, func(w want) bool { return w.sev == Blocker })
	if rep.Ready == blockers {
		t.Errorf("Ready = %v with expected blockers %v", rep.Ready, blockers)
	}
}

// TestFindings creates each condition the assessment knows about on real servers and checks
// that exactly the matching finding comes out. One pair of clusters serves every scenario,
// each in its own database; a third cluster has replication switched off.
func TestFindings(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	weak := pgtest.New(t, pgtest.Options{Name: "weak", Settings: map[string]string{
		"wal_level": "replica", "max_replication_slots": "1", "max_wal_senders": "1", "max_prepared_transactions": "2",
	}})
	ctx := context.Background()

	// Roles are cluster-wide: create them once.
	for _, c := range []*pgtest.Cluster{src, dst} {
		if _, err := c.Psql(ctx, "postgres", `CREATE ROLE weak_user LOGIN; CREATE ROLE able_user LOGIN REPLICATION; CREATE ROLE data_owner NOLOGIN`); err != nil {
			t.Fatal(err)
		}
	}

	const clean = `CREATE TABLE public.items (id int PRIMARY KEY, name text, price numeric(10,2));
		INSERT INTO public.items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, 100) g; ANALYZE;`

	scenarios := []scenario{
		{name: "clean", source: clean},
		{name: "no primary key", source: clean + `CREATE TABLE public.ledger (a int, b text);`,
			want: []want{{CodeNoReplicaIdentity, Blocker, "public.ledger"}}},
		// NOTHING on a table that has a primary key, in a mixed-case schema.
		{name: "replica identity nothing",
			source: `CREATE SCHEMA "Sales"; CREATE TABLE "Sales"."Odd Name" (id int PRIMARY KEY);
				ALTER TABLE "Sales"."Odd Name" REPLICA IDENTITY NOTHING;`,
			want: []want{{CodeReplicaIdentityNothing, Warning, `"Sales"."Odd Name"`}}},
		{name: "replica identity full", source: `CREATE TABLE public.ledger (a int, b text); ALTER TABLE public.ledger REPLICA IDENTITY FULL;`,
			want: []want{{CodeReplicaIdentityFull, Warning, "public.ledger"}}},
		{name: "replica identity index", source: `CREATE TABLE public.ledger (a int NOT NULL, b text);
			CREATE UNIQUE INDEX ledger_a ON public.ledger (a); ALTER TABLE public.ledger REPLICA IDENTITY USING INDEX ledger_a;`},
		{name: "unlogged", source: `CREATE UNLOGGED TABLE public.cache (id int PRIMARY KEY);`,
			want: []want{{CodeUnloggedTable, Warning, "public.cache"}}},
		{name: "foreign table", source: `CREATE EXTENSION file_fdw; CREATE SERVER files FOREIGN DATA WRAPPER file_fdw;
			CREATE FOREIGN TABLE public.feed (a int) SERVER files OPTIONS (filename '/dev/null');`,
			want: []want{{CodeForeignTable, Warning, "public.feed"}}},
		{name: "large objects", source: clean + `SELECT lo_from_bytea(0, 'scanned invoice');`,
			want: []want{{CodeLargeObjects, Warning, "database a_large_objects"}}},
		{name: "materialized view", source: clean + `CREATE MATERIALIZED VIEW public.totals AS SELECT count(*) FROM public.items;`,
			want: []want{{CodeMaterializedView, Info, "public.totals"}}},
		{name: "sequences", source: `CREATE TABLE public.t (id bigserial PRIMARY KEY);`,
			want: []want{{CodeSequences, Info, "database a_sequences"}}},
		{name: "unused index", source: clean + `CREATE INDEX items_name ON public.items (name);`,
			want: []want{{CodeUnusedIndex, Info, "schema public"}}},
		{name: "event trigger", source: `CREATE FUNCTION public.audit_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$BEGIN END$$;
			CREATE EVENT TRIGGER audit_ddl ON ddl_command_start EXECUTE FUNCTION public.audit_ddl();`,
			want: []want{{CodeEventTrigger, Warning, "event trigger audit_ddl"}}},
		{name: "missing language", source: `CREATE FUNCTION public.lang_handler() RETURNS language_handler
				AS '$libdir/plpgsql', 'plpgsql_call_handler' LANGUAGE c;
			CREATE LANGUAGE plcustom HANDLER public.lang_handler;
			CREATE FUNCTION public.in_custom() RETURNS int AS 'whatever' LANGUAGE plcustom;`,
			want: []want{{CodeMissingLanguage, Blocker, "language plcustom"}}},
		{name: "source privileges", source: clean, sourceUser: "weak_user",
			want: []want{
				{CodeReplicationPriv, Blocker, "role weak_user"},
				{CodeCreatePriv, Blocker, "database a_source_privileges"},
				{CodeTableOwnership, Blocker, "role postgres"},
				{CodeSelectPriv, Blocker, "schema public"},
			}},
		{name: "sequence privileges", sourceUser: "able_user",
			source: `CREATE TABLE public.t (id int PRIMARY KEY); ALTER TABLE public.t OWNER TO able_user;
				CREATE SEQUENCE public.invoice_no; GRANT CREATE ON DATABASE a_sequence_privileges TO able_user;`,
			want: []want{
				{CodeSelectPriv, Blocker, "sequences in schema public"},
				{CodeSequences, Info, "database a_sequence_privileges"},
			}},
		{name: "source privileges granted", sourceUser: "able_user",
			source: clean + `ALTER TABLE public.items OWNER TO able_user; GRANT CREATE ON DATABASE a_source_privileges_granted TO able_user;`},
		{name: "owned through role membership", sourceUser: "able_user",
			source: clean + `ALTER TABLE public.items OWNER TO data_owner; GRANT data_owner TO able_user;
				GRANT CREATE ON DATABASE a_owned_through_role_membership TO able_user;`},
		{name: "target privileges", source: clean, targetUser: "weak_user",
			want: []want{
				{CodeTargetCreatePriv, Blocker, "database a_target_privileges"},
				{CodeTargetCreatePriv, Blocker, "schema public"},
			}},
		{name: "target not empty", source: clean, target: `CREATE TABLE public.leftover (id int);`,
			want: []want{{CodeTargetNotEmpty, Blocker, "database a_target_not_empty"}}},
		{name: "encoding", source: clean,
			targetCreate: `CREATE DATABASE %s TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'`,
			want: []want{
				{CodeEncoding, Blocker, "database a_encoding"},
				{CodeCollation, Warning, "database a_encoding"},
				{CodeCtype, Warning, "database a_encoding"},
			}},
		{name: "collation", source: clean,
			targetCreate: `CREATE DATABASE %s TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C.UTF-8'`,
			want:         []want{{CodeCollation, Warning, "database a_collation"}}},
		{name: "ctype", source: clean,
			targetCreate: `CREATE DATABASE %s TEMPLATE template0 ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C'`,
			want:         []want{{CodeCtype, Warning, "database a_ctype"}}},
		{name: "settings", source: clean,
			target: `ALTER DATABASE a_settings SET TimeZone = 'America/New_York'; ALTER DATABASE a_settings SET DateStyle = 'SQL, DMY';
				ALTER DATABASE a_settings SET bytea_output = 'escape';`,
			want: []want{
				{CodeSetting, Warning, "setting TimeZone"},
				{CodeSetting, Warning, "setting DateStyle"},
				{CodeSetting, Warning, "setting bytea_output"},
			}},
		// Publications live in one database: the scenario's own, named as pgshift would name it.
		{name: "leftover publication", source: clean + `CREATE PUBLICATION pgshift_a_leftover_publication FOR ALL TABLES;`,
			want: []want{{CodeLeftoverPublication, Warning, "publication pgshift_a_leftover_publication"}}},
		{name: "no target", source: clean + `CREATE EXTENSION file_fdw;`, noTarget: true,
			want: []want{{CodeExtension, Info, "extension file_fdw"}}},
	}
	for _, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			rep := run(t, src, dst, sc)
			check(t, rep, sc)
			if sc.name == "clean" {
				if !rep.Has(CodeTargetSpace, Info, "database a_clean") {
					t.Error("target_space note missing")
				}
				if len(rep.Tables) != 1 || rep.Tables[0].RowsEstimate != 100 || rep.Totals.TotalBytes <= 0 {
					t.Errorf("sizes: %+v totals %+v", rep.Tables, rep.Totals)
				}
			}
		})
	}

	t.Run("replication off", func(t *testing.T) {
		sc := scenario{source: clean, want: []want{
			{CodeWalLevel, Blocker, "server"},
			{CodeReplicationSlots, Blocker, "server"},
			{CodeWalSenders, Blocker, "server"},
		}}
		check(t, run(t, weak, dst, sc), sc)
	})
	t.Run("prepared transaction", func(t *testing.T) {
		// Runs after "replication off" on the same cluster: prepared transactions are cluster-wide.
		if _, err := weak.Psql(ctx, "postgres", `CREATE TABLE pending (x int); BEGIN; INSERT INTO pending VALUES (1); PREPARE TRANSACTION 'invoice-batch-7'`); err != nil {
			t.Fatal(err)
		}
		defer weak.Psql(ctx, "postgres", `ROLLBACK PREPARED 'invoice-batch-7'`)
		sc := scenario{source: clean, want: []want{
			{CodeWalLevel, Blocker, "server"},
			{CodeReplicationSlots, Blocker, "server"},
			{CodeWalSenders, Blocker, "server"},
			{CodePreparedXacts, Warning, "server"},
		}}
		rep := run(t, weak, dst, sc)
		check(t, rep, sc)
		if !slices.Equal(rep.Source.PreparedXacts, []string{"invoice-batch-7"}) {
			t.Errorf("prepared transactions: %v", rep.Source.PreparedXacts)
		}
	})
	t.Run("slots in use", func(t *testing.T) {
		// 31 of the 32 slots taken: one is free, pgshift needs two.
		var sql strings.Builder
		for i := range 31 {
			fmt.Fprintf(&sql, "SELECT pg_create_physical_replication_slot('busy_%d');", i)
		}
		if _, err := src.Psql(ctx, "postgres", sql.String()); err != nil {
			t.Fatal(err)
		}
		defer src.Psql(ctx, "postgres", `SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'busy\_%'`)
		sc := scenario{source: clean, want: []want{{CodeReplicationSlots, Blocker, "server"}}}
		check(t, run(t, src, dst, sc), sc)
	})
	t.Run("leftover slot", func(t *testing.T) {
		// Slots are cluster-wide: this one is dropped again before the next subtest.
		if _, err := src.Psql(ctx, "postgres", `SELECT pg_create_logical_replication_slot('pgshift_shop', 'pgoutput')`); err != nil {
			t.Fatal(err)
		}
		defer src.Psql(ctx, "postgres", `SELECT pg_drop_replication_slot('pgshift_shop')`)
		// The scenario's inserts are written after the slot's restart_lsn: it holds them.
		sc := scenario{source: clean, want: []want{{CodeLeftoverSlot, Warning, "replication slot pgshift_shop"}}}
		rep := run(t, src, dst, sc)
		check(t, rep, sc)
		var retained int64
		out, err := src.Psql(ctx, "postgres", `SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'pgshift_shop'`)
		if err == nil {
			retained, err = strconv.ParseInt(out, 10, 64)
		}
		if err != nil || retained <= 0 {
			t.Fatalf("retained WAL: %q, %v", out, err)
		}
		for _, f := range rep.Findings {
			if f.Code == CodeLeftoverSlot && (strings.Contains(f.Message, "holds 0 B") || !strings.Contains(f.Message, "of WAL on the source") ||
				!strings.Contains(f.Fix, "SELECT pg_drop_replication_slot('pgshift_shop');")) {
				t.Errorf("leftover slot finding: %+v", f)
			}
		}
	})
	t.Run("migration in progress", func(t *testing.T) {
		const name = "pgshift_a_migration_in_progress"
		if _, err := src.Psql(ctx, "postgres", `SELECT pg_create_logical_replication_slot('`+name+`', 'pgoutput')`); err != nil {
			t.Fatal(err)
		}
		defer src.Psql(ctx, "postgres", `SELECT pg_drop_replication_slot('`+name+`')`)
		srcDSN := mustCreate(t, src, "a_migration_in_progress")
		exec(t, ctx, srcDSN, clean+`CREATE PUBLICATION `+name+` FOR ALL TABLES;`)
		dstDSN := mustCreate(t, dst, "a_migration_in_progress")
		conn := connect(t, ctx, dstDSN)
		if err := state.Ensure(ctx, conn); err != nil {
			t.Fatal(err)
		}
		if err := state.Create(ctx, conn, state.Migration{SourceSystemID: "1", SourceDatabase: "a_migration_in_progress",
			Slot: name, Publication: name, Phase: pgtypes.PhaseFollowing}); err != nil {
			t.Fatal(err)
		}
		rep := assessDSNs(t, srcDSN, dstDSN)
		check(t, rep, scenario{want: []want{{CodeMigrationInProgress, Info, "replication slot " + name}}})
	})
	t.Run("max_slot_wal_keep_size", func(t *testing.T) {
		note := func(rep Report) Finding {
			t.Helper()
			for _, f := range rep.Findings {
				if f.Code == CodeMaxSlotWALKeepSize {
					return f
				}
			}
			t.Fatalf("no %s finding: %+v", CodeMaxSlotWALKeepSize, rep.Findings)
			return Finding{}
		}
		sc := scenario{source: clean}
		rep := run(t, src, dst, sc)
		check(t, rep, sc)
		if f := note(rep); f.Severity != Info || !strings.Contains(f.Message, "-1 (unlimited)") || !strings.Contains(f.Fix, "ALTER SYSTEM SET max_slot_wal_keep_size") {
			t.Errorf("unlimited: %+v", f)
		}

		setKeep(t, src, "'2GB'")
		defer setKeep(t, src, "DEFAULT")
		name := dbName(t)
		rep = assessDSNs(t, src.DSN(name), dst.DSN(name))
		if f := note(rep); f.Severity != Info || !strings.Contains(f.Message, "is 2.0 GB") || !strings.Contains(f.Message, "fatal error") {
			t.Errorf("2GB: %+v", f)
		}
	})
	t.Run("target without logical wal", func(t *testing.T) {
		sc := scenario{source: clean, want: []want{{CodeTargetWalLevel, Warning, "server"}}}
		check(t, run(t, src, weak, sc), sc)
	})
	t.Run("tablespace", func(t *testing.T) {
		dir := serverOwnedDir(t, "ts")
		if _, err := src.Psql(ctx, "postgres", fmt.Sprintf("CREATE TABLESPACE archive LOCATION '%s'", dir)); err != nil {
			t.Fatal(err)
		}
		sc := scenario{source: `CREATE TABLE public.old_orders (id int PRIMARY KEY) TABLESPACE archive;`,
			want: []want{{CodeTablespace, Warning, "tablespace archive"}}}
		check(t, run(t, src, dst, sc), sc)
	})
	t.Run("missing extension", func(t *testing.T) {
		share := shareDir(t, src)
		name := "pgshift_probe_" + strconv.Itoa(os.Getpid())
		files := installExtension(t, share, name, "1.0")
		dsn, err := src.CreateDB(ctx, "a_missing_extension")
		if err != nil {
			t.Fatal(err)
		}
		exec(t, ctx, dsn, clean+"CREATE EXTENSION "+name+";")
		for _, f := range files { // the target's server no longer offers it
			os.Remove(f)
		}
		rep := assessDSNs(t, dsn, mustCreate(t, dst, "a_missing_extension"))
		check(t, rep, scenario{want: []want{{CodeMissingExtension, Blocker, "extension " + name}}})
	})
	t.Run("extension version", func(t *testing.T) {
		share := shareDir(t, src)
		name := "pgshift_probe_v_" + strconv.Itoa(os.Getpid())
		files := installExtension(t, share, name, "1.0")
		dsn, err := src.CreateDB(ctx, "a_extension_version")
		if err != nil {
			t.Fatal(err)
		}
		exec(t, ctx, dsn, clean+"CREATE EXTENSION "+name+";")
		for _, f := range files {
			os.Remove(f)
		}
		installExtension(t, share, name, "2.0") // the target offers only a newer version
		rep := assessDSNs(t, dsn, mustCreate(t, dst, "a_extension_version"))
		check(t, rep, scenario{want: []want{{CodeExtensionVersion, Warning, "extension " + name}}})
	})
}

// setKeep sets max_slot_wal_keep_size on c and waits until new sessions see it (the reload
// is asynchronous).
func setKeep(t *testing.T, c *pgtest.Cluster, value string) {
	t.Helper()
	ctx := context.Background()
	if _, err := c.Psql(ctx, "postgres", "ALTER SYSTEM SET max_slot_wal_keep_size = "+value); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Psql(ctx, "postgres", "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	want := "-1"
	if value != "DEFAULT" {
		want = strings.Trim(value, "'")
	}
	var got string
	for range 100 {
		got, _ = c.Psql(ctx, "postgres", "SHOW max_slot_wal_keep_size")
		if got == want {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("max_slot_wal_keep_size is %q after reload, want %q", got, want)
}

func mustCreate(t *testing.T, c *pgtest.Cluster, name string) string {
	t.Helper()
	dsn, err := c.CreateDB(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return dsn
}

func assessDSNs(t *testing.T, srcDSN, dstDSN string) Report {
	t.Helper()
	ctx := context.Background()
	rep, err := Run(ctx, connect(t, ctx, srcDSN), connect(t, ctx, dstDSN), Options{Jobs: 4})
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// shareDir is the server's extension directory; tests that install extension files there are
// skipped when it is not writable (not root).
func shareDir(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	out, err := c.Psql(context.Background(), "postgres", "SELECT setting FROM pg_config() WHERE name = 'SHAREDIR'")
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(strings.TrimSpace(out), "extension")
	probe := filepath.Join(dir, ".pgshift-write-probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Skipf("cannot install a test extension into %s: %v", dir, err)
	}
	os.Remove(probe)
	return dir
}

// installExtension writes a minimal extension with one version into dir and removes it when the test ends.
func installExtension(t *testing.T, dir, name, version string) []string {
	t.Helper()
	control := filepath.Join(dir, name+".control")
	script := filepath.Join(dir, name+"--"+version+".sql")
	body := fmt.Sprintf("comment = 'pgshift test extension'\ndefault_version = '%s'\nrelocatable = true\n", version)
	if err := os.WriteFile(control, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(script, []byte("CREATE FUNCTION pgshift_probe_answer() RETURNS int LANGUAGE sql AS 'SELECT 42';\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(control); os.Remove(script) })
	return []string{control, script}
}

// serverOwnedDir is an empty directory the server's OS user may write (for CREATE TABLESPACE).
func serverOwnedDir(t *testing.T, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pgshift-assess-"+prefix+"-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() == 0 {
		u, err := user.Lookup("postgres")
		if err != nil {
			t.Skip("no postgres OS user")
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
