// Package cdc streams a logical replication slot with the pgoutput plugin and turns it into
// source transactions of typed changes, delivered in commit order to an applier.
//
// Contract: every message pgoutput can send is either understood and turned into an event, or it
// stops the stream with an error; nothing is skipped and acknowledged. The stream never confirms a
// position itself: it reports to the server only the LSN its caller says is durably applied.
//
// Memory is bounded whatever the source does: the stream hands events to the applier through a
// Queue bounded by chunk count and bytes, and transactions the server streams before they
// commit (protocol 2, larger than logical_decoding_work_mem) are buffered on disk, one spill
// file per transaction, then replayed in order at STREAM COMMIT with the changes of aborted
// subtransactions (ROLLBACK TO SAVEPOINT) left out. Spill files live in a per-process temporary
// directory removed when the stream ends; directories of killed agents are removed by the next
// agent to start (SweepSpillDirs).
//
// This file is the decoding layer: pgoutput message bytes (protocol versions 1 and 2, including
// the streamed-transaction messages) to typed structs. It is bounds-checked everywhere, because
// the bytes come from the network, and it is fuzzed (FuzzDecode).
package cdc

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// pgoutput message type bytes.
const (
	msgBegin        = 'B'
	msgCommit       = 'C'
	msgOrigin       = 'O'
	msgRelation     = 'R'
	msgType         = 'Y'
	msgInsert       = 'I'
	msgUpdate       = 'U'
	msgDelete       = 'D'
	msgTruncate     = 'T'
	msgLogical      = 'M'
	msgStreamStart  = 'S'
	msgStreamStop   = 'E'
	msgStreamCommit = 'c'
	msgStreamAbort  = 'A'
)

// Value kinds in a tuple, as pgoutput sends them.
const (
	ValueNull      = 'n' // SQL NULL
	ValueUnchanged = 'u' // unchanged TOASTed value: not sent, the target keeps its own
	ValueText      = 't' // text format (the only one pgshift asks for)
	ValueBinary    = 'b' // binary format: never requested; rejected by the applier
)

// TruncateMsg option bits.
const (
	truncCascade         = 1
	truncRestartIdentity = 2
)

// pgEpoch is PostgreSQL's timestamp epoch; commit times are microseconds since it.
var pgEpoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Column is one column of a relation as the source publishes it.
type Column struct {
	Name    string
	TypeOID uint32
	TypeMod int32
	Key     bool // part of the replica identity (all columns under REPLICA IDENTITY FULL)
}

// Relation describes a published table. A new Relation value is created every time the source
// sends a relation message, so a change always points at the column list it was encoded with.
type Relation struct {
	OID             uint32
	Table           pgtypes.TableID
	ReplicaIdentity byte // 'd' default, 'n' nothing, 'f' full, 'i' index
	Columns         []Column
}

// Value is one column value of a tuple; Data is nil unless Kind is ValueText or ValueBinary.
type Value struct {
	Kind byte
	Data []byte
}

// BeginMsg starts a (non-streamed) transaction.
type BeginMsg struct {
	FinalLSN   pgtypes.LSN // the commit record's LSN
	CommitTime time.Time
	Xid        uint32
}

// CommitMsg ends a non-streamed transaction.
type CommitMsg struct {
	CommitLSN  pgtypes.LSN
	EndLSN     pgtypes.LSN // end of the commit record: the position to store and confirm
	CommitTime time.Time
}

// OriginMsg names the replication origin a transaction came from (the source is itself a subscriber).
type OriginMsg struct {
	CommitLSN pgtypes.LSN
	Name      string
}

// RelationMsg carries a relation description.
type RelationMsg struct {
	Xid uint32 // set inside a streamed block
	Rel *Relation
}

// TypeMsg describes a non-built-in type used by a following relation.
type TypeMsg struct {
	Xid       uint32
	OID       uint32
	Namespace string
	Name      string
}

// InsertMsg is one inserted row.
type InsertMsg struct {
	Xid   uint32
	RelID uint32
	New   []Value
}

// UpdateMsg is one updated row. OldKind is 'K' (old key, sent when the key changed), 'O' (old
// row, REPLICA IDENTITY FULL) or 0 (no old tuple: the key is in New).
type UpdateMsg struct {
	Xid     uint32
	RelID   uint32
	OldKind byte
	Old     []Value
	New     []Value
}

