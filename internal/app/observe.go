package app

// The agent's window on itself: a status snapshot refreshed from the target's state every
// second over one connection of its own (so the HTTP API answers from memory and never opens
// connections per request), the Prometheus metrics over that snapshot and the follow
// session's live counters, the alert engine, the audit log of actions, the optional proxy,
// and the HTTP API with the dashboard. It runs for the agent's whole life, copy and follow.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/alert"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/cutover"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/follow"
	"github.com/pgshift/pgshift/internal/metrics"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/proxy"
	"github.com/pgshift/pgshift/internal/state"
	"github.com/pgshift/pgshift/internal/web"
)

// statusRefresh is how often the agent re-reads its status from the target.
const statusRefresh = time.Second

// auditKeep bounds the audit entries the agent keeps in memory for the dashboard.
const auditKeep = 200

// observer is the agent's status, metrics, alerts, audit and API. Its methods are safe for
// concurrent use.
type observer struct {
	cfg     config.Config
	log     *slog.Logger
	lease   *state.Lease
	fm      *follow.Metrics
	started time.Time
	hub     *web.Hub
	proxy   *proxy.Proxy // nil without --proxy
	cut     *cutover.Engine
	// restarted describes the previous agent when this one started after it ("" if none).
	restarted string
	prev      *state.Holder

	rules    []alert.Rule
	notifier *alert.Notifier

	mu        sync.Mutex
	status    *Status
	statusAt  time.Time
	statusRaw []byte
	statusErr error
	history   []state.HistoryPoint
	verifyAt  time.Time
	verify    json.RawMessage
	audit     []state.AuditEntry
	pending   []state.AuditEntry // not yet written (no state schema yet, or the target away)
	engine    *alert.Engine
	alerts    []alert.State
	lastEval  time.Time
	pausedAt  time.Time
}

