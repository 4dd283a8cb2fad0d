package state

// What the dashboard and the migration report read besides the copy and follow state: the
// phase timeline (pgshift.phase_history), a bounded time series of the agent's lag
// measurements (pgshift.follow_history), copy estimates per table (pgshift.table_estimates),
// the audit log of actions taken on the migration (pgshift.audit_log), the steps of each
// cutover attempt (pgshift.cutover_steps) and saved query-timing comparisons
// (pgshift.query_comparisons).
//
// The two histories are kept by triggers on the rows they record (pgshift.migration and
// pgshift.follow_status), so every writer of a phase or a measurement records it in the same
// statement, whichever code path it takes, without knowing about the history. The triggers
// are ENABLE ALWAYS: a session with session_replication_role = replica moves phases too.
//
// Contract for the cutover (which fills pgshift.cutover_steps and writes its audit entries):
// one attempt is a number; its steps are rows (attempt, step_no) that go pending → running →
// done | failed | skipped, with started_at and finished_at set as they move. Nothing here
// runs a cutover; readers show the planned steps as not started while no attempt exists.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// HistoryBucket is the time span one follow_history row covers while it is the newest: the
// agent measures every few seconds, and measurements within one bucket fold into one row
// (keeping the maxima of lag and retained WAL, so a peak is never lost).
const HistoryBucket = 2 * time.Second

// HistoryMaxRows bounds pgshift.follow_history: past it, the older half is merged pairwise
// (maxima kept), so old history gets coarser instead of longer. A migration of any length
// keeps at most this many rows.
const HistoryMaxRows = 2000

