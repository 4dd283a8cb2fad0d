package follow

import (
	"sync"
	"sync/atomic"

	"github.com/pgshift/pgshift/internal/apply"
	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/metrics"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// Metrics outlives reconnects: counters keep counting across follow attempts, and the
// last lag measurement stays available to /metrics between measurements.
type Metrics struct {
	stream     cdc.Stats
	apply      apply.Stats
	reconnects atomic.Uint64
	// applyErrors counts errors of the applier that ended a follow attempt.
	applyErrors atomic.Uint64

	mu   sync.Mutex
	last state.FollowStatus
}

func (m *Metrics) setLast(s state.FollowStatus) {
	m.mu.Lock()
	m.last = s
	m.mu.Unlock()
}

// LastStatus is the last lag measurement (zero before the first).
func (m *Metrics) LastStatus() state.FollowStatus {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.last
}

// AppliedLSN is the source position the target has durably applied, as the applier last
// reported it.
func (m *Metrics) AppliedLSN() pgtypes.LSN { return pgtypes.LSN(m.apply.AppliedLSN.Load()) }

// Counters are the session's live counters for the agent's metrics (internal/metrics reads
// them at scrape time); they keep counting across reconnects.
func (m *Metrics) Counters() metrics.Counters {
	return metrics.Counters{AppliedLSN: m.AppliedLSN(), ConfirmedLSN: pgtypes.LSN(m.stream.Confirmed.Load()),
		Received: m.stream.Received.Load(), Skipped: m.apply.Skipped.Load(), TargetCommits: m.apply.TargetTxs.Load(),
		ApplyErrors: m.applyErrors.Load(), Reconnects: m.reconnects.Load(), AppliedDDL: m.apply.DDL.Load()}
}
