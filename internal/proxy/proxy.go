// Package proxy is pgshift's PostgreSQL wire-protocol proxy. Clients connect to it as to a
// server; it authenticates them itself (SCRAM-SHA-256, md5, or a clear-text password over TLS,
// against a PgBouncer-style auth file), logs into the source and the target as the same user,
// and relays the protocol — simple and extended queries, pipelines, COPY, notifications,
// cancels — pinning each client session to its own server connections.
//
// It routes by mode: everything to the source, everything to the target, or split: statements
// the route package proves read-only go to the target for the sessions its rules pick, while
// the target's lag is under a limit and the session's own writes are applied there. It pauses
// sessions at safe points, switches them to the other server with their state replayed and
// their prepared statements re-prepared, maps the OIDs of user types between the servers, and
// resumes them: clients see a pause, not an error.
//
// The Go API used by cutover is Pause, Switch, Resume, SetMode and Mode on *Proxy; an admin
// console on the same port (database "pgshift") and an HTTP handler expose the same actions.
package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/proxy/route"
)

// Config is the proxy's configuration. Zero values take the defaults noted.
type Config struct {
	Listen string
	// Source and Target are the servers' DSNs. Their users and passwords serve the proxy's own
	// connections (catalog reads, lag); clients log in as themselves.
	Source, Target string
	Mode           Mode
	// AuthFile is a PgBouncer userlist.txt; without one, only the source DSN's user (with the
	// DSN's password) can log in.
	AuthFile string
	// AuthType is how clients authenticate: "scram-sha-256" (default: SCRAM, or md5 for users
	// whose secret is an md5 hash), "md5" (md5, or SCRAM for SCRAM secrets) or "password"
	// (clear text, accepted over TLS only).
	AuthType string
	// AdminUsers may use the admin console; default the source DSN's user.
	AdminUsers []string
	// TLSCertFile and TLSKeyFile enable TLS to clients.
	TLSCertFile, TLSKeyFile string
	// MaxClientConn limits client connections (default 10000); MaxServerConn limits each
	// server's connections (0: no limit).
	MaxClientConn int
	MaxServerConn int
	// ConnectTimeout bounds a server login, a client's startup, and the proxy's own statements
	// (default 10 s). ClientIdleTimeout closes clients idle that long (0: never).
	ConnectTimeout    time.Duration
	ClientIdleTimeout time.Duration
	// PauseTimeout is how long PAUSE waits for every session to reach a safe point (default
	// 30 s); then it resumes by itself, or with CancelLaggards cancels the laggards' queries
	// and waits once more. MaxPause resumes a pause nobody ended (default 60 s).
	PauseTimeout   time.Duration
	MaxPause       time.Duration
	CancelLaggards bool
	// LagLimit: reads go to the target only while the applied lag is below it (default 30 s).
	LagLimit time.Duration
	// ReadYourWrites keeps a session's reads on the source until the target applied its writes.
	ReadYourWrites bool
	// Rules pick the sessions and statements whose reads split mode sends to the target.
	Rules []route.Rule
	// AllowFunctions are user functions statements on the target may call.
	AllowFunctions []string
	// PollInterval is how often split mode samples the source's WAL position and the target's
	// applied position (default 100 ms).
	PollInterval time.Duration
	// TargetReplicas are DSNs of the target's physical replicas (same database, a user that
	// may read pgshift.position): split mode spreads its routed reads over the target and the
	// healthy replicas (replicas.go), checked every ReplicaCheckInterval (default 1 s).
	TargetReplicas       []string
	ReplicaCheckInterval time.Duration
}

func (c *Config) defaults() {
	if c.MaxClientConn <= 0 {
		c.MaxClientConn = 10000
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 10 * time.Second
	}
	if c.PauseTimeout <= 0 {
		c.PauseTimeout = 30 * time.Second
	}
	if c.MaxPause <= 0 {
		c.MaxPause = 60 * time.Second
	}
	if c.LagLimit <= 0 {
		c.LagLimit = 30 * time.Second
	}
	if c.PollInterval <= 0 {
		c.PollInterval = 100 * time.Millisecond
	}
	if c.ReplicaCheckInterval <= 0 {
		c.ReplicaCheckInterval = time.Second
	}
	if c.AuthType == "" {
		c.AuthType = "scram-sha-256"
	}
}