// observeDDL adds the observation tables; Ensure runs it with the rest of the state schema.
var observeDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgshift.phase_history (
		id         bigserial PRIMARY KEY,
		phase      text NOT NULL,
		entered_at timestamptz NOT NULL DEFAULT now()
	)`,
	`CREATE OR REPLACE FUNCTION pgshift.record_phase() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
		IF TG_OP = 'INSERT' OR NEW.phase IS DISTINCT FROM OLD.phase THEN
			INSERT INTO pgshift.phase_history (phase, entered_at) VALUES (NEW.phase, now());
		END IF;
		RETURN NULL;
	END $$`,
	`CREATE TABLE IF NOT EXISTS pgshift.follow_history (
		at              timestamptz PRIMARY KEY,
		first_at        timestamptz NOT NULL,
		samples         int NOT NULL DEFAULT 1,
		source_lsn      pg_lsn NOT NULL,
		applied_lsn     pg_lsn NOT NULL,
		lag_bytes_max   bigint NOT NULL,
		lag_seconds_max double precision NOT NULL,
		retained_max    bigint NOT NULL,
		txs_applied     bigint NOT NULL,
		changes_applied bigint NOT NULL
	)`,
	// One measurement: fold it into the newest row while that row is younger than the bucket,
	// else start a new row; past the row limit, merge the older half pairwise.
	fmt.Sprintf(`CREATE OR REPLACE FUNCTION pgshift.record_follow_history() RETURNS trigger LANGUAGE plpgsql AS $$
	DECLARE
		newest pgshift.follow_history%%ROWTYPE;
		n bigint;
	BEGIN
		SELECT * INTO newest FROM pgshift.follow_history ORDER BY at DESC LIMIT 1;
		IF FOUND AND NEW.measured_at <= newest.at THEN
			RETURN NULL; -- not newer than what is recorded (a clock step back): keep the series ordered
		END IF;
		IF FOUND AND NEW.measured_at < newest.first_at + interval '%d milliseconds' THEN
			UPDATE pgshift.follow_history SET at = NEW.measured_at, samples = samples + 1,
				source_lsn = NEW.source_lsn, applied_lsn = NEW.applied_lsn,
				lag_bytes_max = greatest(lag_bytes_max, NEW.lag_bytes),
				lag_seconds_max = greatest(lag_seconds_max, NEW.lag_seconds),
				retained_max = greatest(retained_max, NEW.retained_bytes),
				txs_applied = NEW.txs_applied, changes_applied = NEW.changes_applied
			WHERE at = newest.at;
			RETURN NULL;
		END IF;
		INSERT INTO pgshift.follow_history (at, first_at, source_lsn, applied_lsn, lag_bytes_max, lag_seconds_max,
			retained_max, txs_applied, changes_applied)
		VALUES (NEW.measured_at, NEW.measured_at, NEW.source_lsn, NEW.applied_lsn, NEW.lag_bytes, NEW.lag_seconds,
			NEW.retained_bytes, NEW.txs_applied, NEW.changes_applied);
		SELECT count(*) INTO n FROM pgshift.follow_history;
		IF n > %d THEN
			WITH ranked AS (
				SELECT at, row_number() OVER (ORDER BY at) AS rn FROM pgshift.follow_history
			), pairs AS (
				SELECT a.at AS older, b.at AS newer FROM ranked a JOIN ranked b ON b.rn = a.rn + 1
				WHERE a.rn %% 2 = 1 AND b.rn <= n / 2
			), gone AS (
				DELETE FROM pgshift.follow_history h USING pairs p WHERE h.at = p.older
				RETURNING p.newer, h.first_at, h.samples, h.lag_bytes_max, h.lag_seconds_max, h.retained_max
			)
			UPDATE pgshift.follow_history h SET first_at = g.first_at, samples = h.samples + g.samples,
				lag_bytes_max = greatest(h.lag_bytes_max, g.lag_bytes_max),
				lag_seconds_max = greatest(h.lag_seconds_max, g.lag_seconds_max),
				retained_max = greatest(h.retained_max, g.retained_max)
			FROM gone g WHERE h.at = g.newer;
		END IF;
		RETURN NULL;
	END $$`, HistoryBucket.Milliseconds(), HistoryMaxRows),
	// Triggers are created once (CREATE TRIGGER has no IF NOT EXISTS before PostgreSQL 14), and
	// set ENABLE ALWAYS so they fire in replica-role sessions too.
	`DO $$ BEGIN
		IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'pgshift_phase_history' AND tgrelid = 'pgshift.migration'::regclass) THEN
			CREATE TRIGGER pgshift_phase_history AFTER INSERT OR UPDATE OF phase ON pgshift.migration
				FOR EACH ROW EXECUTE FUNCTION pgshift.record_phase();
			ALTER TABLE pgshift.migration ENABLE ALWAYS TRIGGER pgshift_phase_history;
		END IF;
		IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'pgshift_follow_history' AND tgrelid = 'pgshift.follow_status'::regclass) THEN
			CREATE TRIGGER pgshift_follow_history AFTER INSERT OR UPDATE ON pgshift.follow_status
				FOR EACH ROW EXECUTE FUNCTION pgshift.record_follow_history();
			ALTER TABLE pgshift.follow_status ENABLE ALWAYS TRIGGER pgshift_follow_history;
		END IF;
	END $$`,
	`CREATE TABLE IF NOT EXISTS pgshift.table_estimates (
		schema_name text NOT NULL,
		table_name  text NOT NULL,
		est_rows    bigint NOT NULL,
		est_bytes   bigint NOT NULL,
		PRIMARY KEY (schema_name, table_name)
	)`,
	`CREATE TABLE IF NOT EXISTS pgshift.audit_log (
		id      bigserial PRIMARY KEY,
		at      timestamptz NOT NULL DEFAULT now(),
		actor   text NOT NULL,
		action  text NOT NULL,
		outcome text NOT NULL,
		detail  jsonb NOT NULL DEFAULT '{}'
	)`,
	`CREATE TABLE IF NOT EXISTS pgshift.cutover_steps (
		attempt     int NOT NULL,
		step_no     int NOT NULL,
		name        text NOT NULL,
		state       text NOT NULL DEFAULT 'pending',
		started_at  timestamptz,
		finished_at timestamptz,
		detail      text NOT NULL DEFAULT '',
		PRIMARY KEY (attempt, step_no)
	)`,
	`CREATE TABLE IF NOT EXISTS pgshift.query_comparisons (
		id          bigserial PRIMARY KEY,
		run_at      timestamptz NOT NULL DEFAULT now(),
		name        text NOT NULL,
		runs        int NOT NULL,
		source_ms   double precision NOT NULL,
		target_ms   double precision NOT NULL
	)`,
}

// PhaseEntry is one phase change: the migration entered Phase at EnteredAt.
type PhaseEntry struct {
	Phase     pgtypes.Phase `json:"phase"`
	EnteredAt time.Time     `json:"entered_at"`
}

// LoadPhaseHistory returns the recorded phase changes, oldest first; nil when none are (a
// migration started before the history existed has only the changes since).
func LoadPhaseHistory(ctx context.Context, q catalog.Querier) ([]PhaseEntry, error) {
	if ok, err := tableExists(ctx, q, "pgshift.phase_history"); err != nil || !ok {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT phase, entered_at FROM pgshift.phase_history ORDER BY entered_at, id`)
	if err != nil {
		return nil, fmt.Errorf("read phase history: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (PhaseEntry, error) {
		var e PhaseEntry
		var p string
		err := r.Scan(&p, &e.EnteredAt)
		e.Phase = pgtypes.Phase(p)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read phase history: %w", err)
	}
	return out, nil
}

