package cutover

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
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

// TestCutoverFencesRoles: with cutover.fence_roles, a batch job's role that connects to the
// source directly has its session ended at the switch and cannot log in again while traffic
// is on the target (the other roles, pgshift's and the proxy's clients', are untouched); the
// rollback gives it LOGIN back before traffic returns. The pre-check refuses a role that is
// NOLOGIN already: the rollback would give it a LOGIN it never had.
func TestCutoverFencesRoles(t *testing.T) {
	e := newEnvWith(t, func(ctx context.Context, src *pgtest.Cluster) {
		if out, err := src.Psql(ctx, "shop", `CREATE ROLE batch_job LOGIN; GRANT UPDATE, SELECT ON accounts TO batch_job;
			CREATE ROLE dormant NOLOGIN`); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}, func(c *config.Config) { c.Cutover.FenceRoles = []string{"batch_job"} })
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	w := e.startWorkload(2)
	defer w.stop()
	batchDSN := strings.Replace(e.cfg.Source, "user=postgres", "user=batch_job", 1)
	batch, err := pgx.Connect(ctx, batchDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer batch.Close(ctx)
	if _, err := batch.Exec(ctx, `UPDATE accounts SET balance = balance + 0 WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	r, err := e.agent.engine.Cutover(ctx, false)
	if err != nil || r.Outcome != OutcomeDone {
		t.Fatalf("cutover: %v %+v", err, r)
	}
	logResult(t, r)
	if _, err := batch.Exec(ctx, `UPDATE accounts SET balance = balance + 5 WHERE id = 1`); err == nil {
		t.Error("the batch job's session could still write to the source after the cutover")
	}
	if c, err := pgx.Connect(ctx, batchDSN); err == nil {
		c.Close(ctx)
		t.Error("the batch job's role could log into the source after the cutover")
	} else if !strings.Contains(err.Error(), "not permitted to log in") {
		t.Errorf("the batch job's login after the cutover: %v, want PostgreSQL's NOLOGIN error", err)
	}
	time.Sleep(time.Second)
	e.waitLive(ctx)
	r, err = e.agent.engine.Rollback(ctx)
	if err != nil || r.Outcome != OutcomeDone {
		t.Fatalf("rollback: %v %+v", err, r)
	}
	logResult(t, r)
	again, err := pgx.Connect(ctx, batchDSN)
	if err != nil {
		t.Fatalf("the batch job's login after the rollback: %v", err)
	}
	defer again.Close(ctx)
	if _, err := again.Exec(ctx, `UPDATE accounts SET balance = balance + 1 WHERE id = 1`); err != nil {
		t.Errorf("the batch job's write after the rollback: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	w.stop()
	w.check(t, e.src, "the source")
	e.waitSame()

	// A role that cannot log in already is refused by the pre-checks; nothing changes.
	e.agent.engine.cs.FenceRoles = []string{"dormant"}
	e.waitFollowing()
	r, err = e.agent.engine.Cutover(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.Error, "dormant cannot log in already") {
		t.Errorf("dry run with a NOLOGIN role to fence: %q", r.Error)
	}
}