// Options are the proxy's collaborators.
type Options struct {
	// Progress reports how far the target has applied the source; nil reads it from the
	// target's pgshift schema (what a running agent records).
	Progress Progress
	// Registerer receives the proxy's metrics; nil keeps them private.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Reload, when set, gives RELOAD the current configuration (rules, admin users, allowed
	// functions are taken from it).
	Reload func() (Config, error)
}

// Proxy is a running proxy. Its methods are safe for concurrent use.
type Proxy struct {
	cfg      Config
	log      *slog.Logger
	eps      [2]*endpoint
	reads    []*readEndpoint // where split-mode reads may go: the target, then its replicas
	tls      *tls.Config
	metrics  *metrics
	oids     *oidMap
	progress *progressTracker
	source   Progress
	reload   func() (Config, error)

	mu         sync.Mutex
	sessions   map[uint64]*session
	byKey      map[uint32]*session
	nextID     uint64
	auth       *AuthFile
	rules      *route.Rules
	classify   atomic.Pointer[route.Classifier] // read on every split-mode statement: no lock
	paramCache map[string]map[string]string
	routeStats atomic.Pointer[map[string]*routeStat] // replaced whole by Reload
	standby    map[uint64]*serverConn                // connections opened by Prepare, by session

	mode   atomic.Int32
	paused atomic.Bool
	// pauseMu serialises Pause, Switch and Resume's bookkeeping; idle is poked by sessions
	// that reach a safe point while a pause waits.
	pauseMu    sync.Mutex
	pauseGen   uint64
	pausedAt   time.Time
	pauseTimer *time.Timer
	idle       chan struct{}

	catMu    sync.Mutex
	catConns [2]*pgx.Conn

	lastHeld atomic.Int64 // nanoseconds
	// targetUnits counts the client units (a Query, a FunctionCall, the extended-protocol
	// messages up to a Sync) sent to the target's primary since traffic last moved there:
	// while it is zero, nothing a client sent can have changed the target.
	targetUnits atomic.Uint64
	// unitsKnown: this proxy moved traffic to the target itself, so targetUnits counts from
	// that switch. A proxy that started in target mode cannot know what reached the target
	// before it started.
	unitsKnown  atomic.Bool
	prepareWG   sync.WaitGroup
	serverSlots [2]chan struct{}
	clients     atomic.Int64
	addr        atomic.Value // net.Addr
}

type routeStat struct {
	target, source atomic.Uint64
}

// New validates the configuration and prepares a proxy; Serve runs it.
func New(cfg Config, opts Options) (*Proxy, error) {
	cfg.defaults()
	if cfg.Source == "" {
		return nil, errors.New("proxy: no source DSN: pass --source")
	}
	if cfg.Target == "" && cfg.Mode != ModeSource {
		return nil, errors.New("proxy: no target DSN: pass --target (only --mode source works without one)")
	}
	switch cfg.AuthType {
	case "scram-sha-256", "md5", "password":
	default:
		return nil, fmt.Errorf("proxy: auth type %q: want scram-sha-256, md5 or password", cfg.AuthType)
	}
	p := &Proxy{cfg: cfg, log: opts.Logger, sessions: map[uint64]*session{}, byKey: map[uint32]*session{},
		paramCache: map[string]map[string]string{}, oids: newOIDMap(), standby: map[uint64]*serverConn{},
		idle: make(chan struct{}, 1), source: opts.Progress, reload: opts.Reload}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	var err error
	if p.eps[Source], err = newEndpoint(Source, cfg.Source, cfg.ConnectTimeout); err != nil {
		return nil, err
	}
	if cfg.Target != "" {
		if p.eps[Target], err = newEndpoint(Target, cfg.Target, cfg.ConnectTimeout); err != nil {
			return nil, err
		}
	}
	if p.reads, err = newReadEndpoints(p.eps[Target], cfg.TargetReplicas, cfg.ConnectTimeout); err != nil {
		return nil, err
	}
	if len(p.cfg.AdminUsers) == 0 {
		p.cfg.AdminUsers = []string{p.eps[Source].cfg.User}
	}
	if cfg.TLSCertFile != "" || cfg.TLSKeyFile != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile)
		if err != nil {
			return nil, fmt.Errorf("proxy: TLS certificate: %w", err)
		}
		p.tls = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	if p.auth, err = p.loadAuth(); err != nil {
		return nil, err
	}
	if p.rules, err = route.NewRules(cfg.Rules); err != nil {
		return nil, err
	}
	stats := map[string]*routeStat{}
	for _, r := range cfg.Rules {
		stats[r.Name] = &routeStat{}
	}
	p.routeStats.Store(&stats)
	p.classify.Store(route.NewClassifier(route.ClassifierOptions{AllowFunctions: cfg.AllowFunctions}))
	for r := range p.serverSlots {
		if cfg.MaxServerConn > 0 {
			p.serverSlots[r] = make(chan struct{}, cfg.MaxServerConn)
		}
	}
	p.mode.Store(int32(cfg.Mode))
	p.metrics = newMetrics(p, opts.Registerer)
	p.progress = newProgressTracker(cfg.PollInterval)
	return p, nil
}