// HistoryPoint is one row of pgshift.follow_history: the measurements from First to At folded
// together. Lag and retained WAL are the maxima over the span; positions and counters are the
// values at At (the counters count since the agent that measured them started).
type HistoryPoint struct {
	At             time.Time   `json:"at"`
	First          time.Time   `json:"first_at"`
	Samples        int         `json:"samples"`
	SourceLSN      pgtypes.LSN `json:"source_lsn"`
	AppliedLSN     pgtypes.LSN `json:"applied_lsn"`
	LagBytes       int64       `json:"lag_bytes_max"`
	LagSeconds     float64     `json:"lag_seconds_max"`
	RetainedBytes  int64       `json:"retained_wal_bytes_max"`
	TxsApplied     int64       `json:"txs_applied"`
	ChangesApplied int64       `json:"changes_applied"`
}

// LoadFollowHistory returns the follow history after since (all of it for a zero since),
// oldest first.
func LoadFollowHistory(ctx context.Context, q catalog.Querier, since time.Time) ([]HistoryPoint, error) {
	if ok, err := tableExists(ctx, q, "pgshift.follow_history"); err != nil || !ok {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT at, first_at, samples, source_lsn::text, applied_lsn::text, lag_bytes_max,
		lag_seconds_max, retained_max, txs_applied, changes_applied
		FROM pgshift.follow_history WHERE at > $1::timestamptz ORDER BY at`, since)
	if err != nil {
		return nil, fmt.Errorf("read follow history: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (HistoryPoint, error) {
		var p HistoryPoint
		var src, applied string
		if err := r.Scan(&p.At, &p.First, &p.Samples, &src, &applied, &p.LagBytes, &p.LagSeconds, &p.RetainedBytes,
			&p.TxsApplied, &p.ChangesApplied); err != nil {
			return p, err
		}
		var err error
		if p.SourceLSN, err = pgtypes.ParseLSN(src); err != nil {
			return p, err
		}
		p.AppliedLSN, err = pgtypes.ParseLSN(applied)
		return p, err
	})
	if err != nil {
		return nil, fmt.Errorf("read follow history: %w", err)
	}
	return out, nil
}

// Estimate is the source's size of a table when the copy registered it: pg_class.reltuples
// (-1 when never analyzed) and heap plus TOAST bytes. Progress bars and ETAs use it.
type Estimate struct {
	Rows  int64
	Bytes int64
}

// saveEstimate records a table's estimate once (a resumed copy keeps the first).
func saveEstimate(ctx context.Context, q catalog.Querier, id pgtypes.TableID, e Estimate) error {
	_, err := q.Exec(ctx, `INSERT INTO pgshift.table_estimates (schema_name, table_name, est_rows, est_bytes)
		VALUES ($1::text, $2::text, $3::int8, $4::int8) ON CONFLICT (schema_name, table_name) DO NOTHING`,
		id.Schema, id.Name, e.Rows, e.Bytes)
	if err != nil {
		return fmt.Errorf("record size estimate of %s: %w", id, err)
	}
	return nil
}

// LoadEstimates returns the recorded estimates by table.
func LoadEstimates(ctx context.Context, q catalog.Querier) (map[pgtypes.TableID]Estimate, error) {
	out := map[pgtypes.TableID]Estimate{}
	if ok, err := tableExists(ctx, q, "pgshift.table_estimates"); err != nil || !ok {
		return out, err
	}
	rows, err := q.Query(ctx, `SELECT schema_name, table_name, est_rows, est_bytes FROM pgshift.table_estimates`)
	if err != nil {
		return nil, fmt.Errorf("read size estimates: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id pgtypes.TableID
		var e Estimate
		if err := rows.Scan(&id.Schema, &id.Name, &e.Rows, &e.Bytes); err != nil {
			return nil, fmt.Errorf("read size estimates: %w", err)
		}
		out[id] = e
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read size estimates: %w", err)
	}
	return out, nil
}

// AuditEntry is one action taken on the migration: who (actor: "agent", "api", "cli", the
// cutover), what (action, e.g. "agent.start", "proxy.mode", "cutover.start", "rollback"), how
// it ended (outcome: "ok", "failed", "refused") and details as JSON. Details never carry a
// secret: callers put in names, positions and durations, not DSNs.
type AuditEntry struct {
	ID      int64           `json:"id"`
	At      time.Time       `json:"at"`
	Actor   string          `json:"actor"`
	Action  string          `json:"action"`
	Outcome string          `json:"outcome"`
	Detail  json.RawMessage `json:"detail"`
}

// RecordAudit appends an entry to the audit log and returns it as stored; a zero At is the
// time of writing. The state schema must exist (Ensure).
func RecordAudit(ctx context.Context, q catalog.Querier, e AuditEntry) (AuditEntry, error) {
	detail := string(e.Detail)
	if detail == "" {
		detail = "{}"
	}
	var at *time.Time
	if !e.At.IsZero() {
		at = &e.At
	}
	err := q.QueryRow(ctx, `INSERT INTO pgshift.audit_log (at, actor, action, outcome, detail)
		VALUES (coalesce($1::timestamptz, now()), $2::text, $3::text, $4::text, $5::jsonb) RETURNING id, at`,
		at, e.Actor, e.Action, e.Outcome, detail).Scan(&e.ID, &e.At)
	if err != nil {
		return e, fmt.Errorf("record audit entry %s: %w", e.Action, err)
	}
	e.Detail = json.RawMessage(detail)
	return e, nil
}

// LoadAudit returns the audit entries with id above after, oldest first, at most limit (all
// when limit <= 0).
func LoadAudit(ctx context.Context, q catalog.Querier, after int64, limit int) ([]AuditEntry, error) {
	if ok, err := tableExists(ctx, q, "pgshift.audit_log"); err != nil || !ok {
		return nil, err
	}
	sql := `SELECT id, at, actor, action, outcome, detail::text FROM pgshift.audit_log WHERE id > $1::int8 ORDER BY id`
	args := []any{after}
	if limit > 0 {
		// The newest limit entries, still oldest first.
		sql = `SELECT * FROM (SELECT id, at, actor, action, outcome, detail::text FROM pgshift.audit_log
			WHERE id > $1::int8 ORDER BY id DESC LIMIT $2::int4) a ORDER BY id`
		args = append(args, limit)
	}
	rows, err := q.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (AuditEntry, error) {
		var e AuditEntry
		var d string
		err := r.Scan(&e.ID, &e.At, &e.Actor, &e.Action, &e.Outcome, &d)
		e.Detail = json.RawMessage(d)
		return e, err
	})
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	return out, nil
}

// Cutover step states in pgshift.cutover_steps.state.
const (
	StepPending = "pending"
	StepRunning = "running"
	StepDone    = "done"
	StepFailed  = "failed"
	StepSkipped = "skipped"
)

// PlannedCutover names the cutover's steps in order, as internal/cutover runs them (its
// CutoverSteps is this list); readers show them as not started until the cutover records an
// attempt of its own steps.
func PlannedCutover() []string {
	return []string{
		"pre-checks (lag, last verify, reverse replication possible)",
		"pause traffic at transaction boundaries",
		"wait until the target applied the source's position at the pause",
		"sync sequences to the target",
		"refresh materialized views, sync large objects, copy unlogged tables again (recopy_unlogged)",
		"arm reverse replication (target to source)",
		"switch the proxy to the target",
		"resume traffic",
		"post-switch hooks and checks",
	}
}

// CutoverStep is one step of one cutover attempt.
type CutoverStep struct {
	Attempt    int       `json:"attempt"`
	No         int       `json:"step"`
	Name       string    `json:"name"`
	State      string    `json:"state"`
	StartedAt  time.Time `json:"started_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	Detail     string    `json:"detail,omitempty"`
}

// Duration is how long the step ran (to now while it runs); 0 before it started.
func (s CutoverStep) Duration(now time.Time) time.Duration {
	switch {
	case s.StartedAt.IsZero():
		return 0
	case s.FinishedAt.IsZero():
		return now.Sub(s.StartedAt)
	}
	return s.FinishedAt.Sub(s.StartedAt)
}

// LoadCutoverSteps returns the steps of every cutover attempt, by attempt then step; nil when
// no cutover was ever started.
func LoadCutoverSteps(ctx context.Context, q catalog.Querier) ([]CutoverStep, error) {
	if ok, err := tableExists(ctx, q, "pgshift.cutover_steps"); err != nil || !ok {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT attempt, step_no, name, state, started_at, finished_at, detail
		FROM pgshift.cutover_steps ORDER BY attempt, step_no`)
	if err != nil {
		return nil, fmt.Errorf("read cutover steps: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (CutoverStep, error) {
		var s CutoverStep
		var started, finished *time.Time
		err := r.Scan(&s.Attempt, &s.No, &s.Name, &s.State, &started, &finished, &s.Detail)
		if started != nil {
			s.StartedAt = *started
		}
		if finished != nil {
			s.FinishedAt = *finished
		}
		return s, err
	})
	if err != nil {
		return nil, fmt.Errorf("read cutover steps: %w", err)
	}
	return out, nil
}

// SaveCutoverStep writes one step's row (insert or update), for the cutover.
func SaveCutoverStep(ctx context.Context, q catalog.Querier, s CutoverStep) error {
	return SaveCutoverSteps(ctx, q, s)
}

// SaveCutoverSteps records several steps in one statement (one commit outside a
// transaction): inside a cutover's pause each commit on the target is write pause, so a
// step's outcome is recorded together with the next step's start. Each step appears once.
func SaveCutoverSteps(ctx context.Context, q catalog.Querier, steps ...CutoverStep) error {
	if len(steps) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO pgshift.cutover_steps (attempt, step_no, name, state, started_at, finished_at, detail) VALUES `)
	args := make([]any, 0, 7*len(steps))
	for i, s := range steps {
		var started, finished *time.Time
		if !s.StartedAt.IsZero() {
			started = &s.StartedAt
		}
		if !s.FinishedAt.IsZero() {
			finished = &s.FinishedAt
		}
		if i > 0 {
			b.WriteString(", ")
		}
		n := 7 * i
		fmt.Fprintf(&b, "($%d::int4, $%d::int4, $%d::text, $%d::text, $%d::timestamptz, $%d::timestamptz, $%d::text)", n+1, n+2, n+3, n+4, n+5, n+6, n+7)
		args = append(args, s.Attempt, s.No, s.Name, s.State, started, finished, s.Detail)
	}
	b.WriteString(` ON CONFLICT (attempt, step_no) DO UPDATE SET name = excluded.name, state = excluded.state,
		started_at = excluded.started_at, finished_at = excluded.finished_at, detail = excluded.detail`)
	if _, err := q.Exec(ctx, b.String(), args...); err != nil {
		last := steps[len(steps)-1]
		return fmt.Errorf("record cutover step %d (%s): %w", last.No, last.Name, err)
	}
	return nil
}

// QueryComparison is one query timed on both sides (pgshift compare-queries): the median of
// Runs executions, in milliseconds.
type QueryComparison struct {
	RunAt    time.Time `json:"run_at"`
	Name     string    `json:"name"`
	Runs     int       `json:"runs"`
	SourceMS float64   `json:"source_ms"`
	TargetMS float64   `json:"target_ms"`
}

// SaveQueryComparison records one comparison.
func SaveQueryComparison(ctx context.Context, q catalog.Querier, c QueryComparison) error {
	_, err := q.Exec(ctx, `INSERT INTO pgshift.query_comparisons (name, runs, source_ms, target_ms)
		VALUES ($1::text, $2::int4, $3::float8, $4::float8)`, c.Name, c.Runs, c.SourceMS, c.TargetMS)
	if err != nil {
		return fmt.Errorf("record query comparison %q: %w", c.Name, err)
	}
	return nil
}

// LoadQueryComparisons returns the comparisons of the latest run (those recorded within a
// minute of the newest); nil when none was run.
func LoadQueryComparisons(ctx context.Context, q catalog.Querier) ([]QueryComparison, error) {
	if ok, err := tableExists(ctx, q, "pgshift.query_comparisons"); err != nil || !ok {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT run_at, name, runs, source_ms, target_ms FROM pgshift.query_comparisons
		WHERE run_at >= (SELECT max(run_at) - interval '1 minute' FROM pgshift.query_comparisons) ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("read query comparisons: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (QueryComparison, error) {
		var c QueryComparison
		err := r.Scan(&c.RunAt, &c.Name, &c.Runs, &c.SourceMS, &c.TargetMS)
		return c, err
	})
	if err != nil {
		return nil, fmt.Errorf("read query comparisons: %w", err)
	}
	return out, nil
}

// tableExists reports whether a pgshift table exists (state written by an older pgshift, or
// none at all, lacks the newer tables).
func tableExists(ctx context.Context, q catalog.Querier, name string) (bool, error) {
	var ok bool
	if err := q.QueryRow(ctx, `SELECT to_regclass($1::text) IS NOT NULL`, name).Scan(&ok); err != nil {
		if errors.Is(err, context.Canceled) {
			return false, err
		}
		return false, fmt.Errorf("read %s: %w", name, err)
	}
	return ok, nil
}
