package torture

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// chaosEvent is one disturbance at a fixed offset into the workload. What and when are drawn
// from the seed; where exactly it lands in pgshift's work is timing.
type chaosEvent struct {
	at     time.Duration
	kind   string // kill, restart-source, restart-target, ddl, second-agent, barrier
	crash  bool   // restarts: immediate (crash) rather than fast
	pause  time.Duration
	ddl    string // ddl: add-null, add-default, add-notnull, rename, new-partition
	first  bool   // ddl: on the target first (else on the source only; the harness follows up)
	choice uint64 // which table / column
}

func drawChaos(g *rng, cl Classes, p *casePlan) []chaosEvent {
	d := p.work.duration
	at := func() time.Duration { return time.Duration(g.float() * float64(d) * 0.9) }
	var ev []chaosEvent
	if cl.On("agent-kill") {
		lo := 0
		if cl.P("agent-kill", 0) == 1 {
			lo = 2
		}
		for i, n := 0, g.between(lo, 3); i < n; i++ {
			ev = append(ev, chaosEvent{at: at(), kind: "kill", pause: time.Duration(g.between(0, 1500)) * time.Millisecond})
		}
	}
	if cl.On("server-restart") {
		n := g.weighted([]int{4, 4, 2})
		if cl.P("server-restart", 0) == 1 {
			n = 2
		}
		for i := 0; i < n; i++ {
			ev = append(ev, chaosEvent{at: at(), kind: pick(g, []string{"restart-source", "restart-target"}), crash: g.chance(0.5)})
		}
	}
	if g.chance(cl.P("ddl", 0.35)) {
		for i, n := 0, g.between(1, 2); i < n; i++ {
			ev = append(ev, chaosEvent{at: at(), kind: "ddl", ddl: pick(g, []string{"add-null", "add-default", "add-notnull", "rename", "rename", "new-partition"}),
				first: g.chance(0.4), choice: g.uint64()})
		}
	}
	if g.chance(cl.P("two-agents", 0.15)) {
		ev = append(ev, chaosEvent{at: at(), kind: "second-agent"})
	}
	if cl.On("async-commit") && p.schema.Marks != nil {
		for i, n := 0, g.between(1, 2); i < n; i++ {
			ev = append(ev, chaosEvent{at: at(), kind: "barrier"})
		}
	}
	sort.SliceStable(ev, func(i, j int) bool { return ev[i].at < ev[j].at })
	return ev
}

// chaos plays the case's events until they are done or until (the workload's) until ends;
// an event under way finishes under ctx.
func (cs *caseRun) chaos(ctx, until context.Context) {
	start := time.Now()
	for _, e := range cs.plan.events {
		select {
		case <-until.Done():
			return
		case <-time.After(time.Until(start.Add(e.at))):
		}
		if cs.agentGone() && e.kind != "restart-source" && e.kind != "restart-target" {
			continue
		}
		cs.chaosMu.Lock()
		cs.event(ctx, e)
		cs.chaosMu.Unlock()
	}
}

func (cs *caseRun) event(ctx context.Context, e chaosEvent) {
	res := cs.res
	switch e.kind {
	case "kill":
		cs.agentMu.Lock()
		a := cs.agent
		cs.agentMu.Unlock()
		if a.exited() {
			return // the supervisor handles (or gave up on) a dead agent
		}
		if err := cs.killAgent(e.pause); err != nil {
			res.fail("harness", "%v", err)
			return
		}
		res.Kills++
		cs.logf("killed the agent (restart after %s)", e.pause)
	case "restart-source", "restart-target":
		c := cs.env.src
		if e.kind == "restart-target" {
			c = cs.env.dst
		}
		cs.markRestart(time.Hour) // until it is over
		rctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		err := c.Restart(rctx, e.crash)
		cancel()
		cs.markRestart(3 * time.Second)
		if err != nil {
			res.fail("harness", "%s (crash=%v): %v", e.kind, e.crash, err)
			_ = ensureUp(context.Background(), c)
			return
		}
		res.Restarts++
		cs.logf("%s (crash=%v)", e.kind, e.crash)
	case "ddl":
		cs.ddl(ctx, e)
	case "second-agent":
		cs.secondAgent("during follow")
	case "barrier":
		cs.barrier(ctx)
	}
}

// markRestart notes that a server is (or was just) restarting, until d from now.
func (cs *caseRun) markRestart(d time.Duration) {
	cs.agentMu.Lock()
	cs.restartWindow = time.Now().Add(d)
	cs.agentMu.Unlock()
}

