package cdc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/semaphore"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// Tx describes one source transaction. CommitLSN is known from its first event; EndLSN (the
// position to store and confirm) only from its commit event.
type Tx struct {
	Xid        uint32
	CommitLSN  pgtypes.LSN
	EndLSN     pgtypes.LSN
	CommitTime time.Time
	Origin     string
	Streamed   bool // arrived in protocol-v2 streamed blocks before it committed
}

// ChangeKind is what a change does.
type ChangeKind byte

const (
	Insert ChangeKind = 'I'
	Update ChangeKind = 'U'
	Delete ChangeKind = 'D'
	Trunc  ChangeKind = 'T'
	// Schema is a schema change captured on the source (ddl: follow): a row of pgshift's
	// DDL log, at the place of the stream where the change happened.
	Schema ChangeKind = 'S'
)

func (k ChangeKind) String() string {
	switch k {
	case Insert:
		return "INSERT"
	case Update:
		return "UPDATE"
	case Delete:
		return "DELETE"
	case Trunc:
		return "TRUNCATE"
	case Schema:
		return "DDL"
	}
	return fmt.Sprintf("change(%q)", byte(k))
}

// Change is one row change (or one TRUNCATE) of a source transaction.
type Change struct {
	Kind    ChangeKind
	Rel     *Relation // the relation as described when the change was encoded (Insert/Update/Delete)
	OldKind byte      // 'K', 'O' or 0; see Update
	Old     []Value
	New     []Value

	Truncated       []*Relation
	Cascade         bool
	RestartIdentity bool

	DDL *DDL // Schema
}

// DDL is one firing of pgshift's event trigger on the source (state.CaptureDDL): one command of
// a query string, with what the session ran it under.
type DDL struct {
	ID int64 // the log row's id
	// First is the first command of its query string in its transaction: the applier replays
	// the whole string there, and the other commands' rows only name their objects.
	First   bool
	Command string // current_query(): the query string as the client sent it
	Tag     string // the command's tag ("ALTER TABLE")
	// SearchPath, Role (SET ROLE's, or the session user) and the settings values are read with.
	SearchPath, Role, SessionRole      string
	TimeZone, DateStyle, IntervalStyle string
	Objects                            []DDLObject
}

// DDLObject is one object pg_event_trigger_ddl_commands() reported for the command.
type DDLObject struct {
	Class    string `json:"class"` // the catalog, e.g. "pg_class"
	ObjID    uint32 `json:"objid"` // the object's OID on the source
	Type     string `json:"type"`  // "table", "index", "table column", ...
	Schema   string `json:"schema"`
	Identity string `json:"identity"`
	Tag      string `json:"tag"`
	// Publish is what the capture did with a table a CREATE TABLE created (state.CaptureDDL:
	// "added" to the publication, "root", "excluded", ...); empty for every other object.
	Publish string `json:"publish,omitempty"`
	// Partition is "attached" or "detached" for a partition an ALTER TABLE ... ATTACH or DETACH
	// PARTITION moved (reported by the capture, not by PostgreSQL, which names the parent only);
	// Publish then says what became of its rows.
	Partition string `json:"partition,omitempty"`
}

// Event is one step of the ordered stream: exactly one of Begin, Change and Commit is set.
// Every transaction delivered is Begin, zero or more Changes, Commit, never interleaved.
type Event struct {
	Begin  *Tx
	Change *Change
	Commit *Tx
}

// Chunk is a run of events handed from the stream to the applier in one queue operation.
type Chunk struct {
	Events []Event
	Bytes  int64 // approximate memory held, for the queue's byte budget
}

// Queue is the bounded hand-off between the stream reader and the applier: at most MaxChunks
// chunks and about MaxBytes bytes are in flight. The applier calls Release when it is done with
// a chunk; until then the reader waits (and keeps answering the server).
type Queue struct {
	ch       chan *Chunk
	budget   *semaphore.Weighted
	maxBytes int64
}

// NewQueue makes a queue bounded by count and bytes.
func NewQueue(maxChunks int, maxBytes int64) *Queue {
	return &Queue{ch: make(chan *Chunk, maxChunks), budget: semaphore.NewWeighted(maxBytes), maxBytes: maxBytes}
}

// C is the applier's side.
func (q *Queue) C() <-chan *Chunk { return q.ch }

// Release returns a chunk's bytes to the budget.
func (q *Queue) Release(c *Chunk) { q.budget.Release(q.weight(c)) }

func (q *Queue) weight(c *Chunk) int64 { return min(max(c.Bytes, 1), q.maxBytes) }

// errStall is returned when the applier takes no chunk for longer than the stall deadline.
var errStall = errors.New("applier made no progress")

// send hands c to the applier. While it waits it calls tick every interval so the reader can
// keep answering the server; it gives up after stall without progress.
func (q *Queue) send(ctx context.Context, c *Chunk, interval, stall time.Duration, tick func() error) error {
	w := q.weight(c)
	// The fast path, taken on a busy stream for nearly every chunk: budget and room at once,
	// without the timers the waits below need.
	if q.budget.TryAcquire(w) {
		select {
		case q.ch <- c:
			return nil
		default:
		}
		q.budget.Release(w)
	}
	deadline := time.Now().Add(stall)
	for {
		actx, cancel := context.WithTimeout(ctx, interval)
		err := q.budget.Acquire(actx, w)
		cancel()
		if err == nil {
			break
		}
		if err := q.check(ctx, deadline, tick); err != nil {
			return err
		}
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case q.ch <- c:
			return nil
		case <-ctx.Done():
			q.budget.Release(w)
			return ctx.Err()
		case <-t.C:
			if err := q.check(ctx, deadline, tick); err != nil {
				q.budget.Release(w)
				return err
			}
		}
	}
}

func (q *Queue) check(ctx context.Context, deadline time.Time, tick func() error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if time.Now().After(deadline) {
		return fmt.Errorf("%w for the stall deadline; the target is too slow or blocked (check locks on the target)", errStall)
	}
	return tick()
}
