package proxy

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// ErrResumed is returned by Pause when a Resume ended the pause before every session was held.
var ErrResumed = errors.New("the pause was resumed before every session reached a safe point")

// ErrNotPaused is returned by Switch when no pause holds the sessions.
var ErrNotPaused = errors.New("not paused: PAUSE first (SWITCH moves sessions only while they are held)")

// PauseTimeoutError lists the sessions that did not reach a safe point in time; the proxy has
// resumed.
type PauseTimeoutError struct {
	Timeout   time.Duration
	Laggards  []string // "client 12 (alice, idle in transaction)"
	Cancelled bool
}

func (e *PauseTimeoutError) Error() string {
	verb := "resumed"
	if e.Cancelled {
		verb = "cancelled their queries, waited once more, and resumed"
	}
	return fmt.Sprintf("pause timed out after %s: %d sessions did not reach a safe point (%s); %s. "+
		"End long transactions, raise the pause timeout, or enable cancel_laggards", e.Timeout, len(e.Laggards), strings.Join(e.Laggards, ", "), verb)
}

func (p *Proxy) notifyIdle() {
	select {
	case p.idle <- struct{}{}:
	default:
	}
}

func (p *Proxy) sessionList() []*session {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]*session, 0, len(p.sessions))
	for _, s := range p.sessions {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].id < out[j].id })
	return out
}

// laggards returns the sessions not at a safe point.
func (p *Proxy) laggards() []*session {
	var out []*session
	for _, s := range p.sessionList() {
		s.mu.Lock()
		if !s.idleLocked() && !s.closing {
			out = append(out, s)
		}
		s.mu.Unlock()
	}
	return out
}

// Pause holds every client session at its next safe point and returns once all are held: idle
// between complete requests, after a ReadyForQuery with status idle — never inside a
// transaction, between Parse and Sync, with a Flush-ended request outstanding, or during COPY.
// Sessions inside a transaction run to its end first. While paused, new requests (and new
// sessions' first connection) wait; nothing is sent to any server on behalf of a client.
//
// When it returns nil, every existing session is held and stays held until Resume, or until
// MaxPause passes (the proxy then resumes by itself, so a lost cutover never leaves clients
// hanging). If the sessions are not all held within timeout (0: the configured pause timeout)
// it resumes and returns a *PauseTimeoutError; with CancelLaggards it first cancels the
// laggards' queries and waits once more. A Resume during the wait makes it return ErrResumed.
// Pausing while paused returns nil at once. A pause also starts opening each session's
// connection to the other server (see Prepare), which a following Switch uses.
func (p *Proxy) Pause(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	if timeout <= 0 {
		timeout = p.cfg.PauseTimeout
	}
	p.pauseMu.Lock()
	if p.paused.Load() {
		p.pauseMu.Unlock()
		return 0, nil
	}
	p.pauseGen++
	gen := p.pauseGen
	p.paused.Store(true)
	start := time.Now()
	p.pausedAt = start
	p.pauseMu.Unlock()
	p.log.Info("pausing client sessions", "timeout", timeout.String())
	// A pause is almost always followed by a switch: open the other server's connections now,
	// while sessions finish their transactions, so SWITCH does not log in while clients wait.
	// Unused ones are closed at Resume.
	if to := other(p.primaryRoleOfMode()); p.eps[to] != nil {
		p.startPrepare(to)
	}

	deadline := start.Add(timeout)
	cancelled := false
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		lag := p.laggards()
		p.pauseMu.Lock()
		stillOurs := p.paused.Load() && p.pauseGen == gen
		p.pauseMu.Unlock()
		if !stillOurs {
			return time.Since(start), ErrResumed
		}
		if len(lag) == 0 {
			took := time.Since(start)
			p.metrics.pauseWait.Observe(took.Seconds())
			p.armMaxPause(gen)
			p.log.Info("all client sessions paused", "sessions", len(p.sessionList()), "took", took.String())
			return took, nil
		}
		if time.Now().After(deadline) {
			if p.cfg.CancelLaggards && !cancelled {
				cancelled = true
				for _, s := range lag {
					s.cancel(ctx)
				}
				deadline = time.Now().Add(min(timeout, 5*time.Second))
				continue
			}
			names := make([]string, 0, len(lag))
			for _, s := range lag {
				s.mu.Lock()
				names = append(names, fmt.Sprintf("client %d (%s, %s)", s.id, s.user, s.stateLocked()))
				s.mu.Unlock()
			}
			p.resumeGen(gen)
			return time.Since(start), &PauseTimeoutError{Timeout: timeout, Laggards: names, Cancelled: cancelled}
		}
		select {
		case <-ctx.Done():
			p.resumeGen(gen)
			return time.Since(start), ctx.Err()
		case <-p.idle:
		case <-tick.C:
		}
	}
}

