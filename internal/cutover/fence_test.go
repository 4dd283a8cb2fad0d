package cutover

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/state"
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

// TestCutoverFencesTables: with cutover.fence_tables, a transaction writing to the source
// outside the proxy when the pause begins is waited out (its row is on the target after the
// cutover, though it committed inside the pause); a writer that comes meanwhile queues behind
// the lock and is ended at the switch (its row on neither side, its client told); the same
// holds on the target for the rollback. A writer that outlasts cutover.fence_lock_timeout
// aborts the cutover: traffic resumes on the source and its row, committed later, follows.
func TestCutoverFencesTables(t *testing.T) {
	e := newEnvWith(t, nil, func(c *config.Config) {
		c.Cutover.FenceTables = true
		c.Cutover.FenceLockTimeout = 3 * time.Second
	})
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	w := e.startWorkload(2)
	defer w.stop()

	// through fences a cutover (live: the side it leaves) with one writer in flight and one
	// that arrives while the fence waits, and checks both outcomes.
	through := func(op string, dsn string, inflightID, lateID int) {
		t.Helper()
		inflight, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer inflight.Close(context.Background())
		late, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer late.Close(context.Background())
		if _, err := inflight.Exec(ctx, "BEGIN"); err != nil {
			t.Fatal(err)
		}
		if _, err := inflight.Exec(ctx, `INSERT INTO accounts VALUES ($1::int, 7)`, inflightID); err != nil {
			t.Fatal(err)
		}
		type outcome struct {
			r   *Result
			err error
		}
		done := make(chan outcome, 1)
		go func() {
			var r *Result
			var err error
			if op == "cutover" {
				r, err = e.agent.engine.Cutover(ctx, false)
			} else {
				r, err = e.agent.engine.Rollback(ctx)
			}
			done <- outcome{r, err}
		}()
		// The fence waits for the open transaction.
		waitLockQueued(t, ctx, inflight, 1)
		lateErr := make(chan error, 1)
		go func() {
			_, err := late.Exec(ctx, `INSERT INTO accounts VALUES ($1::int, 8)`, lateID)
			lateErr <- err
		}()
		waitLockQueued(t, ctx, inflight, 2)
		if _, err := inflight.Exec(ctx, "COMMIT"); err != nil {
			t.Fatalf("the in-flight writer's commit: %v", err)
		}
		o := <-done
		if o.err != nil || o.r.Outcome != OutcomeDone {
			t.Fatalf("%s: %v %+v", op, o.err, o.r)
		}
		logResult(t, o.r)
		if err := <-lateErr; err == nil || !strings.Contains(err.Error(), "terminating connection") {
			t.Errorf("%s: the writer queued behind the table fence: %v, want its session ended", op, err)
		}
		time.Sleep(time.Second) // the other direction applies what it had
		for i, side := range []*pgtest.Cluster{e.src, e.dst} {
			got := strings.TrimSpace(e.q(side, fmt.Sprintf(`SELECT string_agg(id::text, ',' ORDER BY id) FROM accounts WHERE id IN (%d, %d)`, inflightID, lateID)))
			if got != fmt.Sprint(inflightID) {
				t.Errorf("%s: on the %s the fenced writers' rows are %q, want only the in-flight one's, %d", op, []string{"source", "target"}[i], got, inflightID)
			}
		}
	}
	through("cutover", e.cfg.Source, 901, 902)
	e.waitLive(ctx)
	through("rollback", e.cfg.Target, 903, 904)

	// A writer that keeps its transaction open past the lock timeout aborts the cutover.
	e.waitFollowing()
	slow, err := pgx.Connect(ctx, e.cfg.Source)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close(context.Background())
	if _, err := slow.Exec(ctx, "BEGIN"); err != nil {
		t.Fatal(err)
	}
	if _, err := slow.Exec(ctx, `INSERT INTO accounts VALUES (905, 9)`); err != nil {
		t.Fatal(err)
	}
	r, err := e.agent.engine.Cutover(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	logResult(t, r)
	if r.Outcome != OutcomeAborted || r.Live != state.LiveSource || !strings.Contains(r.Error, "cutover.fence_lock_timeout") {
		t.Errorf("cutover with a writer past the lock timeout: outcome %s, live %s, error %q; want aborted on the source, naming the timeout", r.Outcome, r.Live, r.Error)
	}
	if _, err := slow.Exec(ctx, "COMMIT"); err != nil {
		t.Fatalf("the slow writer's commit after the abort: %v", err)
	}
	time.Sleep(500 * time.Millisecond)
	w.stop()
	w.check(t, e.src, "the source")
	e.waitSame()
}

// waitLockQueued waits until n sessions wait for a lock on table accounts.
func waitLockQueued(t *testing.T, ctx context.Context, q *pgx.Conn, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var got int
		if err := q.QueryRow(ctx, `SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'accounts'::regclass`).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %d sessions waiting for a lock on accounts within 20s", n)
}