// Mode returns the current mode.
func (p *Proxy) Mode() Mode { return Mode(p.mode.Load()) }

// Addr returns the address the proxy listens on, once Serve has bound it.
func (p *Proxy) Addr() net.Addr {
	a, _ := p.addr.Load().(net.Addr)
	return a
}

func (p *Proxy) endpoint(r Role) *endpoint { return p.eps[r] }

// loadAuth reads the auth file; without one, the source DSN's user may log in with the DSN's
// password, so a proxy in front of one application user needs no extra file.
func (p *Proxy) loadAuth() (*AuthFile, error) {
	if p.cfg.AuthFile != "" {
		return LoadAuthFile(p.cfg.AuthFile)
	}
	af := newAuthFile()
	if src := p.eps[Source].cfg; src.Password != "" {
		af.users[src.User] = Secret{kind: secretPlain, plain: src.Password}
	}
	return af, nil
}

func (p *Proxy) classifier() *route.Classifier { return p.classify.Load() }

func (p *Proxy) routeCount(rule string, target bool) {
	st := (*p.routeStats.Load())[rule]
	if st == nil {
		return
	}
	if target {
		st.target.Add(1)
	} else {
		st.source.Add(1)
	}
}

// Serve listens on cfg.Listen and serves until ctx ends; then it closes every session.
func (p *Proxy) Serve(ctx context.Context) error {
	ln, err := net.Listen("tcp", p.cfg.Listen)
	if err != nil {
		return fmt.Errorf("proxy: listen on %s: %w", p.cfg.Listen, err)
	}
	return p.ServeListener(ctx, ln)
}

// ServeListener is Serve on a listener the caller opened.
func (p *Proxy) ServeListener(ctx context.Context, ln net.Listener) error {
	p.addr.Store(ln.Addr())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.background(ctx)
	}()
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	p.log.Info("proxy listening", "addr", ln.Addr().String(), "mode", p.Mode().String())
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			cancel()
			wg.Wait()
			return fmt.Errorf("proxy: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.handleConn(ctx, c)
		}()
	}
	p.catMu.Lock()
	for _, c := range p.catConns {
		if c != nil {
			c.Close(context.Background())
		}
	}
	p.catMu.Unlock()
	p.mu.Lock()
	for _, s := range p.sessions {
		s.client.Close()
		s.mu.Lock()
		s.closing = true
		s.cond.Broadcast()
		s.mu.Unlock()
	}
	p.mu.Unlock()
	wg.Wait()
	return nil
}

// background loads the OID map and, in split mode, polls the applied position.
func (p *Proxy) background(ctx context.Context) {
	if p.eps[Target] != nil {
		if err := p.loadCatalog(ctx); err != nil {
			p.log.Warn("could not read the servers' catalogs; type OIDs are not mapped and only built-in functions count as read-only until RELOAD", "err", err)
		}
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.watchReplicas(ctx)
	}()
	p.progress.run(ctx, p)
	wg.Wait()
}

// loadCatalog reads what the proxy needs from both servers: the OIDs to map and the pg_catalog
// functions that cannot write.
func (p *Proxy) loadCatalog(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	// The connections stay open: a switch reloads the catalogs while clients wait.
	p.catMu.Lock()
	defer p.catMu.Unlock()
	for r, dsn := range []string{p.cfg.Source, p.cfg.Target} {
		if p.catConns[r] != nil && !p.catConns[r].IsClosed() {
			continue
		}
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return fmt.Errorf("connect to the %s: %w", Role(r), err)
		}
		p.catConns[r] = c
	}
	src, dst := p.catConns[Source], p.catConns[Target]
	n, err := p.oids.load(ctx, src, dst)
	if err != nil {
		src.Close(context.Background())
		dst.Close(context.Background())
		return err
	}
	funcs, err := catalogFunctions(ctx, src)
	if err != nil {
		src.Close(context.Background())
		return err
	}
	p.mu.Lock()
	allow := p.cfg.AllowFunctions
	p.mu.Unlock()
	p.classify.Store(route.NewClassifier(route.ClassifierOptions{AllowFunctions: allow, CatalogFunctions: funcs}))
	p.log.Debug("catalogs loaded", "oids_mapped", n, "read_only_functions", len(funcs))
	return nil
}

