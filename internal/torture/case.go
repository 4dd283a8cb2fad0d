package torture

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/pgtest"
)

// Failure is one defect a case found.
type Failure struct {
	Seed   uint64 `json:"seed"`
	Class  string `json:"class"`
	Detail string `json:"detail"`
}

// CaseResult is what one case did and found.
type CaseResult struct {
	Seed        uint64    `json:"seed"`
	Draw        string    `json:"draw"`
	Outcome     string    `json:"outcome"` // ok, refused (as it must), failed, harness-error
	Failures    []Failure `json:"failures,omitempty"`
	Txns        int64     `json:"txns"`
	TxnsFailed  int64     `json:"txns_failed"`
	Rows        int64     `json:"rows"`
	InitialRows int64     `json:"initial_rows"`
	BigTxns     int64     `json:"big_txns"`
	Kills       int       `json:"kills"`
	EarlyKills  int       `json:"early_kills"`
	Restarts    int       `json:"server_restarts"`
	DDL         int       `json:"ddl"`
	DDLStops    int       `json:"ddl_stops"`
	// SlotStartOvers: the source could not decode the slot (PostgreSQL's snapshot-builder
	// defect, "could not map filenode"), pgshift stopped saying so, and the harness took the
	// remedy its message names (pgshift copy --force, then run); the oracle judges the result.
	SlotStartOvers int `json:"slot_start_overs"`
	Barriers       int `json:"barriers"`
	Agents         int `json:"agent_starts"`
	// StartupExits: the agent gave up because a server restarted in its first moments.
	StartupExits int           `json:"startup_exits"`
	PeakRSSKiB   int64         `json:"peak_rss_kib"`
	Duration     time.Duration `json:"duration_ns"`
	LogFile      string        `json:"log_file"`
	mu           sync.Mutex
}

func (r *CaseResult) fail(class, format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f := Failure{Seed: r.Seed, Class: class, Detail: fmt.Sprintf(format, args...)}
	for _, x := range r.Failures {
		if x == f {
			return // the same failure again (a restarted agent stopping on the same error)
		}
	}
	r.Failures = append(r.Failures, f)
}

// onlyHarness: every failure is the harness's own (a generator or setup bug), none pgshift's.
func (r *CaseResult) onlyHarness() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, f := range r.Failures {
		if f.Class != "harness" {
			return false
		}
	}
	return len(r.Failures) > 0
}

func (r *CaseResult) failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.Failures) > 0
}

// env is what cases share: the two clusters and the binary.
type env struct {
	src, dst *pgtest.Cluster
	bin      string
	logDir   string
	settings Settings
	logf     func(format string, args ...any)
}

// casePlan is everything a seed draws before anything runs.
type casePlan struct {
	dbname       string
	schema       *Schema
	rows         map[*Table]int
	ldwm         string // logical_decoding_work_mem on the source
	senderTO     string // wal_sender_timeout on the source
	idleTO       bool
	jobs         int
	copyFirst    bool // pgshift copy --chunk-size 1 first, then pgshift run
	concurrent   bool // the workload starts with the copy
	earlyKills   []time.Duration
	earlySecond  time.Duration // > 0: a second pgshift run this long after the first, during the copy
	rewriteTable *Table        // rewritten (ALTER TABLE ... TYPE ... USING) as soon as the slot exists
	earlyRestart time.Duration // > 0: a server restart this long into the copy
	earlyTarget  bool          // the restart is the target's (else the source's)
	verifyArgs   []string      // chunking of pgshift verify: small chunks make it split and bisect
	work         workloadParams
	events       []chaosEvent
	dataSeed     uint64
	clientSeeds  []uint64
	expectRefuse bool
}

func drawPlan(seed uint64, st Settings) *casePlan {
	g := newRNG(seed, 0)
	cl := st.Classes
	p := &casePlan{}
	p.dbname = fmt.Sprintf("torture_%x", seed&0xffffffff)
	if g.chance(cl.P("dbname", 0.3)) {
		p.dbname = fmt.Sprintf("Torture-%X", seed&0xffffff)
	}
	p.schema = drawSchema(g.fork(1), cl, p.dbname, st.Scale)
	dg := g.fork(2)
	p.rows = map[*Table]int{}
	bulkDone := false
	for _, t := range p.schema.Tables {
		n := 0
		switch t.Kind {
		case kPlain, kPartRoot, kInhParent, kInhChild:
			switch x := dg.float(); {
			case x < 0.1:
				n = 0
			case x < 0.4:
				n = dg.between(1, 20)
			case x < 0.92 || bulkDone || t.RIFull:
				n = dg.between(20, 300)
			default:
				n = int(float64(dg.between(5000, 20000)) * st.Scale)
				t.bulk = true
				bulkDone = true
			}
		case kZero, kGenOnly:
			n = dg.between(0, 30)
		}
		p.rows[t] = n
		t.initialRows = n
	}
	sg := g.fork(3)
	p.ldwm = "64kB"
	switch x := sg.float(); {
	case x < 0.2:
		p.ldwm = "64MB"
	case x < 0.35 && cl.On("unstreamed"), cl.P("unstreamed", 0) == 1:
		p.ldwm = "1GB"
	}
	p.senderTO = "60s"
	if sg.chance(cl.P("wal-sender-timeout", 0.2)) {
		p.senderTO = "1s"
	}
	p.idleTO = sg.chance(cl.P("idle-timeout", 0.15))
	if p.idleTO && !bulkDone {
		// A copy that takes seconds, so a snapshot-holding session sits idle long enough.
		for _, t := range p.schema.Tables {
			if t.Kind == kPlain && !t.RIFull && t.Unsupported == "" {
				t.bulk = true
				n := int(float64(sg.between(20000, 40000)) * st.Scale)
				p.rows[t], t.initialRows = n, n
				break
			}
		}
	}
	p.jobs = sg.between(1, 4)
	p.copyFirst = sg.chance(0.3)
	p.concurrent = sg.chance(cl.P("copy-concurrent", 0.5))
	if sg.chance(cl.P("early-kill", 0.5)) {
		for i, k := 0, sg.between(1, 2); i < k; i++ {
			p.earlyKills = append(p.earlyKills, time.Duration(sg.between(200, 4000))*time.Millisecond)
		}
	}
	switch sg.intn(3) {
	case 0:
		p.verifyArgs = []string{"--chunk-rows", "50", "--leaf-rows", "5"}
	case 1:
		p.verifyArgs = []string{"--chunk-rows", "1000"}
	}
	if sg.chance(cl.P("rewrite", 0.1)) {
		// TRUNCATE and table-rewriting ALTER TABLE are not MVCC-safe: a reader with an older
		// snapshot sees the table empty. One right after the slot's snapshot, before the copy
		// reads the table.
		var cands []*Table
		for _, t := range p.schema.Tables {
			if t.Kind == kPlain && t.N != nil && t.Unsupported == "" && p.rows[t] > 0 {
				cands = append(cands, t)
			}
		}
		if len(cands) > 0 {
			p.rewriteTable = pick(sg, cands)
		}
	}
	if sg.chance(cl.P("server-restart", 0.15)) {
		p.earlyRestart = time.Duration(sg.between(100, 2000)) * time.Millisecond
		p.earlyTarget = sg.chance(0.5)
	}
	if sg.chance(cl.P("two-agents", 0.08)) {
		p.earlySecond = time.Duration(sg.between(100, 1500)) * time.Millisecond
	}
	p.work = drawWorkload(g.fork(4), cl, st.Scale)
	// The huge transaction is meant to arrive unstreamed, into a table of its own.
	p.work.hugeOnce = p.work.hugeOnce && p.ldwm == "1GB"
	if p.work.hugeOnce {
		t := &Table{Schema: "public", Name: "huge load", Kind: kPlain, Leaf: true, KeyKind: "pk-single"}
		t.N = &Column{Name: "n", SQLType: "int8", NotNull: true, fromN: func(n int64) string { return strconv.FormatInt(n, 10) }}
		t.Cols = []*Column{t.N, {Name: "payload", Type: &colType{sql: "text", gen: genText}, SQLType: "text"}}
		p.schema.DDL = append(p.schema.DDL, "CREATE TABLE "+t.ID()+" (n int8 PRIMARY KEY, payload text)")
		p.schema.Tables = append(p.schema.Tables, t)
		p.schema.huge = t
	}
	if p.senderTO == "1s" && p.ldwm == "64kB" && cl.On("big-txn") {
		// Streamed transactions whose replay on the target takes longer than the walsender
		// waits for a status update.
		p.work.bigRows, p.work.bigValue = int(float64(sg.between(100000, 200000))*st.Scale), 100
		p.work.weights["big-txn"] = max(p.work.weights["big-txn"], 4)
	}
	p.events = drawChaos(g.fork(5), cl, p)
	p.dataSeed = g.uint64()
	for i := 0; i < p.work.clients; i++ {
		p.clientSeeds = append(p.clientSeeds, g.uint64())
	}
	p.expectRefuse = len(p.schema.Unsupported) > 0
	return p
}

