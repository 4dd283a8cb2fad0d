// Package web is the agent's HTTP API and dashboard: /metrics (Prometheus), /healthz (live),
// /readyz (streaming with lag under the limit), /api/status (what `pgshift status --json`
// shows, from the agent's memory), /api/events (server-sent events for the dashboard),
// /api/history, /api/alerts, /api/audit, /api/proxy, /api/verify, the control actions (cutover, rollback,
// proxy mode, pause, resume) and the dashboard itself at /, its assets embedded in the binary.
//
// It knows nothing of how any of this is computed: the agent hands it an Agent of functions.
//
// Security. Bound to a loopback address the API may run without a token; bound anywhere else
// it refuses to start without one. With a token every request except /healthz, /readyz and
// the static dashboard files must carry it, as "Authorization: Bearer TOKEN" or as the
// session cookie the dashboard obtains from POST /api/login. Control actions are POSTs that
// must also carry the header X-Pgshift-Request (a page of another origin cannot set it without
// a CORS preflight, which is never granted), and without a token only requests whose Host is
// an IP address or localhost are served (no DNS rebinding onto a loopback agent). TLS is
// optional (cert and key files). Secrets never appear in any response: the agent passes
// values that carry none.
package web

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// StatusFunc returns the value served as JSON at /api/status.
type StatusFunc func(ctx context.Context) (any, error)

// Route is an extra handler mounted beside the API (the proxy's /proxy/ actions). It is
// behind the same authentication.
type Route struct {
	Pattern string
	Handler http.Handler
}

// ErrUnavailable is wrapped by actions this agent cannot perform (no proxy running, no
// cutover in this build); the API answers 501 with the message.
var ErrUnavailable = errors.New("not available in this agent")

// ErrConflict is wrapped by actions refused in the current state; the API answers 409.
var ErrConflict = errors.New("refused")

// Actions are the control actions. Each returns a JSON-able result.
type Actions struct {
	Cutover   func(ctx context.Context, dryRun bool) (any, error)
	Rollback  func(ctx context.Context) (any, error)
	ProxyMode func(ctx context.Context, mode string) (any, error)
	Pause     func(ctx context.Context, timeout time.Duration) (any, error)
	Resume    func(ctx context.Context) (any, error)
}

// Agent is what the API serves. Nil functions answer 404 (or, for actions, 501).
type Agent struct {
	Status StatusFunc
	// Ready reports whether the agent is streaming with lag under its limit, and why not.
	Ready   func() (bool, string)
	History func(ctx context.Context) (any, error)
	Alerts  func(ctx context.Context) (any, error)
	Audit   func(ctx context.Context) (any, error)
	Proxy   func(ctx context.Context) (any, error)
	// Verify is the latest saved verify report in full (differing keys and columns).
	Verify  func(ctx context.Context) (any, error)
	Events  *Hub
	Actions Actions
}

// Options configure Serve.
type Options struct {
	Addr string
	// Token is the bearer token; empty allows only a loopback Addr.
	Token            string
	TLSCert, TLSKey  string
	Gatherer         prometheus.Gatherer
	Log              *slog.Logger
	Extra            []Route
	ShutdownDeadline time.Duration // default 5 s
}

// IsLoopback reports whether addr (host:port) binds only loopback interfaces.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// CheckBind refuses an address that is not loopback when no token is set.
func CheckBind(addr, token string) error {
	if token == "" && !IsLoopback(addr) {
		return fmt.Errorf("--http %s is not a loopback address: the API then needs a bearer token "+
			"(http_token_file in the config file, or PGSHIFT_HTTP_TOKEN), or bind it to 127.0.0.1", addr)
	}
	return nil
}

