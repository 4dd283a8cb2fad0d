package app

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/apply"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtest"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

const workloadSchema = `
CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL, note text);
CREATE TABLE history (id bigserial PRIMARY KEY, account int, delta int, at timestamptz DEFAULT now());
INSERT INTO accounts SELECT g, 0, NULL FROM generate_series(1, 200) g;`

// sourceWriter runs transactions on the source until halted (runWriter); startWriter's are
// TPC-B-like updates, inserts and deletes. It reconnects when the source goes away (restarts
// are part of the tests).
type sourceWriter struct {
	stop    chan struct{}
	wg      sync.WaitGroup
	commits atomic.Int64
}

func (e *followEnv) startWriter(workers int) *sourceWriter {
	w := &sourceWriter{stop: make(chan struct{})}
	for i := range workers {
		e.runWriter(w, uint64(i), 0, func(ctx context.Context, tx pgx.Tx, rng *rand.Rand) error {
			acct, delta := rng.IntN(200)+1, rng.IntN(1000)-500
			if _, err := tx.Exec(ctx, `UPDATE accounts SET balance = balance + $1, note = $2 WHERE id = $3`, delta, fmt.Sprint(delta), acct); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, `INSERT INTO history (account, delta) VALUES ($1, $2)`, acct, delta); err != nil {
				return err
			}
			if rng.IntN(10) == 0 {
				_, err := tx.Exec(ctx, `DELETE FROM history WHERE id = (SELECT min(id) FROM history)`)
				return err
			}
			return nil
		})
	}
	return w
}

// runWriter runs body in transactions of its own on the source, one after another (pause
// between them), until w is halted, counting the commits; after an error (a restarted server,
// a statement the schema of the moment refuses) it reconnects.
func (e *followEnv) runWriter(w *sourceWriter, seed uint64, pause time.Duration, body func(ctx context.Context, tx pgx.Tx, rng *rand.Rand) error) {
	w.wg.Add(1)
	go func() {
		defer w.wg.Done()
		rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
		ep := db.Endpoint{Role: db.Source, DSN: e.cfg.Source}
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			conn, err := ep.Connect(ctx)
			if err != nil {
				cancel()
				time.Sleep(50 * time.Millisecond)
				continue
			}
			for err == nil {
				select {
				case <-w.stop:
					conn.Close(ctx)
					cancel()
					return
				default:
				}
				err = pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error { return body(ctx, tx, rng) })
				if err == nil {
					w.commits.Add(1)
				}
				time.Sleep(pause)
			}
			conn.Close(context.Background())
			cancel()
		}
	}()
}

func (w *sourceWriter) halt() int64 {
	close(w.stop)
	w.wg.Wait()
	return w.commits.Load()
}