// describe is a one-line summary of the draw, for the log.
func (p *casePlan) describe() string {
	kinds := map[string]int{}
	for _, t := range p.schema.Tables {
		switch t.Kind {
		case kPlain:
			kinds[t.KeyKind]++
		case kPartRoot:
			kinds["partitioned("+t.KeyKind+")"]++
		case kInhParent:
			kinds["inheritance"]++
		case kZero:
			kinds["zero-column"]++
		case kGenOnly:
			kinds["generated-only"]++
		case kAudit:
			kinds["audit"]++
		}
	}
	var parts []string
	for _, k := range sortedKeys(kinds) {
		parts = append(parts, fmt.Sprintf("%s×%d", k, kinds[k]))
	}
	extra := []string{}
	for _, t := range p.schema.Tables {
		if t.Trigger != "" {
			extra = append(extra, "trigger:"+t.Trigger)
		}
		if t.RLS {
			extra = append(extra, "rls")
		}
	}
	if p.schema.OwnerRole {
		extra = append(extra, "owner-role")
	}
	if len(p.schema.SearchPath) > 0 {
		extra = append(extra, "search_path")
	}
	if p.copyFirst {
		extra = append(extra, "copy-first")
	}
	if p.concurrent {
		extra = append(extra, "concurrent-copy")
	}
	if p.idleTO {
		extra = append(extra, "idle-timeout")
	}
	if p.earlySecond > 0 {
		extra = append(extra, "second-agent-during-copy")
	}
	if p.earlyRestart > 0 {
		extra = append(extra, "restart-during-copy")
	}
	if p.rewriteTable != nil {
		extra = append(extra, "rewrite-during-copy")
	}
	ev := map[string]int{}
	for _, e := range p.events {
		ev[e.kind]++
	}
	var evs []string
	for _, k := range sortedKeys(ev) {
		evs = append(evs, fmt.Sprintf("%s×%d", k, ev[k]))
	}
	return fmt.Sprintf("db %s; %d relations [%s] %s; ldwm=%s sender_timeout=%s jobs=%d; %d clients for %s; early kills %d; events [%s]",
		p.dbname, len(p.schema.Tables), strings.Join(parts, " "), strings.Join(extra, " "), p.ldwm, p.senderTO, p.jobs,
		p.work.clients, p.work.duration, len(p.earlyKills), strings.Join(evs, " "))
}

// caseRun is one case in progress.
type caseRun struct {
	env      *env
	plan     *casePlan
	s        *Schema
	res      *CaseResult
	st       stats
	srcDSN   string // superuser on the source database
	dstDSN   string
	agentSrc string // the DSN pgshift reads the source with
	pg       *pgshift
	schemaMu sync.RWMutex // clients hold it shared per transaction; DDL takes it exclusively
	chaosMu  sync.Mutex   // one chaos event (or barrier check) at a time

	agentMu     sync.Mutex
	agent       *proc
	agentBroken int  // unexpected exits
	gaveUp      bool // the agent exited on its own twice: not restarted again
	// restartWindow: a server restart is under way or just ended. The agent gives up when a
	// server is unreachable in its first moments (before it follows); that is not the
	// retried, mid-follow outage the product promises to ride out.
	restartWindow time.Time
	startupExits  int
	// sourceCrashed: the source crash-restarted. Its sequences then jump ahead of what was
	// last handed out (PostgreSQL logs them 32 values ahead), which is no pgshift fault.
	sourceCrashed bool
	pendingDDL    []*ddlEvent
	nextMark      int64
	errMu         sync.Mutex
	srcErrors     map[string]int // source errors seen by the workload, by SQLSTATE and kind
	logf          func(format string, args ...any)
}

// caseDDL resolves the ddl setting of one case (see Settings.DDL): the run's when it sets one,
// else the regression seed's line's (stop when it says nothing: how those seeds were found), else
// follow for an odd seed.
func caseDDL(run, line string, regression bool, seed uint64) string {
	switch {
	case run != "":
		return run
	case line != "":
		return line
	case regression:
		return "stop"
	case seed%2 == 1:
		return "follow"
	}
	return "stop"
}

func runCase(ctx context.Context, e *env, seed uint64) *CaseResult {
	start := time.Now()
	plan := drawPlan(seed, e.settings)
	res := &CaseResult{Seed: seed, Draw: plan.describe()}
	logPath := filepath.Join(e.logDir, fmt.Sprintf("case-%d.log", seed))
	res.LogFile = logPath
	lf, err := os.Create(logPath)
	if err != nil {
		res.fail("harness", "create log: %v", err)
		res.Outcome = "harness-error"
		return res
	}
	defer lf.Close()
	cs := &caseRun{env: e, plan: plan, s: plan.schema, res: res, logf: func(format string, args ...any) {
		line := fmt.Sprintf("%s "+format, append([]any{time.Now().UTC().Format("15:04:05.000")}, args...)...)
		fmt.Fprintln(lf, line)
		if e.settings.Verbose {
			e.logf("seed=%d %s", seed, line)
		}
	}}
	cs.logf("draw: %s", res.Draw)
	for _, u := range plan.schema.Unsupported {
		cs.logf("unsupported by design: %s", u)
	}
	defer func() {
		if e.settings.Hold > 0 && res.failed() {
			cs.agentMu.Lock()
			a := cs.agent
			cs.agentMu.Unlock()
			a.kill()
			e.logf("seed=%d failed: holding its databases for %s: source %q, target %q", seed, e.settings.Hold, cs.srcDSN, cs.dstDSN)
			time.Sleep(e.settings.Hold)
		}
		cs.cleanup()
		res.Txns, res.TxnsFailed, res.Rows, res.BigTxns = cs.st.txns.Load(), cs.st.txnFailed.Load(), cs.st.rows.Load(), cs.st.bigTxns.Load()
		res.StartupExits = cs.startupExits
		if cs.pg != nil {
			res.PeakRSSKiB = cs.pg.peakKiB()
			res.Agents = cs.pg.starts
		}
		res.Duration = time.Since(start)
		switch {
		case res.Outcome == "harness-error":
		case res.onlyHarness():
			res.Outcome = "harness-error"
		case res.failed():
			res.Outcome = "failed"
		case res.Outcome == "":
			res.Outcome = "ok"
		}
		cs.logf("outcome %s: %d failures; txns %d (%d failed), rows %d; kinds %v; source errors %v", res.Outcome, len(res.Failures), res.Txns, res.TxnsFailed, res.Rows, cs.st.kindCounts(), cs.srcErrors)
	}()
	if err := cs.setup(ctx); err != nil {
		res.fail("harness", "setup: %v", err)
		res.Outcome = "harness-error"
		return res
	}
	cs.pg = &pgshift{bin: e.bin, src: cs.agentSrc, dst: cs.dstDSN, logf: lf}
	if plan.expectRefuse {
		cs.judgeRefusal(ctx)
		return res
	}
	cs.follow(ctx)
	return res
}

