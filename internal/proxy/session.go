package proxy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshift/pgshift/internal/proxy/route"
)

// stmt is a prepared statement as the client created it (the unnamed one has name "").
type stmt struct {
	name  string
	query string
	// parse is the client's Parse message, in the client's OID space.
	parse     []byte
	paramOIDs []uint32
	// paramTypes and rowTypes are the parameter and result column types the server described
	// (in the client's OID space).
	paramTypes []uint32
	rowTypes   []uint32
	// maybeCopy: the text may be a COPY (checked cheaply at Parse; classified on Execute).
	maybeCopy bool
	class     *route.Statement // nil until classified
}

// expectation is a response the server owes for a message the proxy sent, in order.
type expKind uint8

const (
	expParse expKind = iota
	expClose
	expSync
	// expCondSync is a Sync sent while a COPY FROM STDIN may be in progress: the server ignores
	// Sync in copy-in mode, so it yields a ReadyForQuery only if the COPY failed before starting.
	expCondSync
	// expDescribe is a Describe of a statement: its ParameterDescription tells the parameter
	// types, its RowDescription (or NoData) the result types.
	expDescribe
	// expExecute is an Execute on a connection whose OIDs are mapped; plan lists the binary
	// result columns whose values carry OIDs (from the statement's description and the Bind's
	// result formats), for results that come without a RowDescription.
	expExecute
)

type expectation struct {
	kind expKind
	hide bool  // a response to a message the proxy injected: not for the client
	st   *stmt // for expDescribe
	// gotParams: the ParameterDescription of an expDescribe has arrived.
	gotParams bool
	plan      []uint32 // for expExecute
}

// serverConn is one server connection of a session. Fields below mu are guarded by the
// session's mu.
type serverConn struct {
	role        Role
	conn        net.Conn
	rd          *msgReader
	dialed      dialTarget
	pid         uint32
	secret      []byte
	params      map[string]string
	readOnly    bool
	mapped      bool          // its OIDs differ from the client's: map them
	readEP      *readEndpoint // the read endpoint a split-mode read connection goes to
	connectedAt time.Time

	// guarded by session.mu
	txStatus     byte
	pending      int // Syncs and Queries sent whose ReadyForQuery has not arrived
	expect       []expectation
	prepared     map[string]*stmt // which version of each statement this server holds
	wrote        bool             // a unit that may write ran since the last idle ReadyForQuery
	copyIn       bool             // the server is in COPY FROM STDIN mode
	stateVersion uint64           // the session state version replayed here
	out          []byte           // messages to write, in order

	// rowPlan (owned by the reader) lists the binary columns of the current result whose values
	// carry OIDs to map.
	rowPlan []uint32

	detaching  atomic.Bool
	readerDone chan struct{}
	closed     atomic.Bool
}

func (sc *serverConn) close() {
	if sc.closed.Swap(true) {
		return
	}
	_ = sc.conn.SetWriteDeadline(time.Now().Add(time.Second))
	_, _ = sc.conn.Write([]byte{'X', 0, 0, 0, 4})
	_ = sc.conn.Close()
}

// session is one client connection and its server connections.
type session struct {
	p          *Proxy
	id         uint64
	client     net.Conn
	cr         *msgReader
	wmu        sync.Mutex // serialises writes to the client
	user       string
	database   string
	appName    string
	addr       netip.Addr
	params     map[string]string // the client's startup parameters (user and database excluded)
	creds      credentials
	key        uint32 // the process id the client was given; the secret is keySecret
	keySecret  []byte
	tls        bool
	started    time.Time
	routes     atomic.Pointer[route.SessionRoutes]
	requests   atomic.Uint64
	lastActive atomic.Int64 // unix nanoseconds of the last request or answer

	mu   sync.Mutex
	cond *sync.Cond
	// conns by role; primary is the one holding the session's writes and state.
	conns   [2]*serverConn
	primary Role
	origin  Role // the server whose OIDs the client learned first
	// unit is the server the current request unit (up to its Sync) goes to; nil at a boundary.
	unit *serverConn
	// starting is set while a new unit is being dispatched (a connection may be opening), so a
	// pause does not count the session as held.
	starting     bool
	copyPending  bool // an Execute of COPY FROM STDIN was sent; Syncs are conditional until CopyDone
	stmts        map[string]*stmt
	portals      map[string]*stmt
	portalPlans  map[string][]uint32 // result rewrite plans of portals bound on mapped connections
	clientParams map[string]string   // ParameterStatus values the client has been told
	stateVersion uint64              // bumped by statements that change session state
	tempObjects  bool                // the session created temporary objects: it stays on the source
	lastWrite    time.Time           // when a unit that may write last finished on the source
	readEP       *readEndpoint       // where this session's split-mode reads go (replicas.go)
	closing      bool
	closeErr     error
}

