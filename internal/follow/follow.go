// Package follow is phase 3 of a migration: the follow session. It checks that the slot can
// still give exactly the changes after the target's applied position (preflight), streams them
// (internal/cdc) into the applier (internal/apply), writes heartbeats into the source's WAL,
// measures lag and retained WAL (monitor), keeps partition trees in step, and retries
// connection failures from the durable position.
package follow

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/apply"
	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/cdc"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/copy"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/progress"
	"github.com/pgshift/pgshift/internal/state"
)

// RunOptions tune the follow phase. Zero values take the defaults.
type RunOptions struct {
	// HeartbeatInterval is how often a heartbeat message is written into the source's WAL, so
	// the slot's confirmed position moves with a real transaction end even when the published
	// tables are idle (default 10 s; negative disables).
	HeartbeatInterval time.Duration
	// MonitorInterval is how often lag and retained WAL are measured and recorded (default 5 s).
	MonitorInterval time.Duration
	// Apply tunes batching; Apply.AfterCommit is the fault-test hook "after-target-commit".
	Apply apply.Options
	// SpillDir holds large in-progress transactions (default the system temp directory).
	SpillDir string
	// QueueChunks and QueueBytes bound what is read from the slot but not applied yet
	// (defaults 256 chunks, 64 MiB).
	QueueChunks int
	QueueBytes  int64
	// MaxRetryDelay caps the wait between reconnects after a connection failure (default 30 s).
	MaxRetryDelay time.Duration
	// LeaseInterval is the heartbeat interval of the migration's lease (default 5 s; see
	// state.Lease): a lost lease session is noticed within about one interval.
	LeaseInterval time.Duration
	// StartTimeout bounds how long connection failures are retried before following has ever
	// started in this run (default 1 minute); after that they are retried indefinitely.
	StartTimeout time.Duration
	// CutoverFault, for pgshift's crash tests only (cmd/pgshift's build tag faults), runs
	// before each step of a cutover or rollback (internal/cutover's Deps.Fault, which the
	// agent passes it to); follow itself never calls it.
	CutoverFault func(op string, step int) error
	// ProgressInterval is how often a progress line (applied position, lag, changes and
	// transactions per second) is logged at the info level (default 10 s; negative: never).
	ProgressInterval time.Duration
}

func (o *RunOptions) defaults() {
	if o.HeartbeatInterval == 0 {
		o.HeartbeatInterval = 10 * time.Second
	}
	if o.MonitorInterval <= 0 {
		o.MonitorInterval = 5 * time.Second
	}
	if o.QueueChunks <= 0 {
		o.QueueChunks = 256
	}
	if o.QueueBytes <= 0 {
		o.QueueBytes = 64 << 20
	}
	if o.MaxRetryDelay <= 0 {
		o.MaxRetryDelay = 30 * time.Second
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = time.Minute
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = 10 * time.Second
	}
}

// FatalError is a condition that retrying cannot fix; its message explains what happened and
// what to do.
type FatalError struct{ Msg string }

func (e *FatalError) Error() string { return e.Msg }

func fatalf(format string, args ...any) error { return &FatalError{Msg: fmt.Sprintf(format, args...)} }

// Run follows the slot under a lease the caller holds, until ctx is cancelled (a clean stop,
// nil error) or a fatal error occurs. Connection failures (replication connection cut, source
// or target restarted) are retried with backoff, each time resuming from the durable position
// on the target; fatal conditions end it with an explanation. m receives its measurements and
// counters; it may be shared with the agent's HTTP API and proxy.
func Run(ctx context.Context, cfg config.Config, opts RunOptions, m *Metrics, lease *state.Lease, log *slog.Logger) error {
	opts.defaults()
	// A killed agent leaves its spill files of large in-progress transactions behind; they can
	// be big, and nothing else would ever remove them.
	if n, err := cdc.SweepSpillDirs(opts.SpillDir); err != nil {
		log.Warn("could not remove spill directories of earlier agents", "err", err)
	} else if n > 0 {
		log.Info("removed spill directories left by earlier agents that were killed", "count", n)
	}
	return followLoop(ctx, cfg, opts, m, lease, log)
}

