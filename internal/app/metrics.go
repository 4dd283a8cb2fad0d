package app

import (
	"sync"
	"sync/atomic"

	"github.com/pgshift/pgshift/internal/apply"
	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/state"
)

// followMetrics outlives reconnects: counters keep counting across follow attempts, and the
// last lag measurement stays available to /metrics between measurements.
type followMetrics struct {
	stream     cdc.Stats
	apply      apply.Stats
	reconnects atomic.Uint64
	// applyErrors counts errors of the applier that ended a follow attempt.
	applyErrors atomic.Uint64

	mu   sync.Mutex
	last state.FollowStatus
}

func (m *followMetrics) setLast(s state.FollowStatus) {
	m.mu.Lock()
	m.last = s
	m.mu.Unlock()
}

func (m *followMetrics) lastStatus() state.FollowStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}