// setup creates the two databases, the server settings, and the source's schema and data.
func (cs *caseRun) setup(ctx context.Context) error {
	e, p := cs.env, cs.plan
	if _, err := e.dst.Psql(ctx, "postgres", fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", qi(p.dbname))); err != nil {
		return err
	}
	if _, err := e.dst.Psql(ctx, "postgres", fmt.Sprintf("CREATE DATABASE %s TEMPLATE template0 ENCODING 'UTF8'", qi(p.dbname))); err != nil {
		return err
	}
	cs.dstDSN = e.dst.DSN(p.dbname)
	if _, err := e.src.Psql(ctx, "postgres", fmt.Sprintf("ALTER SYSTEM SET logical_decoding_work_mem = %s", ql(p.ldwm))); err != nil {
		return err
	}
	if _, err := e.src.Psql(ctx, "postgres", fmt.Sprintf("ALTER SYSTEM SET wal_sender_timeout = %s", ql(p.senderTO))); err != nil {
		return err
	}
	// With asynchronous commits drawn, the WAL writer sleeps long between flushes, so such a
	// commit stays unwritten (and unsent) for seconds after it returns.
	delay := "200ms"
	if p.schema.Marks != nil {
		delay = "5s"
	}
	if _, err := e.src.Psql(ctx, "postgres", fmt.Sprintf("ALTER SYSTEM SET wal_writer_delay = %s", ql(delay))); err != nil {
		return err
	}
	if _, err := e.src.Psql(ctx, "postgres", "SELECT pg_reload_conf()"); err != nil {
		return err
	}
	return cs.setupSource(ctx)
}

