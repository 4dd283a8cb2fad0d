package web

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func TestServeStatusAndMetrics(t *testing.T) {
	addr := freeAddr(t)
	reg := prometheus.NewRegistry()
	applied := prometheus.NewCounter(prometheus.CounterOpts{Name: "pgshift_test_applied_total", Help: "test"})
	reg.MustRegister(applied)
	applied.Add(7)
	var unhealthy atomic.Bool
	status := func(context.Context) (any, error) {
		if unhealthy.Load() {
			return nil, errors.New("target unreachable")
		}
		return map[string]any{"phase": "following", "lag_bytes": 42}, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Serve(ctx, Options{Addr: addr, Gatherer: reg, Log: slog.New(slog.DiscardHandler)}, Agent{Status: status, Events: NewHub()})
	}()

	var got struct {
		Phase    string `json:"phase"`
		LagBytes int    `json:"lag_bytes"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := FetchStatus(ctx, addr, "", &got)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never served: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got.Phase != "following" || got.LagBytes != 42 {
		t.Errorf("status = %+v", got)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "pgshift_test_applied_total 7") {
		t.Errorf("metrics lack the counter:\n%s", body)
	}
	unhealthy.Store(true)
	err = FetchStatus(ctx, "http://"+addr, "", &got)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "target unreachable") {
		t.Errorf("failing status: %v", err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Serve after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not stop on cancel")
	}
}

func TestServeBadAddress(t *testing.T) {
	err := Serve(context.Background(), Options{Addr: "256.0.0.1:bad", Token: "x"}, Agent{})
	if err == nil || !strings.Contains(err.Error(), "256.0.0.1:bad") {
		t.Errorf("bad address: %v", err)
	}
}

func TestFetchStatusNoAgent(t *testing.T) {
	var v any
	err := FetchStatus(context.Background(), freeAddr(t), "", &v)
	if err == nil || !strings.Contains(err.Error(), "pgshift run --http") {
		t.Errorf("no agent: %v", err)
	}
}

// TestBindNeedsToken: anything but loopback needs a token.
func TestBindNeedsToken(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:1": true, "localhost:1": true, "[::1]:1": true, ":8080": false, "0.0.0.0:1": false, "10.1.2.3:80": false} {
		if err := CheckBind(addr, ""); (err == nil) != ok {
			t.Errorf("CheckBind(%q, no token) = %v", addr, err)
		}
		if err := CheckBind(addr, "t"); err != nil {
			t.Errorf("CheckBind(%q, token) = %v", addr, err)
		}
	}
	if err := Serve(context.Background(), Options{Addr: "0.0.0.0:0"}, Agent{}); err == nil || !strings.Contains(err.Error(), "token") {
		t.Errorf("Serve on all interfaces without a token: %v", err)
	}
}

func do(t *testing.T, h http.Handler, method, path string, hdr map[string]string, body string) *httptest.ResponseRecorder {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestAuth: with a token, the API needs it (bearer or the login cookie), probes and static
// files do not, and control actions need the request header whatever the credentials.
func TestAuth(t *testing.T) {
	var resumed atomic.Int32
	agent := Agent{
		Status:  func(context.Context) (any, error) { return map[string]string{"phase": "following"}, nil },
		Ready:   func() (bool, string) { return false, "lag 400 s is over the limit" },
		Actions: Actions{Resume: func(context.Context) (any, error) { resumed.Add(1); return map[string]bool{"resumed": true}, nil }},
	}
	h, err := Handler(Options{Token: "s3cret", Gatherer: prometheus.NewRegistry()}, agent)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{"/api/status": 401, "/metrics": 401, "/healthz": 200, "/readyz": 503, "/": 200, "/assets/app.js": 200,
		"/assets/vendor/uplot/uPlot.iife.min.js": 200} {
		if w := do(t, h, "GET", path, nil, ""); w.Code != want {
			t.Errorf("GET %s without token: %d, want %d", path, w.Code, want)
		}
	}
	if w := do(t, h, "GET", "/readyz", nil, ""); !strings.Contains(w.Body.String(), "over the limit") {
		t.Errorf("readyz body: %s", w.Body)
	}
	bearer := map[string]string{"Authorization": "Bearer s3cret"}
	if w := do(t, h, "GET", "/api/status", bearer, ""); w.Code != 200 || !strings.Contains(w.Body.String(), "following") {
		t.Errorf("GET /api/status with token: %d %s", w.Code, w.Body)
	}
	if w := do(t, h, "GET", "/api/status", map[string]string{"Authorization": "Bearer wrong"}, ""); w.Code != 401 {
		t.Errorf("wrong token: %d", w.Code)
	}
	if w := do(t, h, "POST", "/api/login", nil, `{"token":"wrong"}`); w.Code != 401 {
		t.Errorf("login with a wrong token: %d", w.Code)
	}
	w := do(t, h, "POST", "/api/login", nil, `{"token":"s3cret"}`)
	cookie := w.Result().Cookies()
	if w.Code != 200 || len(cookie) != 1 || !cookie[0].HttpOnly || strings.Contains(cookie[0].Value, "s3cret") {
		t.Fatalf("login: %d %v", w.Code, cookie)
	}
	withCookie := map[string]string{"Cookie": cookie[0].Name + "=" + cookie[0].Value}
	if w := do(t, h, "GET", "/api/status", withCookie, ""); w.Code != 200 {
		t.Errorf("GET /api/status with the session cookie: %d", w.Code)
	}
	// A cross-site form post carries the cookie but cannot set the header.
	if w := do(t, h, "POST", "/api/resume", withCookie, ""); w.Code != 403 || resumed.Load() != 0 {
		t.Errorf("POST without %s: %d (resumed %d)", requestHeader, w.Code, resumed.Load())
	}
	withCookie[requestHeader] = "1"
	if w := do(t, h, "POST", "/api/resume", withCookie, ""); w.Code != 200 || resumed.Load() != 1 {
		t.Errorf("POST /api/resume: %d %s", w.Code, w.Body)
	}
	bearer[requestHeader] = "1"
	if w := do(t, h, "POST", "/api/cutover", bearer, `{"confirm":true}`); w.Code != 501 || !strings.Contains(w.Body.String(), "cutover") {
		t.Errorf("POST /api/cutover without a cutover: %d %s", w.Code, w.Body)
	}
	if w := do(t, h, "POST", "/api/pause", bearer, ""); w.Code != 501 || !strings.Contains(w.Body.String(), "--proxy") {
		t.Errorf("POST /api/pause without a proxy: %d %s", w.Code, w.Body)
	}
}

// TestNoTokenHostCheck: without a token only IP or localhost Host headers are served (a
// rebound DNS name pointing at the loopback agent is refused).
func TestNoTokenHostCheck(t *testing.T) {
	h, err := Handler(Options{}, Agent{Status: func(context.Context) (any, error) { return 1, nil }})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]int{"127.0.0.1:8080": 200, "localhost:8080": 200, "[::1]:80": 200, "evil.example:8080": 403} {
		r := httptest.NewRequest("GET", "/api/status", nil)
		r.Host = host
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != want {
			t.Errorf("Host %s: %d, want %d", host, w.Code, want)
		}
	}
}

// TestEvents: a subscriber gets the latest event of each name first, then new ones; Close
// ends the stream.
func TestEvents(t *testing.T) {
	hub := NewHub()
	_ = hub.Publish("status", map[string]int{"n": 1})
	_ = hub.Publish("alerts", []string{})
	_ = hub.Publish("status", map[string]int{"n": 2})
	srv := httptest.NewServer(hub)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("content type %q", ct)
	}
	rd := bufio.NewReader(resp.Body)
	var events []string
	next := func() string {
		for {
			line, err := rd.ReadString('\n')
			if err != nil {
				return "EOF"
			}
			if strings.HasPrefix(line, "data: ") {
				return strings.TrimSpace(line)
			}
		}
	}
	events = append(events, next(), next())
	_ = hub.Publish("status", map[string]int{"n": 3})
	events = append(events, next())
	want := []string{`data: {"n":2}`, `data: []`, `data: {"n":3}`}
	if strings.Join(events, "|") != strings.Join(want, "|") {
		t.Errorf("events %q, want %q", events, want)
	}
	hub.Close()
	if got := next(); got != "EOF" {
		t.Errorf("after Close: %q", got)
	}
}