// followLoop runs follow attempts until ctx ends or one fails for good. Each attempt is bound
// to the current holding of the lease: when the lease session is lost the attempt is cancelled
// (its sessions close, so a new holder is not kept waiting), and the next attempt starts only
// once this agent holds the lease again; if another agent took it, followLoop ends with that
// *state.HeldError.
func followLoop(ctx context.Context, cfg config.Config, opts RunOptions, m *Metrics, lease *state.Lease, log *slog.Logger) error {
	delay := time.Second
	// A missing heartbeat privilege is reported once per run, not at every reconnect; so are
	// the applier's warnings.
	var heartbeatWarned atomic.Bool
	if opts.Apply.Warned == nil {
		opts.Apply.Warned = &apply.WarnOnce{}
	}
	// Until an attempt has reached both servers and the slot, a failure to connect is most
	// likely a wrong DSN, a firewall or a server that is down: retrying for ever would hide it.
	// So such failures end following after StartTimeout; once following has run, the same
	// failures are outages, retried for as long as it takes.
	began := time.Now()
	var everReached bool
	var lastReached time.Time // when the last attempt that reached the slot ended
	attempts := 0             // failed attempts since then
	var lastErr error
	stopped := func() error {
		if !everReached && lastErr != nil {
			return fmt.Errorf("interrupted before following could start (%d failed attempts in %s); the last one: %w",
				attempts, time.Since(began).Round(time.Second), lastErr)
		}
		log.Info("stopped; run pgshift run again to resume")
		return nil
	}
	for {
		started := time.Now()
		actx, cancel := lease.Bind(ctx)
		reached := false
		err := followOnce(actx, cfg, opts, m, &heartbeatWarned, lease, &reached, log)
		lost := errors.Is(context.Cause(actx), state.ErrLeaseLost) || errors.Is(err, state.ErrLeaseLost)
		cancel()
		if reached {
			everReached, lastReached, attempts = true, time.Now(), 0
		}
		if ctx.Err() != nil {
			return stopped()
		}
		if lost {
			log.Warn("stopped applying: the agent's lease session on the target was lost; resuming once the lease is taken again", "err", err)
			if err := lease.WaitHeld(ctx); err != nil {
				if ctx.Err() != nil {
					return stopped()
				}
				return err
			}
			m.reconnects.Add(1)
			continue
		}
		if err == nil || !retryable(err) {
			return err
		}
		attempts++
		lastErr = err
		if !everReached && time.Since(began) >= opts.StartTimeout {
			return fmt.Errorf("could not start following: %d attempts in %s failed, the last with: %w (nothing was applied; fix the cause, then run pgshift run again)",
				attempts, time.Since(began).Round(time.Second), err)
		}
		if time.Since(started) > time.Minute {
			delay = time.Second
		}
		m.reconnects.Add(1)
		if everReached {
			log.Warn("replication interrupted; resuming from the target's applied position", "err", err, "attempt", attempts,
				"since_last_success", time.Since(lastReached).Round(time.Second).String(), "retry_in", delay.String())
		} else {
			log.Warn("cannot start following yet; retrying", "err", err, "attempt", attempts,
				"gives_up_in", (opts.StartTimeout - time.Since(began)).Round(time.Second).String(), "retry_in", delay.String())
		}
		select {
		case <-ctx.Done():
			return stopped()
		case <-time.After(delay):
		}
		delay = min(delay*2, opts.MaxRetryDelay)
	}
}

// retryable tells connection-level failures, which a reconnect fixes, from everything else:
// pgshift's one retry policy (db.Transient), plus the follow session's own signals.
func retryable(err error) bool {
	var fe *FatalError
	var se *apply.ErrSchema
	var de *apply.ErrDDL
	if errors.As(err, &fe) || errors.As(err, &se) || errors.As(err, &de) || errors.Is(err, cdc.ErrUnknownMessage) || errors.Is(err, cdc.ErrNotMigrated) {
		return false
	}
	if errors.Is(err, errTreeChanged) {
		return true // the next attempt's preflight settles it, or stops with the fix
	}
	return errors.Is(err, cdc.ErrStreamEnded) || db.Transient(err)
}

// EnsureCopied makes sure the copy phase is complete before following.
func EnsureCopied(ctx context.Context, cfg config.Config, lease *state.Lease, log *slog.Logger) error {
	target := db.Endpoint{Role: db.Target, DSN: cfg.Target}
	conn, err := target.Connect(ctx)
	if err != nil {
		return err
	}
	m, err := state.Load(ctx, conn)
	conn.Close(context.Background())
	if err == nil && m.Phase.AtLeast(pgtypes.PhaseCopied) {
		return nil
	}
	if err != nil && !errors.Is(err, state.ErrNoMigration) {
		return target.Describe(err)
	}
	return copy.First(ctx, cfg, lease, log)
}

