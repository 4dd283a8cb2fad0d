package proxy

// Reads over the target's replicas. In split mode the reads a rule sends to the target may be
// served by the target itself or by one of its physical replicas (Config.TargetReplicas). Each
// replica is checked every Config.ReplicaCheckInterval: it must answer, be in recovery, and
// have pgshift's applied position (its own copy of the target's pgshift.position, replayed like
// everything else). A session keeps the endpoint it was given for its life, unless that one
// stops being usable; new sessions go to the usable endpoint with the fewest sessions. A
// replica's lag is the migration's plus how long the target has been ahead of it, and
// read-your-writes is judged against the replica's own applied position, so a read on a
// replica sees what the target would show, or goes to the source.

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// readEndpoint is a server split-mode reads may go to: the target, or one of its replicas.
type readEndpoint struct {
	name     string // "target", or "replica HOST:PORT"
	ep       *endpoint
	dsn      string // the replica's DSN, for its check ("" for the target)
	sessions atomic.Int64
	reads    atomic.Uint64
	health   atomic.Pointer[replicaHealth]
}

// replicaHealth is a replica's last check.
type replicaHealth struct {
	ok      bool
	applied pgtypes.LSN // the source position the replica has applied
	checked time.Time
	err     string
}

func (re *readEndpoint) replica() bool { return re.dsn != "" }

// newReadEndpoints builds the target's read endpoints: the target first, then each replica.
func newReadEndpoints(target *endpoint, replicas []string, timeout time.Duration) ([]*readEndpoint, error) {
	if target == nil {
		if len(replicas) > 0 {
			return nil, fmt.Errorf("proxy: target replicas need a target")
		}
		return nil, nil
	}
	out := []*readEndpoint{{name: "target", ep: target}}
	for i, dsn := range replicas {
		ep, err := newEndpoint(Target, dsn, timeout)
		if err != nil {
			return nil, fmt.Errorf("target replica %d: %w", i+1, err)
		}
		if ep.database != target.database {
			return nil, fmt.Errorf("target replica %d (%s:%d) names database %q; the target's is %q: a replica serves the target's database", i+1, ep.cfg.Host, ep.cfg.Port, ep.database, target.database)
		}
		out = append(out, &readEndpoint{name: fmt.Sprintf("replica %s:%d", ep.cfg.Host, ep.cfg.Port), ep: ep, dsn: dsn})
	}
	return out, nil
}

// usable says whether re may take reads: the target always (the lag guard judges it), a
// replica when its last check, recent, found it healthy.
func (p *Proxy) usable(re *readEndpoint) bool {
	if !re.replica() {
		return true
	}
	h := re.health.Load()
	return h != nil && h.ok && time.Since(h.checked) < 3*p.cfg.ReplicaCheckInterval+p.cfg.ConnectTimeout
}

// readEndpoint returns the session's read endpoint, choosing one (the usable endpoint with the
// fewest sessions) when it has none or its own is no longer usable.
func (s *session) readEndpoint() *readEndpoint {
	p := s.p
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readEP != nil && p.usable(s.readEP) {
		return s.readEP
	}
	var best *readEndpoint
	for _, re := range p.reads {
		if p.usable(re) && (best == nil || re.sessions.Load() < best.sessions.Load()) {
			best = re
		}
	}
	if s.readEP != nil {
		s.readEP.sessions.Add(-1)
	}
	s.readEP = best
	if best != nil {
		best.sessions.Add(1)
	}
	return best
}

// releaseReadEndpoint forgets the session's endpoint (the session ends).
func (s *session) releaseReadEndpoint() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.readEP != nil {
		s.readEP.sessions.Add(-1)
		s.readEP = nil
	}
}

// readLagOK is the lag guard for a read on re.
func (p *Proxy) readLagOK(re *readEndpoint) bool {
	if !re.replica() {
		return p.progress.lagOK(p.cfg.LagLimit)
	}
	h := re.health.Load()
	return h != nil && p.progress.replicaLagOK(p.cfg.LagLimit, h.applied)
}

// readApplied is read-your-writes for a read on re.
func (p *Proxy) readApplied(re *readEndpoint, lastWrite time.Time) bool {
	if !re.replica() {
		return p.progress.applied(lastWrite)
	}
	h := re.health.Load()
	return h != nil && p.progress.appliedAt(lastWrite, h.applied)
}

// watchReplicas checks every replica each ReplicaCheckInterval until ctx ends.
func (p *Proxy) watchReplicas(ctx context.Context) {
	var replicas []*readEndpoint
	for _, re := range p.reads {
		if re.replica() {
			replicas = append(replicas, re)
		}
	}
	if len(replicas) == 0 {
		return
	}
	conns := make([]*pgx.Conn, len(replicas))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close(context.Background())
			}
		}
	}()
	tick := time.NewTicker(p.cfg.ReplicaCheckInterval)
	defer tick.Stop()
	for {
		for i, re := range replicas {
			h := p.checkReplica(ctx, &conns[i], re)
			if prev := re.health.Load(); prev != nil && prev.ok != h.ok && ctx.Err() == nil {
				if h.ok {
					p.log.Info("target replica healthy again; it takes reads", "replica", re.name)
				} else {
					p.log.Warn("target replica unhealthy; its sessions' reads move to another endpoint", "replica", re.name, "err", h.err)
				}
			}
			re.health.Store(h)
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// checkReplica asks one replica whether it is in recovery and how far it has applied the
// source (its copy of pgshift.position).
func (p *Proxy) checkReplica(ctx context.Context, conn **pgx.Conn, re *readEndpoint) *replicaHealth {
	h := &replicaHealth{checked: time.Now()}
	qctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
	defer cancel()
	fail := func(err error) *replicaHealth {
		if *conn != nil {
			(*conn).Close(context.Background())
			*conn = nil
		}
		h.err = err.Error()
		return h
	}
	if *conn == nil {
		c, err := pgx.Connect(qctx, re.dsn)
		if err != nil {
			return fail(fmt.Errorf("connect: %w", err))
		}
		*conn = c
	}
	var inRecovery, hasState bool
	if err := (*conn).QueryRow(qctx, `SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.to_regclass('pgshift.position') IS NOT NULL`).Scan(&inRecovery, &hasState); err != nil {
		return fail(err)
	}
	if !inRecovery {
		h.err = "not in recovery: it is not a replica (promoted?)"
		return h
	}
	if !hasState {
		h.err = "no pgshift.position: not a replica of this migration's target, or not caught up with its copy"
		return h
	}
	pos, err := state.LoadPosition(qctx, *conn)
	if err != nil {
		return fail(err)
	}
	h.ok, h.applied = true, pos.AppliedLSN
	return h
}

// replicaRows answers SHOW REPLICAS.
func (p *Proxy) replicaRows() ([]string, [][]string) {
	cols := []string{"endpoint", "healthy", "sessions", "reads", "applied", "checked_at", "error"}
	var rows [][]string
	for _, re := range p.reads {
		healthy, applied, checked, errText := "true", "", "", ""
		if re.replica() {
			healthy = strconv.FormatBool(p.usable(re))
			if h := re.health.Load(); h != nil {
				applied, checked, errText = h.applied.String(), h.checked.UTC().Format(time.RFC3339Nano), h.err
			}
		}
		rows = append(rows, []string{re.name, healthy, strconv.FormatInt(re.sessions.Load(), 10), strconv.FormatUint(re.reads.Load(), 10), applied, checked, errText})
	}
	return cols, rows
}
