package cdc

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// HeartbeatPrefix is the pg_logical_emit_message prefix of pgshift's own heartbeats.
const HeartbeatPrefix = "pgshift"

// PgshiftOrigin is the replication origin pgshift's reverse applier marks its sessions with
// (apply.Options.Origin), and the one the forward stream drops (Options.DropOrigin).
const PgshiftOrigin = "pgshift_reverse"

// SessionParams returns the settings the replication session renders values with: pgshift's
// one definition, db.TextSettings, which the copy, the applier's target session and verify use
// too, so every value's text form reads back exactly. Each call returns a new map, so callers
// may add to it.
func SessionParams() map[string]string { return db.TextSettings() }

// Options configure a Stream.
type Options struct {
	Slot        string
	Publication string
	// StartLSN is where streaming starts: the applied position, or the slot's consistent point.
	StartLSN pgtypes.LSN
	// SkipBelow drops transactions whose commit LSN is below it: they end at or before the
	// applied position, so the target already has them.
	SkipBelow pgtypes.LSN
	// ServerVersion is server_version_num: it decides the pgoutput protocol and options
	// (catalog.Version: streaming and messages from 14).
	ServerVersion int
	// StatusInterval is how often a standby status update is sent even when nothing changes.
	StatusInterval time.Duration
	// StallTimeout turns an applier that takes nothing for this long into an error.
	StallTimeout time.Duration
	// SpillDir holds the on-disk buffers of large in-progress (streamed) transactions.
	SpillDir string
	// Tables, when not empty, are the relations the migration follows. A change of any other
	// relation (a partition created or attached on the source after the copy, whose changes its
	// root's publication now sends under its own name) stops the stream with ErrNotMigrated:
	// nothing of that transaction is applied or confirmed.
	Tables map[pgtypes.TableID]bool
	// FollowRenames (ddl: follow) keeps following a migrated table under its new name when the
	// source renames or moves it: a relation message of the same OID under another name is the
	// same table (the applier renames it on the target, from the captured DDL before it).
	FollowRenames bool
	// DropOrigin, when set, drops the row changes of every transaction pgoutput marks with
	// this replication origin (an Origin message after its Begin): they were applied here by
	// pgshift's applier of the other direction (apply.Options.Origin). The transaction itself
	// still passes, empty, so the applied position moves past it.
	DropOrigin string
	// OriginNone sends only the changes made on this server itself: a transaction that carries
	// any replication origin (applied here by some replication) is dropped. On 16+ pgoutput
	// filters them (origin 'none'); before, they are dropped here by their Origin message,
	// their commit passing empty as with DropOrigin. Reverse replication uses it: what goes
	// back to the source is what the application wrote on the target.
	OriginNone bool
}

// ErrNotMigrated is returned for a change of a relation that is not in Options.Tables.
var ErrNotMigrated = errors.New("change of a table that is not part of the migration")

// NotMigratedError names the relation and transaction of an ErrNotMigrated stop.
type NotMigratedError struct {
	Table     pgtypes.TableID
	CommitLSN pgtypes.LSN
}

func (e *NotMigratedError) Error() string {
	return fmt.Sprintf("%s: %s in the transaction committed at %s", ErrNotMigrated, e.Table, e.CommitLSN)
}

func (e *NotMigratedError) Unwrap() error { return ErrNotMigrated }

func (o *Options) defaults() {
	if o.StatusInterval <= 0 {
		o.StatusInterval = 10 * time.Second
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = 10 * time.Minute
	}
	if o.SpillDir == "" {
		o.SpillDir = os.TempDir()
	}
}

// ErrStreamEnded means the server ended the replication stream (it is shutting down or was told
// to stop); reconnecting resumes it.
var ErrStreamEnded = errors.New("the server ended the replication stream")

// Stats are counters a Stream keeps for status and lag reporting.
type Stats struct {
	ServerWALEnd atomic.Uint64 // the last WAL end the server reported (for lag display only, never confirmed)
	Received     atomic.Uint64 // transactions received
	Delivered    atomic.Uint64 // transactions handed to the applier (received minus those already applied)
	Changes      atomic.Uint64 // row changes received
	Confirmed    atomic.Uint64 // the last position confirmed to the server
}

