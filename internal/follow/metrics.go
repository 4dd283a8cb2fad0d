package follow

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/pgshift/pgshift/internal/apply"
	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// Metrics outlives reconnects: counters keep counting across follow attempts, and the
// last lag measurement stays available to /metrics between measurements.
type Metrics struct {
	stream     cdc.Stats
	apply      apply.Stats
	reconnects atomic.Uint64

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

// Registry exposes the follow phase to Prometheus. Names follow Prometheus conventions: a
// _total suffix for counters, base units (bytes, seconds).
func (m *Metrics) Registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, f))
	}
	gauge("pgshift_applied_lsn_bytes", "Source WAL position (as a byte offset) the target has durably applied.",
		func() float64 { return float64(m.apply.AppliedLSN.Load()) })
	gauge("pgshift_confirmed_lsn_bytes", "Source WAL position last confirmed to the replication slot.",
		func() float64 { return float64(m.stream.Confirmed.Load()) })
	gauge("pgshift_lag_bytes", "Source current WAL position minus the applied position, at the last measurement.",
		func() float64 { return float64(m.LastStatus().LagBytes) })
	gauge("pgshift_lag_seconds", "Now minus the commit time of the last applied source transaction; 0 when caught up.",
		func() float64 { return m.LastStatus().LagSeconds })
	gauge("pgshift_slot_retained_wal_bytes", "Source WAL held back by the replication slot (current position minus restart_lsn).",
		func() float64 { return float64(m.LastStatus().RetainedBytes) })
	gauge("pgshift_apply_rate_bytes_per_second", "Source WAL applied per second over the last measurement interval.",
		func() float64 { return m.LastStatus().ApplyRate })
	counter("pgshift_transactions_received_total", "Source transactions received from the slot.",
		func() float64 { return float64(m.stream.Received.Load()) })
	counter("pgshift_transactions_applied_total", "Source transactions committed on the target.",
		func() float64 { return float64(m.apply.Txs.Load()) })
	counter("pgshift_changes_applied_total", "Row changes (and TRUNCATEs) committed on the target.",
		func() float64 { return float64(m.apply.Changes.Load()) })
	counter("pgshift_changes_skipped_total", "Row changes skipped because their table's copy already contained them.",
		func() float64 { return float64(m.apply.Skipped.Load()) })
	counter("pgshift_target_commits_total", "Target transactions committed (each holds one or more source transactions).",
		func() float64 { return float64(m.apply.TargetTxs.Load()) })
	counter("pgshift_reconnects_total", "Times following resumed after a connection failure.",
		func() float64 { return float64(m.reconnects.Load()) })
	return reg
}

// AppliedLSN is the source position the target has durably applied, as the applier last
// reported it.
func (m *Metrics) AppliedLSN() pgtypes.LSN { return pgtypes.LSN(m.apply.AppliedLSN.Load()) }