// session is everything one follow attempt holds open.
type session struct {
	cfg      config.Config
	opts     RunOptions
	log      *slog.Logger
	source   db.Endpoint
	target   db.Endpoint
	srcPool  *pgxpool.Pool
	dstPool  *pgxpool.Pool
	applyCon *pgx.Conn
	mig      state.Migration
	pos      state.Position
	srcVer   catalog.Version // the source's version, read by preflight
	// followDDL: this session replays the source's schema changes (followsDDL, decided by
	// preflight); partition trees then change in the stream, not behind it.
	followDDL bool
	dstVer    catalog.Version // the target's version, read by preflight
	metrics   *Metrics
	// heartbeatWarned is shared by the attempts of one run: set once the missing privilege
	// to write heartbeats has been reported.
	heartbeatWarned *atomic.Bool
}

// followOnce is one follow attempt. It sets *reached once both servers and the slot checked
// out, just before streaming starts.
func followOnce(ctx context.Context, cfg config.Config, opts RunOptions, m *Metrics, heartbeatWarned *atomic.Bool,
	lease *state.Lease, reached *bool, log *slog.Logger) error {
	// Every target session of the attempt is fenced by the lease: none writes unless this
	// agent's lease session holds the lease (see state.Lease).
	s := &session{cfg: cfg, opts: opts, log: log, metrics: m, heartbeatWarned: heartbeatWarned,
		source: db.Endpoint{Role: db.Source, DSN: cfg.Source}, target: db.Endpoint{Role: db.Target, DSN: cfg.Target, Session: lease.Fence}}
	var err error
	if s.dstPool, err = s.target.Pool(ctx, 2); err != nil {
		return err
	}
	defer s.dstPool.Close()
	if s.srcPool, err = s.source.Pool(ctx, 3); err != nil {
		return err
	}
	defer s.srcPool.Close()
	if err := s.preflight(ctx); err != nil {
		return err
	}
	lease.Touch() // the state schema exists now: record the holder at once
	if err := s.checkReplicaModeTriggers(ctx); err != nil {
		return err
	}
	if s.applyCon, err = s.target.Connect(ctx); err != nil {
		return err
	}
	defer s.applyCon.Close(context.Background())
	snaps, err := state.TableSnapshots(ctx, s.applyCon)
	if err != nil {
		return s.target.Describe(err)
	}
	srv, err := catalog.Server(ctx, s.srcPool)
	if err != nil {
		return s.source.Describe(err)
	}
	repl, err := s.source.ReplicationWithParams(ctx, cdc.SessionParams())
	if err != nil {
		return err
	}
	defer repl.Close(context.Background())

	start := s.pos.AppliedLSN
	if start == 0 {
		start = s.mig.ConsistentLSN
	}
	followDDL := s.followDDL
	aopts := opts.Apply
	aopts.SkipBelow = s.pos.AppliedLSN
	aopts.Snapshots = snaps
	aopts.FollowDDL = followDDL
	astats := &m.apply
	applier, err := apply.New(ctx, s.applyCon, s.srcPool, aopts, astats, log)
	if err != nil {
		return s.target.Describe(err)
	}
	if s.mig.Phase == pgtypes.PhaseCopied {
		if err := state.Advance(ctx, s.dstPool, pgtypes.PhaseCopied, pgtypes.PhaseFollowing); err != nil {
			return s.target.Describe(err)
		}
	}
	// Status updates must reach the server well within its wal_sender_timeout, also while the
	// reader waits for a slow target; otherwise the server drops the connection.
	statusEvery := 10 * time.Second
	var senderTimeout float64
	if err := s.srcPool.QueryRow(ctx, `SELECT extract(epoch FROM current_setting('wal_sender_timeout')::interval)::float8`).Scan(&senderTimeout); err != nil {
		return s.source.Describe(fmt.Errorf("read wal_sender_timeout: %w", err))
	}
	if senderTimeout > 0 {
		statusEvery = min(statusEvery, max(time.Duration(senderTimeout*float64(time.Second)/4), 100*time.Millisecond))
	}
	q := cdc.NewQueue(opts.QueueChunks, opts.QueueBytes)
	sstats := &m.stream
	// Every migrated table has a snapshot row; a change of any other table stops the stream.
	migrated := make(map[pgtypes.TableID]bool, len(snaps))
	for id := range snaps {
		migrated[id] = true
	}
	stream := cdc.NewStream(repl, cdc.Options{
		Slot: s.mig.Slot, Publication: s.mig.Publication, StartLSN: start, SkipBelow: s.pos.AppliedLSN,
		ServerVersion: srv.VersionNum, SpillDir: opts.SpillDir, StatusInterval: statusEvery, Tables: migrated, FollowRenames: followDDL,
		// What reverse replication applied to the source after a cutover is excluded by position
		// at rollback; its origin excludes it a second time.
		DropOrigin: cdc.PgshiftOrigin,
	}, q, applier.Durable, sstats, log)

	*reached = true
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return stream.Run(gctx) })
	g.Go(func() error {
		err := applier.Run(gctx, q)
		if err != nil && gctx.Err() == nil {
			m.applyErrors.Add(1) // pgshift_apply_errors_total
		}
		return err
	})
	g.Go(func() error { return s.heartbeat(gctx) })
	g.Go(func() error { return s.monitor(gctx, sstats, astats) })
	err = g.Wait()
	if nm := (*cdc.NotMigratedError)(nil); errors.As(err, &nm) && ctx.Err() == nil {
		return s.notMigrated(ctx, nm)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "55000" && ctx.Err() == nil {
		// The server refuses to stream from a slot invalidated between preflight and
		// START_REPLICATION ("can no longer get changes from replication slot"); say why.
		if lost, lerr := s.slotLost(ctx); lerr == nil && lost {
			return s.walLost(pgtypes.LSN(astats.AppliedLSN.Load()))
		}
	}
	return err
}