// Stream reads one replication connection and feeds a Queue. It is used by one goroutine.
type Stream struct {
	conn      *pgconn.PgConn
	opts      Options
	queue     *Queue
	durable   func() pgtypes.LSN // what the target has durably committed: the only LSN ever confirmed
	log       *slog.Logger
	stats     *Stats
	rels      map[uint32]*Relation
	inTx      bool
	skip      bool
	dropped   bool // the open transaction is from Options.DropOrigin
	cur       Tx
	inStream  bool
	streamXid uint32
	streams   map[uint32]*spill
	pending   *Chunk
	spillDir  string
	// migratedOIDs are the relations whose changes passed Options.Tables in this stream, or that
	// a captured ALTER TABLE named, for FollowRenames; tables is Options.Tables with the names
	// those relations took since. Only published relations send changes, and a new table or
	// partition reaches the stream only after a CREATE or ATTACH, which the applier refuses.
	migratedOIDs map[uint32]bool
	tables       map[pgtypes.TableID]bool

	// sendStatus writes one standby status update to the server (conn's, except in tests), and
	// now is the clock status updates are timed by.
	sendStatus func(pglogrepl.StandbyStatusUpdate) error
	now        func() time.Time

	lastStatus    time.Time
	lastConfirmed pgtypes.LSN
	replayCommit  pgtypes.LSN // commit LSN of the streamed transaction being replayed
}

// NewStream prepares a stream on an open replication connection. durable reports the end LSN of
// the last transaction the target has committed durably.
func NewStream(conn *pgconn.PgConn, opts Options, q *Queue, durable func() pgtypes.LSN, stats *Stats, log *slog.Logger) *Stream {
	opts.defaults()
	if stats == nil {
		stats = &Stats{}
	}
	s := &Stream{conn: conn, opts: opts, queue: q, durable: durable, log: log, stats: stats,
		rels: map[uint32]*Relation{}, streams: map[uint32]*spill{}, now: time.Now,
		migratedOIDs: map[uint32]bool{}, tables: maps.Clone(opts.Tables)}
	s.sendStatus = func(u pglogrepl.StandbyStatusUpdate) error {
		if conn == nil {
			return errors.New("no replication connection")
		}
		return pglogrepl.SendStandbyStatusUpdate(context.Background(), conn, u)
	}
	return s
}

// pluginArgs are pgoutput's options for this server version.
func (s *Stream) pluginArgs() []string {
	pub := strings.ReplaceAll(pgtypes.QuoteIdent(s.opts.Publication), "'", "''")
	v := catalog.Version(s.opts.ServerVersion)
	args := []string{"proto_version '" + strconv.Itoa(v.ProtoVersion()) + "'", "publication_names '" + pub + "'"}
	if v.HasStreaming() {
		args = append(args, "streaming 'on'")
	}
	// Heartbeats arrive as messages from 14 on; before, as the empty transaction they were
	// written in (see catalog.Version.HasMessages). 13 and older refuse the option.
	if v.HasMessages() {
		args = append(args, "messages 'true'")
	}
	if s.opts.OriginNone && v.HasOriginNone() {
		args = append(args, "origin 'none'")
	}
	return args
}

// dropsOrigin says whether a transaction of replication origin name is dropped.
func (s *Stream) dropsOrigin(name string) bool {
	return s.opts.OriginNone || (s.opts.DropOrigin != "" && name == s.opts.DropOrigin)
}

