package cdc

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// enc builds pgoutput messages for tests, byte by byte as the server writes them.
type enc []byte

func (e enc) u8(b byte) enc     { return append(e, b) }
func (e enc) u16(v uint16) enc  { return binary.BigEndian.AppendUint16(e, v) }
func (e enc) u32(v uint32) enc  { return binary.BigEndian.AppendUint32(e, v) }
func (e enc) u64(v uint64) enc  { return binary.BigEndian.AppendUint64(e, v) }
func (e enc) str(s string) enc  { return append(append(e, s...), 0) }
func (e enc) text(s string) enc { return append(e.u8('t').u32(uint32(len(s))), s...) }

func beginMsg(final uint64, xid uint32) enc { return enc{'B'}.u64(final).u64(0).u32(xid) }
func commitMsg(commit, end uint64) enc      { return enc{'C'}.u8(0).u64(commit).u64(end).u64(0) }

func relationMsg(stream bool, xid, oid uint32) enc {
	e := enc{'R'}
	if stream {
		e = e.u32(xid)
	}
	return e.u32(oid).str("public").str("t").u8('d').u16(2).
		u8(1).str("id").u32(23).u32(0xFFFFFFFF).
		u8(0).str("v").u32(25).u32(0xFFFFFFFF)
}

func insertMsg(stream bool, xid, oid uint32, id, v string) enc {
	e := enc{'I'}
	if stream {
		e = e.u32(xid)
	}
	return e.u32(oid).u8('N').u16(2).text(id).text(v)
}

func TestDecode(t *testing.T) {
	cases := []struct {
		name     string
		data     enc
		inStream bool
		want     any
	}{
		{"begin", beginMsg(0x10, 7), false, &BeginMsg{FinalLSN: 0x10, CommitTime: pgEpoch, Xid: 7}},
		{"commit", commitMsg(0x10, 0x20), false, &CommitMsg{CommitLSN: 0x10, EndLSN: 0x20, CommitTime: pgEpoch}},
		{"relation", relationMsg(false, 0, 99), false, &RelationMsg{Rel: &Relation{OID: 99, Table: pgtypes.TableID{Schema: "public", Name: "t"},
			ReplicaIdentity: 'd', Columns: []Column{{Name: "id", TypeOID: 23, TypeMod: -1, Key: true}, {Name: "v", TypeOID: 25, TypeMod: -1}}}}},
		{"insert in stream", insertMsg(true, 5, 99, "1", "x"), true, &InsertMsg{Xid: 5, RelID: 99, New: []Value{{'t', []byte("1")}, {'t', []byte("x")}}}},
		{"update with old key, null and unchanged toast", enc{'U'}.u32(99).u8('K').u16(2).text("1").u8('n').u8('N').u16(2).text("2").u8('u'), false,
			&UpdateMsg{RelID: 99, OldKind: 'K', Old: []Value{{'t', []byte("1")}, {Kind: 'n'}}, New: []Value{{'t', []byte("2")}, {Kind: 'u'}}}},
		{"delete full", enc{'D'}.u32(99).u8('O').u16(1).text(""), false, &DeleteMsg{RelID: 99, OldKind: 'O', Old: []Value{{'t', []byte{}}}}},
		{"truncate cascade restart", enc{'T'}.u32(2).u8(3).u32(1).u32(2), false, &TruncateMsg{RelIDs: []uint32{1, 2}, Cascade: true, RestartIdentity: true}},
		{"message", enc{'M'}.u8(1).u64(5).str("pgshift").u32(2).u8('h').u8('i'), false, &LogicalMsg{Transactional: true, LSN: 5, Prefix: "pgshift", Content: []byte("hi")}},
		{"stream start", enc{'S'}.u32(9).u8(1), false, &StreamStartMsg{Xid: 9, FirstSegment: true}},
		{"stream stop", enc{'E'}, true, &StreamStopMsg{}},
		{"stream commit", enc{'c'}.u32(9).u8(0).u64(1).u64(2).u64(0), false, &StreamCommitMsg{Xid: 9, CommitLSN: 1, EndLSN: 2, CommitTime: pgEpoch}},
		{"stream abort", enc{'A'}.u32(9).u32(10), false, &StreamAbortMsg{Xid: 9, SubXid: 10}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Decode(c.data, c.inStream)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %#v\nwant %#v", got, c.want)
			}
		})
	}
}