// setupSource creates the source database with the drawn schema and initial data.
func (cs *caseRun) setupSource(ctx context.Context) error {
	e, p := cs.env, cs.plan
	owner := ""
	if p.schema.OwnerRole {
		owner = " OWNER " + qi(ownerRole)
	}
	if _, err := e.src.Psql(ctx, "postgres", fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", qi(p.dbname))); err != nil {
		return err
	}
	if _, err := e.src.Psql(ctx, "postgres", fmt.Sprintf("CREATE DATABASE %s%s TEMPLATE template0 ENCODING 'UTF8'", qi(p.dbname), owner)); err != nil {
		return err
	}
	cs.srcDSN = e.src.DSN(p.dbname)
	cs.agentSrc = cs.srcDSN
	ddlDSN := cs.srcDSN
	if p.schema.OwnerRole {
		cs.agentSrc = strings.Replace(cs.srcDSN, "user=postgres", "user="+ownerRole, 1)
		ddlDSN = cs.agentSrc
	}
	conn, err := pgx.Connect(ctx, ddlDSN)
	if err != nil {
		return err
	}
	defer func() { conn.Close(context.Background()) }()
	for _, q := range p.schema.DDL {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("generated DDL failed: %w\n%s", err, q)
		}
	}
	// Initial data (as the superuser: the restrictive policy would refuse a third of it to
	// the owner), drawn from the data stream in table order.
	if p.schema.OwnerRole {
		conn.Close(ctx)
		if conn, err = pgx.Connect(ctx, cs.srcDSN); err != nil {
			return err
		}
	}
	dc := &client{id: -1, g: newRNG(p.dataSeed, 7), cs: cs}
	for _, t := range p.schema.Tables {
		n := p.rows[t]
		dc.noLong = t.bulk
		for lo := 0; lo < n; lo += 50 {
			hi := min(lo+50, n)
			ns := make([]int64, 0, hi-lo)
			for i := lo; i < hi; i++ {
				ns = append(ns, int64(i))
			}
			var sql string
			var args []any
			if len(insertCols(t)) == 0 {
				sql = fmt.Sprintf("INSERT INTO %s SELECT FROM generate_series(1, $1::int4)", t.ID())
				if t.Kind == kGenOnly {
					sql = fmt.Sprintf("INSERT INTO %s SELECT FROM generate_series(1, $1::int4)", t.ID())
				}
				args = []any{int32(len(ns))}
			} else {
				sql, args, _ = dc.insertSQL(t, ns, false)
			}
			tag, err := conn.Exec(ctx, sql, args...)
			if err != nil {
				return fmt.Errorf("initial data of %s: %w", t.Label(), err)
			}
			cs.res.InitialRows += tag.RowsAffected()
		}
	}
	for _, q := range p.schema.dropLater {
		if _, err := conn.Exec(ctx, q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	for _, st := range p.schema.postStmts {
		if _, err := conn.Exec(ctx, st.sql, st.args...); err != nil {
			return fmt.Errorf("%s: %w", st.sql, err)
		}
	}
	if p.idleTO {
		if _, err := conn.Exec(ctx, fmt.Sprintf("ALTER DATABASE %s SET idle_in_transaction_session_timeout = '500ms'", qi(p.dbname))); err != nil {
			return err
		}
	}
	if _, err := conn.Exec(ctx, "ANALYZE"); err != nil {
		return err
	}
	return nil
}

func (cs *caseRun) runArgs() []string {
	args := append([]string{"run", "--jobs", strconv.Itoa(cs.plan.jobs), "--ddl", cs.ddlMode()}, cs.pg.dsnArgs()...)
	// PGSHIFT_TORTURE_AGENT_ARGS adds flags to every pgshift run, e.g. "--log-level debug"
	// when investigating a seed.
	return append(args, strings.Fields(os.Getenv("PGSHIFT_TORTURE_AGENT_ARGS"))...)
}

func (cs *caseRun) copyArgs() []string {
	return append([]string{"copy", "--jobs", strconv.Itoa(cs.plan.jobs), "--chunk-size", "1", "--progress", "none", "--ddl", cs.ddlMode()}, cs.pg.dsnArgs()...)
}

// ddlMode is pgshift's ddl setting, always explicit: with stop the model applies the DDL it
// draws on the target itself, first or after pgshift's stop (a followed DDL would be applied
// twice); with follow (Settings.DDL, resolved per case by caseDDL) pgshift replays it.
func (cs *caseRun) ddlMode() string {
	if cs.followsDDL() {
		return "follow"
	}
	return "stop"
}

// followsDDL: Settings.DDL is follow, except for a case whose pgshift connects to the source as the
// tables' non-superuser owner, which may not create the event trigger (pgshift then warns and
// stops on DDL as with ddl: stop, which the model of stop covers).
func (cs *caseRun) followsDDL() bool {
	return cs.env.settings.DDL == "follow" && !cs.plan.schema.OwnerRole
}

// judgeRefusal: the draw holds something pgshift documents as unsupported, so it must refuse
// (exit 2 with a message naming the table) before creating anything on either side.
func (cs *caseRun) judgeRefusal(ctx context.Context) {
	res := cs.res
	p, err := cs.pg.start("agent", cs.runArgs()...)
	if err != nil {
		res.fail("harness", "%v", err)
		return
	}
	// Refusing comes first, before anything is created; a copy that completes (or two minutes
	// of running) means it was accepted.
	deadline := time.Now().Add(2 * time.Minute)
	for !p.exited() {
		if ph := cs.phase(ctx); ph == "copied" || ph == "following" || time.Now().After(deadline) {
			p.kill()
			res.fail("accepted-unsupported", "pgshift run accepted an unsupported draw and copied it (phase %q), where it must refuse before creating anything (%s)", ph, strings.Join(cs.s.Unsupported, "; "))
			return
		}
		select {
		case <-p.done:
		case <-time.After(500 * time.Millisecond):
		}
	}
	out := p.out.String()
	if p.code == 0 {
		res.fail("accepted-unsupported", "pgshift run exited 0 for an unsupported draw (%s)", strings.Join(cs.s.Unsupported, "; "))
		return
	}
	named := false
	for _, t := range cs.s.Tables {
		if t.Unsupported != "" && namesTable(out, t.Name) {
			named = true
		}
	}
	if !named {
		res.fail("refusal-unclear", "pgshift run exited %d but its message names none of the unsupported tables (%s):\n%s", p.code, strings.Join(cs.s.Unsupported, "; "), lastLines(out, 6))
	}
	cs.logf("refused as it must: exit %d: %s", p.code, lastLines(out, 2))
	// Nothing created: no user table on the target, no slot or publication on the source.
	var tables, slots, pubs int64
	if err := queryOne(ctx, cs.dstDSN, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
		WHERE c.relkind IN ('r', 'p') AND n.nspname <> ALL ('{pg_catalog,information_schema,pgshift}')`, &tables); err != nil {
		res.fail("harness", "%v", err)
	}
	if err := queryOne(ctx, cs.env.src.DSN("postgres"), `SELECT count(*) FROM pg_replication_slots WHERE database = $1::text`, &slots, cs.plan.dbname); err != nil {
		res.fail("harness", "%v", err)
	}
	if err := queryOne(ctx, cs.srcDSN, `SELECT count(*) FROM pg_publication`, &pubs); err != nil {
		res.fail("harness", "%v", err)
	}
	if tables > 0 || slots > 0 || pubs > 0 {
		res.fail("refusal-left-objects", "pgshift refused, but left %d user tables on the target, %d slots and %d publications on the source", tables, slots, pubs)
	}
	if !res.failed() {
		res.Outcome = "refused"
	}
}

func queryOne(ctx context.Context, dsn, sql string, dest any, args ...any) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.Background())
	return conn.QueryRow(ctx, sql, args...).Scan(dest)
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// errorLines are pgshift's own error lines (the "pgshift: ..." it exits with, ERROR records),
// then as many of its latest distinct warnings as fit in n.
func errorLines(s string, n int) string {
	var errs, warns []string
	seen := map[string]bool{}
	for _, l := range strings.Split(s, "\n") {
		switch {
		case strings.HasPrefix(l, "pgshift:") || strings.Contains(l, "level=ERROR") || strings.HasPrefix(l, "Error"):
			if !seen[l] {
				errs = append(errs, l)
				seen[l] = true
			}
		case strings.Contains(l, "level=WARN"):
			// The same warning at each restart differs only in its time.
			key := l
			if i := strings.Index(l, " level="); i >= 0 {
				key = l[i:]
			}
			if !seen[key] {
				warns = append(warns, l)
				seen[key] = true
			}
		}
	}
	if len(errs) == 0 && len(warns) == 0 {
		return lastLines(s, n)
	}
	if len(errs) > n {
		errs = errs[len(errs)-n:]
	}
	if room := n - len(errs); room < len(warns) {
		warns = warns[len(warns)-room:]
	}
	return strings.Join(append(warns, errs...), "\n")
}

// startAgent starts `pgshift run` and makes it the supervised agent.
func (cs *caseRun) startAgent() error {
	p, err := cs.pg.start("agent", cs.runArgs()...)
	if err != nil {
		return err
	}
	cs.agentMu.Lock()
	cs.agent = p
	cs.agentMu.Unlock()
	return nil
}

// killAgent SIGKILLs the agent and starts it again after pause.
func (cs *caseRun) killAgent(pause time.Duration) error {
	cs.agentMu.Lock()
	a := cs.agent
	cs.agentMu.Unlock()
	a.kill()
	time.Sleep(pause)
	return cs.startAgent()
}

// copyPhase gets the migration to "copied": either `pgshift copy` (killed and re-run at the
// early-kill offsets) then `pgshift run`, or `pgshift run` (killed and re-run likewise).
// It returns false when the case cannot go on.
func (cs *caseRun) copyPhase(ctx context.Context) bool {
	res, p := cs.res, cs.plan
	if p.rewriteTable != nil {
		rewritten := make(chan struct{})
		go cs.rewriteAfterSlot(ctx, p.rewriteTable, rewritten)
		defer func() { <-rewritten }()
	}
	if p.copyFirst {
		for attempt := 0; ; attempt++ {
			cp, err := cs.pg.start("copy", cs.copyArgs()...)
			if err != nil {
				res.fail("harness", "%v", err)
				return false
			}
			if attempt < len(p.earlyKills) {
				select {
				case <-cp.done:
				case <-time.After(p.earlyKills[attempt]):
					cp.kill()
					res.EarlyKills++
					res.Kills++
					cs.logf("early kill of pgshift copy after %s", p.earlyKills[attempt])
					continue
				}
			} else {
				<-cp.done
			}
			if cp.killed {
				continue
			}
			if cp.code != 0 {
				res.fail(refusalClass(cp.out.String()), "pgshift copy exited %d:\n%s", cp.code, errorLines(cp.out.String(), 8))
				return false
			}
			break
		}
		if err := cs.startAgent(); err != nil {
			res.fail("harness", "%v", err)
			return false
		}
	} else {
		if err := cs.startAgent(); err != nil {
			res.fail("harness", "%v", err)
			return false
		}
		if p.earlySecond > 0 {
			// A second agent while the first copies: it must refuse, not copy again.
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				time.Sleep(p.earlySecond)
				// Not at the same time as an early kill: a first agent killed while the second
				// retries the lease lets the second take over, as it should.
				cs.chaosMu.Lock()
				cs.secondAgent("during the copy")
				cs.chaosMu.Unlock()
			}()
			defer wg.Wait()
		}
		for _, d := range p.earlyKills {
			cs.agentMu.Lock()
			a := cs.agent
			cs.agentMu.Unlock()
			select {
			case <-a.done:
			case <-time.After(d):
			}
			if a.exited() {
				break
			}
			phase := cs.phase(ctx)
			cs.chaosMu.Lock()
			err := cs.killAgent(time.Duration(100) * time.Millisecond)
			cs.chaosMu.Unlock()
			if err != nil {
				res.fail("harness", "%v", err)
				return false
			}
			res.EarlyKills++
			res.Kills++
			cs.logf("early kill of pgshift run after %s (phase %s)", d, phase)
		}
	}
	if p.earlyRestart > 0 {
		// A server restart while the copy runs: the agent may ride it out or give up with a
		// connection error; given up, it is run again, as a user would, and must resume.
		time.Sleep(p.earlyRestart)
		c, which := cs.env.src, "source"
		if p.earlyTarget {
			c, which = cs.env.dst, "target"
		}
		cs.markRestart(time.Hour)
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := c.Restart(rctx, true)
		cancel()
		cs.markRestart(3 * time.Second)
		if err != nil {
			res.fail("harness", "restart the %s during the copy: %v", which, err)
			_ = ensureUp(context.Background(), c)
		} else {
			res.Restarts++
			cs.sourceCrashed = cs.sourceCrashed || !p.earlyTarget
			cs.logf("crash restart of the %s during the copy", which)
		}
	}
	// Wait for the copy to complete.
	copyRetries := 0
	deadline := time.Now().Add(time.Duration(float64(4*time.Minute) * max(1, cs.env.settings.Scale)))
	for {
		cs.agentMu.Lock()
		a := cs.agent
		inWindow := time.Now().Before(cs.restartWindow)
		cs.agentMu.Unlock()
		if a.exited() && !a.killed && inWindow && a.code != 0 && connectionTrouble(a.out.String()) && cs.startupExits < 5 {
			cs.startupExits++
			cs.logf("the agent gave up during the copy while a server restarted: %s; running it again", lastLines(a.out.String(), 1))
			for time.Now().Before(cs.restartWindowEnd()) {
				time.Sleep(200 * time.Millisecond)
			}
			if err := cs.startAgent(); err != nil {
				res.fail("harness", "%v", err)
				return false
			}
			continue
		}
		if a.exited() && !a.killed && a.code != 0 && copyRetries < 2 {
			// A copy that stopped before any data (phase new or schema) is started afresh by
			// running it again, as its error tells the user; concurrent DDL on the source
			// makes pg_dump fail that way. An error that explains nothing is a failure
			// nonetheless.
			out := a.out.String()
			if ph := cs.phase(ctx); ph == "" || ph == "new" || ph == "schema" {
				copyRetries++
				if strings.Contains(out, "can't scan") || strings.Contains(out, "cannot scan") {
					res.fail("unclear-error", "pgshift run stopped during the copy (phase %q) with an error that names no cause or fix:\n%s", ph, errorLines(out, 4))
				}
				cs.logf("the copy stopped in phase %q: %s; running pgshift run again", ph, lastLines(out, 1))
				if err := cs.startAgent(); err != nil {
					res.fail("harness", "%v", err)
					return false
				}
				continue
			}
		}
		if a.exited() && !a.killed {
			out := a.out.String()
			if ph := cs.phase(ctx); ph == "copied" || ph == "following" {
				res.fail("agent-exit", "pgshift run exited %d on its own right after the copy (phase %s):\n%s", a.code, ph, errorLines(out, 8))
			} else {
				res.fail(refusalClass(out), "pgshift run exited %d during the copy (phase %q):\n%s", a.code, ph, errorLines(out, 8))
			}
			return false
		}
		ph := cs.phase(ctx)
		if ph == "copied" || ph == "following" {
			cs.logf("copy complete (phase %s)", ph)
			return true
		}
		if time.Now().After(deadline) {
			res.fail("copy-timeout", "the copy did not complete in time (phase %q)", ph)
			return false
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(300 * time.Millisecond):
		}
	}
}

// rewriteAfterSlot waits for the migration's slot to appear on the source, then rewrites t in
// place (same column type, so no schema change reaches the stream): a copy that reads t after
// this in the slot's older snapshot sees it empty unless pgshift guards against it.
func (cs *caseRun) rewriteAfterSlot(ctx context.Context, t *Table, done chan<- struct{}) {
	defer close(done)
	conn, err := pgx.Connect(ctx, cs.srcDSN)
	if err != nil {
		return
	}
	defer conn.Close(context.Background())
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		var n int64
		// The slot is listed while it is still being created (waiting for the transactions
		// running at its start); its snapshot exists once confirmed_flush_lsn is set. DDL in
		// that window is not what this class tests: PostgreSQL's decoding may then fail for
		// good ("could not map filenode"), whatever the client does.
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND confirmed_flush_lsn IS NOT NULL").Scan(&n); err != nil {
			return
		}
		if n > 0 {
			sql := fmt.Sprintf("ALTER TABLE %s ALTER COLUMN %s TYPE int8 USING %s + 0", t.ID(), qi(t.N.Name), qi(t.N.Name))
			if _, err := conn.Exec(ctx, sql); err != nil {
				cs.logf("rewrite during the copy failed: %v", err)
				return
			}
			cs.logf("rewrote %s right after the slot appeared (%s)", t.Label(), sql)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// lastStopLine is pgshift's final message ("pgshift: ..."), or all of out when it has none.
func lastStopLine(out string) string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(lines[i], "pgshift: ") {
			return lines[i]
		}
	}
	return out
}

// namesTable reports whether pgshift's output names a table, as written or quoted (a " inside a
// name is doubled in a quoted identifier).
func namesTable(out, name string) bool {
	return strings.Contains(out, name) || strings.Contains(out, strings.ReplaceAll(name, `"`, `""`))
}

// refusalClass tells a refusal (pgshift would not start) from a crash in the middle.
func refusalClass(out string) string {
	if strings.Contains(out, "refus") || strings.Contains(out, "cannot") || strings.Contains(out, "not supported") || strings.Contains(out, "unsupported") {
		return "refused"
	}
	return "agent-exit"
}

// phase reads the migration's phase through `pgshift status --json`.
func (cs *caseRun) phase(ctx context.Context) string {
	code, out, err := cs.pg.run(ctx, 30*time.Second, false, "status", "--target", cs.dstDSN, "--json")
	if err != nil || code != 0 {
		return ""
	}
	var st struct {
		Phase string `json:"phase"`
	}
	i := strings.Index(out, "{")
	if i < 0 {
		return ""
	}
	if err := json.NewDecoder(strings.NewReader(out[i:])).Decode(&st); err != nil {
		return ""
	}
	return st.Phase
}

// follow is the main flow of a supported draw.
func (cs *caseRun) follow(ctx context.Context) {
	res, p := cs.res, cs.plan
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	workCtx, stopWork := context.WithCancel(ctx)
	defer stopWork()
	var work errgroup.Group
	startWork := func() {
		for i := 0; i < p.work.clients; i++ {
			c := &client{id: i, g: newRNG(p.clientSeeds[i], uint64(i)), cs: cs, params: p.work}
			work.Go(func() error { return c.loop(workCtx) })
		}
		if p.work.hugeOnce {
			work.Go(func() error { return cs.hugeTxn(workCtx) })
		}
	}
	workStarted := false
	if p.concurrent {
		startWork()
		workStarted = true
	}
	if !cs.copyPhase(ctx) {
		stopWork()
		_ = work.Wait()
		return
	}
	copyTarget, err := readState(ctx, cs.dstDSN)
	if err != nil {
		res.fail("harness", "read target after copy: %v", err)
		return
	}
	if !workStarted {
		// Nothing has changed on the source since the snapshot: the copy alone must be exact.
		cs.compare(ctx, "after-copy", copyTarget)
	}
	// The agent is supervised from here on.
	supCtx, stopSup := context.WithCancel(ctx)
	supDone := make(chan struct{})
	go func() { defer close(supDone); cs.supervise(supCtx) }()
	if !workStarted {
		startWork()
	}
	chaosDone := make(chan struct{})
	go func() { defer close(chaosDone); cs.chaos(ctx, workCtx) }()
	select {
	case <-ctx.Done():
	case <-time.After(p.work.duration):
	}
	stopWork()
	if err := work.Wait(); err != nil {
		res.fail("harness", "workload: %v", err)
	}
	<-chaosDone
	cs.logf("workload stopped: %d transactions", cs.st.txns.Load())
	// Resolve what is still pending (a DDL the agent stopped on, an agent that died); the
	// supervisor keeps watching through the final wait.
	cs.settle(ctx)
	if !cs.waitCaughtUp(ctx, "final", 60*time.Second) {
		stopSup()
		<-supDone
		cs.res.fail("wait", "state when the wait gave up:\n%s", cs.diagnose(ctx))
		cs.compare(ctx, "final (after a failed wait)", copyTarget)
		cs.dumpAgent()
		return
	}
	// A DDL that no change of its table followed never reached pgshift (DDL is not replicated;
	// pgshift learns of it from the next relation message): the user makes it on the target,
	// as pgshift's documentation asks before cutover.
	cs.agentMu.Lock()
	var unseen []*ddlEvent
	for _, d := range cs.pendingDDL {
		if !d.resolved {
			unseen = append(unseen, d)
		}
	}
	cs.agentMu.Unlock()
	for _, d := range unseen {
		cs.logf("no change followed this DDL, so pgshift never saw it; made on the target as the user must: %s", d.sql)
		if err := cs.applyTarget(ctx, d); err != nil {
			res.fail("harness", "%v", err)
		}
	}
	stopSup()
	<-supDone
	same := cs.compare(ctx, "final", copyTarget)
	if cs.env.settings.Classes.On("verify") {
		cs.verify(ctx, same)
	}
	cs.stopAgent()
	// Normal cases peak near 110 MiB (the 64 MiB queue and its decoding); a transaction held
	// whole in memory shows as its size several times over.
	if res.PeakRSSKiB = cs.pg.peakKiB(); res.PeakRSSKiB > 256<<10 {
		res.fail("memory", "pgshift's peak RSS was %d MiB (big transactions of up to %d MiB)", res.PeakRSSKiB>>10, p.work.hugeBytes>>20)
	}
}

// supervise watches the agent: an exit the harness did not cause is either a loud stop on a
// DDL the harness made on the source only (then the harness makes it on the target, as a
// user would, and runs the agent again) or a failure.
func (cs *caseRun) supervise(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
		cs.agentMu.Lock()
		a := cs.agent
		cs.agentMu.Unlock()
		if a == nil || !a.exited() || a.killed {
			continue
		}
		cs.onAgentExit(ctx, a)
	}
}

func (cs *caseRun) onAgentExit(ctx context.Context, a *proc) {
	res := cs.res
	out := a.out.String()
	cs.agentMu.Lock()
	if a.handled {
		cs.agentMu.Unlock()
		return
	}
	a.handled = true
	var pending []*ddlEvent
	for _, d := range cs.pendingDDL {
		if !d.resolved {
			pending = append(pending, d)
		}
	}
	inWindow := time.Now().Before(cs.restartWindow)
	cs.agentMu.Unlock()
	// An agent that could not reach a server restarting under it (it gives up at once before
	// it follows) is no DDL stop, even with a DDL pending.
	startupTrouble := inWindow && a.code != 0 && connectionTrouble(out) && cs.startupExits < 5
	if len(pending) > 0 && a.code != 0 && !startupTrouble {
		res.DDLStops++
		// The user makes on the target what the stop names, no more: a DDL of another table
		// that pgshift has not reached yet, made there too, would stop the next transactions.
		last := lastStopLine(out)
		// Of several DDLs on one table, only the first: pgshift stops at the first change it
		// cannot take, and the later ones are further on in the stream (made on the target
		// now, they would break the transactions between).
		var named []*ddlEvent
		seen := map[*Table]bool{}
		for _, d := range pending {
			if namesTable(last, d.table.Name) && !seen[d.table] {
				seen[d.table] = true
				named = append(named, d)
			}
		}
		if len(named) == 0 {
			res.fail("ddl-stop-unclear", "pgshift stopped after a source DDL but its message names none of the tables:\n%s", errorLines(out, 6))
			named = pending
		}
		cs.logf("agent stopped loudly after DDL (exit %d): %s", a.code, errorLines(out, 3))
		for _, d := range named {
			if err := cs.applyTarget(ctx, d); err != nil {
				res.fail("harness", "apply DDL on the target: %v", err)
			}
		}
		if err := cs.startAgent(); err != nil {
			res.fail("harness", "%v", err)
		}
		return
	}
	if a.code != 0 && strings.Contains(lastStopLine(out), "could not map filenode") && res.SlotStartOvers < 2 {
		cs.startOver(ctx, out)
		return
	}
	if startupTrouble {
		cs.startupExits++
		cs.logf("the agent gave up while a server restarted (exit %d): %s; starting it again once the servers are up", a.code, lastLines(out, 1))
		for time.Now().Before(cs.restartWindowEnd()) && ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
		}
		if err := cs.startAgent(); err != nil {
			res.fail("harness", "%v", err)
		}
		return
	}
	cs.agentBroken++
	class := "agent-exit"
	cs.agentMu.Lock()
	for _, d := range cs.pendingDDL {
		if namesTable(out, d.table.Name) {
			// Stopped on a table whose DDL is now on both sides, and cannot go on: the stop
			// is loud, but no user action can resume it.
			class = "ddl-stuck"
		}
	}
	cs.agentMu.Unlock()
	res.fail(class, "pgshift run exited %d on its own during follow:\n%s", a.code, errorLines(out, 10))
	if cs.agentBroken < 2 {
		// Run it again: what it does next (and the oracle) tells more about the failure.
		if err := cs.startAgent(); err != nil {
			res.fail("harness", "%v", err)
		}
	} else {
		cs.agentMu.Lock()
		cs.agent.killed = true // given up: the supervisor leaves it alone
		cs.gaveUp = true
		cs.agentMu.Unlock()
		cs.logf("the agent stopped twice on its own: no more restarts, no more waits")
	}
}