// previousAgent reads the agent (a `run`) that held the migration before this one, if any;
// a `copy` that held it before is no restart of the agent. A failure only means the restart
// alert cannot say who it was.
func previousAgent(ctx context.Context, cfg config.Config) *state.Holder {
	conn, err := db.Endpoint{Role: db.Target, DSN: cfg.Target}.Connect(ctx)
	if err != nil {
		return nil
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := state.Load(ctx, conn); err != nil {
		return nil // no migration yet: nothing restarts
	}
	ls, err := state.ReadLease(ctx, conn)
	if err != nil || !ls.Recorded || ls.Alive || ls.Holder.Command != "run" {
		return nil
	}
	return &ls.Holder
}

// webOptions builds the HTTP API's options from the configuration.
func webOptions(cfg config.Config, gatherer prometheus.Gatherer, log *slog.Logger) (web.Options, error) {
	token, err := cfg.HTTPTokenValue()
	if err != nil {
		return web.Options{}, err
	}
	if err := web.CheckBind(cfg.HTTP, token); err != nil {
		return web.Options{}, err
	}
	hs := cfg.HTTPSettings
	if (hs.TLSCertFile == "") != (hs.TLSKeyFile == "") {
		return web.Options{}, errors.New("http_settings: set both tls_cert_file and tls_key_file, or neither")
	}
	return web.Options{Addr: cfg.HTTP, Token: token, TLSCert: hs.TLSCertFile, TLSKey: hs.TLSKeyFile, Gatherer: gatherer,
		Log: log.With("component", "http")}, nil
}

// withObserver runs fn (copy and follow) with the observer beside it: the refresher, alerts,
// proxy (--proxy) and HTTP API (--http) all end when fn returns. fn receives the follow
// session's counters, which the observer reads.
func withObserver(ctx context.Context, cfg config.Config, opts RunOptions, lease *state.Lease, prev *state.Holder, log *slog.Logger,
	fn func(ctx context.Context, eng *cutover.Engine) error) error {
	o := &observer{cfg: cfg, log: log, lease: lease, fm: &follow.Metrics{}, started: time.Now(), hub: web.NewHub(), prev: prev}
	var err error
	if !cfg.Alerts.Disabled {
		if o.rules, err = alert.FromConfig(cfg.AlertRules()); err != nil {
			return err
		}
		hooks, err := alert.WebhooksFromConfig(cfg.Alerts.Webhooks)
		if err != nil {
			return err
		}
		o.notifier = alert.NewNotifier(hooks, log.With("component", "alerts"))
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := metrics.Register(reg, metrics.Sources{Snapshot: o.metricsSnapshot, Counters: o.counters, AgentStart: o.started}); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	var wopts web.Options
	if cfg.HTTP != "" {
		if wopts, err = webOptions(cfg, reg, log); err != nil {
			return err
		}
		if wopts.TLSCert != "" {
			o.externalURL("https://" + cfg.HTTP + "/")
		} else {
			o.externalURL("http://" + cfg.HTTP + "/")
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	p, routes, err := startAgentProxy(gctx, g, cfg, o.fm, reg, log)
	if err != nil {
		return err
	}
	o.proxy = p
	o.cut = newEngine(cfg, opts, lease, p, o, log)
	o.record("agent", "agent.start", "ok", map[string]any{"host": lease.Holder().Host, "pid": lease.Holder().PID,
		"http": cfg.HTTP != "", "proxy": cfg.Proxy != ""})
	if cfg.HTTP != "" {
		wopts.Extra = routes
		g.Go(func() error { return web.Serve(gctx, wopts, o.webAgent()) })
	}
	if o.notifier != nil {
		g.Go(func() error { return o.notifier.Run(gctx) })
	}
	g.Go(func() error { return o.refreshLoop(gctx) })
	var fnErr error
	g.Go(func() error {
		defer cancel() // the API, alerts and proxy go when the agent's work ends
		fnErr = fn(gctx, o.cut)
		return fnErr
	})
	err = g.Wait()
	// The stop is recorded while the lease is still held (withLease releases it after fn).
	outcome, detail := "ok", map[string]any{"pid": lease.Holder().PID}
	if fnErr != nil {
		outcome, detail["error"] = "failed", fnErr.Error()
	}
	o.record("agent", "agent.stop", outcome, detail)
	fctx, fcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	o.flushAudit(fctx)
	fcancel()
	return err
}

func (o *observer) externalURL(u string) {
	if o.notifier != nil {
		o.notifier.ExternalURL = u
	}
}

// refreshLoop re-reads the status every statusRefresh and evaluates the alerts.
func (o *observer) refreshLoop(ctx context.Context) error {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.WithoutCancel(ctx))
		}
	}()
	t := time.NewTicker(statusRefresh)
	defer t.Stop()
	for {
		if conn == nil || conn.IsClosed() {
			c, err := db.Endpoint{Role: db.Target, DSN: o.cfg.Target}.Connect(ctx)
			if err != nil {
				o.setErr(err)
			} else {
				conn = c
			}
		}
		if conn != nil {
			if err := o.refresh(ctx, conn); err != nil && ctx.Err() == nil {
				o.setErr(err)
				if conn.IsClosed() || !errors.Is(err, state.ErrNoMigration) {
					conn.Close(context.WithoutCancel(ctx))
					conn = nil
				}
			}
			o.flushAudit(ctx)
		}
		o.evaluate()
		o.publishProxy()
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (o *observer) setErr(err error) {
	o.mu.Lock()
	o.statusErr = err
	o.mu.Unlock()
}

// refresh reads the status, and what changed since the last refresh: history, the latest
// verify report, audit entries.
func (o *observer) refresh(ctx context.Context, conn *pgx.Conn) error {
	st, err := readTargetStatus(ctx, conn)
	if err != nil {
		return db.Endpoint{Role: db.Target}.Describe(err)
	}
	o.mu.Lock()
	var since time.Time
	if n := len(o.history); n > 0 {
		since = o.history[n-1].At
	}
	lastAudit := int64(0)
	if n := len(o.audit); n > 0 {
		lastAudit = o.audit[n-1].ID
	}
	verifyAt := o.verifyAt
	o.mu.Unlock()
	hist, err := state.LoadFollowHistory(ctx, conn, since)
	if err != nil {
		return err
	}
	var verifyRaw json.RawMessage
	if st.LastVerify != nil && !st.LastVerify.FinishedAt.Equal(verifyAt) {
		run, err := state.LatestVerifyRun(ctx, conn)
		if err != nil {
			return err
		}
		verifyRaw = run.Result
	}
	audit, err := state.LoadAudit(ctx, conn, lastAudit, auditKeep)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	o.mu.Lock()
	changed := string(raw) != string(o.statusRaw)
	o.status, o.statusRaw, o.statusAt, o.statusErr = &st, raw, time.Now(), nil
	o.history = append(o.history, hist...)
	if over := len(o.history) - 2*state.HistoryMaxRows; over > 0 {
		o.history = slices.Delete(o.history, 0, over)
	}
	if verifyRaw != nil {
		o.verifyAt, o.verify = st.LastVerify.FinishedAt, verifyRaw
	}
	o.audit = append(o.audit, audit...)
	if over := len(o.audit) - auditKeep; over > 0 {
		o.audit = slices.Delete(o.audit, 0, over)
	}
	auditCopy := slices.Clone(o.audit)
	o.mu.Unlock()
	if changed {
		_ = o.hub.Publish("status", json.RawMessage(raw))
	}
	if verifyRaw != nil {
		_ = o.hub.Publish("verify", verifyRaw)
	}
	if len(audit) > 0 {
		_ = o.hub.Publish("audit", auditCopy)
	}
	return nil
}

// record queues an audit entry; it is written at the next refresh (at once when possible).
// Details must carry no secret.
func (o *observer) record(actor, action, outcome string, detail map[string]any) {
	d, err := json.Marshal(detail)
	if err != nil {
		d = []byte("{}")
	}
	o.mu.Lock()
	o.pending = append(o.pending, state.AuditEntry{At: time.Now(), Actor: actor, Action: action, Outcome: outcome, Detail: d})
	o.mu.Unlock()
}

// flushAudit writes the queued audit entries through a session fenced by the lease (the
// audit log is migration state: only the lease holder writes it).
func (o *observer) flushAudit(ctx context.Context) {
	o.mu.Lock()
	pending := o.pending
	known := o.status != nil
	o.mu.Unlock()
	if len(pending) == 0 || !known {
		return // before the copy created the state schema there is nowhere to write
	}
	conn, err := db.Endpoint{Role: db.Target, DSN: o.cfg.Target, Session: o.lease.Fence}.Connect(ctx)
	if err != nil {
		o.log.Debug("audit log: cannot write yet", "err", err)
		return
	}
	defer conn.Close(context.WithoutCancel(ctx))
	n := 0
	for _, e := range pending {
		if _, err := state.RecordAudit(ctx, conn, e); err != nil {
			o.log.Debug("audit log: cannot write yet", "err", err)
			break
		}
		n++
	}
	o.mu.Lock()
	o.pending = o.pending[n:]
	o.mu.Unlock()
}

// snapshot returns the latest status (nil before the first read).
func (o *observer) snapshot() (*Status, time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.status, o.statusAt
}

// evaluate runs the alert rules on the latest status, at most every Alerts.Interval.
func (o *observer) evaluate() {
	if o.notifier == nil {
		return
	}
	st, _ := o.snapshot()
	if st == nil {
		return
	}
	interval := o.cfg.Alerts.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	now := time.Now()
	o.mu.Lock()
	if !o.lastEval.IsZero() && now.Sub(o.lastEval) < interval {
		o.mu.Unlock()
		return
	}
	o.lastEval = now
	if o.engine == nil {
		labels := map[string]string{"migration": st.Slot}
		for k, v := range o.cfg.Alerts.Labels {
			labels[k] = v
		}
		o.engine = alert.NewEngine(o.rules, o.cfg.Alerts.Repeat, labels)
	}
	obs := o.observation(st, now)
	notes := o.engine.Evaluate(obs)
	o.alerts = o.engine.States()
	states := o.alerts
	o.mu.Unlock()
	for _, n := range notes {
		o.notifier.Send(n)
		o.record("alerts", "alert."+n.Status, "ok", map[string]any{"alert": n.Rule.Name, "severity": n.Rule.Severity, "message": n.Message})
	}
	_ = o.hub.Publish("alerts", states)
}

// observation is the alert input from a status; o.mu must be held.
func (o *observer) observation(st *Status, now time.Time) alert.Observation {
	obs := alert.Observation{Now: now, Phase: st.Phase, LagSeconds: st.LagSeconds, LagBytes: st.LagBytes, RetainedBytes: st.RetainedBytes}
	if st.MeasuredAt != nil {
		obs.Measured, obs.MeasuredAt = true, *st.MeasuredAt
		obs.StreamingSinceStart = st.MeasuredAt.After(o.started)
	}
	if lsn, err := pgtypes.ParseLSN(st.AppliedLSN); err == nil {
		obs.AppliedLSN = uint64(lsn)
	}
	if st.LastVerify != nil {
		obs.Verified, obs.Differences = true, st.LastVerify.Summary.Differences
	}
	for _, s := range st.Cutover.Steps {
		if s.State == state.StepFailed {
			obs.FailedSteps = append(obs.FailedSteps, s.Name)
		}
	}
	if o.prev != nil {
		how := "it did not record a clean stop (killed, crashed or its host lost)"
		for i := len(o.audit) - 1; i >= 0; i-- {
			e := o.audit[i]
			if e.Action != "agent.stop" && e.Action != "agent.start" {
				continue
			}
			var d struct {
				PID int `json:"pid"`
			}
			_ = json.Unmarshal(e.Detail, &d)
			if e.Action == "agent.stop" && d.PID == o.prev.PID {
				how = "it stopped cleanly at " + e.At.UTC().Format(time.RFC3339)
				break
			}
		}
		obs.Restarted = fmt.Sprintf("the previous agent (host %s pid %d, running since %s, last heartbeat %s) is gone: %s",
			o.prev.Host, o.prev.PID, o.prev.StartedAt.UTC().Format(time.RFC3339), o.prev.Heartbeat.UTC().Format(time.RFC3339), how)
	}
	return obs
}

// metricsSnapshot converts the latest status for the metrics.
func (o *observer) metricsSnapshot() (metrics.Snapshot, bool) {
	st, at := o.snapshot()
	if st == nil {
		return metrics.Snapshot{}, false
	}
	s := metrics.Snapshot{Phase: pgtypes.Phase(st.Phase), Age: time.Since(at), LagBytes: st.LagBytes, LagSeconds: st.LagSeconds,
		RetainedBytes: st.RetainedBytes, ApplyRate: st.ApplyRate, TxsApplied: st.TxsApplied, ChangesTotal: st.ChangesApplied}
	for _, t := range st.Tables {
		s.Tables = append(s.Tables, metrics.Table{Name: t.Table, State: t.State, Rows: t.Rows, Bytes: t.Bytes, EstimatedBytes: t.EstBytes})
	}
	if st.MeasuredAt != nil {
		s.Measured, s.MeasuredAt = true, *st.MeasuredAt
	}
	if v := st.LastVerify; v != nil {
		s.Verified, s.VerifiedAt, s.Differences = true, v.FinishedAt, v.Summary.Differences
		s.TablesIdentical, s.TablesFailed = v.Summary.TablesIdentical, v.Summary.TablesFailed
		s.TablesDiffer = max(v.Summary.TablesCompared-v.Summary.TablesIdentical-v.Summary.TablesFailed, 0)
	}
	now := time.Now()
	for _, c := range st.Cutover.Steps {
		s.Cutover = append(s.Cutover, metrics.Step{Name: c.Name, State: c.State, Seconds: c.Duration(now).Seconds()})
	}
	return s, true
}

func (o *observer) counters() metrics.Counters { return o.fm.Counters() }

// ready: following, with a fresh measurement and lag under lag_warn.
func (o *observer) ready() (bool, string) {
	// After a cutover the agent replicates back: ready while that streams.
	if o.cut != nil {
		if on, ok, why := o.cut.Reverse(); on {
			return ok, why
		}
	}
	last := o.fm.LastStatus()
	if last.MeasuredAt.IsZero() {
		return false, "not following yet (copying, or no lag measured)"
	}
	if age := time.Since(last.MeasuredAt); age > 30*time.Second {
		return false, fmt.Sprintf("no lag measurement for %s", age.Round(time.Second))
	}
	if limit := o.cfg.LagWarn; limit > 0 && last.LagSeconds > limit.Seconds() {
		return false, fmt.Sprintf("lag %.1f s is over the limit %s", last.LagSeconds, limit)
	}
	return true, ""
}

type proxyView struct {
	Running bool                `json:"running"`
	Stats   *proxy.Stats        `json:"stats,omitempty"`
	Routes  []map[string]string `json:"routes,omitempty"`
}

func (o *observer) proxyView() proxyView {
	if o.proxy == nil {
		return proxyView{}
	}
	st := o.proxy.Stats()
	v := proxyView{Running: true, Stats: &st}
	if cols, rows, err := o.proxy.Show("routes"); err == nil {
		for _, r := range rows {
			m := map[string]string{}
			for i, c := range cols {
				m[c] = r[i]
			}
			v.Routes = append(v.Routes, m)
		}
	}
	return v
}

func (o *observer) publishProxy() {
	if o.proxy != nil {
		_ = o.hub.Publish("proxy", o.proxyView())
	}
}

// webAgent is the API's view of the observer.
func (o *observer) webAgent() web.Agent {
	a := web.Agent{
		Status: func(context.Context) (any, error) {
			o.mu.Lock()
			defer o.mu.Unlock()
			if o.status == nil {
				if o.statusErr != nil {
					return nil, o.statusErr
				}
				return nil, errors.New("the agent has not read its status yet")
			}
			return json.RawMessage(o.statusRaw), nil
		},
		Ready: o.ready,
		History: func(context.Context) (any, error) {
			o.mu.Lock()
			defer o.mu.Unlock()
			return slices.Clone(o.history), nil
		},
		Alerts: func(context.Context) (any, error) {
			o.mu.Lock()
			defer o.mu.Unlock()
			if o.alerts == nil {
				var out []alert.State
				for _, r := range o.rules {
					out = append(out, alert.State{Name: r.Name, Kind: r.Kind, Severity: r.Severity, Description: r.Description(), State: "inactive"})
				}
				return out, nil
			}
			return o.alerts, nil
		},
		Audit: func(context.Context) (any, error) {
			o.mu.Lock()
			defer o.mu.Unlock()
			return slices.Clone(o.audit), nil
		},
		Verify: func(context.Context) (any, error) {
			o.mu.Lock()
			defer o.mu.Unlock()
			if o.verify == nil {
				return nil, errors.New("no verify result saved (run pgshift verify)")
			}
			return o.verify, nil
		},
		Proxy:  func(context.Context) (any, error) { return o.proxyView(), nil },
		Events: o.hub,
	}
	o.cutoverActions(&a)
	if o.proxy != nil {
		a.Actions.ProxyMode = func(ctx context.Context, mode string) (any, error) {
			m, err := proxy.ParseMode(mode)
			if err == nil {
				err = o.proxy.SetMode(ctx, m)
			}
			o.recordAction("proxy.mode", err, map[string]any{"mode": mode})
			if err != nil {
				return nil, fmt.Errorf("%w: %w", web.ErrConflict, err)
			}
			return map[string]string{"mode": o.proxy.Mode().String()}, nil
		}
		a.Actions.Pause = func(ctx context.Context, timeout time.Duration) (any, error) {
			took, err := o.proxy.Pause(ctx, timeout)
			o.recordAction("proxy.pause", err, map[string]any{"wait_seconds": took.Seconds()})
			if err != nil {
				return nil, fmt.Errorf("%w: %w", web.ErrConflict, err)
			}
			o.mu.Lock()
			o.pausedAt = time.Now().Add(-took)
			o.mu.Unlock()
			return map[string]any{"paused": true, "took_seconds": took.Seconds()}, nil
		}
		a.Actions.Resume = func(ctx context.Context) (any, error) {
			o.proxy.Resume()
			o.mu.Lock()
			held := time.Duration(0)
			if !o.pausedAt.IsZero() {
				held, o.pausedAt = time.Since(o.pausedAt), time.Time{}
			}
			o.mu.Unlock()
			o.recordAction("proxy.resume", nil, map[string]any{"paused_seconds": held.Seconds()})
			return map[string]any{"resumed": true, "paused_seconds": held.Seconds()}, nil
		}
	}
	return a
}

// recordAction audits a control action taken through the API.
func (o *observer) recordAction(action string, err error, detail map[string]any) {
	outcome := "ok"
	if err != nil {
		outcome, detail["error"] = "failed", err.Error()
	}
	o.record("api", action, outcome, detail)
}
