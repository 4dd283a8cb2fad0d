package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/cutover"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/follow"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/proxy"
	"github.com/pgshift/pgshift/internal/proxy/route"
	"github.com/pgshift/pgshift/internal/state"
	"github.com/pgshift/pgshift/internal/web"
)

// ProxyConfig turns the configuration into the proxy's.
func ProxyConfig(cfg config.Config) (proxy.Config, error) {
	ps := cfg.ProxySettings
	mode, err := proxy.ParseMode(ps.Mode)
	if err != nil {
		return proxy.Config{}, err
	}
	pc := proxy.Config{
		Listen: cfg.Proxy, Source: cfg.Source, Target: cfg.Target, Mode: mode, AuthFile: ps.AuthFile, AuthType: ps.AuthType,
		AdminUsers: ps.AdminUsers, TLSCertFile: ps.TLSCertFile, TLSKeyFile: ps.TLSKeyFile, MaxClientConn: ps.MaxClientConn,
		MaxServerConn: ps.MaxServerConn, ConnectTimeout: ps.ConnectTimeout, ClientIdleTimeout: ps.ClientIdleTimeout,
		PauseTimeout: ps.PauseTimeout, MaxPause: ps.MaxPause, CancelLaggards: ps.CancelLaggards, LagLimit: ps.LagLimit,
		ReadYourWrites: ps.ReadYourWrites == nil || *ps.ReadYourWrites, AllowFunctions: ps.AllowFunctions,
		TargetReplicas: ps.TargetReplicas, ReplicaCheckInterval: ps.ReplicaCheckInterval,
	}
	for _, r := range ps.Rules {
		rr := route.Rule{Name: r.Name, Users: r.Users, Databases: r.Databases, Applications: r.Applications, Tables: r.Tables,
			Percent: r.Percent, Key: route.KeyKind(r.Key), KeyParam: r.KeyParam}
		for _, a := range r.Addresses {
			pfx, err := parsePrefix(a)
			if err != nil {
				return proxy.Config{}, fmt.Errorf("routing rule %q: client address %q: want an address or CIDR prefix", r.Name, a)
			}
			rr.Addresses = append(rr.Addresses, pfx)
		}
		pc.Rules = append(pc.Rules, rr)
	}
	return pc, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		return netip.ParsePrefix(s)
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

// RunProxy runs the proxy alone (pgshift proxy) until ctx ends; with cfg.HTTP it also serves
// /metrics and the /proxy/ actions. reload re-reads the configuration for RELOAD.
func RunProxy(ctx context.Context, cfg config.Config, reload func() (config.Config, error), log *slog.Logger) error {
	pc, err := ProxyConfig(cfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, err := proxy.New(pc, proxy.Options{Registerer: reg, Logger: log, Reload: proxyReload(reload)})
	if err != nil {
		return err
	}
	if cfg.HTTP == "" {
		return p.Serve(ctx)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	wopts, err := webOptions(cfg, reg, log)
	if err != nil {
		return err
	}
	wopts.Extra = []web.Route{{Pattern: "/proxy/", Handler: p.Handler()}}
	g.Go(func() error {
		status := func(context.Context) (any, error) { return p.Stats(), nil }
		return web.Serve(gctx, wopts, web.Agent{Status: status})
	})
	g.Go(func() error {
		defer cancel()
		return p.Serve(gctx)
	})
	return g.Wait()
}

func proxyReload(reload func() (config.Config, error)) func() (proxy.Config, error) {
	if reload == nil {
		return nil
	}
	return func() (proxy.Config, error) {
		cfg, err := reload()
		if err != nil {
			return proxy.Config{}, err
		}
		return ProxyConfig(cfg)
	}
}

// startAgentProxy starts the proxy of `pgshift run --proxy` in g, with the agent's own applied
// position and lag as its progress, its metrics in reg, and returns it with the HTTP routes
// for the agent's API. Without cfg.Proxy it does nothing.
func startAgentProxy(ctx context.Context, g *errgroup.Group, cfg config.Config, m *follow.Metrics, reg *prometheus.Registry, log *slog.Logger) (*proxy.Proxy, []web.Route, error) {
	if cfg.Proxy == "" {
		return nil, nil, nil
	}
	pc, err := ProxyConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	progress := proxy.ProgressFunc(func(context.Context) (pgtypes.LSN, time.Duration, bool, error) {
		st := m.LastStatus()
		applied := m.AppliedLSN()
		if st.MeasuredAt.IsZero() {
			return applied, 0, false, nil
		}
		lag := time.Duration(st.LagSeconds * float64(time.Second))
		// A measurement overdue by more than the monitor's cadence counts as lag: following has
		// stalled or is reconnecting.
		if age := time.Since(st.MeasuredAt); age > 10*time.Second {
			lag += age - 10*time.Second
		}
		return applied, lag, true, nil
	})
	// The proxy starts on the side the durable cutover state says is live: after a cutover (or
	// an agent killed in the middle of one) clients must reach exactly that side.
	live, err := cutover.Live(ctx, db.Endpoint{Role: db.Target, DSN: cfg.Target}, db.Endpoint{Role: db.Source, DSN: cfg.Source})
	if err != nil {
		return nil, nil, fmt.Errorf("read which side traffic is live on before starting the proxy: %w", err)
	}
	if live == state.LiveTarget {
		pc.Mode = proxy.ModeTarget
	} else if pc.Mode == proxy.ModeTarget {
		return nil, nil, errors.New("proxy_settings.mode is target, but no cutover moved traffic to the target: run pgshift cutover instead")
	}
	p, err := proxy.New(pc, proxy.Options{Progress: progress, Registerer: reg, Logger: log.With("component", "proxy")})
	if err != nil {
		return nil, nil, err
	}
	g.Go(func() error { return p.Serve(ctx) })
	return p, []web.Route{{Pattern: "/proxy/", Handler: p.Handler()}}, nil
}