// catalogFunctions returns pg_catalog functions whose every overload is immutable or stable and
// that no other schema defines.
func catalogFunctions(ctx context.Context, conn *pgx.Conn) (map[string]bool, error) {
	v, err := catalog.ReadVersion(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("read the source's functions: %w", err)
	}
	rows, err := conn.Query(ctx, `SELECT p.proname FROM pg_proc p
		WHERE p.pronamespace = 'pg_catalog'::regnamespace AND `+v.ProKindSQL("p")+` IN ('f', 'a', 'w')
		GROUP BY p.proname
		HAVING bool_and(p.provolatile IN ('i', 's'))
		   AND NOT EXISTS (SELECT 1 FROM pg_proc o WHERE o.proname = p.proname AND o.pronamespace <> 'pg_catalog'::regnamespace)`)
	if err != nil {
		return nil, fmt.Errorf("read the source's functions: %w", err)
	}
	defer rows.Close()
	out := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, err
		}
		out[name] = true
	}
	return out, rows.Err()
}

// acquireServer takes a server connection slot, waiting up to the connect timeout.
func (p *Proxy) acquireServer(ctx context.Context, r Role) error {
	slots := p.serverSlots[r]
	if slots == nil {
		return nil
	}
	select {
	case slots <- struct{}{}:
		return nil
	default:
	}
	t := time.NewTimer(p.cfg.ConnectTimeout)
	defer t.Stop()
	select {
	case slots <- struct{}{}:
		return nil
	case <-t.C:
		return fmt.Errorf("all %d %s server connections are in use (max_server_conn) and none came free within %s", cap(slots), r, p.cfg.ConnectTimeout)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (p *Proxy) releaseServer(r Role) {
	if slots := p.serverSlots[r]; slots != nil {
		select {
		case <-slots:
		default:
		}
	}
}

const (
	codeSSLRequest    = 80877103
	codeGSSENCRequest = 80877104
	codeCancelRequest = 80877102
)

// handleConn runs one client connection from its first byte to its end.
func (p *Proxy) handleConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	if n := p.clients.Add(1); n > int64(p.cfg.MaxClientConn) {
		p.clients.Add(-1)
		p.metrics.rejected.WithLabelValues("max_client_conn").Inc()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		_ = writeAll(c, encode(nil, errorMsg("FATAL", "53300", "pgshift: sorry, too many clients already (max_client_conn)")))
		return
	}
	defer p.clients.Add(-1)
	_ = c.SetDeadline(time.Now().Add(p.cfg.ConnectTimeout))
	br := bufio.NewReaderSize(c, ioBufSize)
	tlsOn := false
	var sm pgproto3.StartupMessage
	keyLen := 4 // the cancel key's secret: 4 bytes in protocol 3.0, 32 in 3.2
	var clientMinor uint32
	var negotiate bool
	for {
		msg, err := readStartup(br)
		if err != nil {
			if errors.Is(err, errProtocol) {
				p.log.Warn("client sent an invalid startup packet", "addr", c.RemoteAddr().String())
				_ = writeAll(c, encode(nil, errorMsg("FATAL", "08P01", "pgshift: invalid startup packet")))
			}
			return
		}
		code := binary.BigEndian.Uint32(msg[4:8])
		switch code {
		case codeSSLRequest:
			if p.tls == nil || tlsOn {
				if err := writeAll(c, []byte{'N'}); err != nil {
					return
				}
				continue
			}
			if br.Buffered() > 0 {
				return // bytes after SSLRequest before the handshake: not a real client
			}
			if err := writeAll(c, []byte{'S'}); err != nil {
				return
			}
			tc := tls.Server(c, p.tls)
			if err := tc.HandshakeContext(ctx); err != nil {
				p.log.Debug("client TLS handshake failed", "addr", c.RemoteAddr().String(), "err", err)
				return
			}
			c, tlsOn = tc, true
			defer tc.Close()
			br = bufio.NewReaderSize(c, ioBufSize)
			continue
		case codeGSSENCRequest:
			if err := writeAll(c, []byte{'N'}); err != nil {
				return
			}
			continue
		case codeCancelRequest:
			if len(msg) >= 16 {
				p.cancel(ctx, binary.BigEndian.Uint32(msg[8:12]), msg[12:])
			}
			return
		}
		if code>>16 != 3 {
			_ = writeAll(c, encode(nil, errorMsg("FATAL", "0A000", fmt.Sprintf("pgshift: unsupported frontend protocol %d.%d", code>>16, code&0xffff))))
			return
		}
		// The client's side speaks 3.2 (PostgreSQL 18: cancel keys of up to 256 bytes; the
		// proxy hands out 32) when asked for 3.2 or newer, else 3.0; 3.1 was never used, and
		// is answered like PostgreSQL 18 does, with 3.0. Sessions to the servers always speak
		// 3.0, which every server accepts: cancel keys never cross from one side to the other
		// (the proxy maps its own keys to the servers'), and 3.2 changes nothing else.
		minor := code & 0xffff
		switch {
		case minor >= 2:
			keyLen, negotiate = 32, minor > 2
			clientMinor = 2
		case minor == 1:
			negotiate = true
		}
		binary.BigEndian.PutUint32(msg[4:8], pgproto3.ProtocolVersion30) // what sm.Decode reads
		if err := sm.Decode(msg[4:]); err != nil {
			_ = writeAll(c, encode(nil, errorMsg("FATAL", "08P01", "pgshift: invalid startup packet")))
			return
		}
		if negotiate || hasProtocolOptions(sm.Parameters) {
			var opts []string
			for k := range sm.Parameters {
				if strings.HasPrefix(k, "_pq_.") {
					opts = append(opts, k)
					delete(sm.Parameters, k)
				}
			}
			if err := writeAll(c, encode(nil, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: clientMinor, UnrecognizedOptions: opts})); err != nil {
				return
			}
		}
		break
	}
	user := sm.Parameters["user"]
	database := sm.Parameters["database"]
	if database == "" {
		database = user
	}
	if user == "" {
		_ = writeAll(c, encode(nil, errorMsg("FATAL", "28000", "pgshift: no user name in the startup packet")))
		return
	}
	if v := sm.Parameters["replication"]; v != "" && v != "false" && v != "off" && v != "0" {
		_ = writeAll(c, encode(nil, errorMsg("FATAL", "0A000", "pgshift: replication connections are not supported through the proxy; connect to the server directly")))
		return
	}
	rd := &msgReader{r: br}
	admin := database == adminDatabase
	if !admin && database != p.eps[Source].database {
		_ = writeAll(c, encode(nil, errorMsg("FATAL", "3D000", fmt.Sprintf("pgshift: database %q is not served by this proxy; it serves %q (and %q for the admin console)", database, p.eps[Source].database, adminDatabase))))
		return
	}
	if admin && !contains(p.cfg.AdminUsers, user) {
		p.metrics.authFailures.Inc()
		_ = writeAll(c, encode(nil, errorMsg("FATAL", "28000", fmt.Sprintf("pgshift: user %q is not an admin user of the console", user))))
		return
	}
	creds, err := p.authenticate(c, rd, user, tlsOn)
	if err != nil {
		p.metrics.authFailures.Inc()
		p.log.Info("client authentication failed", "user", user, "addr", c.RemoteAddr().String(), "err", err)
		_ = writeAll(c, encode(nil, errorMsg("FATAL", "28P01", fmt.Sprintf("password authentication failed for user %q", user))))
		return
	}
	_ = c.SetDeadline(time.Time{})
	if admin {
		p.serveAdmin(ctx, c, rd, user)
		return
	}
	s := p.newSession(c, rd, user, database, sm.Parameters, creds, tlsOn, keyLen)
	defer p.dropSession(s)
	if err := p.welcome(ctx, s); err != nil {
		var se *serverError
		if errors.As(err, &se) {
			_ = s.writeClient(encode(nil, se.resp))
		} else if !errors.Is(err, net.ErrClosed) {
			s.fail("08006", fmt.Sprintf("pgshift: cannot reach the server: %v", err))
		}
		s.closeAll()
		return
	}
	s.run(ctx)
}