// slotLost reports whether the migration's slot has lost WAL.
func (s *session) slotLost(ctx context.Context) (bool, error) {
	slot, err := catalog.Slot(ctx, s.srcPool, s.mig.Slot)
	if err != nil {
		return false, s.source.Describe(err)
	}
	return slot.Lost(), nil
}

// preflight refuses to stream when the source is not the one the migration started from, or
// the slot can no longer give exactly the changes after the target's position.
func (s *session) preflight(ctx context.Context) error {
	var err error
	if s.mig, err = state.Load(ctx, s.dstPool); err != nil {
		return s.target.Describe(err)
	}
	if err := state.Ensure(ctx, s.dstPool); err != nil {
		return s.target.Describe(err)
	}
	if s.pos, err = state.LoadPosition(ctx, s.dstPool); err != nil {
		return s.target.Describe(err)
	}
	srv, err := catalog.Server(ctx, s.srcPool)
	if err != nil {
		return s.source.Describe(err)
	}
	s.srcVer = srv.Features()
	if s.dstVer, err = catalog.ReadVersion(ctx, s.dstPool); err != nil {
		return s.target.Describe(err)
	}
	if srv.SystemID != s.mig.SourceSystemID {
		return fatalf("the source is a different cluster (system identifier %s) from the one this migration started from (%s): "+
			"it may have been restored from a backup or replaced by a failover; following it could lose or duplicate changes. "+
			"Point --source at the original server, or start the migration again (pgshift finish, then pgshift run)",
			srv.SystemID, s.mig.SourceSystemID)
	}
	slot, err := catalog.Slot(ctx, s.srcPool, s.mig.Slot)
	if err != nil {
		return s.source.Describe(err)
	}
	if !slot.Exists {
		return fatalf("replication slot %q is missing on the source: it was dropped, or the source was restored or failed over. "+
			"The changes since %s cannot be recovered from it; start the migration again (pgshift finish, then pgshift run)",
			s.mig.Slot, s.pos.AppliedLSN)
	}
	if slot.Plugin != "pgoutput" || slot.Database != s.mig.SourceDatabase {
		return fatalf("replication slot %q on the source uses plugin %s in database %s, not pgoutput in %s: it is not this migration's slot",
			s.mig.Slot, slot.Plugin, slot.Database, s.mig.SourceDatabase)
	}
	if slot.Lost() {
		return s.walLost(0)
	}
	curLSN := slot.CurrentLSN
	if curLSN < s.pos.AppliedLSN {
		return fatalf("the source's current WAL position %s is behind the position the target already applied (%s): "+
			"the source was restored from a backup or failed over to a server that lacks transactions the target has. "+
			"Do not continue this migration against it; investigate, then start again (pgshift finish, then pgshift run)", curLSN, s.pos.AppliedLSN)
	}
	if conf := slot.ConfirmedFlush; conf != 0 {
		base := max(s.pos.AppliedLSN, s.mig.ConsistentLSN)
		if conf > base {
			return fatalf("replication slot %q has confirmed %s, beyond the target's applied position %s: something else consumed the slot "+
				"(or the target was restored from a backup), so the changes in between are lost. Start the migration again (pgshift finish, then pgshift run)",
				s.mig.Slot, conf, base)
		}
	}
	if s.followDDL, err = s.followsDDL(ctx); err != nil {
		return err
	}
	if s.followDDL {
		// Tables created on the source from now on join this publication, as the patterns in
		// force decide (state.CaptureDDL); one the capture cannot publish is copied instead.
		if err := state.ConfigureDDLFollow(ctx, s.srcPool, s.mig.Publication, s.cfg.Filter()); err != nil {
			if s.opts.Apply.Warned.First("ddl-configure") {
				s.log.Warn("tables created on the source while following are not published in their own transaction: each is copied in a snapshot of its own instead, with a restart of the follow session",
					"error", s.source.Describe(err).Error())
			}
		}
	}
	// Partitions: published as themselves, and the trees the same on both sides (partitions.go).
	if err := s.publishLeaves(ctx); err != nil {
		return err
	}
	if err := s.settleTrees(ctx); err != nil {
		return err
	}
	return s.checkTruncateCapture(ctx)
}

