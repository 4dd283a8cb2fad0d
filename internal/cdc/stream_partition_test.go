package cdc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// run feeds messages to a Stream built with opts and returns what it delivered, the status
// updates it sent (and how many of them were sent while the last message was handled), and the
// first error.
func run(t *testing.T, opts Options, durable pgtypes.LSN, msgs ...enc) (evs []Event, sent []pglogrepl.StandbyStatusUpdate, duringLast int, err error) {
	t.Helper()
	return runClock(t, opts, durable, time.Now, msgs...)
}

// runClock is run with the stream's status updates timed by now.
func runClock(t *testing.T, opts Options, durable pgtypes.LSN, now func() time.Time, msgs ...enc) (evs []Event, sent []pglogrepl.StandbyStatusUpdate, duringLast int, err error) {
	t.Helper()
	opts.SpillDir = t.TempDir()
	q := NewQueue(1000, 1<<30)
	s := NewStream(nil, opts, q, func() pgtypes.LSN { return durable }, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.spillDir = t.TempDir()
	s.sendStatus = func(u pglogrepl.StandbyStatusUpdate) error { sent = append(sent, u); return nil }
	s.now = now
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, m := range msgs {
		before := len(sent)
		if err = s.handle(ctx, append([]byte(nil), m...)); err != nil {
			break
		}
		if i == len(msgs)-1 {
			duringLast = len(sent) - before
		}
	}
	for len(q.C()) > 0 {
		c := <-q.C()
		evs = append(evs, c.Events...)
		q.Release(c)
	}
	return evs, sent, duringLast, err
}

func streamedInserts(xid uint32, n int) []enc {
	msgs := []enc{enc{'S'}.u32(xid).u8(1), relationMsg(true, xid, 7)}
	for i := 0; i < n; i++ {
		msgs = append(msgs, insertMsg(true, xid, 7, "1", "a"))
	}
	return append(msgs, enc{'E'})
}

// Defect 17: the replay of a streamed transaction at STREAM COMMIT reads nothing from the
// server; it must keep sending status updates on its own, with the durable position only.
func TestReplayOfStreamedTransactionSendsStatus(t *testing.T) {
	const xid = 10
	msgs := append(streamedInserts(xid, 50), enc{'c'}.u32(xid).u8(0).u64(0x100).u64(0x108).u64(0))
	// Every reading of the clock is a second later: the replay of 50 changes spans minutes.
	clock := time.Unix(1e9, 0)
	tick := func() time.Time { clock = clock.Add(time.Second); return clock }
	evs, sent, during, err := runClock(t, Options{StartLSN: 0x10, StatusInterval: 10 * time.Second}, 0x50, tick, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 52 {
		t.Fatalf("delivered %d events, want 52", len(evs))
	}
	if during < 3 {
		t.Errorf("%d status updates sent while replaying changes for minutes with one due every 10 s", during)
	}
	for _, u := range sent {
		if u.WALFlushPosition != 0x50 || u.WALWritePosition != 0x50 || u.WALApplyPosition != 0x50 {
			t.Fatalf("status update %+v confirms more (or less) than the durable position 0/50", u)
		}
	}
}

// A streamed transaction already applied is not replayed, but the relations it described count
// as described: pgoutput does not describe them again.
func TestSkippedStreamedTransactionKeepsItsRelations(t *testing.T) {
	const xid = 10
	msgs := append(streamedInserts(xid, 3), enc{'c'}.u32(xid).u8(0).u64(0x100).u64(0x108).u64(0),
		beginMsg(0x300, 11), insertMsg(false, 0, 7, "2", "b"), commitMsg(0x300, 0x308))
	evs, _, _, err := run(t, Options{SkipBelow: 0x200}, 0, msgs...)
	if err != nil {
		t.Fatalf("change after a skipped streamed transaction: %v", err)
	}
	if got := ids(evs); len(got) != 3 || got[1] != "2" {
		t.Fatalf("delivered %v, want the later transaction only", got)
	}
}

// A change of a relation that is not migrated stops the stream, naming it and its transaction,
// in a plain transaction and in the replay of a streamed one.
func TestChangeOfUnmigratedTableStops(t *testing.T) {
	opts := Options{Tables: map[pgtypes.TableID]bool{{Schema: "public", Name: "other"}: true}}
	_, _, _, err := run(t, opts, 0, beginMsg(0x100, 1), relationMsg(false, 0, 7), insertMsg(false, 0, 7, "1", "a"), commitMsg(0x100, 0x108))
	var nm *NotMigratedError
	if !errors.As(err, &nm) || !errors.Is(err, ErrNotMigrated) || nm.Table.String() != "public.t" || nm.CommitLSN != 0x100 {
		t.Fatalf("plain transaction: %v", err)
	}
	msgs := append(streamedInserts(10, 2), enc{'c'}.u32(10).u8(0).u64(0x200).u64(0x208).u64(0))
	_, _, _, err = run(t, opts, 0, msgs...)
	if !errors.As(err, &nm) || nm.Table.String() != "public.t" || nm.CommitLSN != 0x200 {
		t.Fatalf("streamed transaction: %v", err)
	}
	// Migrated: delivered.
	opts.Tables[pgtypes.TableID{Schema: "public", Name: "t"}] = true
	if _, _, _, err := run(t, opts, 0, beginMsg(0x100, 1), relationMsg(false, 0, 7), insertMsg(false, 0, 7, "1", "a"), commitMsg(0x100, 0x108)); err != nil {
		t.Fatal(err)
	}
}

// A TRUNCATE in a rolled-back subtransaction of a streamed transaction vanishes with it; one in
// a kept subtransaction is delivered.
func TestStreamedTruncateInSubtransactions(t *testing.T) {
	const top, gone, kept = 10, 11, 12
	trunc := func(xid uint32) enc { return enc{'T'}.u32(xid).u32(1).u8(0).u32(7) }
	evs, _, _, err := run(t, Options{}, 0,
		enc{'S'}.u32(top).u8(1), relationMsg(true, top, 7), insertMsg(true, top, 7, "1", "a"),
		trunc(gone), insertMsg(true, gone, 7, "2", "rolled back"), trunc(kept), insertMsg(true, kept, 7, "3", "kept"), enc{'E'},
		enc{'A'}.u32(top).u32(gone),
		enc{'c'}.u32(top).u8(0).u64(0x100).u64(0x108).u64(0))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range evs {
		switch {
		case ev.Change == nil:
		case ev.Change.Kind == Trunc:
			got = append(got, "T")
		default:
			got = append(got, string(ev.Change.New[0].Data))
		}
	}
	if want := "1T3"; strings.Join(got, "") != want {
		t.Fatalf("changes %v, want %s", got, want)
	}
}

// Changes of a transaction marked with Options.DropOrigin (reverse replication's writes on the
// source, decoded by the forward stream) are dropped; its commit still passes so the position
// moves past it. A transaction of another origin, or of none, is delivered whole.
func TestDropOriginDropsOnlyThatOrigin(t *testing.T) {
	originMsg := func(name string) enc { return enc{'O'}.u64(0x50).str(name) }
	msgs := []enc{
		beginMsg(0x100, 1), originMsg(PgshiftOrigin), relationMsg(false, 0, 7), insertMsg(false, 0, 7, "1", "echo"), commitMsg(0x100, 0x108),
		beginMsg(0x200, 2), originMsg("other_subscription"), insertMsg(false, 0, 7, "2", "theirs"), commitMsg(0x200, 0x208),
		beginMsg(0x300, 3), insertMsg(false, 0, 7, "3", "clients"), commitMsg(0x300, 0x308),
	}
	evs, _, _, err := run(t, Options{DropOrigin: PgshiftOrigin}, 0, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ids(evs), " "); got != "B C B 2 C B 3 C" {
		t.Fatalf("with DropOrigin delivered %q, want the first transaction empty", got)
	}
	evs, _, _, err = run(t, Options{}, 0, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ids(evs), " "); got != "B 1 C B 2 C B 3 C" {
		t.Fatalf("without DropOrigin delivered %q, want every row", got)
	}
	// OriginNone (a server before 16, which cannot filter): every origin's rows are dropped.
	evs, _, _, err = run(t, Options{OriginNone: true, ServerVersion: 150010}, 0, msgs...)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ids(evs), " "); got != "B C B C B 3 C" {
		t.Fatalf("with OriginNone delivered %q, want only the transaction without an origin", got)
	}
}