func (s *session) setRoutes(r *route.SessionRoutes) { s.routes.Store(r) }

func (s *session) routeSession() route.Session {
	return route.Session{User: s.user, Database: s.database, ApplicationName: s.appName, ClientAddr: s.addr, Params: s.params}
}

// idleLocked reports whether the session is at a safe point: no request outstanding, no
// transaction open, no COPY, nothing between Parse and Sync.
func (s *session) idleLocked() bool {
	if s.starting || s.unit != nil || s.copyPending {
		return false
	}
	for _, c := range s.conns {
		if c != nil && (c.pending > 0 || c.txStatus != 'I' || c.copyIn) {
			return false
		}
	}
	return true
}

// state names what the session does, for SHOW CLIENTS.
func (s *session) stateLocked() string {
	switch {
	case s.idleLocked() && s.p.paused.Load():
		return "paused"
	case s.idleLocked():
		return "idle"
	}
	for _, c := range s.conns {
		if c != nil && c.txStatus != 'I' && c.pending == 0 {
			return "idle in transaction"
		}
	}
	return "active"
}

func (s *session) writeClient(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err := s.client.Write(b)
	return err
}

// fail sends the client a FATAL error and closes the session.
func (s *session) fail(code, msg string) {
	s.mu.Lock()
	already := s.closing
	s.closing = true
	s.mu.Unlock()
	if !already {
		_ = s.client.SetWriteDeadline(time.Now().Add(time.Second))
		_ = s.writeClient(encode(nil, errorMsg("FATAL", code, msg)))
	}
	_ = s.client.Close()
}

// run relays until the client leaves or a connection fails.
func (s *session) run(ctx context.Context) {
	defer s.closeAll()
	err := s.clientLoop(ctx)
	switch {
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
	case errors.Is(err, errProtocol):
		s.p.log.Warn("client sent bytes that are not the PostgreSQL protocol; closing it", "client", s.id, "addr", s.addr.String(), "err", err)
		s.fail("08P01", "pgshift: protocol violation: "+err.Error())
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.fail("57P05", "pgshift: terminating connection due to idle timeout")
	default:
		s.p.log.Debug("client session ended", "client", s.id, "err", err)
	}
}

func (s *session) closeAll() {
	s.mu.Lock()
	s.closing = true
	conns := s.conns
	s.mu.Unlock()
	for _, c := range conns {
		if c != nil {
			c.close()
			s.p.metrics.serverSessions.WithLabelValues(c.role.String()).Dec()
		}
	}
	_ = s.client.Close()
}

// clientLoop reads the client's messages and dispatches them unit by unit. A unit is a Query,
// a FunctionCall, or the extended-protocol messages up to a Sync; a Flush sends what the unit
// has so far. COPY data goes to the server that asked for it.
func (s *session) clientLoop(ctx context.Context) error {
	var seg []byte // messages of the current unit not yet dispatched
	idle := s.p.cfg.ClientIdleTimeout
	for {
		if !s.cr.complete() {
			if len(seg) > 0 {
				if err := s.dispatch(ctx, seg, false); err != nil {
					return err
				}
				seg = seg[:0]
			}
			if err := s.flushServers(); err != nil {
				return err
			}
			if idle > 0 {
				_ = s.client.SetReadDeadline(time.Now().Add(idle))
			}
		}
		msg, err := s.cr.next()
		if err != nil {
			if idle > 0 && errors.Is(err, os.ErrDeadlineExceeded) {
				// The deadline counts idleness, not time spent waiting for a server's answer
				// or inside a transaction: only an idle session is closed.
				s.mu.Lock()
				idleNow := s.idleLocked()
				s.mu.Unlock()
				if !idleNow || time.Since(time.Unix(0, s.lastActive.Load())) < idle {
					_ = s.client.SetReadDeadline(time.Now().Add(idle))
					continue
				}
			}
			return err
		}
		s.lastActive.Store(time.Now().UnixNano())
		switch msg[0] {
		case 'X':
			return nil
		case 'Q', 'F', 'S':
			seg = append(seg, msg...)
			if err := s.dispatch(ctx, seg, true); err != nil {
				return err
			}
			seg = seg[:0]
		case 'H':
			seg = append(seg, msg...)
			if err := s.dispatch(ctx, seg, false); err != nil {
				return err
			}
			seg = seg[:0]
			if err := s.flushServers(); err != nil {
				return err
			}
		case 'd', 'c', 'f':
			if len(seg) > 0 {
				if err := s.dispatch(ctx, seg, false); err != nil {
					return err
				}
				seg = seg[:0]
			}
			if err := s.copyData(msg); err != nil {
				return err
			}
		default: // P B D E C: extended protocol
			seg = append(seg, msg...)
			if len(seg) > 1<<20 {
				if err := s.dispatch(ctx, seg, false); err != nil {
					return err
				}
				seg = seg[:0]
			}
		}
	}
}