// startOver takes the remedy pgshift names when the source cannot decode its slot (a
// PostgreSQL defect after a TRUNCATE or rewrite during the slot's creation): pgshift copy
// --force, then pgshift run, with no chaos event meanwhile (the forced copy is the user's
// step, not the agent's; its own kills are the copy classes' business). The oracle then
// judges the new migration like any other.
func (cs *caseRun) startOver(ctx context.Context, out string) {
	res := cs.res
	res.SlotStartOvers++
	cs.logf("the source cannot decode the slot (PostgreSQL's snapshot-builder defect): %s; starting over with pgshift copy --force", errorLines(out, 1))
	cs.chaosMu.Lock()
	defer cs.chaosMu.Unlock()
	for attempt := 0; ; attempt++ {
		for time.Now().Before(cs.restartWindowEnd()) && ctx.Err() == nil {
			time.Sleep(200 * time.Millisecond)
		}
		code, cout, err := cs.pg.run(ctx, 10*time.Minute, true, append(cs.copyArgs(), "--force")...)
		if err == nil && code == 0 {
			break
		}
		if attempt < 2 && connectionTrouble(cout) {
			continue
		}
		res.fail("start-over", "pgshift copy --force, the remedy pgshift named, failed (exit %d, %v):\n%s", code, err, errorLines(cout, 8))
		cs.agentMu.Lock()
		cs.agent.killed = true
		cs.gaveUp = true
		cs.agentMu.Unlock()
		return
	}
	// The forced copy took the source's schema as it is now: every DDL is on both sides.
	cs.agentMu.Lock()
	for _, d := range cs.pendingDDL {
		d.resolved = true
	}
	cs.agentMu.Unlock()
	if err := cs.startAgent(); err != nil {
		res.fail("harness", "%v", err)
	}
}

