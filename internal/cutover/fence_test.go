package cutover

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"
)

// TestCutoverFencesSource: with cutover.fence_source, a session connected to the source
// directly (bypassing the proxy) is ended at the switch, and a new one cannot write there
// (read-only, with PostgreSQL's error); reverse replication still writes to the source, and
// the proxy's clients lose nothing. The rollback lifts the fence: direct writes work again.
func TestCutoverFencesSource(t *testing.T) {
	e := newEnvWith(t, nil, func(c *config.Config) { c.Cutover.FenceSource = true })
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := e.startWorkload(2)
	defer w.stop()
	outside, err := pgx.Connect(ctx, e.cfg.Source)
	if err != nil {
		t.Fatal(err)
	}
	defer outside.Close(ctx)
	if _, err := outside.Exec(ctx, `UPDATE accounts SET balance = balance + 0 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	r, err := e.agent.engine.Cutover(ctx, false)
	if err != nil || r.Outcome != OutcomeDone {
		t.Fatalf("cutover: %v %+v", err, r)
	}
	logResult(t, r)
	if _, err := outside.Exec(ctx, `UPDATE accounts SET balance = balance + 5 WHERE id = 1`); err == nil {
		t.Error("a session that bypassed the proxy could still write to the source after the cutover")
	}
	late, err := pgx.Connect(ctx, e.cfg.Source)
	if err != nil {
		t.Fatal(err)
	}
	defer late.Close(ctx)
	if _, err := late.Exec(ctx, `UPDATE accounts SET balance = balance + 5 WHERE id = 1`); err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("a new session on the source after the cutover: %v, want a read-only error", err)
	}
	time.Sleep(time.Second)
	e.waitLive(ctx)
	r, err = e.agent.engine.Rollback(ctx)
	if err != nil || r.Outcome != OutcomeDone {
		t.Fatalf("rollback: %v %+v", err, r)
	}
	logResult(t, r)
	again, err := pgx.Connect(ctx, e.cfg.Source)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close(ctx)
	if _, err := again.Exec(ctx, `INSERT INTO accounts VALUES (300, 3)`); err != nil {
		t.Errorf("a direct write after the rollback: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	w.stop()
	w.check(t, e.src, "the source")
	e.waitSame()
}