// copyData forwards COPY messages to the server of the current unit (or, for CopyDone/CopyFail
// sent by a confused client with no COPY running, to the primary, which will complain).
func (s *session) copyData(msg []byte) error {
	s.mu.Lock()
	sc := s.unit
	if sc == nil {
		sc = s.busyConnLocked()
	}
	if sc == nil {
		// No COPY is running anywhere: the server would ignore the message, so may we.
		s.mu.Unlock()
		return nil
	}
	if msg[0] != 'd' {
		s.copyPending = false
	}
	sc.out = append(sc.out, msg...)
	big := len(sc.out) > ioBufSize
	s.mu.Unlock()
	if big {
		return s.flushServers()
	}
	return nil
}

// busyConnLocked returns the connection with a request outstanding or a transaction open.
func (s *session) busyConnLocked() *serverConn {
	for _, c := range s.conns {
		if c != nil && (c.pending > 0 || c.txStatus != 'I' || c.copyIn) {
			return c
		}
	}
	return nil
}

// flushServers writes what is queued for each server.
func (s *session) flushServers() error {
	for i := range s.conns {
		s.mu.Lock()
		sc := s.conns[i]
		if sc == nil || len(sc.out) == 0 {
			s.mu.Unlock()
			continue
		}
		out := sc.out
		sc.out = nil
		s.mu.Unlock()
		if _, err := sc.conn.Write(out); err != nil {
			return s.serverLost(sc, err)
		}
		s.mu.Lock()
		if sc.out == nil {
			sc.out = out[:0] // reuse the buffer
		}
		s.mu.Unlock()
	}
	return nil
}

// dispatch sends seg, part of the current unit (complete when end is set), to its server.
func (s *session) dispatch(ctx context.Context, seg []byte, end bool) error {
	start := time.Now()
	s.mu.Lock()
	sc := s.unit
	if sc == nil {
		if busy := s.busyConnLocked(); busy != nil {
			// Pipelined behind a running request or inside a transaction: same server.
			sc = busy
		} else {
			s.mu.Unlock()
			var err error
			var write bool
			if sc, write, err = s.startUnit(ctx, seg); err != nil {
				return err
			}
			s.mu.Lock()
			if write {
				sc.wrote = true
			}
		}
	}
	if err := s.appendSegLocked(sc, seg, end); err != nil {
		s.mu.Unlock()
		return err
	}
	if sc.role == Target && !sc.readOnly {
		s.p.targetUnits.Add(1)
	}
	if end {
		s.unit = nil
	} else {
		s.unit = sc
	}
	s.starting = false
	s.mu.Unlock()
	s.requests.Add(1)
	s.p.metrics.relay.Observe(time.Since(start).Seconds())
	return nil
}

// startUnit waits while the proxy is paused, picks the server for a new unit and makes sure the
// session has a connection to it. It returns with s.starting set.
func (s *session) startUnit(ctx context.Context, seg []byte) (*serverConn, bool, error) {
	s.mu.Lock()
	for s.p.paused.Load() && s.idleLocked() && !s.closing {
		s.cond.Wait()
	}
	if s.closing {
		s.mu.Unlock()
		return nil, false, net.ErrClosed
	}
	s.starting = true
	s.mu.Unlock()
	if err := s.flushServers(); err != nil {
		return nil, false, err
	}
	role, read, write := s.decide(seg)
	sc, err := s.connFor(ctx, role, read)
	if err != nil && read {
		// A read that cannot reach the target runs on the primary instead.
		s.p.log.Debug("target unavailable for a read; using the source", "client", s.id, "err", err)
		s.p.metrics.statements.WithLabelValues("source", "target-unavailable").Inc()
		sc, err = s.connFor(ctx, s.primaryRole(), false)
	}
	if err != nil {
		s.mu.Lock()
		s.starting = false
		s.mu.Unlock()
		var se *serverError
		if errors.As(err, &se) {
			_ = s.writeClient(encode(nil, se.resp))
			return nil, false, net.ErrClosed
		}
		s.fail("08006", fmt.Sprintf("pgshift: cannot reach the %s server: %v", role, err))
		return nil, false, net.ErrClosed
	}
	return sc, write, nil
}

