// Package metrics defines every Prometheus metric of the pgshift agent, in one place: names,
// units, labels and help. The proxy's own families (pgshift_proxy_*: sessions, routed
// statements, the pause histogram) live with the proxy and join the same registry.
//
// The agent's metrics are read, at scrape time, from two sources the agent hands over: its
// status snapshot (the same value /api/status serves, so /metrics and `pgshift status --json`
// always agree) and live counters kept by the follow session. Nothing here holds state or
// talks to a database. Names follow Prometheus conventions: base units (bytes, seconds), a
// _total suffix on counters, labels for dimensions.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// Metric family names, for the alert rules and the Grafana dashboard built over them.
const (
	Phase                 = "pgshift_phase"
	CopyRows              = "pgshift_copy_rows_total"
	CopyBytes             = "pgshift_copy_bytes_total"
	CopyEstimatedBytes    = "pgshift_copy_estimated_bytes"
	CopyTables            = "pgshift_copy_tables"
	LagBytes              = "pgshift_replication_lag_bytes"
	LagSeconds            = "pgshift_replication_lag_seconds"
	RetainedWAL           = "pgshift_slot_retained_wal_bytes"
	ApplyRate             = "pgshift_apply_rate_bytes_per_second"
	LastMeasurement       = "pgshift_follow_last_measurement_timestamp_seconds"
	AppliedTransactions   = "pgshift_applied_transactions_total"
	AppliedChanges        = "pgshift_applied_changes_total"
	ApplyErrors           = "pgshift_apply_errors_total"
	AppliedLSN            = "pgshift_applied_lsn_bytes"
	ConfirmedLSN          = "pgshift_confirmed_lsn_bytes"
	ReceivedTransactions  = "pgshift_received_transactions_total"
	SkippedChanges        = "pgshift_skipped_changes_total"
	TargetCommits         = "pgshift_target_commits_total"
	Reconnects            = "pgshift_reconnects_total"
	AppliedDDL            = "pgshift_applied_ddl_total"
	VerifyDifferences     = "pgshift_verify_differences"
	VerifyTables          = "pgshift_verify_tables"
	VerifyLastRun         = "pgshift_verify_last_run_timestamp_seconds"
	CutoverSteps          = "pgshift_cutover_steps"
	CutoverStepDuration   = "pgshift_cutover_step_duration_seconds"
	AgentStart            = "pgshift_agent_start_time_seconds"
	StatusAge             = "pgshift_status_age_seconds"
	ProxyClientSessions   = "pgshift_proxy_client_sessions"
	ProxyStatements       = "pgshift_proxy_statements_total"
	ProxyPauseDuration    = "pgshift_proxy_pause_duration_seconds"
	ProxyMode             = "pgshift_proxy_mode"
	ProxyLagFallbacks     = "pgshift_proxy_lag_fallbacks_total"
	ProxyServerSessions   = "pgshift_proxy_server_sessions"
	ProxyPaused           = "pgshift_proxy_paused"
	ProxyAuthFailures     = "pgshift_proxy_auth_failures_total"
	ProxyRelayLatency     = "pgshift_proxy_relay_seconds"
	ProxyRejectedConns    = "pgshift_proxy_rejected_connections_total"
	ProxySwitches         = "pgshift_proxy_switches_total"
	ProxyTargetLagSeconds = "pgshift_proxy_target_lag_seconds"
)

// Table is one migrated table's copy progress.
type Table struct {
	Name           string
	State          string
	Rows, Bytes    int64
	EstimatedBytes int64 // 0 when unknown
}

// Step is one cutover step of the latest attempt (or of the plan, before any).
type Step struct {
	Name    string
	State   string
	Seconds float64 // how long it ran; 0 before it started
}

// Snapshot is what the agent's status says, in the shape the metrics need. The agent builds
// it from the same status value /api/status serves.
type Snapshot struct {
	Phase  pgtypes.Phase
	Tables []Table
	// Measured is false until the follow session recorded a lag measurement; the lag gauges
	// are absent until then rather than a misleading 0.
	Measured                 bool
	MeasuredAt               time.Time
	LagBytes                 int64
	LagSeconds               float64
	RetainedBytes            int64
	ApplyRate                float64
	TxsApplied, ChangesTotal int64 // since the measuring agent started
	// Verified is false while no verify result is saved.
	Verified                                    bool
	VerifiedAt                                  time.Time
	Differences                                 int64
	TablesIdentical, TablesDiffer, TablesFailed int
	Cutover                                     []Step
	// Age is how old the snapshot is (the agent refreshes it from the target).
	Age time.Duration
}

