package proxy_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/proxy"
)

// TestPauseSafePoints: a pause waits for open transactions, times out and resumes by itself, is
// ended by a concurrent RESUME without hanging (PgBouncer #715), holds new requests and new
// sessions until RESUME, cancels laggards when asked, and ends by itself after max_pause.
func TestPauseSafePoints(t *testing.T) {
	e := newEnv(t, false, func(c *proxy.Config) { c.MaxPause = 2 * time.Second })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := e.connect("")
	b := e.connect("")
	if _, err := b.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	tx, err := a.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Idle in a transaction: the pause cannot complete; it times out and resumes.
	start := time.Now()
	_, err = e.p.Pause(ctx, 300*time.Millisecond)
	var pte *proxy.PauseTimeoutError
	if !errors.As(err, &pte) || len(pte.Laggards) != 1 || !strings.Contains(pte.Laggards[0], "idle in transaction") {
		t.Fatalf("pause over an open transaction: %v", err)
	}
	if time.Since(start) > 3*time.Second || e.p.Paused() {
		t.Fatalf("the timed-out pause took %s, paused=%v", time.Since(start), e.p.Paused())
	}
	if _, err := b.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatalf("after the timed-out pause: %v", err)
	}
	// A concurrent RESUME ends a waiting pause at once.
	done := make(chan error, 1)
	go func() {
		_, err := e.p.Pause(ctx, 20*time.Second)
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	e.p.Resume()
	select {
	case err := <-done:
		if !errors.Is(err, proxy.ErrResumed) {
			t.Errorf("pause ended by RESUME: %v, want ErrResumed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("a pause left hanging by a concurrent RESUME")
	}
	if _, err := b.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatalf("after RESUME: %v", err)
	}
	// The transaction ends; the pause holds everyone, including a new session.
	if _, err := tx.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.p.Pause(ctx, 5*time.Second); err != nil {
		t.Fatalf("pause: %v", err)
	}
	held := make(chan time.Time, 2)
	go func() {
		if _, err := b.Exec(ctx, `SELECT 1`); err == nil {
			held <- time.Now()
		}
	}()
	go func() {
		c, err := pgconn.Connect(ctx, e.dsn(""))
		if err == nil {
			if _, err := c.Exec(ctx, `SELECT 1`).ReadAll(); err == nil {
				held <- time.Now()
			}
			c.Close(ctx)
		}
	}()
	time.Sleep(300 * time.Millisecond)
	if len(held) != 0 {
		t.Fatalf("a request ran during the pause")
	}
	resumed := time.Now()
	e.p.Resume()
	for i := 0; i < 2; i++ {
		select {
		case at := <-held:
			if at.Before(resumed) {
				t.Errorf("a request finished before RESUME")
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("a held request did not run after RESUME")
		}
	}
	// max_pause ends a pause nobody resumes.
	if _, err := e.p.Pause(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2500 * time.Millisecond)
	if e.p.Paused() {
		t.Errorf("still paused after max_pause")
	}
	// The HTTP actions do the same.
	srv := httptest.NewServer(e.p.Handler())
	defer srv.Close()
	post := func(path string) string {
		resp, err := http.Post(srv.URL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if got := post("/proxy/pause?timeout=5s"); !strings.Contains(got, `"paused":true`) || !e.p.Paused() {
		t.Errorf("POST /proxy/pause: %s", got)
	}
	if got := post("/proxy/resume"); !strings.Contains(got, "resumed") || e.p.Paused() {
		t.Errorf("POST /proxy/resume: %s", got)
	}
}

// TestPauseCancelsLaggards: with cancel_laggards a pause cancels a long query that would keep
// it from completing, then holds the sessions.
func TestPauseCancelsLaggards(t *testing.T) {
	e := newEnv(t, false, func(c *proxy.Config) { c.CancelLaggards = true })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := e.connect("")
	errc := make(chan error, 1)
	go func() {
		_, err := a.Exec(ctx, `SELECT pg_sleep(30)`)
		errc <- err
	}()
	time.Sleep(200 * time.Millisecond)
	if _, err := e.p.Pause(ctx, 300*time.Millisecond); err != nil {
		t.Fatalf("pause with cancel_laggards: %v", err)
	}
	e.p.Resume()
	select {
	case err := <-errc:
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "57014" {
			t.Errorf("the laggard's query ended with %v, want a cancel (57014)", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the laggard's query was not cancelled")
	}
}

// TestClientIdleTimeout: client_idle_timeout closes a session idle that long, and never one
// that waits for a long query.
func TestClientIdleTimeout(t *testing.T) {
	e := newEnv(t, false, func(c *proxy.Config) { c.ClientIdleTimeout = 500 * time.Millisecond })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	busy := e.connect("")
	if _, err := busy.Exec(ctx, `SELECT pg_sleep(1.5)`); err != nil {
		t.Fatalf("a query longer than the idle timeout: %v", err)
	}
	idle := e.connect("")
	if _, err := idle.Exec(ctx, `SELECT 1`); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	if _, err := idle.Exec(ctx, `SELECT 1`); err == nil {
		t.Errorf("a session idle for 3x the timeout still works")
	}
}