func (s *session) primaryRole() Role {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.primary
}

// connFor returns the session's connection to role, opening it if needed. A read connection to
// the target in split mode is read-only and gets the session's state replayed first.
func (s *session) connFor(ctx context.Context, role Role, read bool) (*serverConn, error) {
	s.mu.Lock()
	sc := s.conns[role]
	version := s.stateVersion
	moved := read && sc != nil && sc.readOnly && sc.readEP != s.readEP
	s.mu.Unlock()
	if moved {
		// Its endpoint stopped being usable and the session was given another.
		s.dropConn(sc)
		sc = nil
	}
	if sc != nil && (!read || sc.stateVersion == version) {
		return sc, nil
	}
	if sc == nil {
		var err error
		if sc, err = s.open(ctx, role, read); err != nil {
			return nil, err
		}
		if err := s.tellParams(sc); err != nil {
			return nil, err
		}
	}
	if read {
		if err := s.syncState(ctx, sc, version); err != nil {
			s.dropConn(sc)
			return nil, err
		}
	}
	return sc, nil
}

// dropConn closes an idle server connection of the session and forgets it.
func (s *session) dropConn(sc *serverConn) {
	s.mu.Lock()
	if s.conns[sc.role] == sc {
		s.conns[sc.role] = nil
	}
	s.mu.Unlock()
	s.detach(sc)
	sc.close()
	s.p.metrics.serverSessions.WithLabelValues(sc.role.String()).Dec()
}

// open logs into role's server for this session, registers the connection and starts its reader.
func (s *session) open(ctx context.Context, role Role, readOnly bool) (*serverConn, error) {
	sc, err := s.login(ctx, role, readOnly)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	sc.mapped = role != s.origin
	if s.closing {
		s.mu.Unlock()
		sc.close()
		s.p.releaseServer(role)
		return nil, net.ErrClosed
	}
	s.conns[role] = sc
	s.mu.Unlock()
	s.p.metrics.serverSessions.WithLabelValues(role.String()).Inc()
	s.startReader(sc)
	return sc, nil
}

// login opens a server connection for this session with the client's startup parameters,
// taking a server slot (released when the connection is dropped).
func (s *session) login(ctx context.Context, role Role, readOnly bool) (*serverConn, error) {
	if err := s.p.acquireServer(ctx, role); err != nil {
		return nil, err
	}
	params := make(map[string]string, len(s.params)+3)
	for k, v := range s.params {
		params[k] = v
	}
	ep := s.p.endpoint(role)
	var re *readEndpoint
	if readOnly && role == Target {
		s.mu.Lock()
		re = s.readEP
		s.mu.Unlock()
		if re != nil {
			ep = re.ep
		}
	}
	params["user"] = s.user
	params["database"] = ep.database
	if readOnly {
		params["default_transaction_read_only"] = "on"
	}
	sc, err := ep.login(ctx, s.creds, params)
	if err != nil {
		s.p.releaseServer(role)
		return nil, err
	}
	sc.readOnly, sc.readEP = readOnly, re
	return sc, nil
}

// tellParams sends the client the server's parameter values it has not been told (a new
// connection, after a switch or on the second server, may report others).
func (s *session) tellParams(sc *serverConn) error {
	s.mu.Lock()
	diff := s.paramDiffLocked(sc.params)
	s.mu.Unlock()
	if len(diff) == 0 {
		return nil
	}
	return s.writeClient(diff)
}

// paramDiffLocked returns ParameterStatus messages for the server's values the client has not
// been told, and records them as told.
func (s *session) paramDiffLocked(params map[string]string) []byte {
	var out []byte
	for k, v := range params {
		if s.clientParams[k] != v {
			s.clientParams[k] = v
			out = encode(out, &pgproto3.ParameterStatus{Name: k, Value: v})
		}
	}
	return out
}