// armMaxPause resumes pause gen by itself after MaxPause.
func (p *Proxy) armMaxPause(gen uint64) {
	p.pauseMu.Lock()
	defer p.pauseMu.Unlock()
	if p.pauseTimer != nil {
		p.pauseTimer.Stop()
	}
	p.pauseTimer = time.AfterFunc(p.cfg.MaxPause, func() {
		p.pauseMu.Lock()
		ours := p.paused.Load() && p.pauseGen == gen
		p.pauseMu.Unlock()
		if ours {
			p.log.Warn("pause held longer than max_pause; resuming by itself", "max_pause", p.cfg.MaxPause.String())
			p.resumeGen(gen)
		}
	})
}

// Resume releases every held session. It is safe at any time, also while Pause waits (which
// then returns ErrResumed) and when not paused.
func (p *Proxy) Resume() {
	p.pauseMu.Lock()
	gen := p.pauseGen
	p.pauseMu.Unlock()
	p.resumeGen(gen)
}

func (p *Proxy) resumeGen(gen uint64) {
	p.pauseMu.Lock()
	if !p.paused.Load() || p.pauseGen != gen {
		p.pauseMu.Unlock()
		return
	}
	p.paused.Store(false)
	p.pauseGen++ // a stale auto-resume timer never ends a later pause
	held := time.Since(p.pausedAt)
	if p.pauseTimer != nil {
		p.pauseTimer.Stop()
		p.pauseTimer = nil
	}
	p.pauseMu.Unlock()
	// Connections a pause opened for a switch that did not come are closed once their logins end;
	// Resume itself never waits for them.
	go func() {
		p.waitPrepare()
		if !p.Paused() {
			p.dropStandbys()
		}
	}()
	p.metrics.pauseHeld.Observe(held.Seconds())
	p.lastHeld.Store(int64(held))
	for _, s := range p.sessionList() {
		s.mu.Lock()
		s.cond.Broadcast()
		s.mu.Unlock()
	}
	// Sessions still logging in wait on their own cond too; they are in sessionList already.
	p.log.Info("client sessions resumed", "paused_for", held.String())
}

// LastPauseDuration is how long the last pause held the sessions, from Pause to Resume: the
// wait clients saw.
func (p *Proxy) LastPauseDuration() time.Duration { return time.Duration(p.lastHeld.Load()) }

// Paused reports whether a pause is in effect.
func (p *Proxy) Paused() bool { return p.paused.Load() }