func hasProtocolOptions(params map[string]string) bool {
	for k := range params {
		if strings.HasPrefix(k, "_pq_.") {
			return true
		}
	}
	return false
}

const adminDatabase = "pgshift"

func (p *Proxy) newSession(c net.Conn, rd *msgReader, user, database string, startup map[string]string, creds credentials, tlsOn bool, keyLen int) *session {
	params := map[string]string{}
	for k, v := range startup {
		if k != "user" && k != "database" {
			params[k] = v
		}
	}
	rd.valid = &frontendTypes
	s := &session{p: p, client: c, cr: rd, user: user, database: database, appName: startup["application_name"], addr: clientAddr(c),
		params: params, creds: creds, tls: tlsOn, started: time.Now(), stmts: map[string]*stmt{}, portals: map[string]*stmt{}, portalPlans: map[string][]uint32{},
		clientParams: map[string]string{}}
	s.cond = sync.NewCond(&s.mu)
	s.lastActive.Store(time.Now().UnixNano())
	s.keySecret = make([]byte, keyLen)
	p.mu.Lock()
	p.nextID++
	s.id = p.nextID
	for {
		var b [4]byte
		_, _ = rand.Read(b[:])
		k := binary.BigEndian.Uint32(b[:]) & 0x7fffffff
		if k != 0 && p.byKey[k] == nil {
			s.key = k
			break
		}
	}
	_, _ = rand.Read(s.keySecret)
	p.sessions[s.id] = s
	p.byKey[s.key] = s
	s.setRoutes(p.rules.ForSession(s.routeSession()))
	p.mu.Unlock()
	if p.Mode() == ModeTarget {
		s.primary, s.origin = Target, Target
	}
	p.metrics.clientSessions.Inc()
	return s
}