func (s *session) startReader(sc *serverConn) {
	sc.readerDone = make(chan struct{})
	sc.detaching.Store(false)
	go s.serverLoop(sc)
}

// detach stops sc's reader at a message boundary so the proxy can talk to the server itself.
// The session must be idle on sc.
func (s *session) detach(sc *serverConn) {
	if sc.readerDone == nil {
		return
	}
	sc.detaching.Store(true)
	_ = sc.conn.SetReadDeadline(time.Now())
	<-sc.readerDone
	_ = sc.conn.SetReadDeadline(time.Time{})
	sc.readerDone = nil
}

// appendSegLocked queues seg for sc, injecting a Parse for every statement the client uses that
// sc does not hold (after a switch, or on the second server in split mode), and records what
// responses the server owes.
func (s *session) appendSegLocked(sc *serverConn, seg []byte, end bool) error {
	for len(seg) > 0 {
		n := int(binary.BigEndian.Uint32(seg[1:5])) + 1
		msg := seg[:n]
		seg = seg[n:]
		switch msg[0] {
		case 'Q':
			sc.pending++
			sc.expect = append(sc.expect, expectation{kind: expSync})
			if q, _, ok := cstringBytes(body(msg)); ok && mayChangeStatements(q) {
				s.noteSimpleQuery(q)
			}
		case 'F':
			sc.pending++
			sc.expect = append(sc.expect, expectation{kind: expSync})
		case 'S':
			sc.pending++
			kind := expSync
			if s.copyPending {
				kind = expCondSync
			}
			sc.expect = append(sc.expect, expectation{kind: kind})
		case 'P':
			st, err := parseParse(msg)
			if err != nil {
				return err
			}
			if old := sc.prepared[st.name]; old != nil && old != s.stmts[st.name] && st.name != "" {
				// The server holds an older statement of this name the client has since
				// replaced (on the other server): close it quietly first.
				sc.out = appendClose(sc.out, 'S', st.name)
				sc.expect = append(sc.expect, expectation{kind: expClose, hide: true})
			}
			s.stmts[st.name] = st
			sc.prepared[st.name] = st
			sc.expect = append(sc.expect, expectation{kind: expParse})
			if sc.mapped {
				msg = s.p.oids.mapParse(msg, st, s.origin)
			}
		case 'B':
			portalB, rest, ok := cstringBytes(body(msg))
			var nameB []byte
			if ok {
				nameB, _, ok = cstringBytes(rest)
			}
			if !ok {
				return fmt.Errorf("%w: malformed Bind", errProtocol)
			}
			st := s.stmts[string(nameB)]
			if st != nil && sc.prepared[string(nameB)] != st {
				if err := s.ensurePreparedLocked(sc, st.name); err != nil {
					return err
				}
			}
			portal := ""
			if sc.mapped || st != nil && st.maybeCopy || len(s.portals) > 0 {
				portal = string(portalB)
				if st != nil && st.maybeCopy {
					s.portals[portal] = st
				} else {
					delete(s.portals, portal)
				}
			}
			if sc.mapped {
				msg = s.p.oids.mapBind(msg, st, s.origin)
				s.portalPlans[portal] = s.p.oids.resultPlan(st, bindResultFormats(msg), s.origin)
			}
		case 'D':
			if len(msg) > 6 && msg[5] == 'S' {
				name, _, _ := cstring(msg[6:])
				if err := s.ensurePreparedLocked(sc, name); err != nil {
					return err
				}
				sc.expect = append(sc.expect, expectation{kind: expDescribe, st: s.stmts[name]})
			}
		case 'E':
			portalB, _, _ := cstringBytes(body(msg))
			if sc.mapped {
				sc.expect = append(sc.expect, expectation{kind: expExecute, plan: s.portalPlans[string(portalB)]})
			}
			if st := s.portals[string(portalB)]; st != nil {
				if st.class == nil {
					st.class = s.p.classifier().Classify(st.query)
				}
				if st.class.CopyFromStdin {
					s.copyPending = true
				}
			}
		case 'C':
			if len(msg) > 6 && msg[5] == 'S' {
				name, _, _ := cstring(msg[6:])
				delete(s.stmts, name)
				delete(sc.prepared, name)
			}
			sc.expect = append(sc.expect, expectation{kind: expClose})
		}
		sc.out = append(sc.out, msg...)
	}
	return nil
}