// Run starts replication and streams until ctx ends or an error occurs. Transactions are
// delivered to the queue in commit order; nothing is confirmed beyond durable().
func (s *Stream) Run(ctx context.Context) (err error) {
	// The owner's PID is part of the name, so SweepSpillDirs can tell an abandoned directory
	// (its process was killed) from one a running agent is using.
	dir, err := os.MkdirTemp(s.opts.SpillDir, fmt.Sprintf("%s%d-", spillDirPrefix, os.Getpid()))
	if err != nil {
		return fmt.Errorf("create spill directory for large transactions: %w", err)
	}
	s.spillDir = dir
	defer func() {
		for _, sp := range s.streams {
			sp.close()
		}
		os.RemoveAll(dir)
	}()

	err = pglogrepl.StartReplication(ctx, s.conn, pgtypes.QuoteIdent(s.opts.Slot), pglogrepl.LSN(s.opts.StartLSN),
		pglogrepl.StartReplicationOptions{PluginArgs: s.pluginArgs()})
	if err != nil {
		return fmt.Errorf("start replication from slot %s at %s: %w", s.opts.Slot, s.opts.StartLSN, err)
	}
	s.log.Info("streaming changes", "slot", s.opts.Slot, "publication", s.opts.Publication, "from", s.opts.StartLSN.String())
	// Applied positions are confirmed about every second; an idle stream still reports every StatusInterval.
	const ackEvery = time.Second
	// Each receive waits about ackEvery at most, so that an idle stream still confirms, and
	// ends at once with ctx. Both are a read deadline on the connection, and the receive gets
	// context.Background(): pgconn watches any other context anew on every call, which took a
	// fifth of the agent's CPU on a busy stream (a backlog replay).
	dl := newReadDeadline(ctx, s.conn.Conn(), ackEvery)
	defer dl.stop()
	for {
		if err := s.maybeStatus(ackEvery); err != nil {
			return err
		}
		if err := dl.renew(ctx); err != nil {
			return err
		}
		msg, err := s.conn.ReceiveMessage(context.Background())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if pgconn.Timeout(err) {
				continue
			}
			return fmt.Errorf("receive from slot %s: %w", s.opts.Slot, err)
		}
		switch m := msg.(type) {
		case *pgproto3.CopyData:
			if err := s.copyData(ctx, m.Data); err != nil {
				return err
			}
		case *pgproto3.ErrorResponse:
			pgErr := pgconn.ErrorResponseToPgError(m)
			if pgErr.Code == "XX000" && strings.Contains(pgErr.Message, "could not map filenode") {
				// The source's decoder has no catalog entry for a table's storage at this WAL
				// position; it fails the same way on every start. Seen when a TRUNCATE or table
				// rewrite (ALTER TABLE … TYPE, VACUUM FULL, CLUSTER) committed while the slot was
				// being created: PostgreSQL can leave a catalog change committed while a slot
				// builds its first snapshot out of that snapshot (a defect of its snapshot
				// builder, not something a client can repair).
				return fmt.Errorf("slot %s: %w; the source cannot decode this slot's WAL past here, on any retry: a TRUNCATE or table rewrite committed while the slot was being created is missing from the slot's first catalog snapshot (a PostgreSQL defect). Nothing was applied from it that is wrong; start the migration over with pgshift copy --force, at a moment without TRUNCATE or table-rewriting DDL on the source", s.opts.Slot, pgErr)
			}
			return fmt.Errorf("slot %s: %w", s.opts.Slot, pgErr)
		case *pgproto3.CopyDone, *pgproto3.CommandComplete, *pgproto3.ReadyForQuery:
			// The server stops streaming when it shuts down; what was not confirmed is sent again.
			return fmt.Errorf("slot %s: %w", s.opts.Slot, ErrStreamEnded)
		case *pgproto3.NoticeResponse, *pgproto3.ParameterStatus:
		default:
			return fmt.Errorf("slot %s: unexpected protocol message %T", s.opts.Slot, msg)
		}
	}
}

// readDeadline keeps a read deadline on a connection about every ahead, and moves it to now
// when ctx ends, so that a blocked receive returns.
type readDeadline struct {
	conn  net.Conn
	every time.Duration
	until time.Time // the deadline last set
	stopF func() bool
}

func newReadDeadline(ctx context.Context, conn net.Conn, every time.Duration) *readDeadline {
	d := &readDeadline{conn: conn, every: every}
	d.stopF = context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	return d
}

// renew moves the deadline every ahead once a tenth of that has passed since it was set, so
// that it is renewed a few times a second at most, not for each message. It returns ctx's
// error once ctx has ended.
func (d *readDeadline) renew(ctx context.Context) error {
	now := time.Now()
	if d.until.Sub(now) > d.every*9/10 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	d.until = now.Add(d.every)
	if err := d.conn.SetReadDeadline(d.until); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil { // ended while renewing: the wakeup was overwritten
		_ = d.conn.SetReadDeadline(time.Now())
		return err
	}
	return nil
}

func (d *readDeadline) stop() {
	d.stopF()
	_ = d.conn.SetReadDeadline(time.Time{})
}

