package apply

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestSchemaStopKeepsEarlierTransactions: a schema stop in the middle of a target transaction
// commits the source transactions before the stopping one. Before, the whole batch was rolled
// back; the user then made the source's RENAME on the target, as pgshift's message asked, and
// the earlier transactions (still sending the old name) stopped the restarted agent for good
// (found by the torture harness).
func TestSchemaStopKeepsEarlierTransactions(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	const schema = `CREATE TABLE u (id int PRIMARY KEY, email text, n int); INSERT INTO u VALUES (1, 'x', 0), (2, 'y', 0);`
	e := newRedoEnv(t, cl, "schemastop", schema+`ALTER TABLE u RENAME COLUMN n TO m;`, schema)
	before := e.rel("u", 'd', colID, colText("email"), colInt("n"))
	after := e.rel("u", 'd', colID, colText("email"), colInt("m"))
	err := e.a.chunk(ctx, batch(0x1000,
		[]*cdc.Change{{Kind: cdc.Update, Rel: before, New: []cdc.Value{txt("1"), txt("x"), txt("5")}}},
		[]*cdc.Change{{Kind: cdc.Insert, Rel: before, New: []cdc.Value{txt("3"), txt("z"), txt("7")}}},
		[]*cdc.Change{{Kind: cdc.Update, Rel: before, New: []cdc.Value{txt("2"), txt("y"), txt("1")}}, {Kind: cdc.Update, Rel: after, New: []cdc.Value{txt("2"), txt("y"), txt("9")}}},
	))
	var se *ErrSchema
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "renamed") {
		t.Fatalf("got %v, want the rename stop", err)
	}
	// The first two transactions are committed, with their position; nothing of the third.
	if got := e.target(`SELECT string_agg(id || ':' || n, ' ' ORDER BY id) FROM public.u`); got != "1:5 2:0 3:7" {
		t.Fatalf("u = %q, want the two transactions before the stop applied and the third not", got)
	}
	if got := e.target(`SELECT applied_lsn::text FROM pgshift.position`); got != "0/106C" {
		t.Fatalf("applied position %s, want 0/106C (the end of the second transaction)", got)
	}
	if e.a.tx != nil {
		t.Fatal("a target transaction is left open")
	}
}

// TestSchemaStopAfterUnrecordedTransactions: the same exact stop when the open target
// transaction held a transaction applied without a recording: a streamed one (committed on its
// own since), or one that grew past MaxRecorded (the ones before it are committed first). The
// torture harness found the streamed case: with logical_decoding_work_mem = 64kB a RENAME on
// the source stopped the agent, and after the fix on the target the restarted agent stopped
// for good on an earlier transaction that still sent the old name.
func TestSchemaStopAfterUnrecordedTransactions(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	const schema = `CREATE TABLE u (id int PRIMARY KEY, email text, n int); INSERT INTO u VALUES (1, 'x', 0), (2, 'y', 0);`
	for _, tc := range []struct {
		name string
		big  func(c *cdc.Chunk) // turns the first transaction into an unrecorded one
		max  int
	}{
		{"Streamed", func(c *cdc.Chunk) { c.Events[0].Begin.Streamed = true }, 0},
		{"PastMaxRecorded", func(*cdc.Chunk) {}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newRedoEnv(t, cl, "schemastop_"+strings.ToLower(tc.name), schema+`ALTER TABLE u RENAME COLUMN n TO m;`, schema)
			if tc.max > 0 {
				e.a.opts.MaxRecorded = tc.max
			}
			before := e.rel("u", 'd', colID, colText("email"), colInt("n"))
			after := e.rel("u", 'd', colID, colText("email"), colInt("m"))
			ins := func(id, n string) *cdc.Change {
				return &cdc.Change{Kind: cdc.Insert, Rel: before, New: []cdc.Value{txt(id), txt("e" + id), txt(n)}}
			}
			c := batch(0x1000,
				[]*cdc.Change{ins("10", "1")},
				[]*cdc.Change{ins("11", "1"), ins("12", "1"), ins("13", "1")},
				[]*cdc.Change{{Kind: cdc.Update, Rel: before, New: []cdc.Value{txt("1"), txt("x"), txt("5")}}},
				[]*cdc.Change{{Kind: cdc.Update, Rel: after, New: []cdc.Value{txt("2"), txt("y"), txt("9")}}},
			)
			tc.big(c)
			err := e.a.chunk(ctx, c)
			var se *ErrSchema
			if !errors.As(err, &se) || !strings.Contains(err.Error(), "renamed") {
				t.Fatalf("got %v, want the rename stop", err)
			}
			if got := e.target(`SELECT string_agg(id || ':' || n, ' ' ORDER BY id) FROM public.u`); got != "1:5 2:0 10:1 11:1 12:1 13:1" {
				t.Fatalf("u = %q, want the three transactions before the stop applied", got)
			}
			if got := e.target(`SELECT applied_lsn::text FROM pgshift.position`); got != "0/10D0" {
				t.Fatalf("applied position %s, want 0/10D0 (the end of the third transaction)", got)
			}
		})
	}
}