// secondAgent starts another `pgshift run` on the same migration: it must refuse.
func (cs *caseRun) secondAgent(when string) {
	// Only against an agent that holds the lease: started together (the first just restarted
	// after a kill), either may win it, and the other rightly refuses.
	cs.agentMu.Lock()
	first := cs.agent
	cs.agentMu.Unlock()
	if first != nil && first.cmd != nil && first.cmd.Process != nil {
		deadline := time.Now().Add(15 * time.Second)
		for !cs.holdsLease(first.cmd.Process.Pid) && !first.exited() && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if !cs.holdsLease(first.cmd.Process.Pid) {
			cs.logf("no second agent %s: the first does not hold the lease (yet)", when)
			return
		}
	}
	p, err := cs.pg.start("second agent", cs.runArgs()...)
	if err != nil {
		cs.res.fail("harness", "%v", err)
		return
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.kill()
		cs.res.fail("two-agents", "a second pgshift run on the same migration, started %s, was still running 15 s later (one agent per migration: the second must refuse)", when)
		return
	}
	if p.code == 0 {
		cs.res.fail("two-agents", "a second pgshift run, started %s, exited 0 instead of refusing", when)
		return
	}
	cs.logf("second agent refused: exit %d: %s", p.code, lastLines(p.out.String(), 1))
}

// holdsLease reports whether the agent process pid holds the migration's lease: its holder
// row names it and the lease lock is held.
func (cs *caseRun) holdsLease(pid int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var held bool
	err := queryOne(ctx, cs.dstDSN, `SELECT EXISTS (SELECT 1 FROM pgshift.agent WHERE pid = $1::int4)
		AND EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid = 1885827944::oid AND objid = 1::oid AND objsubid = 2 AND granted)`, &held, int32(pid))
	return err == nil && held
}

// barrier writes one row with synchronous_commit = off, runs `pgshift wait` at once, and
// checks that the target has the row: the barrier must cover commits not yet flushed.
func (cs *caseRun) barrier(ctx context.Context) {
	m := cs.s.Marks
	// The workload pauses (between its transactions): another client's synchronous commit
	// would flush the asynchronous one's WAL at once and close the window under test.
	cs.schemaMu.Lock()
	defer cs.schemaMu.Unlock()
	for i := 0; i < 3 && ctx.Err() == nil; i++ {
		cs.nextMark++
		id := cs.nextMark
		conn, err := pgx.Connect(ctx, cs.srcDSN)
		if err != nil {
			return
		}
		tx, err := conn.Begin(ctx)
		if err == nil {
			_, err = tx.Exec(ctx, "SET LOCAL synchronous_commit = off")
		}
		if err == nil {
			_, err = tx.Exec(ctx, fmt.Sprintf("INSERT INTO %s (id, note) VALUES ($1::int8, $2::text)", m.ID()), id, "async commit")
		}
		if err == nil {
			err = tx.Commit(ctx)
		}
		conn.Close(context.Background())
		if err != nil {
			return
		}
		if !cs.waitCaughtUp(ctx, fmt.Sprintf("barrier %d", id), 45*time.Second) {
			return
		}
		var n int64
		if err := queryOne(ctx, cs.dstDSN, fmt.Sprintf("SELECT count(*) FROM %s WHERE id = $1::int8", m.ID()), &n, id); err != nil {
			cs.res.fail("harness", "barrier check: %v", err)
			return
		}
		cs.res.Barriers++
		if n != 1 {
			cs.res.fail("barrier", "a row committed with synchronous_commit = off (%s id %d) was not on the target when pgshift wait returned 0", m.Label(), id)
			return
		}
	}
}

// ddlEvent is a schema change made on the source during follow.
type ddlEvent struct {
	kind     string // add-null, add-default, add-notnull, rename, new-partition, new-table (ddl: follow)
	table    *Table
	sql      string
	resolved bool // made on the target too
	apply    func()
}