func (p *Proxy) dropSession(s *session) {
	s.releaseReadEndpoint()
	p.mu.Lock()
	delete(p.sessions, s.id)
	delete(p.byKey, s.key)
	p.mu.Unlock()
	p.metrics.clientSessions.Dec()
	for _, r := range []Role{Source, Target} {
		s.mu.Lock()
		sc := s.conns[r]
		s.mu.Unlock()
		if sc != nil {
			p.releaseServer(r)
		}
	}
}

// welcome finishes the client's login: AuthenticationOk, the server's parameters, the proxy's
// own cancel key, ReadyForQuery. The first session of a user logs into the server at once (to
// learn its parameters); later ones connect when they send their first request.
func (p *Proxy) welcome(ctx context.Context, s *session) error {
	// A session that arrives during a pause connects after it, to the server the pause chose.
	s.mu.Lock()
	for p.paused.Load() && !s.closing {
		s.cond.Wait()
	}
	s.mu.Unlock()
	s.mu.Lock()
	if p.Mode() == ModeTarget && s.conns[Source] == nil {
		s.primary, s.origin = Target, Target
	}
	primary := s.primary
	s.mu.Unlock()
	cacheKey := primary.String() + "\x00" + s.user
	p.mu.Lock()
	params := p.paramCache[cacheKey]
	p.mu.Unlock()
	if params == nil {
		sc, err := s.open(ctx, primary, false)
		if err != nil {
			return err
		}
		s.mu.Lock()
		params = make(map[string]string, len(sc.params))
		for k, v := range sc.params {
			params[k] = v
		}
		s.mu.Unlock()
		p.mu.Lock()
		p.paramCache[cacheKey] = params
		p.mu.Unlock()
	}
	out := encode(nil, &pgproto3.AuthenticationOk{})
	s.mu.Lock()
	for k, v := range params {
		if cv, ok := s.params[k]; ok && reportedFromClient[k] {
			v = cv
		}
		if s.clientParams[k] == v {
			continue
		}
		s.clientParams[k] = v
		out = encode(out, &pgproto3.ParameterStatus{Name: k, Value: v})
	}
	s.mu.Unlock()
	out = encode(out, &pgproto3.BackendKeyData{ProcessID: s.key, SecretKey: s.keySecret})
	out = append(out, readyForQuery('I')...)
	return s.writeClient(out)
}

// reportedFromClient are reported parameters whose value a startup packet sets as given.
var reportedFromClient = map[string]bool{"application_name": true, "client_encoding": true}

// cancel handles a CancelRequest: the key must be one the proxy handed out.
func (p *Proxy) cancel(ctx context.Context, pid uint32, secret []byte) {
	p.mu.Lock()
	s := p.byKey[pid]
	p.mu.Unlock()
	if s == nil || !constEq(s.keySecret, secret) {
		p.log.Debug("cancel request with an unknown key ignored")
		return
	}
	s.cancel(ctx)
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
