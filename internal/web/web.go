// Package web serves the running agent's status over HTTP: GET /status returns JSON, GET
// /metrics the Prometheus metrics of the registry it is given. It knows nothing of how the
// status is computed; the agent passes a function.
package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// StatusFunc returns the value served as JSON at /status.
type StatusFunc func(ctx context.Context) (any, error)

// Route is an extra handler mounted beside /status and /metrics (the proxy's /proxy/ actions).
type Route struct {
	Pattern string
	Handler http.Handler
}

// Serve listens on addr and serves until ctx ends. It returns an error if addr cannot be
// bound, so a typo in --http stops the agent at once instead of running without its API.
func Serve(ctx context.Context, addr string, status StatusFunc, reg *prometheus.Registry, log *slog.Logger, extra ...Route) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("status API on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		v, err := status(ctx)
		w.Header().Set("Content-Type", "application/json")
		if err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_ = json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
			return
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(v)
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	for _, r := range extra {
		mux.Handle(r.Pattern, r.Handler)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Info("status API listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("status API on %s: %w", addr, err)
	}
}

// FetchStatus reads /status from a running agent at addr (host:port or a URL) into v.
func FetchStatus(ctx context.Context, addr string, v any) error {
	url := addr
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		url = "http://" + url
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/status", nil)
	if err != nil {
		return fmt.Errorf("status from %s: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("status from %s: %w (is pgshift run --http %s running?)", addr, err, addr)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e map[string]string
		_ = json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("status from %s: %s: %s", addr, resp.Status, e["error"])
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("status from %s: %w", addr, err)
	}
	return nil
}