// Serve listens on opts.Addr and serves until ctx ends. It returns an error at once if the
// address cannot be bound or is not allowed (CheckBind), so a typo in --http stops the agent
// instead of running without its API.
func Serve(ctx context.Context, opts Options, agent Agent) error {
	if err := CheckBind(opts.Addr, opts.Token); err != nil {
		return err
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.ShutdownDeadline <= 0 {
		opts.ShutdownDeadline = 5 * time.Second
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return fmt.Errorf("HTTP API on %s: %w", opts.Addr, err)
	}
	h, err := Handler(opts, agent)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	scheme := "http"
	if opts.TLSCert != "" {
		scheme = "https"
	}
	opts.Log.Info("HTTP API and dashboard listening", "url", scheme+"://"+ln.Addr().String()+"/", "token", opts.Token != "")
	errc := make(chan error, 1)
	go func() {
		if opts.TLSCert != "" {
			errc <- srv.ServeTLS(ln, opts.TLSCert, opts.TLSKey)
			return
		}
		errc <- srv.Serve(ln)
	}()
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), opts.ShutdownDeadline)
		defer cancel()
		agent.Events.Close() // ends the event streams, which Shutdown would otherwise wait for
		_ = srv.Shutdown(sctx)
		<-errc
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return fmt.Errorf("HTTP API on %s: %w", opts.Addr, err)
	}
}

// sessionCookie names the dashboard's session cookie; its value is derived from the token,
// never the token itself.
const sessionCookie = "pgshift_session"

// requestHeader must be present on control actions (see the package comment).
const requestHeader = "X-Pgshift-Request"

func sessionValue(token string) string {
	sum := sha256.Sum256([]byte("pgshift dashboard session\x00" + token))
	return hex.EncodeToString(sum[:])
}

// Handler builds the API's handler (Serve's, exposed for tests).
func Handler(opts Options, agent Agent) (http.Handler, error) {
	static, err := fs.Sub(assets, "assets")
	if err != nil {
		return nil, fmt.Errorf("dashboard assets: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /assets/", http.StripPrefix("/assets/", http.FileServerFS(static)))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'")
		http.ServeFileFS(w, r, static, "index.html")
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "live"})
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if agent.Ready == nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": "no follow session in this process"})
			return
		}
		ok, why := agent.Ready()
		if !ok {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "reason": why})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
	mux.HandleFunc("POST /api/login", func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Token string `json:"token"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&body); err != nil {
			writeError(w, http.StatusBadRequest, errors.New("want {\"token\": \"...\"}"))
			return
		}
		if opts.Token == "" || subtle.ConstantTimeCompare([]byte(body.Token), []byte(opts.Token)) != 1 {
			writeError(w, http.StatusUnauthorized, errors.New("wrong token"))
			return
		}
		http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sessionValue(opts.Token), Path: "/", HttpOnly: true,
			Secure: opts.TLSCert != "", SameSite: http.SameSiteStrictMode})
		writeJSON(w, http.StatusOK, map[string]bool{"ok": true})
	})
	if opts.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{}))
	}
	get := func(pattern string, f func(ctx context.Context) (any, error)) {
		if f == nil {
			return
		}
		mux.HandleFunc("GET "+pattern, func(w http.ResponseWriter, r *http.Request) {
			ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
			defer cancel()
			v, err := f(ctx)
			if err != nil {
				writeError(w, http.StatusServiceUnavailable, err)
				return
			}
			writeJSON(w, http.StatusOK, v)
		})
	}
	if agent.Status != nil {
		get("/api/status", agent.Status)
		get("/status", agent.Status) // the path of earlier versions
	}
	get("/api/history", agent.History)
	get("/api/alerts", agent.Alerts)
	get("/api/audit", agent.Audit)
	get("/api/proxy", agent.Proxy)
	get("/api/verify", agent.Verify)
	if agent.Events != nil {
		mux.Handle("GET /api/events", agent.Events)
	}
	act := func(pattern string, f func(r *http.Request) (any, error)) {
		mux.HandleFunc("POST "+pattern, func(w http.ResponseWriter, r *http.Request) {
			if r.Header.Get(requestHeader) == "" {
				writeError(w, http.StatusForbidden, fmt.Errorf("control actions need the %s header", requestHeader))
				return
			}
			v, err := f(r)
			switch {
			case errors.Is(err, ErrUnavailable):
				writeError(w, http.StatusNotImplemented, err)
			case errors.Is(err, ErrConflict):
				writeError(w, http.StatusConflict, err)
			case err != nil:
				writeError(w, http.StatusInternalServerError, err)
			default:
				writeJSON(w, http.StatusOK, v)
			}
		})
	}
	a := agent.Actions
	unavailable := func(what string) error { return fmt.Errorf("%s: %w", what, ErrUnavailable) }
	act("/api/cutover", func(r *http.Request) (any, error) {
		if a.Cutover == nil {
			return nil, unavailable("cutover")
		}
		var body struct {
			Confirm bool `json:"confirm"`
			DryRun  bool `json:"dry_run"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 4096)).Decode(&body); err != nil {
			return nil, fmt.Errorf("%w: want {\"confirm\": true} or {\"dry_run\": true}", ErrConflict)
		}
		if !body.Confirm && !body.DryRun {
			return nil, fmt.Errorf("%w: a cutover starts only with {\"confirm\": true}", ErrConflict)
		}
		return a.Cutover(r.Context(), body.DryRun)
	})
	act("/api/rollback", func(r *http.Request) (any, error) {
		if a.Rollback == nil {
			return nil, unavailable("rollback")
		}
		return a.Rollback(r.Context())
	})
	act("/api/proxy/mode", func(r *http.Request) (any, error) {
		if a.ProxyMode == nil {
			return nil, unavailable("proxy mode (the agent runs no proxy: start it with --proxy)")
		}
		return a.ProxyMode(r.Context(), r.URL.Query().Get("mode"))
	})
	act("/api/pause", func(r *http.Request) (any, error) {
		if a.Pause == nil {
			return nil, unavailable("pause (the agent runs no proxy: start it with --proxy)")
		}
		var timeout time.Duration
		if t := r.URL.Query().Get("timeout"); t != "" {
			var err error
			if timeout, err = time.ParseDuration(t); err != nil || timeout < 0 {
				return nil, fmt.Errorf("%w: timeout %q: want a duration such as 10s", ErrConflict, t)
			}
		}
		return a.Pause(r.Context(), timeout)
	})
	act("/api/resume", func(r *http.Request) (any, error) {
		if a.Resume == nil {
			return nil, unavailable("resume (the agent runs no proxy: start it with --proxy)")
		}
		return a.Resume(r.Context())
	})
	for _, e := range opts.Extra {
		mux.Handle(e.Pattern, e.Handler)
	}
	return guard(opts, mux), nil
}