// Switch moves every session to server to while the proxy is paused: each gets a new server
// connection with its state replayed (session settings, SET ROLE, SESSION AUTHORIZATION,
// LISTEN channels, SQL prepared statements); its protocol-level prepared statements are
// re-prepared on first use, invisibly; type OIDs are mapped for clients that learned the other
// server's. Afterwards the mode is source or target accordingly.
//
// It first checks every session: one holding state that cannot move (temporary tables, WITH
// HOLD cursors, advisory locks) makes Switch return an error naming it, with nothing changed.
// A session whose new connection fails is closed with an error (its client reconnects to the
// new server); Switch then returns an error counting them, the rest have moved. It returns
// ErrNotPaused unless paused; it does not resume.
func (p *Proxy) Switch(ctx context.Context, to Role) error {
	if p.eps[to] == nil {
		return fmt.Errorf("no %s DSN configured", to)
	}
	p.pauseMu.Lock()
	defer p.pauseMu.Unlock()
	if !p.paused.Load() {
		return ErrNotPaused
	}
	start := time.Now()
	if lag := p.laggards(); len(lag) > 0 {
		return fmt.Errorf("%d sessions are not at a safe point; pause again", len(lag))
	}
	// The schema may have changed since the last load: map OIDs as they are now. The reload
	// runs beside the logins below, which are most of a switch's cost.
	catalog := make(chan error, 1)
	if p.eps[Target] != nil {
		go func() { catalog <- p.loadCatalog(ctx) }()
	} else {
		catalog <- nil
	}
	p.waitPrepare() // logins a pause started are used, not repeated
	sessions := p.sessionList()
	states := make([]*sessionState, len(sessions))
	conns := make([]*serverConn, len(sessions))
	var mu sync.Mutex
	var blocked, loginFailed []string
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	// Read every session's state and open its new connection at the same time: the logins
	// are most of a switch's cost.
	for i, s := range sessions {
		g.Go(func() error {
			st, err := s.prepareMove(gctx)
			if err != nil {
				mu.Lock()
				blocked = append(blocked, fmt.Sprintf("client %d (%s): %v", s.id, s.user, err))
				mu.Unlock()
				return nil
			}
			states[i] = st
			if st.hadPrimary {
				nc := p.takeStandby(s, to)
				var err error
				if nc == nil {
					nc, err = s.login(gctx, to, false)
				}
				if err != nil {
					mu.Lock()
					loginFailed = append(loginFailed, fmt.Sprintf("client %d: %v", s.id, err))
					mu.Unlock()
					return nil
				}
				conns[i] = nc
			}
			return nil
		})
	}
	_ = g.Wait()
	if err := <-catalog; err != nil {
		loginFailed = append(loginFailed, "catalogs: "+err.Error())
	}
	if len(blocked) > 0 || len(loginFailed) > 0 {
		for i, s := range sessions {
			s.abortMove(states[i])
			if conns[i] != nil {
				conns[i].close()
				p.releaseServer(to)
			}
		}
		if len(blocked) > 0 {
			sort.Strings(blocked)
			return fmt.Errorf("switch to %s refused: %d sessions hold state that cannot move to another server (%s); "+
				"end those sessions (or their temporary tables, cursors, locks) and switch again", to, len(blocked), strings.Join(blocked, "; "))
		}
		sort.Strings(loginFailed)
		return fmt.Errorf("switch to %s refused: %d sessions could not log into the %s server (%s); nothing was switched",
			to, len(loginFailed), to, strings.Join(loginFailed, "; "))
	}
	p.log.Debug("switch: states read and new connections open", "took", time.Since(start).String())
	var failed int
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(16)
	for i, s := range sessions {
		g.Go(func() error {
			if err := s.move(gctx, to, states[i], conns[i]); err != nil {
				mu.Lock()
				failed++
				mu.Unlock()
				p.log.Warn("could not move a session; closing it with an error so its client reconnects", "client", s.id, "to", to.String(), "err", err)
				s.fail("57P01", fmt.Sprintf("pgshift: this session could not be moved to the %s server (%v); reconnect", to, err))
			}
			return nil
		})
	}
	_ = g.Wait()
	if to == Target {
		p.targetUnits.Store(0) // paused: no unit runs until the resume
		p.unitsKnown.Store(true)
		p.mode.Store(int32(ModeTarget))
	} else {
		p.mode.Store(int32(ModeSource))
	}
	p.metrics.switches.WithLabelValues(to.String()).Inc()
	p.log.Info("sessions switched", "to", to.String(), "sessions", len(sessions)-failed, "failed", failed, "took", time.Since(start).String())
	if failed > 0 {
		return fmt.Errorf("switch to %s: %d of %d sessions could not be moved and were closed with an error", to, failed, len(sessions))
	}
	return nil
}

