package proxy

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the proxy's Prometheus metrics, with conventional names: _total for counters,
// seconds for durations.
type metrics struct {
	clientSessions prometheus.Gauge
	serverSessions *prometheus.GaugeVec
	statements     *prometheus.CounterVec
	lagFallbacks   *prometheus.CounterVec
	relay          prometheus.Histogram
	pauseWait      prometheus.Histogram
	pauseHeld      prometheus.Histogram
	cancels        prometheus.Counter
	switches       *prometheus.CounterVec
	authFailures   prometheus.Counter
	rejected       *prometheus.CounterVec
}

func newMetrics(p *Proxy, reg prometheus.Registerer) *metrics {
	m := &metrics{
		clientSessions: prometheus.NewGauge(prometheus.GaugeOpts{Name: "pgshift_proxy_client_sessions", Help: "Client sessions connected to the proxy."}),
		serverSessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "pgshift_proxy_server_sessions", Help: "Server connections the proxy holds, by server."}, []string{"server"}),
		statements: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgshift_proxy_statements_total",
			Help: "Request units routed in split mode, by server and reason (the rule name for the target; why for the source)."}, []string{"route", "reason"}),
		lagFallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgshift_proxy_lag_fallbacks_total",
			Help: "Reads a rule would have sent to the target that went to the source because the lag was over the limit."}, []string{"rule"}),
		relay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pgshift_proxy_relay_seconds",
			Help:    "Time the proxy spends on one relayed request or response batch (its added latency per hop).",
			Buckets: prometheus.ExponentialBuckets(1e-6, 4, 10)}),
		pauseWait: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pgshift_proxy_pause_wait_seconds",
			Help: "Time from PAUSE until every session was held.", Buckets: prometheus.ExponentialBuckets(1e-3, 4, 10)}),
		pauseHeld: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "pgshift_proxy_pause_duration_seconds",
			Help: "Time from PAUSE until RESUME: how long clients waited.", Buckets: prometheus.ExponentialBuckets(1e-3, 4, 10)}),
		cancels:      prometheus.NewCounter(prometheus.CounterOpts{Name: "pgshift_proxy_cancels_total", Help: "Cancel requests forwarded to a server."}),
		switches:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgshift_proxy_switches_total", Help: "Switches of every session to a server."}, []string{"to"}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{Name: "pgshift_proxy_auth_failures_total", Help: "Client logins refused."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pgshift_proxy_rejected_connections_total",
			Help: "Client connections refused before login, by reason."}, []string{"reason"}),
	}
	if reg == nil {
		return m
	}
	reg.MustRegister(m.clientSessions, m.serverSessions, m.statements, m.lagFallbacks, m.relay, m.pauseWait, m.pauseHeld,
		m.cancels, m.switches, m.authFailures, m.rejected,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgshift_proxy_paused", Help: "1 while a pause holds the sessions."},
			func() float64 {
				if p.Paused() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgshift_proxy_mode", Help: "Routing mode: 0 source, 1 split, 2 target."},
			func() float64 { return float64(p.Mode()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "pgshift_proxy_target_lag_seconds",
			Help: "Replication lag the proxy's lag guard last saw (-1 when unknown)."},
			func() float64 {
				lag, ok := p.progress.lag()
				if !ok {
					return -1
				}
				return lag.Seconds()
			}),
	)
	return m
}
