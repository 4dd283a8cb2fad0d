package app

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/state"
	"github.com/pgshift/pgshift/internal/web"
)

// TestAPIControlActions: with --proxy and a token, the API's control actions drive the proxy
// (mode, pause, resume), each is written to the audit log, the measured pause reaches the
// report, and a cutover dry run reports its pre-checks without starting an attempt.
func TestAPIControlActions(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	e := newFollowEnv(t, src, dst, "ctl", `CREATE TABLE t (id int PRIMARY KEY)`)
	authFile := filepath.Join(t.TempDir(), "userlist.txt")
	if err := os.WriteFile(authFile, []byte(`"postgres" "pw"`+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e.cfg.Proxy, e.cfg.HTTP, e.cfg.HTTPToken = freeTCPAddr(t), freeTCPAddr(t), "tok-123"
	e.cfg.ProxySettings = config.ProxySettings{AuthFile: authFile}
	a := e.start(RunOptions{})
	ctx := context.Background()
	anon, c := web.Client{Addr: e.cfg.HTTP}, web.Client{Addr: e.cfg.HTTP, Token: "tok-123"}
	var pv proxyView
	deadline := time.Now().Add(30 * time.Second)
	for c.Get(ctx, "/api/proxy", &pv) != nil {
		if time.Now().After(deadline) {
			t.Fatal("API never came up")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !pv.Running || pv.Stats.Mode != "source" {
		t.Fatalf("proxy view %+v", pv)
	}
	var se *web.StatusError
	if err := anon.Get(ctx, "/api/status", nil); !errors.As(err, &se) || se.Code != 401 {
		t.Errorf("status without the token: %v", err)
	}
	if err := anon.Post(ctx, "/api/resume", nil, nil, nil); !errors.As(err, &se) || se.Code != 401 {
		t.Errorf("resume without the token: %v", err)
	}
	if err := c.Post(ctx, "/api/proxy/mode", url.Values{"mode": {"split"}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Post(ctx, "/api/proxy/mode", url.Values{"mode": {"sideways"}}, nil, nil); !errors.As(err, &se) || se.Code != 409 {
		t.Errorf("bad mode: %v", err)
	}
	var paused struct {
		Paused bool `json:"paused"`
	}
	if err := c.Post(ctx, "/api/pause", url.Values{"timeout": {"5s"}}, nil, &paused); err != nil || !paused.Paused {
		t.Fatalf("pause: %v %+v", err, paused)
	}
	time.Sleep(300 * time.Millisecond)
	var resumed struct {
		Paused float64 `json:"paused_seconds"`
	}
	if err := c.Post(ctx, "/api/resume", nil, nil, &resumed); err != nil || resumed.Paused < 0.3 {
		t.Fatalf("resume: %v %+v", err, resumed)
	}
	// A dry run answers with the pre-checks (no verify was saved) and changes nothing.
	var dry CutoverResult
	if err := c.Post(ctx, "/api/cutover", nil, map[string]bool{"dry_run": true}, &dry); err != nil || dry.Outcome != "planned" || !strings.Contains(dry.Error, "verify") {
		t.Errorf("cutover dry run: %v %+v", err, dry)
	}
	var audit []state.AuditEntry
	deadline = time.Now().Add(20 * time.Second)
	for {
		audit = nil
		_ = c.Get(ctx, "/api/audit", &audit)
		var actions []string
		for _, x := range audit {
			actions = append(actions, x.Action+":"+x.Outcome)
		}
		got := strings.Join(actions, ",")
		if strings.Contains(got, "proxy.mode:ok,proxy.mode:failed,proxy.pause:ok,proxy.resume:ok") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("audit log: %s", got)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := a.stop(); err != nil {
		t.Fatalf("agent: %v", err)
	}
	rep, err := Report(ctx, e.cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Cutover.PauseSeconds < 0.3 || !strings.Contains(rep.Cutover.PauseSource, "proxy pause") || rep.Cutover.State != "not started" {
		t.Errorf("report cutover %+v", rep.Cutover)
	}
	for _, x := range rep.Audit {
		if strings.Contains(string(x.Detail), "tok-123") || strings.Contains(string(x.Detail), "pw") {
			t.Errorf("a secret in the audit log: %s", x.Detail)
		}
	}
}