// checkReplicaModeTriggers refuses to apply while a migrated table on the target has a trigger
// or rule set ENABLE ALWAYS or ENABLE REPLICA that pgshift has not taken in hand: those fire in
// the apply sessions (session_replication_role = replica) and would repeat on the target what
// the source's own trigger already did. Copy keeps them disabled (see
// schema.DeferReplicaEnables); this catches targets copied otherwise, or changed since.
func (s *session) checkReplicaModeTriggers(ctx context.Context) error {
	rows, err := s.dstPool.Query(ctx, `
SELECT kind, format('%I.%I', schema_name, table_name), name, state FROM (
  SELECT 'trigger' AS kind, n.nspname AS schema_name, c.relname AS table_name, t.tgname AS name,
         CASE t.tgenabled WHEN 'A' THEN 'ALWAYS' ELSE 'REPLICA' END AS state
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE NOT t.tgisinternal AND t.tgenabled IN ('A', 'R')
  UNION ALL
  SELECT 'rule', n.nspname, c.relname, r.rulename, CASE r.ev_enabled WHEN 'A' THEN 'ALWAYS' ELSE 'REPLICA' END
  FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE r.ev_enabled IN ('A', 'R') AND r.rulename <> '_RETURN'
) o
WHERE EXISTS (SELECT 1 FROM pgshift.tables m WHERE m.schema_name = o.schema_name AND m.table_name = o.table_name)
ORDER BY 2, 3`)
	if err != nil {
		return s.target.Describe(fmt.Errorf("read triggers that fire in replica mode: %w", err))
	}
	type obj struct{ kind, table, name, state string }
	objs, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (obj, error) {
		var o obj
		err := r.Scan(&o.kind, &o.table, &o.name, &o.state)
		return o, err
	})
	if err != nil {
		return s.target.Describe(fmt.Errorf("read triggers that fire in replica mode: %w", err))
	}
	if len(objs) == 0 {
		return nil
	}
	var names, fixes []string
	for _, o := range objs {
		names = append(names, fmt.Sprintf("%s %s on %s (ENABLE %s)", o.kind, pgtypes.QuoteIdent(o.name), o.table, o.state))
		fixes = append(fixes, fmt.Sprintf("ALTER TABLE %s DISABLE %s %s;", o.table, strings.ToUpper(o.kind), pgtypes.QuoteIdent(o.name)))
	}
	return fatalf("on the target, %s fire while pgshift applies changes (session_replication_role = replica) and would repeat what the source's triggers and rules already did. "+
		"Disable them on the target (%s), re-enable them after cutover with the same state as on the source, then run pgshift run again",
		strings.Join(names, ", "), strings.Join(fixes, " "))
}