// DeleteMsg is one deleted row: its key ('K') or whole old row ('O').
type DeleteMsg struct {
	Xid     uint32
	RelID   uint32
	OldKind byte
	Old     []Value
}

// TruncateMsg truncates one or more relations in one statement.
type TruncateMsg struct {
	Xid             uint32
	RelIDs          []uint32
	Cascade         bool
	RestartIdentity bool
}

// LogicalMsg is a pg_logical_emit_message record (pgshift's heartbeat, or an application's).
type LogicalMsg struct {
	Xid           uint32
	Transactional bool
	LSN           pgtypes.LSN
	Prefix        string
	Content       []byte
}

// StreamStartMsg opens a block of changes of the in-progress transaction Xid.
type StreamStartMsg struct {
	Xid          uint32
	FirstSegment bool
}

// StreamStopMsg closes the current streamed block.
type StreamStopMsg struct{}

// StreamCommitMsg commits a streamed transaction.
type StreamCommitMsg struct {
	Xid        uint32
	CommitLSN  pgtypes.LSN
	EndLSN     pgtypes.LSN
	CommitTime time.Time
}

// StreamAbortMsg aborts a streamed transaction (SubXid == Xid) or one of its subtransactions.
type StreamAbortMsg struct {
	Xid    uint32
	SubXid uint32
}

// ErrUnknownMessage marks a message type pgshift does not understand; the stream stops on it.
var ErrUnknownMessage = errors.New("unknown pgoutput message")

// Decode decodes one pgoutput message. inStream says whether it arrived between a StreamStart
// and a StreamStop, where data messages carry the transaction id first. Byte slices in the
// result alias data; the caller owns data and must not reuse it while the result is in use.
func Decode(data []byte, inStream bool) (any, error) {
	if len(data) == 0 {
		return nil, errors.New("decode pgoutput: empty message")
	}
	r := &reader{b: data[1:]}
	t := data[0]
	var xid uint32
	switch t {
	case msgRelation, msgType, msgInsert, msgUpdate, msgDelete, msgTruncate, msgLogical:
		if inStream {
			xid = r.u32()
		}
	}
	var m any
	switch t {
	case msgBegin:
		m = &BeginMsg{FinalLSN: r.lsn(), CommitTime: r.time(), Xid: r.u32()}
	case msgCommit:
		r.u8() // flags, unused
		m = &CommitMsg{CommitLSN: r.lsn(), EndLSN: r.lsn(), CommitTime: r.time()}
	case msgOrigin:
		m = &OriginMsg{CommitLSN: r.lsn(), Name: r.str()}
	case msgRelation:
		rel := &Relation{OID: r.u32()}
		rel.Table.Schema = r.str()
		rel.Table.Name = r.str()
		rel.ReplicaIdentity = r.u8()
		n := int(r.u16())
		if n > r.remaining() { // each column takes at least 10 bytes; refuse absurd counts early
			r.fail("column count %d exceeds message", n)
			n = 0
		}
		rel.Columns = make([]Column, n)
		for i := range rel.Columns {
			flags := r.u8()
			rel.Columns[i] = Column{Key: flags&1 != 0, Name: r.str(), TypeOID: r.u32(), TypeMod: r.i32()}
		}
		m = &RelationMsg{Xid: xid, Rel: rel}
	case msgType:
		m = &TypeMsg{Xid: xid, OID: r.u32(), Namespace: r.str(), Name: r.str()}
	case msgInsert:
		ins := &InsertMsg{Xid: xid, RelID: r.u32()}
		if k := r.u8(); k != 'N' && r.err == nil {
			r.fail("insert: tuple kind %q, want 'N'", k)
		}
		ins.New = r.tuple()
		m = ins
	case msgUpdate:
		up := &UpdateMsg{Xid: xid, RelID: r.u32()}
		k := r.u8()
		if k == 'K' || k == 'O' {
			up.OldKind = k
			up.Old = r.tuple()
			k = r.u8()
		}
		if k != 'N' && r.err == nil {
			r.fail("update: tuple kind %q, want 'N'", k)
		}
		up.New = r.tuple()
		m = up
	case msgDelete:
		del := &DeleteMsg{Xid: xid, RelID: r.u32(), OldKind: r.u8()}
		if del.OldKind != 'K' && del.OldKind != 'O' && r.err == nil {
			r.fail("delete: tuple kind %q, want 'K' or 'O'", del.OldKind)
		}
		del.Old = r.tuple()
		m = del
	case msgTruncate:
		n := int(r.u32())
		opts := r.u8()
		if n > r.remaining()/4 {
			r.fail("truncate: relation count %d exceeds message", n)
			n = 0
		}
		tr := &TruncateMsg{Xid: xid, Cascade: opts&truncCascade != 0, RestartIdentity: opts&truncRestartIdentity != 0}
		tr.RelIDs = make([]uint32, n)
		for i := range tr.RelIDs {
			tr.RelIDs[i] = r.u32()
		}
		m = tr
	case msgLogical:
		lm := &LogicalMsg{Xid: xid, Transactional: r.u8()&1 != 0, LSN: r.lsn(), Prefix: r.str()}
		lm.Content = r.bytes(int(r.u32()))
		m = lm
	case msgStreamStart:
		m = &StreamStartMsg{Xid: r.u32(), FirstSegment: r.u8() == 1}
	case msgStreamStop:
		m = &StreamStopMsg{}
	case msgStreamCommit:
		xid := r.u32()
		r.u8() // flags, unused
		m = &StreamCommitMsg{Xid: xid, CommitLSN: r.lsn(), EndLSN: r.lsn(), CommitTime: r.time()}
	case msgStreamAbort:
		m = &StreamAbortMsg{Xid: r.u32(), SubXid: r.u32()}
	default:
		return nil, fmt.Errorf("%w: type byte %q (0x%02x)", ErrUnknownMessage, t, t)
	}
	if r.err != nil {
		return nil, fmt.Errorf("decode pgoutput message %q: %w", t, r.err)
	}
	if r.remaining() != 0 {
		return nil, fmt.Errorf("decode pgoutput message %q: %d trailing bytes", t, r.remaining())
	}
	return m, nil
}