// ensurePreparedLocked injects a Parse of the client's statement name on sc when sc lacks it;
// its ParseComplete is hidden from the client.
func (s *session) ensurePreparedLocked(sc *serverConn, name string) error {
	st := s.stmts[name]
	if st == nil || sc.prepared[name] == st {
		return nil // unknown to the proxy too: the server will say so
	}
	if old := sc.prepared[name]; old != nil && name != "" {
		sc.out = appendClose(sc.out, 'S', name)
		sc.expect = append(sc.expect, expectation{kind: expClose, hide: true})
	}
	msg := st.parse
	if sc.mapped {
		msg = s.p.oids.mapParse(msg, st, s.origin)
	}
	sc.out = append(sc.out, msg...)
	sc.expect = append(sc.expect, expectation{kind: expParse, hide: true})
	sc.prepared[name] = st
	return nil
}

// noteSimpleQuery keeps the statement registry right when a simple query deallocates
// prepared statements by SQL (DEALLOCATE, DISCARD ALL).
func (s *session) noteSimpleQuery(q []byte) {
	c := s.p.classifier().ClassifyBytes(q)
	if c.DeallocateAll {
		for _, sc := range s.conns {
			if sc != nil {
				clear(sc.prepared)
			}
		}
		clear(s.stmts)
	}
	for _, name := range c.Deallocate {
		delete(s.stmts, name)
		for _, sc := range s.conns {
			if sc != nil {
				delete(sc.prepared, name)
			}
		}
	}
}

func appendClose(out []byte, kind byte, name string) []byte {
	return encode(out, &pgproto3.Close{ObjectType: kind, Name: name})
}

// parseParse decodes a Parse message into a statement, keeping the message.
func parseParse(msg []byte) (*stmt, error) {
	name, rest, ok := cstring(body(msg))
	if !ok {
		return nil, fmt.Errorf("%w: malformed Parse", errProtocol)
	}
	q, rest, ok := cstring(rest)
	if !ok || len(rest) < 2 {
		return nil, fmt.Errorf("%w: malformed Parse", errProtocol)
	}
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) < 4*n {
		return nil, fmt.Errorf("%w: malformed Parse", errProtocol)
	}
	oids := make([]uint32, n)
	for i := range oids {
		oids[i] = binary.BigEndian.Uint32(rest[4*i:])
	}
	return &stmt{name: name, query: q, parse: append([]byte(nil), msg...), paramOIDs: oids, maybeCopy: mayCopy(q)}, nil
}

// bindNames returns a Bind's portal and statement names.
func bindNames(msg []byte) (portal, name string, ok bool) {
	portal, rest, ok := cstring(body(msg))
	if !ok {
		return "", "", false
	}
	name, _, ok = cstring(rest)
	return portal, name, ok
}

// mayChangeStatements is a cheap test for simple queries that can deallocate prepared statements.
func mayChangeStatements(q []byte) bool {
	return containsFold(q, "deallocate") || containsFold(q, "discard")
}

// mayCopy is a cheap test for statements that can be COPY.
func mayCopy(q string) bool { return containsFold([]byte(q), "copy") }

func containsFold(b []byte, word string) bool {
	n := len(word)
outer:
	for i := 0; i+n <= len(b); i++ {
		for j := 0; j < n; j++ {
			c := b[i+j]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			if c != word[j] {
				continue outer
			}
		}
		return true
	}
	return false
}

