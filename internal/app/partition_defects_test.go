package app

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// copiedEnv creates database name on both clusters, runs schema on the source, and runs the real
// copy into the target, so the follow phase starts from exactly what `pgshift copy` leaves:
// pgshift's own publication, slot and per-table snapshot LSNs.
func copiedEnv(t *testing.T, src, dst *pgtest.Cluster, name, schema string) *followEnv {
	t.Helper()
	ctx := context.Background()
	srcDSN, err := src.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	dstDSN, err := dst.CreateDB(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := src.Psql(ctx, name, schema); err != nil {
		t.Fatalf("source schema: %v\n%s", err, out)
	}
	cfg := config.Defaults()
	cfg.Source, cfg.Target, cfg.Jobs = srcDSN, dstDSN, 2
	if _, err := Copy(ctx, cfg, CopyOptions{NoProgress: true}, testLogger(t)); err != nil {
		t.Fatalf("copy: %v", err)
	}
	return &followEnv{t: t, src: src, dst: dst, name: name, cfg: cfg}
}

// startLogged runs Follow with its log collected in logs (and on stderr with PGSHIFT_TEST_LOG).
func (e *followEnv) startLogged(opts RunOptions, logs *lockedBuffer) *agent {
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	return e.launch(func(ctx context.Context, opts RunOptions) error { return Follow(ctx, e.cfg, opts, log) }, opts)
}

// waitStopped waits for the agent to stop by itself and returns its error.
func waitStopped(t *testing.T, a *agent, within time.Duration) error {
	t.Helper()
	select {
	case <-a.done:
		return a.err
	case <-time.After(within):
		t.Fatalf("the agent did not stop within %s", within)
		return nil
	}
}

// TestStreamedReplayKeepsWalsenderAlive is defect 17: a streamed transaction whose replay and
// apply at STREAM COMMIT take several times wal_sender_timeout. The reader must keep sending
// status updates while it replays, or the walsender kills the connection, the target rolls the
// transaction back, and the agent replays it again, for ever.
func TestStreamedReplayKeepsWalsenderAlive(t *testing.T) {
	src := pgtest.New(t, pgtest.Options{Name: t.Name() + "-src", Settings: map[string]string{
		"wal_sender_timeout":        "'2s'",
		"logical_decoding_work_mem": "'64kB'",
	}})
	dst := pgtest.New(t, pgtest.Options{Name: t.Name() + "-dst"})
	e := newFollowEnv(t, src, dst, "slowreplay", `CREATE TABLE big (id int PRIMARY KEY, pad text);`)
	// The applier keeps up: it takes each chunk the reader hands over within a fraction of a
	// status interval. The queue is far smaller than the transaction, so the reader spends the
	// whole replay handing chunks over, and the replay lasts as long as the apply.
	var logs lockedBuffer
	a := e.startLogged(RunOptions{QueueChunks: 2, QueueBytes: 256 << 10}, &logs)
	start := time.Now()
	e.exec(`INSERT INTO big SELECT g, repeat('x', 100) FROM generate_series(1, 500000) g`)
	e.exec(`INSERT INTO big VALUES (0, 'marker')`)
	deadline := time.Now().Add(90 * time.Second)
	for e.query(dst, `SELECT count(*) FROM big WHERE id = 0`) != "1" {
		if strings.Contains(logs.String(), "replication interrupted") {
			t.Fatalf("the agent reconnected while replaying the streamed transaction:\n%s", logs.String())
		}
		select {
		case <-a.done:
			t.Fatalf("agent stopped: %v\n%s", a.err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("the transaction was not applied within 90 s\n%s", logs.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
	took := time.Since(start)
	t.Logf("the streamed transaction was applied %s after it was committed", took.Round(time.Millisecond))
	if took < 5*time.Second {
		t.Errorf("the replay took only %s, less than 2.5 times wal_sender_timeout: the test did not exercise a long replay", took)
	}
	e.compare()
	if got := e.query(dst, `SELECT count(*) FROM big`); got != "500001" {
		t.Errorf("target has %s rows, want 500001", got)
	}
	if got := e.query(src, `SELECT stream_txns > 0 FROM pg_stat_replication_slots WHERE slot_name = 'pgshift_slowreplay'`); got != "t" {
		t.Fatalf("the transaction was not streamed (stream_txns: %q); the test did not exercise streaming", got)
	}
	if strings.Contains(logs.String(), "replication interrupted") {
		t.Errorf("the agent reconnected:\n%s", logs.String())
	}
}