// reader consumes a message with bounds checks; after the first error every read returns zero
// values and the error is kept, so decoders read straight through and check once.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) remaining() int { return len(r.b) - r.off }

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf(format, args...)
	}
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > r.remaining() {
		r.fail("truncated: need %d bytes at offset %d, have %d", n, r.off, r.remaining())
		return nil
	}
	s := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return s
}

func (r *reader) u8() byte {
	if b := r.take(1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if b := r.take(2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if b := r.take(4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) i32() int32 { return int32(r.u32()) }

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

func (r *reader) lsn() pgtypes.LSN { return pgtypes.LSN(r.u64()) }

func (r *reader) time() time.Time {
	return pgEpoch.Add(time.Duration(int64(r.u64())) * time.Microsecond)
}

func (r *reader) bytes(n int) []byte {
	b := r.take(n)
	if b == nil && r.err == nil {
		return []byte{}
	}
	return b
}

// str reads a NUL-terminated string.
func (r *reader) str() string {
	if r.err != nil {
		return ""
	}
	for i := r.off; i < len(r.b); i++ {
		if r.b[i] == 0 {
			s := string(r.b[r.off:i])
			r.off = i + 1
			return s
		}
	}
	r.fail("unterminated string at offset %d", r.off)
	return ""
}

// tuple reads TupleData: a column count, then per column a kind byte and, for text and binary
// values, a length and the bytes.
func (r *reader) tuple() []Value {
	n := int(r.u16())
	if r.err != nil {
		return nil
	}
	if n > r.remaining() {
		r.fail("tuple: column count %d exceeds message", n)
		return nil
	}
	vals := make([]Value, n)
	for i := range vals {
		k := r.u8()
		switch k {
		case ValueNull, ValueUnchanged:
			vals[i] = Value{Kind: k}
		case ValueText, ValueBinary:
			l := r.u32()
			if l > uint32(r.remaining()) {
				r.fail("tuple: column %d length %d exceeds message", i+1, l)
				return nil
			}
			vals[i] = Value{Kind: k, Data: r.bytes(int(l))}
		default:
			if r.err == nil {
				r.fail("tuple: column %d has unknown kind %q", i+1, k)
			}
			return nil
		}
	}
	return vals
}