// serverLoop relays one server connection's messages to the client until the connection ends
// or the proxy detaches it.
func (s *session) serverLoop(sc *serverConn) {
	defer close(sc.readerDone)
	var out []byte
	var batchStart time.Time // when the first message of the unwritten batch arrived
	flush := func() error {
		if len(out) == 0 {
			return nil
		}
		err := s.writeClient(out)
		out = out[:0]
		s.p.metrics.relay.Observe(time.Since(batchStart).Seconds())
		return err
	}
	for {
		if !sc.rd.complete() {
			if err := flush(); err != nil {
				_ = s.client.Close()
				return
			}
		}
		msg, err := sc.rd.next()
		if err != nil {
			if sc.detaching.Load() && errors.Is(err, os.ErrDeadlineExceeded) {
				return
			}
			if sc.closed.Load() {
				_ = flush()
				return // retired by a switch or the session's end
			}
			_ = flush()
			_ = s.serverLost(sc, err)
			return
		}
		if len(out) == 0 {
			batchStart = time.Now()
		}
		switch msg[0] {
		case 'Z':
			s.lastActive.Store(time.Now().UnixNano()) // idleness counts from the answer
			s.mu.Lock()
			s.popSyncLocked(sc)
			sc.txStatus = msg[5]
			if sc.txStatus == 'I' && sc.wrote && sc.pending == 0 {
				sc.wrote = false
				s.lastWrite = time.Now()
			}
			if s.p.paused.Load() && s.idleLocked() {
				s.p.notifyIdle()
			}
			s.mu.Unlock()
		case '1', '3':
			s.mu.Lock()
			hide := s.popResponseLocked(sc, msg[0])
			s.mu.Unlock()
			if hide {
				continue
			}
		case 'E':
			s.mu.Lock()
			idleRead := sc.readOnly && sc.pending == 0 && sc.txStatus == 'I'
			current := s.conns[sc.role] == sc
			if !idleRead {
				s.errorLocked(sc)
			}
			s.mu.Unlock()
			if idleRead && !current {
				return // retired already (a switch, or another endpoint)
			}
			if idleRead {
				// The server ends an idle read connection of split mode (FATAL at its
				// shutdown, or a terminated backend): dropped quietly, as when it closes
				// without a word; the client was not asking it anything.
				_ = flush()
				_ = s.serverLost(sc, errors.New("the server ended the connection"))
				return
			}
		case 'G':
			s.mu.Lock()
			sc.copyIn = true
			s.mu.Unlock()
		case 'C':
			if sc.copyIn { // written by this goroutine only, so the unlocked read is safe
				s.mu.Lock()
				s.copyEndedLocked(sc)
				s.mu.Unlock()
			}
		case 'S':
			name, rest, _ := cstring(body(msg))
			val, _, _ := cstring(rest)
			s.mu.Lock()
			sc.params[name] = val
			told := s.clientParams[name] == val
			s.clientParams[name] = val
			s.mu.Unlock()
			if told {
				continue
			}
		case 'T', 'n':
			if sc.mapped && msg[0] == 'T' {
				msg, sc.rowPlan = s.p.oids.mapRowDescription(msg, s.origin)
			}
			s.mu.Lock()
			if e := s.frontLocked(sc, expDescribe); e != nil && e.gotParams {
				// The result description of a Describe of a statement.
				if e.st != nil {
					e.st.rowTypes = rowTypesOf(msg)
				}
				s.removeLocked(sc, e)
				sc.rowPlan = nil
			}
			s.mu.Unlock()
		case 'D':
			if sc.rowPlan == nil && sc.mapped {
				s.mu.Lock()
				if e := s.frontLocked(sc, expExecute); e != nil {
					sc.rowPlan = e.plan
				}
				s.mu.Unlock()
			}
			if sc.rowPlan != nil {
				msg = s.p.oids.mapDataRow(msg, sc.rowPlan, s.origin)
			}
		case 't':
			if sc.mapped {
				msg = s.p.oids.mapParamDescription(msg, s.origin)
			}
			s.mu.Lock()
			s.describedLocked(sc, paramTypesOf(msg))
			s.mu.Unlock()
		}
		switch msg[0] {
		case 'C', 'I', 's':
			if sc.mapped {
				s.mu.Lock()
				if e := s.frontLocked(sc, expExecute); e != nil {
					s.removeLocked(sc, e)
				}
				s.mu.Unlock()
			}
			sc.rowPlan = nil
		case 'Z', 'E':
			sc.rowPlan = nil
		}
		out = append(out, msg...)
		if msg[0] == 'Z' || len(out) > ioBufSize {
			if err := flush(); err != nil {
				_ = s.client.Close()
				return
			}
		}
	}
}

// popSyncLocked consumes the expectation a ReadyForQuery answers.
func (s *session) popSyncLocked(sc *serverConn) {
	i := 0
	for i < len(sc.expect) {
		k := sc.expect[i].kind
		i++
		if k == expSync || k == expCondSync {
			break
		}
	}
	// Shift in place: the queue is a few entries long, and keeping its array avoids an
	// allocation per request.
	n := copy(sc.expect, sc.expect[i:])
	sc.expect = sc.expect[:n]
	if sc.pending > 0 {
		sc.pending--
	}
}

// describedLocked records the parameter types the server described for a statement.
func (s *session) describedLocked(sc *serverConn, types []uint32) {
	if e := s.frontLocked(sc, expDescribe); e != nil && !e.gotParams {
		e.gotParams = true
		if e.st != nil {
			e.st.paramTypes = types
		}
	}
}