func (cs *caseRun) restartWindowEnd() time.Time {
	cs.agentMu.Lock()
	defer cs.agentMu.Unlock()
	return cs.restartWindow
}

// connectionTrouble: the output ends with a connection-level error (server down or going down).
func connectionTrouble(out string) bool {
	last := lastLines(out, 2)
	for _, s := range []string{"connection refused", "terminating connection due to administrator command", "the database system is shutting down",
		"the database system is starting up", "server closed the connection", "unexpected EOF", "connection reset"} {
		if strings.Contains(last, s) {
			return true
		}
	}
	return false
}

// agentGone reports whether the harness gave up on the agent (it kept exiting on its own).
func (cs *caseRun) agentGone() bool {
	cs.agentMu.Lock()
	defer cs.agentMu.Unlock()
	return cs.gaveUp
}

// settle runs after the workload: a DDL still unresolved is completed on the target.
func (cs *caseRun) settle(ctx context.Context) {
	cs.agentMu.Lock()
	a := cs.agent
	cs.agentMu.Unlock()
	if a.exited() && !a.killed {
		cs.onAgentExit(ctx, a)
	}
}

// waitCaughtUp runs `pgshift wait` and records a failure when it does not return 0.
func (cs *caseRun) waitCaughtUp(ctx context.Context, what string, d time.Duration) bool {
	if cs.agentGone() {
		return false
	}
	d = time.Duration(float64(d) * max(1, cs.env.settings.Scale))
	code, out, err := cs.pg.runOnce(ctx, d+30*time.Second, append([]string{"wait", "--timeout", d.String()}, cs.pg.dsnArgs()...)...)
	if err != nil || code != 0 {
		cs.agentMu.Lock()
		agentOut := cs.agent.out.String()
		cs.agentMu.Unlock()
		cs.res.fail("wait", "%s: pgshift wait exit %d (%v): %s\nagent's last messages:\n%s", what, code, err, lastLines(out, 3), errorLines(agentOut, 8))
		return false
	}
	return true
}