// walLost is the fatal error for a slot whose WAL the source removed (wal_status = lost). The
// changes since the target's position no longer exist anywhere, so following cannot be resumed:
// only a new copy makes the target whole again.
func (s *session) walLost(applied pgtypes.LSN) error {
	return fatalf("replication slot %q on the source lost WAL it still needed (wal_status = lost: the slot fell more than "+
		"max_slot_wal_keep_size behind and a checkpoint removed the WAL), so the changes after %s are gone and the target "+
		"can no longer be brought up to date. Copy again: raise max_slot_wal_keep_size (or set it to -1) on the source, run "+
		"pgshift copy --force (it drops pgshift's state, slot and publication and the target's copies) or pgshift finish and "+
		"then pgshift run into an empty target database", s.mig.Slot, max(applied, s.pos.AppliedLSN, s.mig.ConsistentLSN))
}

// heartbeat writes a transactional logical message into the source's WAL every interval. It
// travels the slot like a transaction of its own, so the applied (and confirmed) position
// advances even when the published tables are idle, and the slot does not pin old WAL. Before
// 14 pgoutput sends no messages, but sends the heartbeat's transaction all the same, empty
// (catalog.Version.HasMessages).
func (s *session) heartbeat(ctx context.Context) error {
	if s.opts.HeartbeatInterval < 0 {
		return nil
	}
	t := time.NewTicker(s.opts.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		if err := EmitHeartbeat(ctx, s.srcPool); err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) && pgErr.Code == "42501" {
				// Not fatal: heartbeats only keep an idle slot moving. Each attempt tries again
				// (the privilege may have been granted since), but says so only once.
				if s.heartbeatWarned.Swap(true) {
					s.log.Debug("heartbeats still not permitted on the source", "err", err)
					return nil
				}
				s.log.Warn("cannot write heartbeats on the source; while the published tables are idle the slot will hold WAL",
					"fix", "GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, text, text) TO the pgshift user", "err", err)
				return nil
			}
			if ctx.Err() != nil {
				return nil
			}
			return s.source.Describe(fmt.Errorf("write heartbeat: %w", err))
		}
	}
}

// EmitHeartbeat writes one heartbeat message into the source's WAL and returns its position.
func EmitHeartbeat(ctx context.Context, q catalog.Querier) error {
	_, err := q.Exec(ctx, `SELECT pg_logical_emit_message(true, $1, now()::text)`, cdc.HeartbeatPrefix)
	return err
}