// ddl makes one schema change, with the workload paused between transactions.
func (cs *caseRun) ddl(ctx context.Context, e chaosEvent) {
	g := newRNG(e.choice, 3)
	var cands []*Table
	for _, t := range cs.s.Tables {
		switch {
		case e.ddl == "new-partition" && t.Kind == kPartRoot && t.Children != nil && len(t.partValues) > 0 && t.partMethod != "hash":
			cands = append(cands, t)
		case e.ddl == "rename" && t.Kind == kPlain && len(renamable(t)) > 0:
			cands = append(cands, t)
		case strings.HasPrefix(e.ddl, "add") && t.Kind == kPlain && t.N != nil:
			cands = append(cands, t)
		}
	}
	follow := cs.followsDDL()
	// Under ddl: follow a new table is followed: half the draws of a new partition (all when
	// there is no partition tree to add one to) create a plain table instead, which the
	// workload then fills and the oracle compares like any other (it reads the catalogs).
	newTable := follow && e.ddl == "new-partition" && (len(cands) == 0 || g.chance(0.5))
	if len(cands) == 0 && !newTable || newTable && len(cs.s.Tables) == 0 {
		return
	}
	kind := e.ddl
	var t *Table
	if newTable {
		kind = "new-table"
		t = &Table{Schema: cs.s.Tables[0].Schema, Name: fmt.Sprintf("created %d", cs.res.DDL), Kind: kPlain, Leaf: true, KeyKind: "pk-single"}
		t.N = &Column{Name: "n", SQLType: "int8", NotNull: true, fromN: func(n int64) string { return strconv.FormatInt(n, 10) }}
		t.Cols = []*Column{t.N, {Name: "payload", Type: &colType{sql: "text", gen: genText}, SQLType: "text"}}
	} else {
		t = pick(g, cands)
	}
	d := &ddlEvent{table: t, kind: kind}
	switch kind {
	case "new-table":
		d.sql = fmt.Sprintf("CREATE TABLE %s (n int8 PRIMARY KEY, payload text)", t.ID())
		d.apply = func() { cs.s.Tables = append(cs.s.Tables, t) }
	case "add-null", "add-default", "add-notnull":
		name := uniqueCol(t, pick(g, []string{"added", "Added Col", "new"}))
		var c *Column
		switch e.ddl {
		case "add-null":
			ty := &colType{sql: "text", gen: genText}
			c = &Column{Name: name, Type: ty, SQLType: "text", Renamable: true}
			d.sql = fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s text", t.ID(), qi(name))
		case "add-default":
			ty := &colType{sql: "int4", gen: func(g *rng) string { return genInt(g, 32) }}
			c = &Column{Name: name, Type: ty, SQLType: "int4", Renamable: true}
			d.sql = fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s int4 DEFAULT 7", t.ID(), qi(name))
		default:
			ty := &colType{sql: "text", gen: genText}
			c = &Column{Name: name, Type: ty, SQLType: "text", NotNull: true, Renamable: true}
			d.sql = fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s text NOT NULL DEFAULT 'filled'", t.ID(), qi(name))
		}
		d.apply = func() { t.Cols = append(t.Cols, c) }
	case "rename":
		c := pick(g, renamable(t))
		name := uniqueCol(t, c.Name+" renamed")
		d.sql = fmt.Sprintf("ALTER TABLE %s RENAME COLUMN %s TO %s", t.ID(), qi(c.Name), qi(name))
		d.apply = func() { c.Name = name }
	case "new-partition":
		base := 1000 + 10*len(t.Children)
		leaf := &Table{Schema: t.Schema, Kind: kPartition, Parent: t, Leaf: true, Cols: t.Cols, N: t.N, Name: t.Name + fmt.Sprintf("_new%d", base)}
		vals := seq(base, base+10)
		if t.partMethod == "range" {
			d.sql = fmt.Sprintf("CREATE TABLE %s PARTITION OF %s FOR VALUES FROM (%d) TO (%d)", leaf.ID(), t.ID(), base, base+10)
		} else {
			d.sql = fmt.Sprintf("CREATE TABLE %s PARTITION OF %s FOR VALUES IN (%s)", leaf.ID(), t.ID(), joinInts(vals))
		}
		if t.KeyKind == "part-leaves" {
			d.sql += fmt.Sprintf("; ALTER TABLE %s ADD PRIMARY KEY (%s)", leaf.ID(), qi(t.N.Name))
		}
		d.apply = func() {
			t.Children = append(t.Children, leaf)
			cs.s.Tables = append(cs.s.Tables, leaf)
			t.partValues = append(t.partValues, vals...)
		}
	}
	if cs.plan.schema.OwnerRole {
		// The application's role makes its own DDL: a partition it creates is its own, as the
		// tables are, and pgshift (connected as that role) can read it.
		d.sql = "SET ROLE " + qi(ownerRole) + "; " + d.sql
	}
	if e.first && e.ddl == "rename" {
		// No tool that replicates by column name can take a rename made on the target first
		// (the source still sends the old name until it renames too, and pgshift does not guess
		// renames): it stops, and the fix is to undo the target's rename. Renames are drawn
		// source first, the order pgshift's stop message asks for.
		e.first = false
	}
	if follow {
		// pgshift replays it: made on the source only, and resolved as soon as it is made.
		e.first = false
	}
	cs.schemaMu.Lock()
	defer cs.schemaMu.Unlock()
	if e.first && cs.pendingOn(d.table) {
		// A DDL of this table made on the source only has not reached the target yet: made on
		// the target now, this one would land there before it, and the columns would end in
		// another order than the source's (pgshift stops on that, and the fix is to rebuild
		// the table's columns, which no harness step does). Source only, after it.
		e.first = false
	}
	if e.first {
		if _, err := cs.env.dst.Psql(ctx, cs.plan.dbname, d.sql); err != nil {
			cs.res.fail("harness", "DDL on the target: %v", err)
			return
		}
		d.resolved = true
	}
	if _, err := cs.env.src.Psql(ctx, cs.plan.dbname, d.sql); err != nil {
		cs.res.fail("harness", "DDL on the source: %v", err)
		return
	}
	d.apply()
	d.resolved = d.resolved || follow
	cs.agentMu.Lock()
	cs.pendingDDL = append(cs.pendingDDL, d)
	cs.agentMu.Unlock()
	cs.res.DDL++
	where := "source only"
	if e.first {
		where = "target, then source"
	}
	cs.logf("DDL (%s): %s", where, d.sql)
}