// guard applies the authentication rules of the package comment.
func guard(opts Options, next http.Handler) http.Handler {
	open := func(r *http.Request) bool {
		p := r.URL.Path
		return p == "/healthz" || p == "/readyz" || p == "/" || strings.HasPrefix(p, "/assets/") ||
			(p == "/api/login" && r.Method == http.MethodPost)
	}
	session := sessionValue(opts.Token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.URL.Path != "/api/login" && r.Header.Get(requestHeader) == "" {
			writeError(w, http.StatusForbidden, fmt.Errorf("control actions need the %s header", requestHeader))
			return
		}
		if opts.Token == "" {
			if !hostAllowed(r.Host) {
				writeError(w, http.StatusForbidden, errors.New("this API answers only requests addressed to an IP address or localhost"))
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		if open(r) {
			next.ServeHTTP(w, r)
			return
		}
		if auth := r.Header.Get("Authorization"); strings.HasPrefix(auth, "Bearer ") {
			if subtle.ConstantTimeCompare([]byte(strings.TrimPrefix(auth, "Bearer ")), []byte(opts.Token)) == 1 {
				next.ServeHTTP(w, r)
				return
			}
		} else if c, err := r.Cookie(sessionCookie); err == nil && subtle.ConstantTimeCompare([]byte(c.Value), []byte(session)) == 1 {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="pgshift"`)
		writeError(w, http.StatusUnauthorized, errors.New("this API needs its token: Authorization: Bearer TOKEN"))
	})
}

// hostAllowed accepts Host headers that name an IP address or localhost.
func hostAllowed(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	return host == "localhost" || net.ParseIP(host) != nil
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