// monitor measures lag and retained WAL, records them on the target for `pgshift status`,
// warns above cfg.LagWarn, logs a progress line every ProgressInterval, and stops on a slot
// that vanished or lost WAL while streaming.
//
// What counts as applied: the applied position, and — when every transaction handed to the
// applier is applied — the position up to which the walsender has decoded the WAL (its
// keepalives say so), since nothing committed before that is left to apply. Caught up means
// that position has reached the source's current one. Lag in seconds is the source's clock
// minus the commit time of the last applied transaction (heartbeats keep that recent while
// the source is idle), an upper bound of the age of the oldest unapplied transaction, and 0
// when caught up.
func (s *session) monitor(ctx context.Context, ss *cdc.Stats, as *apply.Stats) error {
	t := time.NewTicker(s.opts.MonitorInterval)
	defer t.Stop()
	var prevApplied pgtypes.LSN
	var prevSource pgtypes.LSN
	var prevAt time.Time
	var lastWarn time.Time
	// The progress line's rates are over the time since the previous line.
	lastLine, linePrev := time.Now(), [2]uint64{as.Changes.Load(), as.Txs.Load()}
	warnedUnreserved := false
	// Transactions delivered but not yet applied mean work in hand; count from this attempt's
	// start, because an earlier attempt's undelivered work is delivered again.
	d0, a0 := ss.Delivered.Load(), as.Txs.Load()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		slot, err := catalog.Slot(ctx, s.srcPool, s.mig.Slot)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return s.source.Describe(fmt.Errorf("measure lag: %w", err))
		}
		sourceNow := slot.ServerTime
		if !slot.Exists {
			return fatalf("replication slot %q vanished from the source while streaming", s.mig.Slot)
		}
		if err := s.watchTrees(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if err := s.checkTruncateCapture(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		if slot.Lost() {
			return s.walLost(pgtypes.LSN(as.AppliedLSN.Load()))
		}
		if slot.WALStatus == "unreserved" && !warnedUnreserved {
			// The next checkpoint may remove WAL the slot still needs: the last chance to act.
			warnedUnreserved = true
			s.log.Warn("the replication slot holds more WAL than max_slot_wal_keep_size allows; the next checkpoint can remove WAL it needs, which ends the migration",
				"slot", s.mig.Slot, "fix", "raise max_slot_wal_keep_size on the source, or let the target catch up")
		}
		now := time.Now()
		st := state.FollowStatus{MeasuredAt: now, TxsApplied: int64(as.Txs.Load()), Changes: int64(as.Changes.Load())}
		st.SourceLSN, st.ConfirmedLSN, st.RestartLSN = slot.CurrentLSN, slot.ConfirmedFlush, slot.RestartLSN
		st.AppliedLSN = max(pgtypes.LSN(as.AppliedLSN.Load()), s.mig.ConsistentLSN)
		done := st.AppliedLSN
		if ss.Delivered.Load()-d0 == as.Txs.Load()-a0 {
			done = max(done, pgtypes.LSN(ss.ServerWALEnd.Load()))
		}
		st.LagBytes = max(int64(st.SourceLSN)-int64(done), 0)
		st.RetainedBytes = slot.RetainedBytes
		caughtUp := st.LagBytes == 0
		if !caughtUp {
			st.LagSeconds = max(sourceNow.Sub(s.lastCommit(as)).Seconds(), 0)
		}
		st.ETASeconds = -1
		if !prevAt.IsZero() {
			dt := now.Sub(prevAt).Seconds()
			st.ApplyRate = float64(st.AppliedLSN-prevApplied) / dt
			net := st.ApplyRate - float64(st.SourceLSN-prevSource)/dt
			switch {
			case caughtUp:
				st.ETASeconds = 0
			case net > 0:
				st.ETASeconds = float64(st.LagBytes) / net
			}
		}
		prevApplied, prevSource, prevAt = st.AppliedLSN, st.SourceLSN, now
		s.metrics.setLast(st)
		if err := state.SaveFollowStatus(ctx, s.dstPool, st); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return s.target.Describe(err)
		}
		if s.cfg.LagWarn > 0 && st.LagSeconds > s.cfg.LagWarn.Seconds() && now.Sub(lastWarn) > time.Minute {
			lastWarn = now
			s.log.Warn("replication lag above limit", "lag_seconds", int64(st.LagSeconds), "limit", s.cfg.LagWarn.String(),
				"lag_bytes", st.LagBytes, "eta_seconds", int64(st.ETASeconds))
		}
		if dt := now.Sub(lastLine); s.opts.ProgressInterval > 0 && dt >= s.opts.ProgressInterval {
			changes, txs := as.Changes.Load(), as.Txs.Load()
			s.log.Info("following", "applied", st.AppliedLSN.String(), "lag_bytes", st.LagBytes, "lag", progressLag(st.LagBytes),
				"lag_seconds", roundTo(st.LagSeconds, 0.1), "changes_per_second", roundTo(float64(changes-linePrev[0])/dt.Seconds(), 0.1),
				"txs_per_second", roundTo(float64(txs-linePrev[1])/dt.Seconds(), 0.1), "caught_up", caughtUp)
			lastLine, linePrev = now, [2]uint64{changes, txs}
		}
		s.log.Debug("lag", "applied", st.AppliedLSN.String(), "lag_bytes", st.LagBytes, "lag_seconds", st.LagSeconds,
			"retained_bytes", st.RetainedBytes, "txs", st.TxsApplied)
	}
}

// lastCommit is the source commit time of the last applied transaction: this agent's, else
// the one stored when it started, else (nothing applied since the copy) the time the migration
// began, which is before its consistent point.
func (s *session) lastCommit(as *apply.Stats) time.Time {
	if us := as.CommitTimeUS.Load(); us != 0 {
		return time.UnixMicro(us)
	}
	if !s.pos.CommitTime.IsZero() {
		return s.pos.CommitTime
	}
	return s.mig.CreatedAt
}

func progressLag(n int64) string { return progress.HumanBytes(n) }

func roundTo(v, unit float64) float64 { return math.Round(v/unit) * unit }