// Counters are the follow session's live counters; they count from the agent's start.
type Counters struct {
	AppliedLSN, ConfirmedLSN pgtypes.LSN
	Received, Skipped        uint64
	TargetCommits            uint64
	ApplyErrors, Reconnects  uint64
	AppliedDDL               uint64 // captured schema changes committed on the target (ddl: follow)
}

// Sources are where a scrape reads from. Snapshot returns false before the agent has read its
// first status; Counters may be nil (no follow session in this process).
type Sources struct {
	Snapshot   func() (Snapshot, bool)
	Counters   func() Counters
	AgentStart time.Time
}

// Register adds the agent's metrics to reg.
func Register(reg prometheus.Registerer, src Sources) error {
	return reg.Register(&collector{src: src, d: newDescs()})
}

type descs struct {
	phase, copyRows, copyBytes, copyEst, copyTables                       *prometheus.Desc
	lagBytes, lagSeconds, retained, applyRate, measured                   *prometheus.Desc
	txs, changes, applyErrors, appliedLSN, confirmedLSN                   *prometheus.Desc
	received, skipped, commits, reconnects, ddl                           *prometheus.Desc
	verifyDiffs, verifyTables, verifyLast, cutSteps, cutDur, start, stAge *prometheus.Desc
}

func newDescs() descs {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return descs{
		phase:        d(Phase, "1 for the phase the migration is in, 0 for the others.", "phase"),
		copyRows:     d(CopyRows, "Rows copied into the target per table (committed chunks).", "table"),
		copyBytes:    d(CopyBytes, "Bytes of COPY data copied into the target per table (committed chunks).", "table"),
		copyEst:      d(CopyEstimatedBytes, "The source's heap and TOAST size of each table when the copy planned it.", "table"),
		copyTables:   d(CopyTables, "Migrated tables by copy state (pending, copying, done, dropped).", "state"),
		lagBytes:     d(LagBytes, "Source WAL not yet applied on the target, at the agent's last measurement."),
		lagSeconds:   d(LagSeconds, "Now minus the source commit time of the last applied transaction, at the last measurement; 0 when caught up."),
		retained:     d(RetainedWAL, "Source WAL held back by the replication slot (current position minus restart_lsn)."),
		applyRate:    d(ApplyRate, "Source WAL applied per second over the last measurement interval."),
		measured:     d(LastMeasurement, "Unix time of the agent's last lag measurement."),
		txs:          d(AppliedTransactions, "Source transactions committed on the target since the measuring agent started."),
		changes:      d(AppliedChanges, "Row changes (and TRUNCATEs) committed on the target since the measuring agent started."),
		applyErrors:  d(ApplyErrors, "Errors that stopped applying changes (each is followed by a retry or a fatal stop)."),
		appliedLSN:   d(AppliedLSN, "Source WAL position (as a byte offset) the target has durably applied."),
		confirmedLSN: d(ConfirmedLSN, "Source WAL position last confirmed to the replication slot."),
		received:     d(ReceivedTransactions, "Source transactions received from the slot."),
		skipped:      d(SkippedChanges, "Row changes skipped because their table's copy already contained them."),
		commits:      d(TargetCommits, "Target transactions committed (each holds one or more source transactions)."),
		reconnects:   d(Reconnects, "Times following resumed after a connection failure or a lost lease."),
		ddl:          d(AppliedDDL, "Schema changes captured on the source (ddl: follow) committed on the target since the measuring agent started."),
		verifyDiffs:  d(VerifyDifferences, "Differences found by the latest saved verify run (rows, schema objects, sequences)."),
		verifyTables: d(VerifyTables, "Tables of the latest saved verify run by result (identical, different, failed).", "result"),
		verifyLast:   d(VerifyLastRun, "Unix time the latest saved verify run finished."),
		cutSteps:     d(CutoverSteps, "Steps of the latest cutover attempt by state (all pending before the first attempt).", "state"),
		cutDur:       d(CutoverStepDuration, "How long each step of the latest cutover attempt ran (to now while it runs).", "step"),
		start:        d(AgentStart, "Unix time this agent started; a change means the agent restarted."),
		stAge:        d(StatusAge, "Age of the agent's status snapshot, refreshed from the target's state."),
	}
}