func (s *Stream) copyData(ctx context.Context, data []byte) error {
	if len(data) == 0 {
		return errors.New("empty replication message")
	}
	switch data[0] {
	case pglogrepl.PrimaryKeepaliveMessageByteID:
		k, err := pglogrepl.ParsePrimaryKeepaliveMessage(data[1:])
		if err != nil {
			return fmt.Errorf("slot %s: %w", s.opts.Slot, err)
		}
		s.stats.ServerWALEnd.Store(uint64(k.ServerWALEnd))
		if k.ReplyRequested {
			return s.status()
		}
		return nil
	case pglogrepl.XLogDataByteID:
		x, err := pglogrepl.ParseXLogData(data[1:])
		if err != nil {
			return fmt.Errorf("slot %s: %w", s.opts.Slot, err)
		}
		if uint64(x.ServerWALEnd) > s.stats.ServerWALEnd.Load() {
			s.stats.ServerWALEnd.Store(uint64(x.ServerWALEnd))
		}
		// pgconn reuses its read buffer: keep a private copy the decoded values can point into.
		buf := append([]byte(nil), x.WALData...)
		if err := s.handle(ctx, buf); err != nil {
			return fmt.Errorf("slot %s at %s: %w", s.opts.Slot, pgtypes.LSN(x.WALStart), err)
		}
		return nil
	}
	return fmt.Errorf("slot %s: unknown replication message %q", s.opts.Slot, data[0])
}

// maybeStatus confirms a newly durable position at most every ackEvery, and otherwise sends a
// status update every StatusInterval so the server knows the client is alive.
func (s *Stream) maybeStatus(ackEvery time.Duration) error {
	since := s.now().Sub(s.lastStatus)
	if (s.durable() > s.lastConfirmed && since >= ackEvery) || since >= s.opts.StatusInterval {
		return s.status()
	}
	return nil
}

// status sends a standby status update. Write, flush and apply are all the durably applied
// transaction end: pgshift has no separate "received" position worth reporting, and reporting
// the server's WAL end would confirm changes that were never applied.
func (s *Stream) status() error {
	lsn := s.durable()
	if lsn < s.opts.StartLSN {
		lsn = s.opts.StartLSN
	}
	err := s.sendStatus(pglogrepl.StandbyStatusUpdate{
		WALWritePosition: pglogrepl.LSN(lsn), WALFlushPosition: pglogrepl.LSN(lsn), WALApplyPosition: pglogrepl.LSN(lsn),
	})
	if err != nil {
		return fmt.Errorf("send status update to slot %s: %w", s.opts.Slot, err)
	}
	s.lastStatus = s.now()
	s.lastConfirmed = lsn
	s.stats.Confirmed.Store(uint64(lsn))
	return nil
}