// TestFollowFaults breaks connections and servers under continuous writes; every case ends
// with the target identical to the source.
func TestFollowFaults(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")

	t.Run("WalsenderTerminated", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "walsender", workloadSchema)
		a := e.start(RunOptions{})
		w := e.startWriter(2)
		for range 3 {
			time.Sleep(700 * time.Millisecond)
			e.exec(`SELECT pg_terminate_backend(pid) FROM pg_stat_replication WHERE application_name = 'pgshift'`)
		}
		time.Sleep(500 * time.Millisecond)
		if n := w.halt(); n == 0 {
			t.Fatal("the writer committed nothing")
		}
		e.waitApplied(a)
		e.compare()
	})

	t.Run("TargetRestartedMidApply", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "targetrestart", workloadSchema)
		a := e.start(RunOptions{})
		w := e.startWriter(2)
		time.Sleep(time.Second)
		if err := dst.Restart(context.Background(), true); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		w.halt()
		e.waitApplied(a)
		e.compare()
	})

	t.Run("SourceRestarted", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "sourcerestart", workloadSchema)
		a := e.start(RunOptions{})
		w := e.startWriter(2)
		time.Sleep(time.Second)
		if err := src.Restart(context.Background(), false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second)
		w.halt()
		e.waitApplied(a)
		e.compare()
	})

	t.Run("CrashBetweenTargetCommitAndAck", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "commitack", workloadSchema)
		var crashes atomic.Int32
		hook := func(lsn pgtypes.LSN) error {
			if rand.IntN(3) == 0 && crashes.Add(1) <= 5 {
				return &FatalError{Msg: "injected crash after target commit at " + lsn.String()}
			}
			return nil
		}
		w := e.startWriter(2)
		deadline := time.Now().Add(4 * time.Second)
		for time.Now().Before(deadline) {
			a := e.start(RunOptions{Apply: apply.Options{AfterCommit: hook}})
			select {
			case <-a.done:
				if a.err == nil || !strings.Contains(a.err.Error(), "injected crash") {
					t.Fatalf("agent ended with %v, want the injected crash", a.err)
				}
			case <-time.After(2 * time.Second):
				a.stop()
			}
		}
		w.halt()
		if crashes.Load() == 0 {
			t.Fatal("no crash was injected")
		}
		a := e.start(RunOptions{})
		e.waitApplied(a)
		e.compare()
	})

	t.Run("BlockedTargetKeepsReplicationAlive", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "blocked", workloadSchema)
		e.exec(`ALTER SYSTEM SET wal_sender_timeout = '2s'`)
		e.exec(`SELECT pg_reload_conf()`)
		t.Cleanup(func() {
			e.exec(`ALTER SYSTEM RESET wal_sender_timeout`)
			e.exec(`SELECT pg_reload_conf()`)
		})
		// A tiny queue, so the reader is blocked handing over chunks while the target waits.
		a := e.start(RunOptions{QueueChunks: 2, QueueBytes: 64 << 10})
		e.waitApplied(a)
		pid := e.query(src, `SELECT pid FROM pg_stat_replication WHERE application_name = 'pgshift'`)
		lockCtx, cancel := context.WithCancel(context.Background())
		defer cancel()
		locker, err := db.Endpoint{Role: db.Target, DSN: e.cfg.Target}.Connect(lockCtx)
		if err != nil {
			t.Fatal(err)
		}
		defer locker.Close(context.Background())
		if _, err := locker.Exec(lockCtx, `BEGIN; LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE`); err != nil {
			t.Fatal(err)
		}
		w := e.startWriter(2)
		time.Sleep(6 * time.Second) // three times wal_sender_timeout with the applier stuck
		if _, err := locker.Exec(lockCtx, `COMMIT`); err != nil {
			t.Fatal(err)
		}
		w.halt()
		e.waitApplied(a)
		e.compare()
		if after := e.query(src, `SELECT pid FROM pg_stat_replication WHERE application_name = 'pgshift'`); after != pid {
			t.Fatalf("the replication connection was replaced (walsender %s, now %s): the server timed the agent out while the target was blocked", pid, after)
		}
	})

	t.Run("IdleTablesBusyServerSlotAdvances", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "idle", workloadSchema)
		if _, err := src.CreateDB(context.Background(), "busy_elsewhere"); err != nil {
			t.Fatal(err)
		}
		a := e.start(RunOptions{HeartbeatInterval: 300 * time.Millisecond})
		slot := `SELECT confirmed_flush_lsn::text || ' ' || restart_lsn::text FROM pg_replication_slots WHERE slot_name = 'pgshift_idle'`
		before := strings.Fields(e.query(src, slot))
		// Generate WAL only outside the published database.
		var mid pgtypes.LSN
		for i := range 5 {
			if i == 2 {
				mid, _ = pgtypes.ParseLSN(e.query(src, `SELECT pg_current_wal_lsn()`))
			}
			if _, err := src.Psql(context.Background(), "busy_elsewhere",
				`CREATE TABLE IF NOT EXISTS junk (x text); INSERT INTO junk SELECT repeat('x', 1000) FROM generate_series(1, 20000); CHECKPOINT`); err != nil {
				t.Fatal(err)
			}
		}
		cur, _ := pgtypes.ParseLSN(e.query(src, `SELECT pg_current_wal_lsn()`))
		var after []string
		for i := 0; ; i++ {
			after = strings.Fields(e.query(src, slot))
			conf, _ := pgtypes.ParseLSN(after[0])
			restart, _ := pgtypes.ParseLSN(after[1])
			// restart_lsn follows confirmed at the next running-transactions record, so it
			// trails by a little; it must get past WAL written mid-burst.
			if conf >= cur && restart >= mid {
				break
			}
			if i > 300 {
				t.Fatalf("slot did not advance while the published tables were idle: before %v, after %v, current WAL %s", before, after, cur)
			}
			if i%20 == 0 {
				e.query(src, `CHECKPOINT`)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// The confirmed position is one the target applied, not a keepalive's WAL end.
		applied, _ := pgtypes.ParseLSN(e.query(dst, `SELECT applied_lsn FROM pgshift.position`))
		conf, _ := pgtypes.ParseLSN(after[0])
		if conf > applied {
			t.Fatalf("slot confirmed %s beyond the target's applied position %s", conf, applied)
		}
		_ = a
	})
}

