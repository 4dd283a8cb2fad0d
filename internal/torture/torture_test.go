package torture

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestTorture is the generative differential test: regression seeds first, then random cases
// until PGSHIFT_TORTURE_DURATION (default 2 minutes of cases, about 3 with the build) or PGSHIFT_TORTURE_CASES
// is reached. PGSHIFT_TORTURE_SEED=<seed> replays one case exactly (as far as timing allows).
func TestTorture(t *testing.T) {
	if testing.Short() {
		t.Skip("torture test: needs PostgreSQL and minutes (skipped with -short)")
	}
	st, err := SettingsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	runStart := time.Now()
	logDir, err := os.MkdirTemp("", "pgshift-torture-")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(logDir, "pgshift")
	build := exec.Command("go", "build", "-o", bin, "./cmd/pgshift")
	build.Dir = moduleRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build pgshift: %v\n%s", err, out)
	}
	e := &env{bin: bin, logDir: logDir, settings: st, logf: t.Logf}
	e.src = pgtest.New(t, pgtest.Options{Name: "torture-src"})
	e.dst = pgtest.New(t, pgtest.Options{Name: "torture-dst"})
	ctx := context.Background()
	for _, c := range []*pgtest.Cluster{e.src, e.dst} {
		if out, err := c.Psql(ctx, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN REPLICATION", qi(ownerRole))); err != nil {
			t.Fatalf("create role: %v %s", err, out)
		}
	}

	type planned struct {
		seed    uint64
		classes string // "" : the run's
		ddl     string // "" : see caseDDL
		bug     string
	}
	var plan []planned
	if st.Seed != 0 {
		plan = append(plan, planned{seed: st.Seed})
	} else if !st.SkipSeeds {
		regs, err := ReadSeeds(filepath.Join("testdata", "seeds.txt"))
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range regs {
			plan = append(plan, planned{seed: r.Seed, classes: r.Classes, ddl: r.DDL, bug: r.Bug})
		}
	}
	sum := &Summary{BaseSeed: st.BaseSeed, Classes: st.Classes.String()}
	if st.Seed == 0 {
		sum.Regressions = len(plan)
	}
	t.Logf("pgshift torture: base seed %d (PGSHIFT_TORTURE_BASE_SEED replays the run), budget %s, classes %s, %d regression seeds; logs in %s",
		st.BaseSeed, st.Duration, st.Classes, len(plan), logDir)

	var spent time.Duration
	done := 0
	runOne := func(p planned, regression bool) {
		name := fmt.Sprintf("seed=%d", p.seed)
		t.Run(name, func(t *testing.T) {
			cst := st
			if p.classes != "" {
				c, err := ParseClasses(p.classes)
				if err != nil {
					t.Fatal(err)
				}
				cst.Classes, cst.ClassSpec = c, p.classes
			}
			cst.DDL = caseDDL(st.DDL, p.ddl, regression, p.seed)
			copyEnv := *e
			copyEnv.settings = cst
			ce := &copyEnv
			r := runCase(ctx, ce, p.seed)
			spent += r.Duration
			done++
			sum.add(r)
			label := ""
			if regression {
				label = " [regression: " + p.bug + "]"
			}
			t.Logf("seed=%d%s: %s in %s — ddl: %s; %s", p.seed, label, r.Outcome, r.Duration.Round(time.Second), cst.DDL, r.Draw)
			t.Logf("  txns %d (%d failed on the source), rows %d, kills %d (%d early), restarts %d, ddl %d, barriers %d, peak RSS %d MiB",
				r.Txns, r.TxnsFailed, r.Rows, r.Kills, r.EarlyKills, r.Restarts, r.DDL, r.Barriers, r.PeakRSSKiB>>10)
			for _, f := range r.Failures {
				t.Errorf("seed=%d FAILURE [%s]: %s", p.seed, f.Class, f.Detail)
			}
			if len(r.Failures) > 0 {
				t.Errorf("seed=%d: replay with: %s\n  pgshift's output and the case log: %s", p.seed, replayCommand(cst, p.seed), r.LogFile)
			}
		})
	}
	for _, p := range plan {
		runOne(p, st.Seed == 0)
	}
	if st.Seed == 0 && !st.SeedsOnly {
		for i := 0; ; i++ {
			if st.Cases > 0 && i >= st.Cases {
				break
			}
			avg := 35 * time.Second
			if done > 0 {
				avg = spent / time.Duration(done)
			}
			if i > 0 && time.Since(runStart)+avg > st.Duration {
				break
			}
			runOne(planned{seed: caseSeed(st.BaseSeed, i)}, false)
			if !st.KeepGoing && sum.Failed > 0 {
				break
			}
		}
	}
	sum.Elapsed = time.Since(runStart)
	sum.Replay = replayCommand(st, 0)
	var b strings.Builder
	sum.Write(&b)
	t.Log("\n" + b.String())
	if st.Summary != "" {
		if err := sum.WriteJSON(st.Summary); err != nil {
			t.Errorf("write summary: %v", err)
		}
		if err := os.WriteFile(st.Summary+".txt", []byte(b.String()), 0o644); err != nil {
			t.Errorf("write summary: %v", err)
		}
	}
	if !t.Failed() {
		os.RemoveAll(logDir)
	} else {
		t.Logf("logs kept in %s", logDir)
	}
}