// handle processes one pgoutput message.
func (s *Stream) handle(ctx context.Context, buf []byte) error {
	if s.inStream {
		return s.handleInStream(buf)
	}
	msg, err := Decode(buf, false)
	if err != nil {
		return err
	}
	switch m := msg.(type) {
	case *BeginMsg:
		if s.inTx {
			return fmt.Errorf("BEGIN of xid %d inside transaction %d", m.Xid, s.cur.Xid)
		}
		s.inTx = true
		s.cur = Tx{Xid: m.Xid, CommitLSN: m.FinalLSN, CommitTime: m.CommitTime}
		s.skip = m.FinalLSN < s.opts.SkipBelow
		s.dropped = false
		if !s.skip {
			tx := s.cur
			return s.emit(ctx, Event{Begin: &tx}, 64)
		}
		return nil
	case *CommitMsg:
		if !s.inTx {
			return fmt.Errorf("COMMIT at %s outside a transaction", m.CommitLSN)
		}
		if m.CommitLSN != s.cur.CommitLSN {
			return fmt.Errorf("COMMIT at %s does not match BEGIN's commit position %s (xid %d)", m.CommitLSN, s.cur.CommitLSN, s.cur.Xid)
		}
		s.inTx = false
		s.stats.Received.Add(1)
		if s.skip {
			return nil
		}
		tx := s.cur
		tx.EndLSN, tx.CommitTime = m.EndLSN, m.CommitTime
		s.stats.Delivered.Add(1)
		if err := s.emit(ctx, Event{Commit: &tx}, 64); err != nil {
			return err
		}
		return s.flush(ctx)
	case *OriginMsg:
		s.cur.Origin = m.Name
		s.dropped = s.dropsOrigin(m.Name)
		return nil
	case *RelationMsg:
		s.rels[m.Rel.OID] = m.Rel
		return nil
	case *TypeMsg:
		// Types are resolved by name from the relation's columns on both servers; the message
		// only announces that a non-built-in type is used.
		return nil
	case *LogicalMsg:
		// Heartbeats and applications' messages carry no row changes. A transactional one is
		// part of its transaction, whose Begin and Commit move the applied position.
		return nil
	case *StreamStartMsg:
		if s.inTx {
			return fmt.Errorf("STREAM START of xid %d inside transaction %d", m.Xid, s.cur.Xid)
		}
		sp := s.streams[m.Xid]
		if sp == nil {
			if !m.FirstSegment {
				return fmt.Errorf("streamed transaction %d continues, but its first segment was never received", m.Xid)
			}
			if sp, err = newSpill(s.spillDir, m.Xid); err != nil {
				return err
			}
			s.streams[m.Xid] = sp
		}
		s.inStream, s.streamXid = true, m.Xid
		return nil
	case *StreamAbortMsg:
		sp := s.streams[m.Xid]
		if sp == nil {
			return nil // aborted before anything of it was streamed to us
		}
		if m.SubXid == m.Xid {
			sp.close()
			delete(s.streams, m.Xid)
			return nil
		}
		sp.aborted[m.SubXid] = true // ROLLBACK TO SAVEPOINT: that subtransaction's changes vanish
		return nil
	case *StreamCommitMsg:
		return s.streamCommit(ctx, m)
	case *InsertMsg, *UpdateMsg, *DeleteMsg, *TruncateMsg:
		if !s.inTx {
			return fmt.Errorf("row change outside a transaction")
		}
		s.stats.Changes.Add(1)
		if s.skip || s.dropped {
			return nil
		}
		ch, err := s.change(msg, relMap(s.rels))
		if err != nil {
			return err
		}
		return s.emit(ctx, Event{Change: ch}, int64(len(buf))+96)
	case *StreamStopMsg:
		return errors.New("STREAM STOP outside a streamed block")
	}
	return fmt.Errorf("%w: %T", ErrUnknownMessage, msg)
}

// handleInStream buffers a message of the open streamed block in its transaction's spill file.
func (s *Stream) handleInStream(buf []byte) error {
	msg, err := Decode(buf, true)
	if err != nil {
		return err
	}
	switch m := msg.(type) {
	case *StreamStopMsg:
		s.inStream = false
		return nil
	case *OriginMsg:
		// Sent in a first segment when the server knows the origin by then (not before the
		// commit on every version: pgshift's cutover does not rely on it for streamed ones).
		if s.dropsOrigin(m.Name) {
			s.streams[s.streamXid].dropped = true
		}
		return nil
	case *RelationMsg, *TypeMsg, *InsertMsg, *UpdateMsg, *DeleteMsg, *TruncateMsg, *LogicalMsg:
		return s.streams[s.streamXid].append(buf)
	}
	return fmt.Errorf("message %T inside the streamed block of xid %d", msg, s.streamXid)
}