// TestFollowFatalConditions checks that each unsafe situation stops the agent with an
// explanation instead of streaming on.
func TestFollowFatalConditions(t *testing.T) {
	src, dst, _, _ := pgtest.Pair(t, "unused")
	run := func(e *followEnv) error {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return Follow(ctx, e.cfg, RunOptions{MaxRetryDelay: 200 * time.Millisecond}, testLogger(e.t))
	}
	expectFatal := func(t *testing.T, err error, words ...string) {
		t.Helper()
		var fe *FatalError
		if !errors.As(err, &fe) {
			t.Fatalf("got %v, want a fatal error", err)
		}
		for _, w := range words {
			if !strings.Contains(err.Error(), w) {
				t.Fatalf("error %q does not mention %q", err, w)
			}
		}
	}

	t.Run("SlotMissing", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "noslot", workloadSchema)
		e.exec(`SELECT pg_drop_replication_slot('pgshift_noslot')`)
		expectFatal(t, run(e), "missing", "pgshift_noslot")
	})
	t.Run("DifferentSourceCluster", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "sysid", workloadSchema)
		e.query(dst, `UPDATE pgshift.migration SET source_system_id = '1234'`)
		expectFatal(t, run(e), "different cluster", "1234")
	})
	t.Run("SourceBehindAppliedPosition", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "behind", workloadSchema)
		e.query(dst, `INSERT INTO pgshift.position (id, applied_lsn) VALUES (1, 'FFFF/0')`)
		expectFatal(t, run(e), "behind", "FFFF/0")
	})
	t.Run("SlotConfirmedBeyondTarget", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "beyond", workloadSchema)
		e.exec(`UPDATE accounts SET balance = 1`)
		e.exec(`SELECT pg_replication_slot_advance('pgshift_beyond', pg_current_wal_lsn())`)
		expectFatal(t, run(e), "beyond", "lost")
	})
	t.Run("SourceAddedColumnWithDefault", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "adddefault", workloadSchema)
		a := e.start(RunOptions{})
		e.exec(`ALTER TABLE accounts ADD COLUMN flag int; INSERT INTO accounts VALUES (1000, 1, 'x', 7)`)
		e.waitApplied(a)
		e.compare() // a nullable column without default is added on the target
		e.exec(`ALTER TABLE accounts ADD COLUMN region text NOT NULL DEFAULT 'eu'; UPDATE accounts SET balance = 2 WHERE id = 1`)
		select {
		case <-a.done:
		case <-time.After(30 * time.Second):
			t.Fatal("agent kept running after a column it cannot add safely")
		}
		var se *apply.ErrSchema
		if !errors.As(a.err, &se) || !strings.Contains(a.err.Error(), `ALTER TABLE "public"."accounts" ADD COLUMN "region" text`) {
			t.Fatalf("got %v, want a schema error with the DDL to run", a.err)
		}
		// Following the fix, the agent resumes and the tables converge.
		e.query(dst, `ALTER TABLE accounts ADD COLUMN region text NOT NULL DEFAULT 'eu'`)
		a = e.start(RunOptions{})
		e.waitApplied(a)
		e.compare()
	})
	t.Run("ColumnAddedOnTargetFirst", func(t *testing.T) {
		// The order PostgreSQL's logical replication asks for: the subscriber's table first.
		// Same definitions give the older rows the same values on both sides: pgshift goes on
		// (it stopped here for good, found by the torture harness); DEFAULT now() cannot give
		// them the same values, and stops.
		e := newFollowEnv(t, src, dst, "targetfirst", workloadSchema)
		a := e.start(RunOptions{})
		e.exec(`UPDATE accounts SET balance = 3 WHERE id = 1`)
		e.waitApplied(a)
		e.query(dst, `ALTER TABLE accounts ADD COLUMN flag int, ADD COLUMN region text NOT NULL DEFAULT 'eu', ADD COLUMN n int DEFAULT 7`)
		e.exec(`ALTER TABLE accounts ADD COLUMN flag int, ADD COLUMN region text NOT NULL DEFAULT 'eu', ADD COLUMN n int DEFAULT 7;
			UPDATE accounts SET balance = 4 WHERE id <= 3; INSERT INTO accounts VALUES (1001, 1, 'x', 7, 'us', 8)`)
		e.waitApplied(a)
		e.compare()
		e.query(dst, `ALTER TABLE accounts ADD COLUMN at timestamptz DEFAULT now()`)
		e.exec(`ALTER TABLE accounts ADD COLUMN at timestamptz DEFAULT now(); UPDATE accounts SET balance = 5 WHERE id = 1`)
		select {
		case <-a.done:
		case <-time.After(30 * time.Second):
			t.Fatal("agent kept running after a column whose older rows differ (DEFAULT now() on both sides)")
		}
		if !strings.Contains(fmt.Sprint(a.err), `added column "at"`) || !strings.Contains(fmt.Sprint(a.err), "now()") {
			t.Fatalf("got %v, want a schema error naming the column and its default", a.err)
		}
	})
	t.Run("SourceChangedColumnType", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "retype", workloadSchema)
		a := e.start(RunOptions{})
		e.exec(`ALTER TABLE accounts ALTER COLUMN note TYPE varchar(20); UPDATE accounts SET note = 'n' WHERE id = 1`)
		<-a.done
		if a.err == nil || !strings.Contains(a.err.Error(), `ALTER COLUMN "note" TYPE character varying(20)`) {
			t.Fatalf("got %v, want a schema error naming the type change", a.err)
		}
	})
	t.Run("SourceDroppedColumn", func(t *testing.T) {
		e := newFollowEnv(t, src, dst, "dropcol", workloadSchema)
		a := e.start(RunOptions{})
		e.exec(`UPDATE accounts SET balance = 4 WHERE id = 1`)
		e.waitApplied(a)
		// A column dropped while followed stops (a rename or a drop and add look alike until
		// more is seen); following the fix, the agent resumes.
		e.exec(`ALTER TABLE accounts DROP COLUMN note; UPDATE accounts SET balance = 5 WHERE id <= 10; INSERT INTO accounts VALUES (500, 9)`)
		<-a.done
		if a.err == nil || !strings.Contains(a.err.Error(), `ALTER TABLE "public"."accounts" DROP COLUMN "note"`) {
			t.Fatalf("got %v, want a schema error naming the dropped column", a.err)
		}
		e.query(dst, `ALTER TABLE accounts DROP COLUMN note`)
		a = e.start(RunOptions{})
		e.waitApplied(a)
		e.compare()
	})
}