// TestSchemaStopAfterConflictRedo: the same exact stop when the open target transaction was
// redone in source order (a unique conflict of compacted changes) while the stopping source
// transaction was under way. The redo applied the rest change by change, unrecorded, so the
// stop rolled back the transactions before the stopping one too; after the user's fix the
// restarted agent stopped for good on an earlier one (found by the torture harness: seed
// 560417889816812625, a RENAME under load).
func TestSchemaStopAfterConflictRedo(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	const schema = `CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE, n int); INSERT INTO u VALUES (1, 'x', 0), (2, 'y', 0);`
	e := newRedoEnv(t, cl, "schemastop_redo", schema+`ALTER TABLE u RENAME COLUMN n TO m;`, schema)
	before := e.rel("u", 'd', colID, colText("email"), colInt("n"))
	after := e.rel("u", 'd', colID, colText("email"), colInt("m"))
	upd := func(rel *cdc.Relation, id, email, n string) *cdc.Change {
		return &cdc.Change{Kind: cdc.Update, Rel: rel, New: []cdc.Value{txt(id), txt(email), txt(n)}}
	}
	// Row 1 gives 'x' to row 2 through a temporary value: merged, the batch conflicts, and
	// the flush that the fourth transaction's new relation description forces redoes it.
	gen := e.a.gen
	err := e.a.chunk(ctx, batch(0x1000,
		[]*cdc.Change{upd(before, "1", "tmp", "1")},
		[]*cdc.Change{upd(before, "2", "x", "2")},
		[]*cdc.Change{upd(before, "1", "y", "3")},
		// A key change is applied on its own: the merged rows before it are written first, and
		// the conflict comes in the flush the relation change forces.
		[]*cdc.Change{{Kind: cdc.Update, Rel: before, OldKind: 'K', Old: []cdc.Value{txt("2"), {Kind: 'n'}, {Kind: 'n'}}, New: []cdc.Value{txt("20"), txt("x"), txt("4")}},
			upd(after, "1", "y", "9")},
	))
	var se *ErrSchema
	if !errors.As(err, &se) || !strings.Contains(err.Error(), "renamed") {
		t.Fatalf("got %v, want the rename stop", err)
	}
	if e.a.gen == gen {
		t.Fatal("the batch was not redone; the test did not provoke the conflict")
	}
	// The agent's session ends with the stop: what is still open on the target is rolled back.
	if e.a.tx != nil {
		if err := e.a.tx.Rollback(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.target(`SELECT string_agg(id || ':' || email || ':' || n, ' ' ORDER BY id) FROM public.u`); got != "1:y:3 2:x:2" {
		t.Fatalf("u = %q, want the three transactions before the stop applied and nothing of the fourth (position %s, error %v)", got, e.target(`SELECT applied_lsn::text FROM pgshift.position`), err)
	}
	if got := e.target(`SELECT coalesce((SELECT applied_lsn::text FROM pgshift.position), 'none')`); got != "0/10D0" {
		t.Fatalf("applied position %s, want 0/10D0 (the end of the third transaction)", got)
	}
}

// TestCommitBeforeFailureNamesTheTransaction: when committing the transactions before the
// current one fails (here a real unique violation the redo in source order meets: the target
// holds a row the source does not), the error names the current transaction. Before, the
// current transaction was left unset on that path and the agent died of a nil pointer
// (found by the torture harness: the target restarted during such a redo).
func TestCommitBeforeFailureNamesTheTransaction(t *testing.T) {
	cl := pgtest.New(t, pgtest.Options{})
	ctx := context.Background()
	const schema = `CREATE TABLE u (id int PRIMARY KEY, email text UNIQUE, n int); INSERT INTO u VALUES (1, 'x', 0), (2, 'y', 0);`
	e := newRedoEnv(t, cl, "commitbefore_fail", schema+`ALTER TABLE u RENAME COLUMN n TO m;`, schema+`INSERT INTO u VALUES (9, 'z', 0);`)
	before := e.rel("u", 'd', colID, colText("email"), colInt("n"))
	after := e.rel("u", 'd', colID, colText("email"), colInt("m"))
	upd := func(rel *cdc.Relation, id, email, n string) *cdc.Change {
		return &cdc.Change{Kind: cdc.Update, Rel: rel, New: []cdc.Value{txt(id), txt(email), txt(n)}}
	}
	// The third transaction's new relation description forces a flush of the merged rows; it
	// conflicts, and the redo of the two before it in source order meets the real violation.
	err := e.a.chunk(ctx, batch(0x1000,
		[]*cdc.Change{upd(before, "1", "tmp", "1")},
		[]*cdc.Change{upd(before, "2", "z", "2")}, // 'z' is taken on the target only
		[]*cdc.Change{{Kind: cdc.Update, Rel: before, OldKind: 'K', Old: []cdc.Value{txt("1"), {Kind: 'n'}, {Kind: 'n'}}, New: []cdc.Value{txt("10"), txt("tmp"), txt("3")}},
			upd(after, "2", "z", "4")},
	))
	if err == nil || !strings.Contains(err.Error(), "transaction 1002") || !strings.Contains(err.Error(), "23505") {
		t.Fatalf("got %v, want the unique violation named with transaction 1002", err)
	}
}
