package proxy

import (
	"encoding/binary"
	"time"

	"github.com/pgshift/pgshift/internal/proxy/route"
)

// Mode says where statements go.
type Mode int

const (
	// ModeSource sends everything to the source.
	ModeSource Mode = iota
	// ModeSplit sends certainly-read-only statements of sessions the rules pick to the target
	// (under the lag limit and read-your-writes), everything else to the source.
	ModeSplit
	// ModeTarget sends everything to the target.
	ModeTarget
)

func (m Mode) String() string {
	switch m {
	case ModeSplit:
		return "split"
	case ModeTarget:
		return "target"
	}
	return "source"
}

// ParseMode reads "source", "split" or "target".
func ParseMode(s string) (Mode, error) {
	switch lower(s) {
	case "source", "":
		return ModeSource, nil
	case "split":
		return ModeSplit, nil
	case "target":
		return ModeTarget, nil
	}
	return 0, errorf("mode %q: want source, split or target", s)
}

// unitClass is what the classifier says about all statements of one request unit.
type unitClass struct {
	readOnly     bool
	beginRO      bool
	sessionState bool
	temp         bool
	tables       []string
	reason       string
}

// classifySeg classifies every statement a unit runs: simple queries, statements parsed in the
// unit, and prepared statements it binds or describes.
func (s *session) classifySeg(seg []byte) unitClass {
	c := s.p.classifier()
	uc := unitClass{readOnly: true}
	seen := 0
	var local map[string]string // statements parsed in this unit, by name
	add := func(st *route.Statement) {
		seen++
		if !st.ReadOnly {
			if uc.readOnly {
				uc.reason = st.Reason
			}
			uc.readOnly = false
		}
		uc.beginRO = st.BeginReadOnly
		uc.sessionState = uc.sessionState || st.SessionState
		uc.temp = uc.temp || st.TempObjects
		for _, t := range st.Tables {
			uc.tables = append(uc.tables, t)
		}
	}
	byName := func(name string) {
		if q, ok := local[name]; ok {
			add(c.Classify(q))
			return
		}
		s.mu.Lock()
		st := s.stmts[name]
		s.mu.Unlock()
		if st == nil {
			add(&route.Statement{Reason: "unknown-statement"})
			return
		}
		if st.class == nil {
			st.class = c.Classify(st.query)
		}
		add(st.class)
	}
	for len(seg) > 0 {
		n := int(binary.BigEndian.Uint32(seg[1:5])) + 1
		msg := seg[:n]
		seg = seg[n:]
		switch msg[0] {
		case 'Q':
			q, _, _ := cstringBytes(body(msg))
			add(c.ClassifyBytes(q))
		case 'F':
			add(&route.Statement{Reason: "function-call"})
		case 'P':
			name, rest, _ := cstring(body(msg))
			q, _, _ := cstring(rest)
			if local == nil {
				local = map[string]string{}
			}
			local[name] = q
			add(c.Classify(q))
		case 'B':
			_, name, _ := bindNames(msg)
			byName(name)
		}
	}
	if seen == 0 {
		uc.readOnly = false
		uc.reason = "empty"
	}
	if seen != 1 {
		uc.beginRO = false
	}
	if uc.readOnly {
		uc.reason = "select"
	}
	if uc.beginRO {
		uc.readOnly = false
		uc.reason = "begin-read-only"
	}
	return uc
}

// decide picks the server for a new unit. read means the unit goes to the target as a read of
// split mode (on a read-only connection with the session's state replayed); write means it may
// write on the source, so read-your-writes must hold the session's next reads there.
func (s *session) decide(seg []byte) (role Role, read, write bool) {
	mode := s.p.Mode()
	primary := s.primaryRole()
	if mode != ModeSplit || primary != Source {
		return primary, false, false
	}
	uc := s.classifySeg(seg)
	s.mu.Lock()
	if uc.sessionState {
		s.stateVersion++
	}
	if uc.temp {
		s.tempObjects = true
	}
	temp := s.tempObjects
	lastWrite := s.lastWrite
	s.mu.Unlock()
	toSource := func(reason string, write bool) (Role, bool, bool) {
		s.p.metrics.statements.WithLabelValues("source", reason).Inc()
		return Source, false, write
	}
	if !uc.readOnly && !uc.beginRO {
		return toSource(uc.reason, true)
	}
	if temp {
		return toSource("temp-objects", false)
	}
	d := s.routes.Load().Decide(uc.tables)
	if !d.Target {
		return toSource("rule", false)
	}
	re := s.readEndpoint()
	if re == nil || !s.p.readLagOK(re) {
		s.p.metrics.lagFallbacks.WithLabelValues(d.Rule).Inc()
		s.p.routeCount(d.Rule, false)
		return toSource("lag", false)
	}
	if s.p.cfg.ReadYourWrites && !s.p.readApplied(re, lastWrite) {
		s.p.routeCount(d.Rule, false)
		return toSource("read-your-writes", false)
	}
	re.reads.Add(1)
	s.p.metrics.statements.WithLabelValues("target", d.Rule).Inc()
	s.p.routeCount(d.Rule, true)
	return Target, true, false
}

// sinceStart is a monotonic-friendly helper for durations in stats.
func sinceStart(t time.Time) float64 { return time.Since(t).Seconds() }