// pendingOn: a DDL of table t made on the source only waits for its follow-up on the target.
func (cs *caseRun) pendingOn(t *Table) bool {
	cs.agentMu.Lock()
	defer cs.agentMu.Unlock()
	for _, d := range cs.pendingDDL {
		if d.table == t && !d.resolved {
			return true
		}
	}
	return false
}

// applyTarget makes a pending DDL on the target, as a user does after pgshift stopped on it.
func (cs *caseRun) applyTarget(ctx context.Context, d *ddlEvent) error {
	out, err := cs.env.dst.Psql(ctx, cs.plan.dbname, d.sql)
	// The target may be restarting (a chaos event) as the user's fix is made: wait for it, as
	// a user would, rather than take a connection failure for pgshift's own change (seed
	// 17235159130256980899 in a CI run: the fix was never made, and pgshift rightly stopped
	// again on the missing column).
	for try := 0; err != nil && targetDown(out) && try < 60 && ctx.Err() == nil; try++ {
		time.Sleep(time.Second)
		out, err = cs.env.dst.Psql(ctx, cs.plan.dbname, d.sql)
	}
	if err != nil {
		// pgshift changed the target itself: fine when it added the very column the source
		// added, a guess when what it added makes the source's own DDL fail there.
		cs.logf("DDL on the target after the stop failed (%v): %s", err, out)
		if d.kind == "rename" {
			cs.res.fail("ddl-guessed", "after RENAME COLUMN on the source (%s), pgshift changed the target itself so that the same RENAME fails there: %s", d.sql, strings.TrimSpace(out))
		}
	}
	cs.agentMu.Lock()
	d.resolved = true
	cs.agentMu.Unlock()
	cs.logf("DDL made on the target after the stop: %s", d.sql)
	return nil
}

// targetDown says whether psql's output is a connection failure (the server down or
// restarting), not an error of the statement.
func targetDown(out string) bool {
	return strings.Contains(out, "connection to server") || strings.Contains(out, "the database system is")
}

func renamable(t *Table) []*Column {
	var out []*Column
	for _, c := range t.Cols {
		if c.Renamable && c.Kind == colPlain {
			out = append(out, c)
		}
	}
	return out
}

func uniqueCol(t *Table, base string) string {
	name := base
	for i := 2; ; i++ {
		clash := false
		for _, c := range t.Cols {
			if c.Name == name {
				clash = true
			}
		}
		if !clash {
			return name
		}
		name = fmt.Sprintf("%s %d", base, i)
	}
}

func joinInts(xs []int) string {
	s := make([]string, len(xs))
	for i, x := range xs {
		s[i] = fmt.Sprint(x)
	}
	return strings.Join(s, ", ")
}
