package web

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
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
	go func() { done <- Serve(ctx, addr, status, reg, slog.New(slog.DiscardHandler)) }()

	var got struct {
		Phase    string `json:"phase"`
		LagBytes int    `json:"lag_bytes"`
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := FetchStatus(ctx, addr, &got)
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
	err = FetchStatus(ctx, "http://"+addr, &got)
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
	err := Serve(context.Background(), "256.0.0.1:bad", nil, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "256.0.0.1:bad") {
		t.Errorf("bad address: %v", err)
	}
}

func TestFetchStatusNoAgent(t *testing.T) {
	var v any
	err := FetchStatus(context.Background(), freeAddr(t), &v)
	if err == nil || !strings.Contains(err.Error(), "pgshift run --http") {
		t.Errorf("no agent: %v", err)
	}
}