func TestDecodeRejects(t *testing.T) {
	cases := map[string]enc{
		"empty":               {},
		"unknown type":        {'Z', 1, 2},
		"truncated begin":     beginMsg(1, 1)[:10],
		"trailing bytes":      append(commitMsg(1, 2), 0),
		"bad tuple kind":      enc{'I'}.u32(1).u8('N').u16(1).u8('x'),
		"value length beyond": enc{'I'}.u32(1).u8('N').u16(1).u8('t').u32(1000).u8('a'),
		"insert not N":        enc{'I'}.u32(1).u8('K').u16(0),
		"unterminated string": enc{'R'}.u32(1).u8('p').u8('u'),
		"huge column count":   enc{'R'}.u32(1).str("s").str("t").u8('d').u16(60000),
		"delete without key":  enc{'D'}.u32(1).u8('N').u16(0),
	}
	for name, data := range cases {
		if m, err := Decode(data, false); err == nil {
			t.Errorf("%s: decoded %#v, want an error", name, m)
		}
	}
	if _, err := Decode(enc{'Z'}, false); !errors.Is(err, ErrUnknownMessage) {
		t.Errorf("unknown message error = %v, want ErrUnknownMessage", err)
	}
}

// FuzzDecode: no input may panic the decoder, and whatever decodes must be internally consistent.
func FuzzDecode(f *testing.F) {
	for _, s := range []enc{beginMsg(1, 2), commitMsg(1, 2), relationMsg(false, 0, 1), relationMsg(true, 3, 1),
		insertMsg(false, 0, 1, "1", "a"), enc{'U'}.u32(99).u8('K').u16(1).text("1").u8('N').u16(1).u8('u'),
		enc{'T'}.u32(1).u8(1).u32(5), enc{'M'}.u8(0).u64(5).str("p").u32(0), enc{'A'}.u32(1).u32(2)} {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, inStream bool) {
		m, err := Decode(data, inStream)
		if err != nil {
			return
		}
		switch v := m.(type) {
		case *RelationMsg:
			if v.Rel == nil {
				t.Fatal("relation message without relation")
			}
		case *InsertMsg:
			for _, val := range v.New {
				if (val.Kind == ValueText || val.Kind == ValueBinary) != (val.Data != nil) {
					t.Fatalf("value kind %q with data %v", val.Kind, val.Data)
				}
			}
		}
	})
}

// collect runs messages through a Stream's handler and returns what it delivered.
func collect(t *testing.T, skipBelow pgtypes.LSN, msgs ...enc) []Event {
	t.Helper()
	q := NewQueue(1000, 1<<30)
	s := NewStream(nil, Options{SkipBelow: skipBelow, SpillDir: t.TempDir()}, q, func() pgtypes.LSN { return 0 }, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	s.spillDir = t.TempDir()
	s.sendStatus = func(pglogrepl.StandbyStatusUpdate) error { return nil }
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for i, m := range msgs {
		if err := s.handle(ctx, append([]byte(nil), m...)); err != nil {
			t.Fatalf("message %d (%q): %v", i, m[0], err)
		}
	}
	var out []Event
	for len(q.C()) > 0 {
		c := <-q.C()
		out = append(out, c.Events...)
		q.Release(c)
	}
	return out
}

func ids(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		switch {
		case ev.Begin != nil:
			out = append(out, "B")
		case ev.Commit != nil:
			out = append(out, "C")
		case ev.Change != nil:
			out = append(out, string(ev.Change.New[0].Data))
		}
	}
	return out
}

