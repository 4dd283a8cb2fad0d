package torture

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// noteSourceError logs the first occurrences of each kind of error the source returned to the
// workload (conflicts are expected; a flood of one kind means the generator is wrong).
func (cs *caseRun) noteSourceError(kind string, err error) {
	msg := err.Error()
	var pgErr *pgconn.PgError
	key := msg
	if errors.As(err, &pgErr) {
		key = pgErr.Code + " " + kind
	}
	cs.errMu.Lock()
	defer cs.errMu.Unlock()
	if cs.srcErrors == nil {
		cs.srcErrors = map[string]int{}
	}
	cs.srcErrors[key]++
	if cs.srcErrors[key] <= 2 && len(cs.srcErrors) <= 40 {
		cs.logf("source refused a %s transaction: %s", kind, msg)
	}
}

// stats are a case's counters, updated by the clients and the chaos loop.
type stats struct {
	txns, txnFailed, rows, bigTxns, bigBytes atomic.Int64
	kinds                                    sync.Map // kind -> *atomic.Int64
}

func (s *stats) kind(k string) {
	v, _ := s.kinds.LoadOrStore(k, new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func (s *stats) kindCounts() map[string]int64 {
	out := map[string]int64{}
	s.kinds.Range(func(k, v any) bool { out[k.(string)] = v.(*atomic.Int64).Load(); return true })
	return out
}

// clientSpace is where client c draws new row numbers: disjoint from the initial rows
// (0..initialRows) and from every other client, so inserts of two clients never collide.
func clientSpace(c int) int64 { return 100_000 + int64(c)*200_000 }

// client is one workload connection with its own random stream.
type client struct {
	id     int
	g      *rng
	cs     *caseRun
	conn   *pgx.Conn
	next   int64 // next fresh row number
	wrote  []int64
	params workloadParams
	dups   map[*Table][][]any // rows this client wrote to keyless tables, to duplicate
	noLong bool               // no TOASTed values (bulk tables)
}

// workloadParams are drawn once per case.
type workloadParams struct {
	clients   int
	duration  time.Duration
	thinkMax  time.Duration
	bigRows   int // rows of one big transaction
	bigValue  int // under 300: small values only (many rows); else TOASTed values where the table has them
	hugeOnce  bool
	hugeBytes int
	weights   map[string]int
}

func drawWorkload(g *rng, cl Classes, scale float64) workloadParams {
	p := workloadParams{
		clients:  g.between(2, 4),
		duration: time.Duration(float64(g.between(6, 12))*scale) * time.Second,
		thinkMax: time.Duration(g.between(5, 40)) * time.Millisecond,
		bigRows:  g.between(200, 1500),
		bigValue: g.between(300, 3000),
	}
	if cl.On("big-txn") && g.chance(cl.P("unstreamed", 0.15)) {
		p.hugeOnce = true
		p.hugeBytes = int(float64(g.between(60, 120)) * scale * (1 << 20))
	}
	w := map[string]int{
		"insert": 30, "update": 18, "delete": 8, "key-change": 6, "swap-keys": 3, "move-reinsert": 3, "toast-unchanged": 5,
		"set-default": 3, "truncate": 2, "only": 3, "savepoint": 6, "big-txn": 2, "sequence": 2, "multi": 6, "unique-shuffle": 4,
	}
	gate := map[string]string{"update": "update", "delete": "delete", "key-change": "key-change", "swap-keys": "key-change", "move-reinsert": "key-change", "unique-shuffle": "unique",
		"toast-unchanged": "toast-unchanged", "set-default": "set-default", "truncate": "truncate", "only": "only", "savepoint": "savepoint",
		"big-txn": "big-txn", "sequence": "sequences"}
	for k, c := range gate {
		if !cl.On(c) {
			w[k] = 0
		}
	}
	// Each case leans on a few kinds, so rare interleavings get a chance.
	for _, k := range txnKinds {
		if g.chance(0.25) {
			w[k] *= 3
		}
		if cl.P(gate[k], 0) == 1 {
			w[k] *= 10 // boosted
		}
	}
	p.weights = w
	return p
}

var txnKinds = []string{"insert", "update", "delete", "key-change", "swap-keys", "move-reinsert", "toast-unchanged", "set-default", "truncate", "only", "savepoint", "big-txn", "sequence", "multi", "unique-shuffle"}

func (c *client) connect(ctx context.Context) error {
	if c.conn != nil && !c.conn.IsClosed() {
		return nil
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, c.cs.srcDSN)
		if err == nil {
			c.conn = conn
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("client %d: connect to the source: %w", c.id, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// loop runs transactions until ctx ends.
func (c *client) loop(ctx context.Context) error {
	weights := make([]int, len(txnKinds))
	for i, k := range txnKinds {
		weights[i] = c.params.weights[k]
	}
	main := c.g
	for i := uint64(0); ctx.Err() == nil; i++ {
		if err := c.connect(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		kind := txnKinds[main.weighted(weights)]
		// Each transaction draws from its own stream, so a transaction that fails half-way
		// (a conflict, a restarted server) does not shift what later ones draw.
		c.g = main.fork(i)
		c.cs.schemaMu.RLock()
		ops := c.drawTxn(kind)
		err := c.run(ctx, kind, ops)
		c.cs.schemaMu.RUnlock()
		c.g = main
		c.cs.st.txns.Add(1)
		if err != nil {
			c.cs.st.txnFailed.Add(1)
			c.cs.noteSourceError(kind, err)
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) {
				// Not an SQL error: the connection broke (a server restart); reconnect.
				if c.conn != nil {
					c.conn.Close(context.Background())
				}
				c.conn = nil
			}
		} else {
			c.cs.st.kind(kind)
		}
		if c.params.thinkMax > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(c.g.intn(int(c.params.thinkMax)))):
			}
		}
	}
	if c.conn != nil {
		c.conn.Close(context.Background())
	}
	return nil
}

// op is one statement of a drawn transaction. build renders it against the model as it is
// when the transaction runs (a column may have been renamed meanwhile).
type op struct {
	build func() (string, []any, bool)
	// batch, when set, sends many statements at once (big transactions).
	batch func() *pgx.Batch
}

func (c *client) run(ctx context.Context, kind string, ops []op) error {
	if len(ops) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	tx, err := c.conn.Begin(ctx)
	if err != nil {
		return err
	}
	// tx changes at each commitAndBegin: roll back whichever is open at the end.
	defer func() { tx.Rollback(context.Background()) }()
	for _, o := range ops {
		if o.batch != nil {
			b := o.batch()
			br := tx.SendBatch(ctx, b)
			for i := 0; i < b.Len(); i++ {
				tag, err := br.Exec()
				if err != nil {
					br.Close()
					return err
				}
				c.cs.st.rows.Add(tag.RowsAffected())
			}
			if err := br.Close(); err != nil {
				return err
			}
			continue
		}
		sql, args, ok := o.build()
		if !ok {
			continue
		}
		if sql == "ROLLBACK" {
			return tx.Rollback(ctx)
		}
		if sql == commitAndBegin {
			// One drawn unit of work made of several source transactions in a row.
			if err := tx.Commit(ctx); err != nil {
				return err
			}
			// The deferred rollback must keep a transaction: a failed Begin returns none
			// (a restart between the two transactions panicked the harness on it).
			next, err := c.conn.Begin(ctx)
			if err != nil {
				return err
			}
			tx = next
			continue
		}
		tag, err := tx.Exec(ctx, sql, args...)
		if err != nil {
			return fmt.Errorf("%w\n    in: %.300s", err, sql)
		}
		c.cs.st.rows.Add(tag.RowsAffected())
	}
	return tx.Commit(ctx)
}

func (c *client) fresh() int64 {
	n := clientSpace(c.id) + c.next
	c.next++
	c.wrote = append(c.wrote, n)
	return n
}

// existing draws a row number that probably exists: an initial row or one this client wrote.
func (c *client) existing(t *Table) int64 {
	root := t
	for root.Parent != nil {
		root = root.Parent
	}
	if root.initialRows > 0 && (len(c.wrote) == 0 || c.g.chance(0.5)) {
		return int64(c.g.intn(root.initialRows))
	}
	if len(c.wrote) == 0 {
		return int64(c.g.intn(100))
	}
	return c.wrote[len(c.wrote)-1-c.g.intn(min(len(c.wrote), 50))]
}

// writable tables for each purpose.
func (cs *caseRun) pickTable(g *rng, want func(*Table) bool) *Table {
	var ts []*Table
	for _, t := range cs.s.Tables {
		if want(t) {
			ts = append(ts, t)
		}
	}
	if len(ts) == 0 {
		return nil
	}
	return pick(g, ts)
}

func insertable(t *Table) bool {
	switch t.Kind {
	case kPlain, kPartRoot, kInhParent, kInhChild, kZero, kGenOnly:
		return true
	}
	return false
}

func selectable(t *Table) bool { return t.N != nil && t.Kind != kAudit && t.Kind != kMarks }

func (c *client) drawTxn(kind string) []op {
	g := c.g
	switch kind {
	case "insert":
		t := c.cs.pickTable(g, insertable)
		if t == nil {
			return nil
		}
		return []op{c.insertOp(t, g.between(1, 5), false)}
	case "update":
		t := c.cs.pickTable(g, selectable)
		if t == nil {
			return nil
		}
		return []op{c.updateOp(t, false)}
	case "toast-unchanged":
		t := c.cs.pickTable(g, func(t *Table) bool { return selectable(t) && len(t.Toast) > 0 })
		if t == nil {
			return nil
		}
		return []op{c.updateOp(t, true)}
	case "delete":
		t := c.cs.pickTable(g, func(t *Table) bool { return t.Kind != kAudit && t.Kind != kMarks })
		if t == nil {
			return nil
		}
		return []op{c.deleteOp(t)}
	case "key-change":
		t := c.cs.pickTable(g, func(t *Table) bool { return selectable(t) && t.Leaf || t.Kind == kPartRoot })
		if t == nil {
			return nil
		}
		return []op{c.keyChangeOp(t)}
	case "swap-keys":
		t := c.cs.pickTable(g, func(t *Table) bool { return (t.Kind == kPlain || t.Kind == kPartRoot) && t.N != nil && t.FKTo == nil })
		if t == nil {
			return nil
		}
		return c.swapOps(t)
	case "move-reinsert":
		t := c.cs.pickTable(g, func(t *Table) bool { return (t.Kind == kPlain || t.Kind == kPartRoot) && t.N != nil })
		if t == nil {
			return nil
		}
		old := c.existing(t)
		return []op{c.moveOp(t, old, c.fresh()), c.insertWithN(t, old)}
	case "set-default":
		t := c.cs.pickTable(g, func(t *Table) bool { return t.Identity != nil })
		if t == nil {
			return nil
		}
		return []op{c.setDefaultOp(t)}
	case "truncate":
		return c.truncateOps()
	case "only":
		t := c.cs.pickTable(g, func(t *Table) bool { return t.Kind == kInhParent })
		if t == nil {
			return nil
		}
		return []op{c.onlyOp(t)}
	case "savepoint":
		return c.savepointOps()
	case "big-txn":
		return c.bigTxn()
	case "sequence":
		if len(c.cs.s.Sequences) == 0 {
			return nil
		}
		sq := pick(g, c.cs.s.Sequences)
		if g.chance(0.5) {
			return []op{fixed("SELECT nextval($1::text::regclass)", sq.ID())}
		}
		return []op{fixed("SELECT setval($1::text::regclass, nextval($1::text::regclass), false)", sq.ID())}
	case "unique-shuffle":
		t := c.cs.pickTable(g, func(t *Table) bool { return t.Uniq != nil })
		if t == nil {
			return nil
		}
		return c.uniqueShuffle(t)
	case "multi":
		var ops []op
		for i, m := 0, g.between(2, 6); i < m; i++ {
			k := pick(g, []string{"insert", "update", "delete", "key-change", "toast-unchanged"})
			ops = append(ops, c.drawTxn(k)...)
		}
		return ops
	}
	return nil
}

func fixed(sql string, args ...any) op {
	return op{build: func() (string, []any, bool) { return sql, args, true }}
}

// value draws one column value (nil for NULL).
func (c *client) value(t *Table, col *Column, n int64, long bool) any {
	g := c.g
	switch {
	case col == t.N:
		return strconv.FormatInt(n, 10)
	case col.fromN != nil:
		return col.fromN(n)
	case col.Part:
		root := t
		for root.Parent != nil {
			root = root.Parent
		}
		return strconv.Itoa(pick(g, root.partValues))
	case col.Uniq:
		return strconv.FormatInt(n, 10)
	case col.Ref:
		if g.chance(0.1) || (t.FKTo.initialRows == 0 && len(c.wrote) == 0) {
			return nil
		}
		return strconv.FormatInt(c.existing(t.FKTo), 10)
	}
	if !col.NotNull && g.chance(0.12) {
		return nil
	}
	if long && col.Type.long != nil {
		return col.Type.long(g)
	}
	if !c.noLong && col.Type.long != nil && containsCol(t.Toast, col) && g.chance(0.5) {
		return col.Type.long(g)
	}
	return col.Type.gen(g)
}

// insertCols are the columns an INSERT names: everything but identity, serial and generated.
func insertCols(t *Table) []*Column {
	var out []*Column
	for _, col := range t.Cols {
		if col.Kind == colPlain {
			out = append(out, col)
		}
	}
	return out
}

func (c *client) insertOp(t *Table, rows int, long bool) op {
	ns := make([]int64, rows)
	for i := range ns {
		ns[i] = c.fresh()
	}
	// Values are drawn when the op runs (after any rename), but from this client's stream in
	// draw order: drawing happens in build, which runs in transaction order.
	return op{build: func() (string, []any, bool) { return c.insertSQL(t, ns, long) }}
}

func (c *client) insertWithN(t *Table, n int64) op {
	return op{build: func() (string, []any, bool) { return c.insertSQL(t, []int64{n}, false) }}
}

func (c *client) insertSQL(t *Table, ns []int64, long bool) (string, []any, bool) {
	cols := insertCols(t)
	if len(cols) == 0 {
		if len(ns) == 1 || t.Kind == kZero || t.Kind == kGenOnly {
			return "INSERT INTO " + t.ID() + " DEFAULT VALUES", nil, true
		}
	}
	var args []any
	tuples := make([]string, 0, len(ns))
	prevs := c.dups[t]
	dup := t.KeyKind == "ri-full" && len(prevs) > 0 && c.g.chance(0.3)
	for _, n := range ns {
		ph := make([]string, len(cols))
		var row []any
		if dup {
			// An exact copy of an earlier row: duplicates in a table without a key.
			if prev := pick(c.g, prevs); len(prev) == len(cols) {
				row = prev
			}
		}
		if row == nil {
			for _, col := range cols {
				row = append(row, c.value(t, col, n, long))
			}
			if t.KeyKind == "ri-full" && len(prevs) < 20 {
				if c.dups == nil {
					c.dups = map[*Table][][]any{}
				}
				c.dups[t] = append(c.dups[t], row)
			}
		}
		for i, col := range cols {
			args = append(args, row[i])
			ph[i] = "$" + strconv.Itoa(len(args)) + "::text::" + col.SQLType
		}
		tuples = append(tuples, "("+strings.Join(ph, ", ")+")")
	}
	return fmt.Sprintf("INSERT INTO %s (%s) VALUES %s", t.ID(), colList(cols), strings.Join(tuples, ", ")), args, true
}

// where selects rows by row number; on REPLICA IDENTITY FULL tables only one of the
// duplicates, so each change touches exactly one row.
func where(t *Table, args *[]any, n int64) string {
	*args = append(*args, n)
	p := "$" + strconv.Itoa(len(*args)) + "::int8"
	if t.RIFull && t.Leaf && t.Kind != kPartition {
		return fmt.Sprintf("ctid = (SELECT ctid FROM ONLY %s WHERE %s = %s LIMIT 1)", t.ID(), qi(t.N.Name), p)
	}
	return qi(t.N.Name) + " = " + p
}

func dataCols(t *Table, skipToast bool) []*Column {
	var out []*Column
	for _, col := range t.Cols {
		if col.Kind == colPlain && col != t.N && col.fromN == nil && !col.Part && !col.Ref && !col.Uniq && col.Type != nil {
			if skipToast && containsCol(t.Toast, col) {
				continue
			}
			out = append(out, col)
		}
	}
	return out
}

func (c *client) updateOp(t *Table, keepToast bool) op {
	n := c.existing(t)
	k := c.g.between(1, 3)
	seed := c.g.uint64()
	return op{build: func() (string, []any, bool) {
		cols := dataCols(t, keepToast)
		if len(cols) == 0 {
			return "", nil, false
		}
		g := newRNG(seed, 1)
		shuffle(g, cols)
		if len(cols) > k {
			cols = cols[:k]
		}
		var args []any
		sets := make([]string, len(cols))
		for i, col := range cols {
			args = append(args, c.valueFrom(g, t, col, n))
			sets[i] = qi(col.Name) + " = $" + strconv.Itoa(len(args)) + "::text::" + col.SQLType
		}
		return fmt.Sprintf("UPDATE %s SET %s WHERE %s", t.ID(), strings.Join(sets, ", "), where(t, &args, n)), args, true
	}}
}

// valueFrom draws a value from a private stream (for ops built after a rename).
func (c *client) valueFrom(g *rng, t *Table, col *Column, n int64) any {
	saved := c.g
	c.g = g
	defer func() { c.g = saved }()
	return c.value(t, col, n, false)
}

func (c *client) deleteOp(t *Table) op {
	g := c.g
	if t.N == nil {
		off := g.intn(20)
		return fixed(fmt.Sprintf("DELETE FROM %s WHERE ctid = (SELECT ctid FROM %s OFFSET $1::int8 LIMIT 1)", t.ID(), t.ID()), int64(off))
	}
	n := c.existing(t)
	if g.chance(0.2) && !t.RIFull {
		return fixed(fmt.Sprintf("DELETE FROM %s WHERE %s >= $1::int8 AND %s < $2::int8", t.ID(), qi(t.N.Name), qi(t.N.Name)), n, n+int64(g.between(2, 10)))
	}
	return op{build: func() (string, []any, bool) {
		var args []any
		return fmt.Sprintf("DELETE FROM %s WHERE %s", t.ID(), where(t, &args, n)), args, true
	}}
}

// keyCols are the columns derived from the row number (the selector included).
func keyColsOf(t *Table) []*Column {
	var out []*Column
	for _, col := range t.Cols {
		if col.fromN != nil {
			out = append(out, col)
		}
	}
	return out
}

// moveOp changes a row's number (and with it every key column derived from it).
func (c *client) moveOp(t *Table, from, to int64) op {
	return op{build: func() (string, []any, bool) {
		var args []any
		var sets []string
		for _, col := range keyColsOf(t) {
			args = append(args, col.fromN(to))
			sets = append(sets, qi(col.Name)+" = $"+strconv.Itoa(len(args))+"::text::"+col.SQLType)
		}
		return fmt.Sprintf("UPDATE %s SET %s WHERE %s", t.ID(), strings.Join(sets, ", "), where(t, &args, from)), args, true
	}}
}

func (c *client) keyChangeOp(t *Table) op {
	g := c.g
	from := c.existing(t)
	root := t
	for root.Parent != nil {
		root = root.Parent
	}
	if root.Kind == kPartRoot && g.chance(0.6) {
		// A partition-key change: the row moves to another partition.
		p := pick(g, root.partValues)
		var pc *Column
		for _, col := range t.Cols {
			if col.Part {
				pc = col
			}
		}
		return fixed(fmt.Sprintf("UPDATE %s SET %s = $1::int4 WHERE %s = $2::int8", t.ID(), qi(pc.Name), qi(t.N.Name)), int64(p), from)
	}
	return c.moveOp(t, from, c.fresh())
}

// swapOps exchange two rows' keys through a third, unused one, in one transaction.
func (c *client) swapOps(t *Table) []op {
	a, b, tmp := c.existing(t), c.existing(t), c.fresh()
	return []op{c.moveOp(t, a, tmp), c.moveOp(t, b, a), c.moveOp(t, tmp, b)}
}

func (c *client) setDefaultOp(t *Table) op {
	id := t.Identity
	if t.N == nil {
		off := c.g.intn(20)
		return fixed(fmt.Sprintf("UPDATE %s SET %s = DEFAULT WHERE ctid = (SELECT ctid FROM %s OFFSET $1::int8 LIMIT 1)", t.ID(), qi(id.Name), t.ID()), int64(off))
	}
	n := c.existing(t)
	return op{build: func() (string, []any, bool) {
		var args []any
		return fmt.Sprintf("UPDATE %s SET %s = DEFAULT WHERE %s", t.ID(), qi(id.Name), where(t, &args, n)), args, true
	}}
}

func (c *client) onlyOp(t *Table) op {
	g := c.g
	n := c.existing(t)
	switch g.intn(3) {
	case 0:
		return fixed(fmt.Sprintf("DELETE FROM ONLY %s WHERE %s >= $1::int8 AND %s < $2::int8", t.ID(), qi(t.N.Name), qi(t.N.Name)), n, n+int64(g.between(1, 20)))
	case 1:
		cols := dataCols(t, false)
		if len(cols) == 0 {
			return fixed(fmt.Sprintf("DELETE FROM ONLY %s WHERE %s = $1::int8", t.ID(), qi(t.N.Name)), n)
		}
		col := pick(g, cols)
		v := c.value(t, col, n, false)
		return fixed(fmt.Sprintf("UPDATE ONLY %s SET %s = $1::text::%s WHERE %s >= $2::int8 AND %s < $3::int8", t.ID(), qi(col.Name), col.SQLType, qi(t.N.Name), qi(t.N.Name)), v, n, n+10)
	default:
		// Without ONLY: the parent's and the children's rows.
		return fixed(fmt.Sprintf("DELETE FROM %s WHERE %s = $1::int8", t.ID(), qi(t.N.Name)), n)
	}
}

// truncateOps draw one TRUNCATE variant, sometimes followed by inserts in the same transaction.
func (c *client) truncateOps() []op {
	g := c.g
	cs := c.cs
	isData := func(t *Table) bool { return t.Kind != kAudit && t.Kind != kMarks }
	var sql string
	var target *Table
	switch g.intn(6) {
	case 0: // one table
		target = cs.pickTable(g, func(t *Table) bool {
			return isData(t) && (t.Kind == kPlain || t.Kind == kZero || t.Kind == kGenOnly || t.Kind == kInhChild) && !hasReferrer(cs.s, t)
		})
		if target == nil {
			return nil
		}
		sql = "TRUNCATE " + target.ID()
	case 1: // several
		a := cs.pickTable(g, func(t *Table) bool { return isData(t) && t.Kind == kPlain && !hasReferrer(cs.s, t) })
		b := cs.pickTable(g, func(t *Table) bool {
			return isData(t) && (t.Kind == kPlain || t.Kind == kPartRoot) && !hasReferrer(cs.s, t)
		})
		if a == nil || b == nil || a == b {
			return nil
		}
		sql, target = "TRUNCATE "+a.ID()+", "+b.ID(), a
	case 2: // CASCADE
		target = cs.pickTable(g, func(t *Table) bool { return hasReferrer(cs.s, t) })
		if target == nil {
			return nil
		}
		sql = "TRUNCATE " + target.ID() + " CASCADE"
	case 3: // RESTART IDENTITY
		target = cs.pickTable(g, func(t *Table) bool {
			return isData(t) && t.Identity != nil && !hasReferrer(cs.s, t) && t.Kind != kPartition
		})
		if target == nil {
			return nil
		}
		sql = "TRUNCATE " + target.ID() + " RESTART IDENTITY"
	case 4: // ONLY an inheritance parent, or the parent with its children
		target = cs.pickTable(g, func(t *Table) bool { return t.Kind == kInhParent })
		if target == nil {
			return nil
		}
		if g.chance(0.7) {
			sql = "TRUNCATE ONLY " + target.ID()
		} else {
			sql = "TRUNCATE " + target.ID()
		}
	case 5: // one partition
		target = cs.pickTable(g, func(t *Table) bool { return t.Kind == kPartition })
		if target == nil {
			return nil
		}
		sql = "TRUNCATE " + target.ID()
	}
	ops := []op{fixed(sql)}
	if g.chance(0.5) && insertable(target) {
		ops = append(ops, c.insertOp(target, g.between(1, 3), false))
	}
	return ops
}

func hasReferrer(s *Schema, t *Table) bool {
	for _, x := range s.Tables {
		if x.FKTo == t {
			return true
		}
	}
	return false
}

func (c *client) savepointOps() []op {
	g := c.g
	var ops []op
	add := func() {
		t := c.cs.pickTable(g, insertable)
		if t == nil {
			return
		}
		if g.chance(0.5) || t.N == nil {
			ops = append(ops, c.insertOp(t, g.between(1, 3), false))
		} else {
			ops = append(ops, c.updateOp(t, false))
		}
	}
	add()
	ops = append(ops, fixed("SAVEPOINT s1"))
	add()
	add()
	if g.chance(0.6) {
		ops = append(ops, fixed("ROLLBACK TO SAVEPOINT s1"))
	}
	add()
	ops = append(ops, fixed("SAVEPOINT s2"))
	add()
	if g.chance(0.5) {
		ops = append(ops, fixed("ROLLBACK TO SAVEPOINT s2"))
	} else {
		ops = append(ops, fixed("RELEASE SAVEPOINT s2"))
	}
	add()
	return ops
}

// bigTxn is larger than logical_decoding_work_mem (64 kB when the case streams): many rows
// with long values, a rolled-back subtransaction in the middle, sometimes rolled back whole.
// riFullBelow reports whether t or any table below it (inheritance children, partitions) is
// REPLICA IDENTITY FULL: an UPDATE of t without ONLY reaches them all.
func riFullBelow(t *Table) bool {
	if t.RIFull {
		return true
	}
	for _, c := range t.Children {
		if riFullBelow(c) {
			return true
		}
	}
	return false
}

func (c *client) bigTxn() []op {
	g := c.g
	t := c.cs.pickTable(g, func(t *Table) bool { return insertable(t) && len(t.Toast) > 0 })
	if t == nil {
		t = c.cs.pickTable(g, func(t *Table) bool { return insertable(t) && t.N != nil })
	}
	if t == nil {
		return nil
	}
	rows := c.params.bigRows
	c.cs.st.bigTxns.Add(1)
	var ops []op
	chunk := func(k int) op {
		ns := make([]int64, k)
		for i := range ns {
			ns[i] = c.fresh()
		}
		return op{batch: func() *pgx.Batch {
			b := &pgx.Batch{}
			for i := 0; i < len(ns); i += 20 {
				end := min(i+20, len(ns))
				sql, args, _ := c.insertSQL(t, ns[i:end], c.params.bigValue >= 300)
				b.Queue(sql, args...)
			}
			return b
		}}
	}
	ops = append(ops, chunk(rows/2), fixed("SAVEPOINT big"), chunk(rows/4))
	if g.chance(0.5) {
		ops = append(ops, fixed("ROLLBACK TO SAVEPOINT big"))
	}
	if t.N != nil && !riFullBelow(t) && g.chance(0.5) {
		// A big UPDATE too (not of a REPLICA IDENTITY FULL table: pgshift applies each of its
		// rows with a scan of the whole table, so a big one there takes for ever — a known
		// cost, reported once, not re-found by every case).
		ops = append(ops, fixed(fmt.Sprintf("UPDATE %s SET %s = %s WHERE %s >= $1::int8", t.ID(), qi(t.N.Name), qi(t.N.Name), qi(t.N.Name)), int64(0)))
	}
	ops = append(ops, chunk(rows/4))
	if g.chance(0.15) {
		ops = append(ops, fixed("ROLLBACK"))
	}
	return ops
}

// commitAndBegin, as an op's SQL, commits the transaction so far and begins the next one.
const commitAndBegin = "-- commit and begin"

// uniqueShuffle hands a UNIQUE value from one row to another over several transactions, and
// touches the giver again afterwards, so that in a batch of them the taker's last change comes
// before the giver's: written in that order, two rows would hold the value at once.
func (c *client) uniqueShuffle(t *Table) []op {
	g := c.g
	a, b := c.existing(t), c.existing(t)
	u := qi(t.Uniq.Name)
	n := qi(t.N.Name)
	ops := []op{
		fixed(fmt.Sprintf("UPDATE %s SET %s = NULL WHERE %s = $1::int8", t.ID(), u, n), a), fixed(commitAndBegin),
		fixed(fmt.Sprintf("UPDATE %s SET %s = $1::int8 WHERE %s = $2::int8", t.ID(), u, n), a, b), fixed(commitAndBegin),
	}
	if cols := dataCols(t, false); len(cols) > 0 {
		col := pick(g, cols)
		ops = append(ops, fixed(fmt.Sprintf("UPDATE %s SET %s = $1::text::%s WHERE %s = $2::int8", t.ID(), qi(col.Name), col.SQLType, n), c.value(t, col, a, false), a), fixed(commitAndBegin))
	}
	if g.chance(0.5) {
		ops = append(ops, c.moveOp(t, b, c.fresh()))
	} else {
		ops = append(ops, fixed(fmt.Sprintf("UPDATE %s SET %s = $1::int8 WHERE %s = $2::int8", t.ID(), u, n), b, a))
	}
	return ops
}