// prepareMove detaches the session's primary connection and reads its state. The reader stays
// detached until move or abortMove.
func (s *session) prepareMove(ctx context.Context) (*sessionState, error) {
	s.mu.Lock()
	primary := s.conns[s.primary]
	s.mu.Unlock()
	if primary == nil {
		return &sessionState{}, nil
	}
	s.detach(primary)
	st, err := s.capture(ctx, primary)
	if err != nil {
		s.startReader(primary)
		return nil, err
	}
	if len(st.unmovable) > 0 {
		s.startReader(primary)
		return nil, errors.New("it holds " + strings.Join(st.unmovable, ", "))
	}
	st.hadPrimary = true
	return st, nil
}

// abortMove restarts the reader prepareMove detached.
func (s *session) abortMove(st *sessionState) {
	if st == nil {
		return
	}
	s.mu.Lock()
	primary := s.conns[s.primary]
	s.mu.Unlock()
	if primary != nil && primary.readerDone == nil {
		s.startReader(primary)
	}
}

// move replaces the session's connections with nc (a new connection to server to, nil when
// the session had none yet), given the captured state.
func (s *session) move(ctx context.Context, to Role, st *sessionState, nc *serverConn) error {
	s.mu.Lock()
	old := s.conns
	s.mu.Unlock()
	if nc != nil {
		if err := s.replay(ctx, nc, st, false); err != nil {
			nc.close()
			s.p.releaseServer(to)
			return err
		}
	}
	s.mu.Lock()
	s.conns = [2]*serverConn{}
	s.primary = to
	s.stateVersion++
	if nc != nil {
		nc.mapped = to != s.origin
		s.conns[to] = nc
	}
	s.mu.Unlock()
	for _, c := range old {
		if c != nil {
			c.close() // a running reader sees the closed flag and exits quietly
			if c.readerDone != nil {
				<-c.readerDone
			}
			s.p.releaseServer(c.role)
			s.p.metrics.serverSessions.WithLabelValues(c.role.String()).Dec()
		}
	}
	if nc != nil {
		s.p.metrics.serverSessions.WithLabelValues(to.String()).Inc()
		s.startReader(nc)
		return s.tellParams(nc)
	}
	return nil
}

// UnitsOnTarget is how many client units (a Query, a FunctionCall, or the extended-protocol
// messages up to a Sync) the proxy has sent to the target's primary since its last switch to
// the target, whether or not they ran. Zero means no client of the proxy can have changed the
// target since then: a rollback may go ahead without it (see Abandon). known is false when
// this proxy did not make that switch itself (it started with traffic on the target): what
// reached the target before it started is not known.
func (p *Proxy) UnitsOnTarget() (n uint64, known bool) {
	return p.targetUnits.Load(), p.unitsKnown.Load()
}

// Abandon moves traffic to server to without the other server, for when that one is gone (a
// target unreachable after a cutover): every session is closed with an error telling its
// client to reconnect, which it then does to to. No session state can be carried from a server
// that cannot be reached, and a session still attached to it would only fail later. It
// returns ErrNotPaused unless paused; it does not resume.
func (p *Proxy) Abandon(to Role, why string) error {
	if p.eps[to] == nil {
		return fmt.Errorf("no %s DSN configured", to)
	}
	p.pauseMu.Lock()
	defer p.pauseMu.Unlock()
	if !p.paused.Load() {
		return ErrNotPaused
	}
	p.dropStandbys()
	if to == Target {
		p.targetUnits.Store(0)
		p.unitsKnown.Store(true)
		p.mode.Store(int32(ModeTarget))
	} else {
		p.mode.Store(int32(ModeSource))
	}
	sessions := p.sessionList()
	for _, s := range sessions {
		s.fail("57P01", fmt.Sprintf("pgshift: traffic moved to the %s server because %s; reconnect", to, why))
	}
	p.metrics.switches.WithLabelValues(to.String()).Inc()
	p.log.Warn("traffic moved without the other server; every client session was closed to reconnect", "to", to.String(), "sessions", len(sessions), "why", why)
	return nil
}