// diagnose describes replication on the source and the sessions on the target, for a wait
// that gave up: is the agent streaming, and is its apply stuck on a lock?
func (cs *caseRun) diagnose(ctx context.Context) string {
	var b strings.Builder
	q := func(dsn, title, sql string, args ...any) {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			fmt.Fprintf(&b, "  %s: %v\n", title, err)
			return
		}
		defer conn.Close(context.Background())
		rows, err := conn.Query(ctx, sql, args...)
		if err != nil {
			fmt.Fprintf(&b, "  %s: %v\n", title, err)
			return
		}
		defer rows.Close()
		fmt.Fprintf(&b, "  %s:\n", title)
		for rows.Next() {
			vals, _ := rows.Values()
			fmt.Fprintf(&b, "    %v\n", vals)
		}
	}
	q(cs.srcDSN, "source slots (name, active, pid, restart_lsn, confirmed_flush_lsn, wal_status)", `SELECT slot_name, active, active_pid, restart_lsn::text, confirmed_flush_lsn::text, wal_status FROM pg_replication_slots`)
	q(cs.srcDSN, "source walsenders (pid, state, sent, flush, reply age)", `SELECT pid, state, sent_lsn::text, flush_lsn::text, (now() - reply_time)::text FROM pg_stat_replication`)
	q(cs.srcDSN, "source pg_current_wal_lsn", `SELECT pg_current_wal_lsn()::text`)
	q(cs.dstDSN, "target sessions (pid, app, state, wait, xact age, query)", `SELECT pid, application_name, state, coalesce(wait_event_type || ':' || wait_event, ''), (now() - xact_start)::text, left(query, 160)
		FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`)
	return b.String()
}

// dumpAgent makes a stuck agent print its goroutines (SIGQUIT) into the case log.
func (cs *caseRun) dumpAgent() {
	cs.agentMu.Lock()
	a := cs.agent
	cs.agentMu.Unlock()
	if a == nil || a.exited() {
		return
	}
	a.killed = true
	_ = a.cmd.Process.Signal(syscall.SIGQUIT)
	select {
	case <-a.done:
	case <-time.After(10 * time.Second):
		a.kill()
	}
	cs.logf("the agent's goroutines were dumped into this log (SIGQUIT) after the wait gave up")
}

func (cs *caseRun) stopAgent() {
	cs.agentMu.Lock()
	a := cs.agent
	cs.agentMu.Unlock()
	if a == nil || a.exited() {
		return
	}
	if !a.stop(30 * time.Second) {
		cs.res.fail("stop", "pgshift run did not stop within 30 s of SIGTERM")
		return
	}
	if a.code != 0 {
		cs.res.fail("stop", "pgshift run exited %d after SIGTERM (want 0):\n%s", a.code, errorLines(a.out.String(), 6))
	}
}