// frontLocked returns the first expectation of kind before the next Sync.
func (s *session) frontLocked(sc *serverConn, kind expKind) *expectation {
	for i := range sc.expect {
		e := &sc.expect[i]
		if e.kind == kind {
			return e
		}
		if e.kind == expSync || e.kind == expCondSync {
			return nil
		}
	}
	return nil
}

// removeLocked removes an expectation frontLocked returned.
func (s *session) removeLocked(sc *serverConn, e *expectation) {
	for i := range sc.expect {
		if &sc.expect[i] == e {
			sc.expect = append(sc.expect[:i], sc.expect[i+1:]...)
			return
		}
	}
}

// popResponseLocked consumes the expectation a ParseComplete or CloseComplete answers and
// reports whether the client must not see it.
func (s *session) popResponseLocked(sc *serverConn, typ byte) bool {
	want := expParse
	if typ == '3' {
		want = expClose
	}
	for i, e := range sc.expect {
		if e.kind == want {
			sc.expect = append(sc.expect[:i], sc.expect[i+1:]...)
			return e.hide
		}
		if e.kind == expSync || e.kind == expCondSync {
			break
		}
	}
	return false
}

// errorLocked handles an ErrorResponse: in the extended protocol the server now skips to the
// next Sync, so no ParseComplete or CloseComplete will come for what was sent before it.
func (s *session) errorLocked(sc *serverConn) {
	if sc.copyIn {
		s.copyEndedLocked(sc)
		return
	}
	i := 0
	for i < len(sc.expect) && sc.expect[i].kind != expSync && sc.expect[i].kind != expCondSync {
		i++
	}
	n := copy(sc.expect, sc.expect[i:])
	sc.expect = sc.expect[:n]
	if len(sc.expect) > 0 && sc.expect[0].kind == expCondSync {
		// The COPY failed before it started: the server skips to this Sync and answers it.
		sc.expect[0].kind = expSync
		s.copyPending = false
	}
}

// copyEndedLocked: the Syncs sent during copy-in were ignored by the server.
func (s *session) copyEndedLocked(sc *serverConn) {
	sc.copyIn = false
	kept := sc.expect[:0]
	for _, e := range sc.expect {
		if e.kind == expCondSync {
			sc.pending--
			continue
		}
		kept = append(kept, e)
	}
	sc.expect = kept
}

// serverLost handles a server connection that failed: the client gets a clean error, never a
// hang. A read-only connection of split mode that is idle is dropped quietly instead (reads
// fall back to the source).
func (s *session) serverLost(sc *serverConn, err error) error {
	s.mu.Lock()
	quiet := sc.readOnly && sc.pending == 0 && sc.txStatus == 'I' && s.conns[sc.role] == sc && !s.closing
	if quiet {
		s.conns[sc.role] = nil
	}
	closing := s.closing
	s.mu.Unlock()
	sc.close()
	if quiet {
		s.p.metrics.serverSessions.WithLabelValues(sc.role.String()).Dec()
		s.p.releaseServer(sc.role)
		s.p.log.Warn("read-only target connection lost; reads use the source", "client", s.id, "err", err)
		return nil
	}
	if !closing {
		s.p.log.Warn("server connection lost; closing its client with an error", "client", s.id, "server", sc.role.String(), "err", err)
		s.fail("08006", fmt.Sprintf("pgshift: connection to the %s server lost", sc.role))
	}
	return net.ErrClosed
}

// cancel forwards a cancel request to whichever server runs the session's request now.
func (s *session) cancel(ctx context.Context) {
	s.mu.Lock()
	sc := s.unit
	if sc == nil {
		sc = s.busyConnLocked()
	}
	s.mu.Unlock()
	if sc == nil {
		return // nothing runs: a cancel for an idle session does nothing, as in PostgreSQL
	}
	s.p.metrics.cancels.Inc()
	if err := sendCancel(ctx, sc.dialed, sc.pid, sc.secret, s.p.cfg.ConnectTimeout); err != nil {
		s.p.log.Warn("could not forward a cancel request", "client", s.id, "server", sc.role.String(), "err", err)
	}
}

// clientAddr returns the client's IP address.
func clientAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		a, _ := netip.AddrFromSlice(ta.IP)
		return a.Unmap()
	}
	return netip.Addr{}
}

func lower(s string) string { return strings.ToLower(s) }