// replayCommand is the exact command that replays one seed with this run's settings.
func replayCommand(st Settings, seed uint64) string {
	var env []string
	if seed == 0 {
		env = append(env, "PGSHIFT_TORTURE_SEED=<seed>")
	} else {
		env = append(env, fmt.Sprintf("PGSHIFT_TORTURE_SEED=%d", seed))
	}
	if st.ClassSpec != "" {
		env = append(env, "PGSHIFT_TORTURE_CLASSES='"+st.ClassSpec+"'")
	}
	if st.DDL != "" {
		env = append(env, "PGSHIFT_TORTURE_DDL="+st.DDL)
	}
	if v := os.Getenv("PGSHIFT_TORTURE_SCALE"); v != "" {
		env = append(env, "PGSHIFT_TORTURE_SCALE="+v)
	}
	return strings.Join(env, " ") + " go test -count=1 -v -timeout 30m -run 'TestTorture$' ./internal/torture/"
}

func moduleRoot(t *testing.T) string {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("go.mod not found above the test's directory")
		}
		dir = parent
	}
}

// TestDrawIsDeterministic: the same seed draws the same schema, data plan, workload and
// chaos schedule; a different seed draws something else.
func TestDrawIsDeterministic(t *testing.T) {
	st := Settings{Classes: mustClasses(t, ""), Scale: 1}
	for _, seed := range []uint64{1, 42, 1 << 40} {
		a, b := drawPlan(seed, st), drawPlan(seed, st)
		if a.describe() != b.describe() || strings.Join(a.schema.DDL, ";") != strings.Join(b.schema.DDL, ";") {
			t.Fatalf("seed %d drew two different cases:\n%s\n%s", seed, a.describe(), b.describe())
		}
		c1 := &client{id: 0, g: newRNG(a.clientSeeds[0], 0), params: a.work, cs: &caseRun{s: a.schema, plan: a}}
		c2 := &client{id: 0, g: newRNG(b.clientSeeds[0], 0), params: b.work, cs: &caseRun{s: b.schema, plan: b}}
		for i := 0; i < 50; i++ {
			k := txnKinds[c1.g.intn(len(txnKinds))]
			_ = c2.g.intn(len(txnKinds))
			o1, o2 := c1.drawTxn(k), c2.drawTxn(k)
			if render(o1) != render(o2) {
				t.Fatalf("seed %d: client draws differ at %d (%s):\n%s\n%s", seed, i, k, render(o1), render(o2))
			}
		}
	}
	if drawPlan(1, st).describe() == drawPlan(2, st).describe() && strings.Join(drawPlan(1, st).schema.DDL, ";") == strings.Join(drawPlan(2, st).schema.DDL, ";") {
		t.Fatal("seeds 1 and 2 drew the same case")
	}
}

func render(ops []op) string {
	var b strings.Builder
	for _, o := range ops {
		if o.build != nil {
			sql, args, _ := o.build()
			fmt.Fprintf(&b, "%s %v;", sql, args)
		} else if o.batch != nil {
			fmt.Fprintf(&b, "batch of %d;", o.batch().Len())
		}
	}
	return b.String()
}