// streamCommit replays a committed streamed transaction from its spill file, leaving out the
// changes of aborted subtransactions, with relation messages applying from where they appear.
func (s *Stream) streamCommit(ctx context.Context, m *StreamCommitMsg) error {
	sp := s.streams[m.Xid]
	if sp == nil {
		return fmt.Errorf("STREAM COMMIT of xid %d that was never streamed", m.Xid)
	}
	defer func() { sp.close(); delete(s.streams, m.Xid) }()
	s.stats.Received.Add(1)
	if m.CommitLSN < s.opts.SkipBelow || sp.dropped {
		// Already applied (or applied here by the other direction's applier), but pgoutput counts the relations it described inside the
		// transaction as sent once it has committed, and does not describe them again.
		return s.keepRelations(m.Xid, sp)
	}
	s.replayCommit = m.CommitLSN
	tx := Tx{Xid: m.Xid, CommitLSN: m.CommitLSN, EndLSN: m.EndLSN, CommitTime: m.CommitTime, Streamed: true}
	if err := s.emit(ctx, Event{Begin: &tx}, 64); err != nil {
		return err
	}
	// Relation messages inside the transaction take effect for its own later changes, and for
	// everything after it once it has committed (pgoutput does not resend them).
	local := map[uint32]*Relation{}
	rels := overlay{local: local, base: s.rels}
	err := sp.replay(func(buf []byte) error {
		// The replay reads no message from the server for as long as the transaction takes to
		// decode and apply, which may be far longer than wal_sender_timeout: keep telling the
		// server the client is alive (with the durable position only, as always).
		if err := s.maybeStatus(time.Second); err != nil {
			return err
		}
		msg, err := Decode(buf, true)
		if err != nil {
			return err
		}
		switch mm := msg.(type) {
		case *RelationMsg:
			local[mm.Rel.OID] = mm.Rel
			return nil
		case *TypeMsg, *LogicalMsg:
			return nil
		}
		if sp.aborted[xidOf(msg)] {
			return nil
		}
		s.stats.Changes.Add(1)
		ch, err := s.change(msg, rels)
		if err != nil {
			return err
		}
		return s.emit(ctx, Event{Change: ch}, int64(len(buf))+96)
	})
	if err != nil {
		return fmt.Errorf("streamed transaction %d: %w", m.Xid, err)
	}
	for oid, r := range local {
		s.rels[oid] = r
	}
	end := tx
	s.stats.Delivered.Add(1)
	if err := s.emit(ctx, Event{Commit: &end}, 64); err != nil {
		return err
	}
	return s.flush(ctx)
}

// commitLSN is the commit position of the transaction being decoded or replayed.
func (s *Stream) commitLSN() pgtypes.LSN {
	if s.inTx {
		return s.cur.CommitLSN
	}
	return s.replayCommit
}