type collector struct {
	src Sources
	d   descs
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.d.phase, c.d.copyRows, c.d.copyBytes, c.d.copyEst, c.d.copyTables, c.d.lagBytes,
		c.d.lagSeconds, c.d.retained, c.d.applyRate, c.d.measured, c.d.txs, c.d.changes, c.d.applyErrors, c.d.appliedLSN,
		c.d.confirmedLSN, c.d.received, c.d.skipped, c.d.commits, c.d.reconnects, c.d.ddl, c.d.verifyDiffs, c.d.verifyTables,
		c.d.verifyLast, c.d.cutSteps, c.d.cutDur, c.d.start, c.d.stAge} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	if !c.src.AgentStart.IsZero() {
		gauge(c.d.start, float64(c.src.AgentStart.UnixMilli())/1000)
	}
	if c.src.Counters != nil {
		k := c.src.Counters()
		gauge(c.d.appliedLSN, float64(k.AppliedLSN))
		gauge(c.d.confirmedLSN, float64(k.ConfirmedLSN))
		counter(c.d.received, float64(k.Received))
		counter(c.d.skipped, float64(k.Skipped))
		counter(c.d.commits, float64(k.TargetCommits))
		counter(c.d.applyErrors, float64(k.ApplyErrors))
		counter(c.d.reconnects, float64(k.Reconnects))
		counter(c.d.ddl, float64(k.AppliedDDL))
	}
	if c.src.Snapshot == nil {
		return
	}
	s, ok := c.src.Snapshot()
	if !ok {
		return
	}
	gauge(c.d.stAge, s.Age.Seconds())
	for _, p := range pgtypes.Phases() {
		v := 0.0
		if p == s.Phase {
			v = 1
		}
		gauge(c.d.phase, v, string(p))
	}
	byState := map[string]int{"pending": 0, "copying": 0, "done": 0}
	for _, t := range s.Tables {
		counter(c.d.copyRows, float64(t.Rows), t.Name)
		counter(c.d.copyBytes, float64(t.Bytes), t.Name)
		if t.EstimatedBytes > 0 {
			gauge(c.d.copyEst, float64(t.EstimatedBytes), t.Name)
		}
		byState[t.State]++
	}
	for st, n := range byState {
		gauge(c.d.copyTables, float64(n), st)
	}
	if s.Measured {
		gauge(c.d.lagBytes, float64(s.LagBytes))
		gauge(c.d.lagSeconds, s.LagSeconds)
		gauge(c.d.retained, float64(s.RetainedBytes))
		gauge(c.d.applyRate, s.ApplyRate)
		gauge(c.d.measured, float64(s.MeasuredAt.UnixMilli())/1000)
		counter(c.d.txs, float64(s.TxsApplied))
		counter(c.d.changes, float64(s.ChangesTotal))
	}
	if s.Verified {
		gauge(c.d.verifyDiffs, float64(s.Differences))
		gauge(c.d.verifyTables, float64(s.TablesIdentical), "identical")
		gauge(c.d.verifyTables, float64(s.TablesDiffer), "different")
		gauge(c.d.verifyTables, float64(s.TablesFailed), "failed")
		gauge(c.d.verifyLast, float64(s.VerifiedAt.UnixMilli())/1000)
	}
	steps := map[string]int{"pending": 0, "running": 0, "done": 0, "failed": 0, "skipped": 0}
	for _, st := range s.Cutover {
		steps[st.State]++
		if st.Seconds > 0 {
			gauge(c.d.cutDur, st.Seconds, st.Name)
		}
	}
	for st, n := range steps {
		gauge(c.d.cutSteps, float64(n), st)
	}
}