// SetMode changes where statements go. Between source and split it only changes routing;
// to or from target it moves every session (PAUSE, SWITCH, RESUME in one step, bounded by the
// pause timeout).
func (p *Proxy) SetMode(ctx context.Context, m Mode) error {
	cur := p.Mode()
	if m == cur {
		return nil
	}
	if m == ModeSplit || m == ModeTarget {
		if p.eps[Target] == nil {
			return errors.New("no target DSN configured")
		}
	}
	if (m == ModeTarget) != (cur == ModeTarget) {
		to := Source
		if m == ModeTarget {
			to = Target
		}
		if err := p.SwitchNow(ctx, to, 0); err != nil {
			return err
		}
	}
	p.mode.Store(int32(m))
	p.log.Info("mode changed", "mode", m.String())
	return nil
}

// SwitchNow pauses (unless paused), switches to to and resumes (if it paused). Before pausing
// it opens the new server connections (Prepare), so clients wait only for the state to move.
func (p *Proxy) SwitchNow(ctx context.Context, to Role, timeout time.Duration) error {
	wasPaused := p.Paused()
	if !wasPaused {
		p.Prepare(ctx, to)
		if _, err := p.Pause(ctx, timeout); err != nil {
			return err
		}
		defer p.Resume()
	}
	return p.Switch(ctx, to)
}

// standbyTTL is how long a connection opened by Prepare waits for its switch.
const standbyTTL = 30 * time.Second

// Prepare opens, for every session that has a server connection, a connection to server to
// that a following Switch uses instead of logging in while clients wait. Connections not used
// within 30 s are closed. Failures are not errors here: Switch logs in itself where no
// prepared connection exists.
func (p *Proxy) Prepare(ctx context.Context, to Role) {
	if p.eps[to] == nil {
		return
	}
	var g errgroup.Group
	g.SetLimit(32)
	for _, s := range p.sessionList() {
		s.mu.Lock()
		has := s.conns[s.primary] != nil && s.primary != to
		s.mu.Unlock()
		p.mu.Lock()
		ready := p.standby[s.id] != nil && p.standby[s.id].role == to
		p.mu.Unlock()
		if !has || ready {
			continue
		}
		g.Go(func() error {
			nc, err := s.login(ctx, to, false)
			if err != nil {
				p.log.Debug("prepare switch: login failed; the switch will retry", "client", s.id, "err", err)
				return nil
			}
			p.mu.Lock()
			if old := p.standby[s.id]; old != nil {
				old.close()
				p.releaseServer(old.role)
			}
			p.standby[s.id] = nc
			p.mu.Unlock()
			time.AfterFunc(standbyTTL, func() {
				p.mu.Lock()
				cur := p.standby[s.id]
				if cur == nc {
					delete(p.standby, s.id)
				}
				p.mu.Unlock()
				if cur == nc {
					nc.close()
					p.releaseServer(to)
				}
			})
			return nil
		})
	}
	_ = g.Wait()
}

// takeStandby returns the connection Prepare opened for s to server to, if any.
func (p *Proxy) takeStandby(s *session, to Role) *serverConn {
	p.mu.Lock()
	defer p.mu.Unlock()
	nc := p.standby[s.id]
	if nc == nil {
		return nil
	}
	delete(p.standby, s.id)
	if nc.role != to || nc.closed.Load() {
		nc.close()
		p.releaseServer(nc.role)
		return nil
	}
	return nc
}

// primaryRoleOfMode is the server that holds sessions' writes in the current mode.
func (p *Proxy) primaryRoleOfMode() Role {
	if p.Mode() == ModeTarget {
		return Target
	}
	return Source
}

// startPrepare runs Prepare in the background; waitPrepare waits for it.
func (p *Proxy) startPrepare(to Role) {
	p.prepareWG.Add(1)
	go func() {
		defer p.prepareWG.Done()
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ConnectTimeout)
		defer cancel()
		p.Prepare(ctx, to)
	}()
}

func (p *Proxy) waitPrepare() { p.prepareWG.Wait() }

// dropStandbys closes the connections Prepare opened that no switch used.
func (p *Proxy) dropStandbys() {
	p.mu.Lock()
	list := p.standby
	p.standby = map[uint64]*serverConn{}
	p.mu.Unlock()
	for _, nc := range list {
		nc.close()
		p.releaseServer(nc.role)
	}
}