func mustClasses(t *testing.T, spec string) Classes {
	c, err := ParseClasses(spec)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestEveryClassIsDrawn: over many seeds, every generator class shows up in some draw's
// DDL or plan, so switching one off is never a no-op and none is dead code.
func TestDrawCoverage(t *testing.T) {
	st := Settings{Classes: mustClasses(t, ""), Scale: 1}
	var all strings.Builder
	refuse, partitions, owner, sp := 0, 0, 0, 0
	for seed := uint64(1); seed <= 300; seed++ {
		p := drawPlan(seed, st)
		all.WriteString(strings.Join(p.schema.DDL, "\n"))
		all.WriteString(p.describe())
		if p.expectRefuse {
			refuse++
		}
		if p.schema.OwnerRole {
			owner++
		}
		if len(p.schema.SearchPath) > 0 {
			sp++
		}
		for _, tb := range p.schema.Tables {
			if tb.Kind == kPartRoot {
				partitions++
			}
		}
	}
	text := all.String()
	for _, want := range []string{"PARTITION BY RANGE", "PARTITION BY LIST", "PARTITION BY HASH", "DEFAULT", "INHERITS", "REPLICA IDENTITY FULL",
		"REPLICA IDENTITY USING INDEX", "DEFERRABLE", "INCLUDE (", "GENERATED ALWAYS AS IDENTITY", "GENERATED BY DEFAULT AS IDENTITY", "STORED",
		"ENABLE ALWAYS TRIGGER", "ENABLE REPLICA TRIGGER", "FORCE ROW LEVEL SECURITY", "AS RESTRICTIVE", "REFERENCES", "CREATE SEQUENCE",
		"AS ENUM", "CREATE DOMAIN", "AS RANGE", "ATTACH PARTITION", "regclass", "aclitem", "xml", "point", "tsvector", "money", "int4multirange",
		"()", "kill×", "restart-", "ddl×", "second-agent", "barrier", "copy-first", "concurrent-copy"} {
		if !strings.Contains(text, want) {
			t.Errorf("300 seeds never drew %q", want)
		}
	}
	if refuse == 0 || refuse > 100 {
		t.Errorf("%d of 300 draws are unsupported (want a few)", refuse)
	}
	if owner == 0 || sp == 0 || partitions == 0 {
		t.Errorf("owner-role %d, search_path %d, partitioned %d of 300 draws", owner, sp, partitions)
	}
}

func TestReadSeeds(t *testing.T) {
	regs, err := ReadSeeds(filepath.Join("testdata", "seeds.txt"))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range regs {
		if r.Bug == "" {
			t.Errorf("seed %d has no comment naming its bug", r.Seed)
		}
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "s.txt")
	os.WriteFile(path, []byte("# header\n\n12 # bug one\n 34#bug two\nxyz # bad\n"), 0o644)
	if _, err := ReadSeeds(path); err == nil || !strings.Contains(err.Error(), ":5:") {
		t.Fatalf("bad line not reported with its number: %v", err)
	}
	os.WriteFile(path, []byte("12 # bug one\n 34  classes=none,+int,++ddl #bug two\n"), 0o644)
	regs, err = ReadSeeds(path)
	if err != nil || len(regs) != 2 || regs[1].Seed != 34 || regs[1].Bug != "bug two" || regs[1].Classes != "none,+int,++ddl" || regs[0].Classes != "" {
		t.Fatalf("got %+v %v", regs, err)
	}
	os.WriteFile(path, []byte("12 classes=+nosuch # bug\n"), 0o644)
	if _, err := ReadSeeds(path); err == nil {
		t.Fatal("unknown class accepted")
	}
}

// TestGeneratorSetup creates the schema and initial data of many seeds on one cluster, to
// check the generator itself (every draw must be valid SQL). Set PGSHIFT_TORTURE_GENCHECK to
// the number of seeds; it is skipped otherwise.
func TestGeneratorSetup(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("PGSHIFT_TORTURE_GENCHECK"))
	if n == 0 {
		t.Skip("set PGSHIFT_TORTURE_GENCHECK=<seeds> to check the generator's setup SQL")
	}
	st, err := SettingsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	c := pgtest.New(t, pgtest.Options{Name: "torture-gen"})
	ctx := context.Background()
	if out, err := c.Psql(ctx, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN REPLICATION", qi(ownerRole))); err != nil {
		t.Fatalf("create role: %v %s", err, out)
	}
	e := &env{src: c, dst: c, settings: st, logDir: t.TempDir(), logf: t.Logf}
	for i := 0; i < n; i++ {
		seed := caseSeed(st.BaseSeed, i)
		cs := &caseRun{env: e, plan: drawPlan(seed, st), res: &CaseResult{Seed: seed}, logf: func(string, ...any) {}}
		cs.s = cs.plan.schema
		if err := cs.setupSource(ctx); err != nil {
			t.Errorf("seed %d: %v", seed, err)
		}
		c.Psql(ctx, "postgres", fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", qi(cs.plan.dbname)))
	}
}