// keepRelations takes the relation messages of a committed streamed transaction that is not
// replayed.
func (s *Stream) keepRelations(xid uint32, sp *spill) error {
	err := sp.replay(func(buf []byte) error {
		if len(buf) == 0 || buf[0] != msgRelation {
			return nil
		}
		msg, err := Decode(buf, true)
		if err != nil {
			return err
		}
		if r, ok := msg.(*RelationMsg); ok {
			s.rels[r.Rel.OID] = r.Rel
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("streamed transaction %d: %w", xid, err)
	}
	return nil
}

func xidOf(msg any) uint32 {
	switch m := msg.(type) {
	case *InsertMsg:
		return m.Xid
	case *UpdateMsg:
		return m.Xid
	case *DeleteMsg:
		return m.Xid
	case *TruncateMsg:
		return m.Xid
	}
	return 0
}

type relLookup interface{ get(oid uint32) *Relation }

type overlay struct{ local, base map[uint32]*Relation }

func (o overlay) get(oid uint32) *Relation {
	if r := o.local[oid]; r != nil {
		return r
	}
	return o.base[oid]
}

type relMap map[uint32]*Relation

func (m relMap) get(oid uint32) *Relation { return m[oid] }

// change turns a decoded row message into a Change, checking it against its relation.
func (s *Stream) change(msg any, lookup relLookup) (*Change, error) {
	rel := func(oid uint32) (*Relation, error) {
		r := lookup.get(oid)
		if r == nil {
			return nil, fmt.Errorf("change for relation OID %d, which was never described by a relation message", oid)
		}
		if len(s.tables) > 0 && !s.tables[r.Table] {
			if !s.opts.FollowRenames || !s.migratedOIDs[r.OID] {
				return nil, &NotMigratedError{Table: r.Table, CommitLSN: s.commitLSN()}
			}
			// Renamed or moved on the source: the captured DDL before this change renamed it
			// on the target too.
			s.tables[r.Table] = true
		}
		s.migratedOIDs[r.OID] = true
		return r, nil
	}
	check := func(r *Relation, what string, t []Value) error {
		if t != nil && len(t) != len(r.Columns) {
			return fmt.Errorf("%s of %s has %d columns, its relation message %d", what, r.Table, len(t), len(r.Columns))
		}
		return nil
	}
	if m, ok := msg.(*InsertMsg); ok {
		if r := lookup.get(m.RelID); r != nil && catalog.IsTruncateLog(r.Table) {
			return s.capturedTruncate(r, m.New)
		}
		if r := lookup.get(m.RelID); r != nil && catalog.IsDDLLog(r.Table) {
			ch, err := capturedDDL(r, m.New)
			if err == nil && s.opts.FollowRenames {
				// A published table an ALTER TABLE named (RENAME, SET SCHEMA) may arrive under
				// a new name from now on: it is the same table, whatever its name.
				for _, o := range ch.DDL.Objects {
					if o.Class == "pg_class" && (o.Type == "table" || o.Type == "foreign table") {
						s.migratedOIDs[o.ObjID] = true
					}
				}
			}
			return ch, err
		}
	}
	switch m := msg.(type) {
	case *InsertMsg:
		r, err := rel(m.RelID)
		if err != nil {
			return nil, err
		}
		if err := check(r, "INSERT", m.New); err != nil {
			return nil, err
		}
		return &Change{Kind: Insert, Rel: r, New: m.New}, nil
	case *UpdateMsg:
		r, err := rel(m.RelID)
		if err != nil {
			return nil, err
		}
		if err := check(r, "UPDATE new row", m.New); err != nil {
			return nil, err
		}
		if err := check(r, "UPDATE old row", m.Old); err != nil {
			return nil, err
		}
		return &Change{Kind: Update, Rel: r, OldKind: m.OldKind, Old: m.Old, New: m.New}, nil
	case *DeleteMsg:
		r, err := rel(m.RelID)
		if err != nil {
			return nil, err
		}
		if err := check(r, "DELETE", m.Old); err != nil {
			return nil, err
		}
		return &Change{Kind: Delete, Rel: r, OldKind: m.OldKind, Old: m.Old}, nil
	case *TruncateMsg:
		c := &Change{Kind: Trunc, Cascade: m.Cascade, RestartIdentity: m.RestartIdentity}
		for _, oid := range m.RelIDs {
			r, err := rel(oid)
			if err != nil {
				return nil, err
			}
			c.Truncated = append(c.Truncated, r)
		}
		return c, nil
	}
	return nil, fmt.Errorf("%w: %T where a row change was expected", ErrUnknownMessage, msg)
}

// capturedTruncate turns a row of pgshift's TRUNCATE log (a source whose pgoutput sends no
// TRUNCATE: state.CaptureTruncates) into the TRUNCATE of the table it names, in the place of the
// stream where the TRUNCATE happened. Only the table's name is known, and only its name is
// needed: the applier finds the table on the target by name. A row that does not have the
// log's shape stops the stream.
func (s *Stream) capturedTruncate(r *Relation, row []Value) (*Change, error) {
	var id pgtypes.TableID
	var got int
	for i, c := range r.Columns {
		if i >= len(row) || row[i].Kind != ValueText {
			continue
		}
		switch c.Name {
		case "schema_name":
			id.Schema, got = string(row[i].Data), got+1
		case "table_name":
			id.Name, got = string(row[i].Data), got+1
		}
	}
	if got != 2 || id.Schema == "" || id.Name == "" {
		return nil, fmt.Errorf("%w: a row of %s without the schema and table it names (columns %d, values %d)",
			ErrUnknownMessage, r.Table, len(r.Columns), len(row))
	}
	if len(s.tables) > 0 && !s.tables[id] {
		return nil, &NotMigratedError{Table: id, CommitLSN: s.commitLSN()}
	}
	t := &Relation{Table: id}
	for _, known := range s.rels {
		if known.Table == id {
			t = known
			break
		}
	}
	return &Change{Kind: Trunc, Truncated: []*Relation{t}}, nil
}

// emit adds an event to the pending chunk, handing the chunk over when it is full.
func (s *Stream) emit(ctx context.Context, ev Event, size int64) error {
	if s.pending == nil {
		s.pending = &Chunk{Events: make([]Event, 0, 64)}
	}
	s.pending.Events = append(s.pending.Events, ev)
	s.pending.Bytes += size
	if len(s.pending.Events) >= 2048 || s.pending.Bytes >= 4<<20 {
		return s.flush(ctx)
	}
	return nil
}

// flush hands the pending chunk to the applier, answering the server while it waits. The queue
// calls back only when one wait lasts a whole tick; a reader that waits a little for every one of
// many chunks (a transaction much larger than the queue, with an applier that keeps up) would
// otherwise send nothing for the whole transaction, so the status is also due after each hand-off.
func (s *Stream) flush(ctx context.Context) error {
	if s.pending == nil || len(s.pending.Events) == 0 {
		return nil
	}
	c := s.pending
	s.pending = nil
	tick := min(time.Second, s.opts.StatusInterval)
	if err := s.queue.send(ctx, c, tick, s.opts.StallTimeout, func() error { return s.maybeStatus(time.Second) }); err != nil {
		return err
	}
	return s.maybeStatus(time.Second)
}

// spillDirPrefix starts the name of every spill directory: pgshift-spill-<owner pid>-<random>.
const spillDirPrefix = "pgshift-spill-"

// SweepSpillDirs removes spill directories under dir (the system temp directory when empty) left
// by agents that were killed before they could clean up, and returns how many it removed. Only
// directories whose owning process is no longer alive are touched: several agents may share a
// temp directory. Directories not named by this version's scheme are left alone.
func SweepSpillDirs(dir string) (int, error) {
	if dir == "" {
		dir = os.TempDir()
	}
	matches, err := filepath.Glob(filepath.Join(dir, spillDirPrefix+"*-*"))
	if err != nil {
		return 0, fmt.Errorf("list spill directories in %s: %w", dir, err)
	}
	removed := 0
	var errs []error
	for _, d := range matches {
		pidText, _, ok := strings.Cut(strings.TrimPrefix(filepath.Base(d), spillDirPrefix), "-")
		if !ok {
			continue
		}
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid <= 0 || processAlive(pid) {
			continue
		}
		if fi, err := os.Lstat(d); err != nil || !fi.IsDir() {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("remove stale spill directory %s: %w", d, err))
			continue
		}
		removed++
	}
	return removed, errors.Join(errs...)
}

// processAlive reports whether a process with this PID exists (EPERM: it exists, owned by
// another user).
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// spill is the on-disk buffer of one streamed transaction: length-prefixed raw messages.
// Keeping them on disk bounds memory for transactions of any size.
type spill struct {
	f       *os.File
	w       *bufio.Writer
	aborted map[uint32]bool
	dropped bool // an Origin message named Options.DropOrigin
}

func newSpill(dir string, xid uint32) (*spill, error) {
	f, err := os.CreateTemp(dir, fmt.Sprintf("xid-%d-", xid))
	if err != nil {
		return nil, fmt.Errorf("spill file for streamed transaction %d: %w", xid, err)
	}
	return &spill{f: f, w: bufio.NewWriterSize(f, 1<<20), aborted: map[uint32]bool{}}, nil
}

func (sp *spill) append(buf []byte) error {
	var hdr [4]byte
	binary.BigEndian.PutUint32(hdr[:], uint32(len(buf)))
	if _, err := sp.w.Write(hdr[:]); err != nil {
		return fmt.Errorf("write spill file %s: %w", sp.f.Name(), err)
	}
	if _, err := sp.w.Write(buf); err != nil {
		return fmt.Errorf("write spill file %s: %w", sp.f.Name(), err)
	}
	return nil
}

// replay calls fn for every buffered message in order. Each buffer passed to fn is fresh,
// because decoded changes keep pointing into it after fn returns.
func (sp *spill) replay(fn func([]byte) error) error {
	if err := sp.w.Flush(); err != nil {
		return fmt.Errorf("write spill file %s: %w", sp.f.Name(), err)
	}
	if _, err := sp.f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("read spill file %s: %w", sp.f.Name(), err)
	}
	r := bufio.NewReaderSize(sp.f, 1<<20)
	var hdr [4]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("read spill file %s: %w", sp.f.Name(), err)
		}
		buf := make([]byte, binary.BigEndian.Uint32(hdr[:]))
		if _, err := io.ReadFull(r, buf); err != nil {
			return fmt.Errorf("read spill file %s: %w", sp.f.Name(), err)
		}
		if err := fn(buf); err != nil {
			return err
		}
	}
}

func (sp *spill) close() {
	name := sp.f.Name()
	sp.f.Close()
	os.Remove(name)
}