func TestStreamAssembly(t *testing.T) {
	t.Run("plain transaction", func(t *testing.T) {
		got := ids(collect(t, 0, beginMsg(0x100, 1), relationMsg(false, 0, 7), insertMsg(false, 0, 7, "1", "a"), commitMsg(0x100, 0x108)))
		if want := []string{"B", "1", "C"}; !reflect.DeepEqual(got, want) {
			t.Fatalf("got %v, want %v", got, want)
		}
	})
	t.Run("already applied transaction skipped", func(t *testing.T) {
		got := collect(t, 0x200, beginMsg(0x100, 1), relationMsg(false, 0, 7), insertMsg(false, 0, 7, "1", "a"), commitMsg(0x100, 0x108))
		if len(got) != 0 {
			t.Fatalf("delivered %v", ids(got))
		}
	})
	t.Run("streamed with aborted subtransaction", func(t *testing.T) {
		const top, sub1, sub2 = 10, 11, 12
		got := collect(t, 0,
			enc{'S'}.u32(top).u8(1), relationMsg(true, top, 7), insertMsg(true, top, 7, "1", "a"), insertMsg(true, sub1, 7, "2", "rolled back"), enc{'E'},
			// a plain transaction committing while the big one is in progress
			// (pgoutput describes the relation again outside the stream: its streamed description
			// does not count until that transaction commits)
			beginMsg(0x50, 20), relationMsg(false, 0, 7), insertMsg(false, 0, 7, "p", "plain"), commitMsg(0x50, 0x58),
			enc{'S'}.u32(top).u8(0), insertMsg(true, sub2, 7, "3", "kept"), insertMsg(true, sub1, 7, "4", "rolled back"), enc{'E'},
			enc{'A'}.u32(top).u32(sub1),
			enc{'c'}.u32(top).u8(0).u64(0x100).u64(0x108).u64(0))
		if want := []string{"B", "p", "C", "B", "1", "3", "C"}; !reflect.DeepEqual(ids(got), want) {
			t.Fatalf("got %v, want %v", ids(got), want)
		}
		if !got[3].Begin.Streamed || got[6].Commit.EndLSN != 0x108 {
			t.Fatalf("streamed transaction header wrong: %+v %+v", got[3].Begin, got[6].Commit)
		}
	})
	t.Run("streamed transaction aborted whole", func(t *testing.T) {
		got := collect(t, 0, enc{'S'}.u32(10).u8(1), relationMsg(true, 10, 7), insertMsg(true, 10, 7, "1", "a"), enc{'E'}, enc{'A'}.u32(10).u32(10))
		if len(got) != 0 {
			t.Fatalf("delivered %v", ids(got))
		}
	})
}

func TestStreamRejectsOutOfPlaceMessages(t *testing.T) {
	cases := map[string][]enc{
		"change outside transaction":      {relationMsg(false, 0, 7), insertMsg(false, 0, 7, "1", "a")},
		"unknown relation":                {beginMsg(1, 1), insertMsg(false, 0, 8, "1", "a")},
		"commit without begin":            {commitMsg(1, 2)},
		"commit LSN mismatch":             {beginMsg(1, 1), commitMsg(2, 3)},
		"stream continues unseen":         {enc{'S'}.u32(10).u8(0)},
		"stream commit of unknown xid":    {enc{'c'}.u32(10).u8(0).u64(1).u64(2).u64(0)},
		"column count differs":            {beginMsg(1, 1), relationMsg(false, 0, 7), enc{'I'}.u32(7).u8('N').u16(1).text("1")},
		"stream start inside transaction": {beginMsg(1, 1), enc{'S'}.u32(10).u8(1)},
	}
	for name, msgs := range cases {
		q := NewQueue(100, 1<<20)
		s := NewStream(nil, Options{}, q, func() pgtypes.LSN { return 0 }, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
		s.spillDir = t.TempDir()
		s.sendStatus = func(pglogrepl.StandbyStatusUpdate) error { return nil }
		var err error
		for _, m := range msgs {
			if err = s.handle(context.Background(), m); err != nil {
				break
			}
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