// compare is the oracle: every table's digest, the sequences, and the schema dumps. It
// returns whether the data is identical.
func (cs *caseRun) compare(ctx context.Context, when string, copyTarget *dbState) bool {
	res := cs.res
	var src, dst *dbState
	var err1, err2 error
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); src, err1 = readState(ctx, cs.srcDSN) }()
	go func() { defer wg.Done(); dst, err2 = readState(ctx, cs.dstDSN) }()
	wg.Wait()
	if err := errors.Join(err1, err2); err != nil {
		res.fail("harness", "%s: oracle read: %v", when, err)
		return false
	}
	same := true
	var labels []string
	for l := range src.tables {
		labels = append(labels, l)
	}
	for l := range dst.tables {
		if _, ok := src.tables[l]; !ok {
			labels = append(labels, l)
		}
	}
	sort.Strings(labels)
	class := "data"
	if when == "after-copy" {
		class = "copy-data"
	}
	shown := 0
	var more []string
	for _, l := range labels {
		s, okS := src.tables[l]
		d, okD := dst.tables[l]
		if s != d && shown >= 4 {
			same = false
			more = append(more, l)
			continue
		}
		if s != d {
			shown++
		}
		switch {
		case !okD:
			same = false
			res.fail(class, "%s: table %s is missing on the target (source: %s)", when, l, s)
		case !okS:
			same = false
			res.fail(class, "%s: table %s exists only on the target (%s)", when, l, d)
		case s != d:
			same = false
			res.fail(class, "%s: table %s differs: source %s, target %s\n%s", when, l, s, d, tableDiff(ctx, cs.srcDSN, cs.dstDSN, src.ids[l], dst.ids[l]))
		}
	}
	if len(more) > 0 {
		res.fail(class, "%s: %d more tables differ: %s", when, len(more), strings.Join(more, ", "))
	}
	// Sequences: exact right after the copy when nothing ran meanwhile; afterwards the target's
	// must not have moved (applying changes never calls nextval there).
	for _, l := range sortedKeys(src.seqs) {
		if when == "after-copy" {
			if cs.sourceCrashed {
				cs.logf("sequence %s after the copy: source %s, target %s (not compared: the source crash-restarted, which moves sequences ahead)", l, src.seqs[l], dst.seqs[l])
			} else if src.seqs[l] != dst.seqs[l] {
				res.fail("sequence", "%s: sequence %s: source %s, target %s", when, l, src.seqs[l], dst.seqs[l])
			}
		} else if cs.res.SlotStartOvers > 0 {
			// The forced copy that started over set the target's sequences anew.
			continue
		} else if copyTarget != nil && copyTarget.seqs[l] != dst.seqs[l] && dst.seqs[l] != src.starts[l] {
			// Applying changes never calls nextval on the target; only a replicated TRUNCATE
			// ... RESTART IDENTITY may move a sequence there, back to its start.
			res.fail("sequence", "%s: sequence %s moved on the target during follow: %s after the copy, %s now (source %s)", when, l, copyTarget.seqs[l], dst.seqs[l], src.seqs[l])
		}
	}
	sd, err1 := schemaDump(ctx, cs.env.src.BinDir(), cs.srcDSN)
	dd, err2 := schemaDump(ctx, cs.env.dst.BinDir(), cs.dstDSN)
	var err3 error
	if err2 == nil {
		dd, err3 = withDeferred(ctx, cs.dstDSN, dd)
	}
	if err := errors.Join(err1, err2, err3); err != nil {
		res.fail("harness", "%s: %v", when, err)
	} else if sd != dd {
		res.fail("schema", "%s: pg_dump --schema-only differs (- source, + target):\n%s", when, lineDiff(sd, dd, 30))
	}
	cs.logf("oracle %s: %d tables, %d sequences, identical data: %v", when, len(labels), len(src.seqs), same)
	return same
}

// verify runs `pgshift verify` and judges its verdict against the oracle's.
func (cs *caseRun) verify(ctx context.Context, same bool) {
	args := append(append([]string{"verify", "--progress", "none"}, cs.plan.verifyArgs...), cs.pg.dsnArgs()...)
	code, out, err := cs.pg.runOnce(ctx, 5*time.Minute, args...)
	switch {
	case err != nil:
		cs.res.fail("verify-error", "pgshift verify: %v", err)
	case code == 2:
		cs.res.fail("verify-error", "pgshift verify could not run (exit 2):\n%s", matching(out, []string{"NOT COMPARED", "rror", "pgshift:", "Result:"}, 10))
	case code == 1 && same:
		cs.res.fail("verify-false-alarm", "pgshift verify reported differences (exit 1) where the oracle found the data identical:\n%s", verifyDigest(out))
	case code == 0 && !same:
		cs.res.fail("verify-missed", "pgshift verify said identical (exit 0) where the oracle found differences")
	}
}

// matching returns the lines of out containing any of subs (at most n), or its last lines.
func matching(out string, subs []string, n int) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		for _, s := range subs {
			if strings.Contains(l, s) {
				keep = append(keep, l)
				break
			}
		}
	}
	if len(keep) == 0 {
		return lastLines(out, n)
	}
	if len(keep) > n {
		keep = keep[:n]
	}
	return strings.Join(keep, "\n")
}

func verifyDigest(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "time=") && !strings.Contains(t, "level=WARN") && !strings.Contains(t, "level=ERROR") {
			continue
		}
		keep = append(keep, l)
	}
	if len(keep) > 30 {
		keep = keep[:30]
	}
	return strings.Join(keep, "\n")
}

// hugeTxn writes one transaction far larger than logical_decoding_work_mem allows it to stream
// when the case set that to 1GB: many rows of 2 kB, generated on the server. The agent must not
// hold it all in memory.
func (cs *caseRun) hugeTxn(ctx context.Context) error {
	t := cs.s.huge
	if t == nil {
		return nil
	}
	conn, err := pgx.Connect(ctx, cs.srcDSN)
	if err != nil {
		return nil
	}
	defer conn.Close(context.Background())
	cs.schemaMu.RLock()
	defer cs.schemaMu.RUnlock()
	const rowBytes = 2048
	rows := int64(cs.plan.work.hugeBytes / rowBytes)
	_, err = conn.Exec(ctx, fmt.Sprintf(`INSERT INTO %s (n, payload) SELECT g, repeat(md5(g::text), $2::int4 / 32) FROM generate_series(1, $1::int8) g`, t.ID()),
		rows, int32(rowBytes))
	if err != nil {
		cs.logf("huge transaction failed on the source: %v", err)
		return nil
	}
	cs.st.bigTxns.Add(1)
	cs.st.bigBytes.Add(rows * rowBytes)
	cs.st.rows.Add(rows)
	cs.logf("huge transaction committed: %d rows, %d MiB into %s", rows, rows*rowBytes>>20, t.Label())
	return nil
}

// cleanup stops every process of the case and drops its databases and slots.
func (cs *caseRun) cleanup() {
	cs.agentMu.Lock()
	a := cs.agent
	cs.agentMu.Unlock()
	if a != nil {
		a.kill()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e := cs.env
	for _, c := range []*pgtest.Cluster{e.src, e.dst} {
		if err := ensureUp(ctx, c); err != nil {
			cs.logf("cleanup: %v", err)
		}
	}
	q := fmt.Sprintf(`SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE database = %s AND active_pid IS NOT NULL`, ql(cs.plan.dbname))
	_, _ = e.src.Psql(ctx, "postgres", q)
	time.Sleep(200 * time.Millisecond)
	q = fmt.Sprintf(`SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = %s`, ql(cs.plan.dbname))
	if out, err := e.src.Psql(ctx, "postgres", q); err != nil {
		cs.logf("cleanup: drop slots: %v %s", err, out)
	}
	for _, c := range []*pgtest.Cluster{e.src, e.dst} {
		if out, err := c.Psql(ctx, "postgres", fmt.Sprintf("DROP DATABASE IF EXISTS %s WITH (FORCE)", qi(cs.plan.dbname))); err != nil {
			cs.logf("cleanup: drop database: %v %s", err, out)
		}
	}
	_, _ = e.src.Psql(ctx, "postgres", "ALTER SYSTEM RESET logical_decoding_work_mem")
	_, _ = e.src.Psql(ctx, "postgres", "ALTER SYSTEM RESET wal_sender_timeout")
	_, _ = e.src.Psql(ctx, "postgres", "ALTER SYSTEM RESET wal_writer_delay")
	_, _ = e.src.Psql(ctx, "postgres", "SELECT pg_reload_conf()")
}

// ensureUp starts a server that a failed restart left down.
func ensureUp(ctx context.Context, c *pgtest.Cluster) error {
	if _, err := c.Psql(ctx, "postgres", "SELECT 1"); err == nil {
		return nil
	}
	if err := c.StartServer(ctx); err != nil {
		return fmt.Errorf("server on port %d is down and does not start: %w", c.Port, err)
	}
	return nil
}
