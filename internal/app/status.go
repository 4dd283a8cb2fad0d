package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"text/tabwriter"
	"time"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/report"
	"github.com/pgshift/pgshift/internal/state"
	"github.com/pgshift/pgshift/internal/verify"
)

// Status is what `pgshift status` reports, read from the target's pgshift schema (and, when a
// source DSN is configured, measured live on the source).
type Status struct {
	Phase       string        `json:"phase"`
	Slot        string        `json:"slot"`
	Publication string        `json:"publication"`
	Tables      []TableStatus `json:"tables"`
	AppliedLSN  string        `json:"applied_lsn"`
	// LastCommitTime is the source commit time of the last applied transaction.
	LastCommitTime *time.Time `json:"last_commit_time,omitempty"`
	LagBytes       int64      `json:"lag_bytes"`
	LagSeconds     float64    `json:"lag_seconds"`
	RetainedBytes  int64      `json:"retained_wal_bytes"`
	ETASeconds     float64    `json:"catch_up_eta_seconds"`
	ApplyRate      float64    `json:"apply_rate_bytes_per_second"`
	// CaughtUp: the target has applied everything up to the source's current position.
	CaughtUp bool `json:"caught_up"`
	// Following is false while the copy is not complete: no lag is measured then.
	Following bool `json:"following"`
	// Stale: the figures are the last record of an agent that is no longer running.
	Stale bool `json:"stale,omitempty"`
	// MeasuredAt is when the lag figures were measured; Live says they were measured now on the
	// source rather than read from the agent's last record.
	MeasuredAt *time.Time `json:"measured_at,omitempty"`
	Live       bool       `json:"live"`
	// LastVerify is the headline of the most recent saved `pgshift verify`, if any.
	LastVerify *VerifyStatus `json:"last_verify,omitempty"`
	// Agent is the agent holding the migration's lease, or the last one that held it; nil when
	// no agent ever recorded itself.
	Agent *AgentStatus `json:"agent,omitempty"`
	// Deferred are the target statements kept back until cutover (pgshift.deferred_ddl).
	Deferred []DeferredStatus `json:"deferred,omitempty"`
	// TxsApplied and ChangesApplied count what the measuring agent applied since it started.
	TxsApplied     int64 `json:"txs_applied"`
	ChangesApplied int64 `json:"changes_applied"`
	// Timeline is the phases the migration went through, with when each began.
	Timeline []state.PhaseEntry `json:"timeline,omitempty"`
	// Cutover is the latest cutover attempt, or the planned steps as not started.
	Cutover CutoverStatus `json:"cutover"`
}

// CutoverStatus is the state of the cutover: State is "not started" until a first attempt,
// then the latest attempt's outcome (running, done, failed).
type CutoverStatus struct {
	State string `json:"state"`
	// Live is the side the agent's proxy sends traffic to (source until a cutover);
	// InProgress a cutover or rollback the agent has not finished ("" when none).
	Live       string              `json:"live"`
	InProgress string              `json:"in_progress,omitempty"`
	Attempt    int                 `json:"attempt,omitempty"`
	Steps      []state.CutoverStep `json:"steps"`
}

// AgentStatus is the lease holder as status shows it. Alive comes from the lease lock (held
// now), not from the heartbeat's age: a holder row whose lease session is gone is not alive.
type AgentStatus struct {
	state.Holder
	Alive bool `json:"alive"`
	// Identified is false when an agent holds the lease but has not recorded itself yet (or
	// the row describes an earlier agent); LockPID then names its target session.
	Identified bool `json:"identified"`
	LockPID    int  `json:"lock_backend_pid,omitempty"`
}

// DeferredStatus is one statement kept back until cutover.
type DeferredStatus struct {
	Object    string     `json:"object"`
	Statement string     `json:"statement"`
	Reason    string     `json:"reason"`
	Recorded  time.Time  `json:"recorded_at"`
	Applied   *time.Time `json:"applied_at,omitempty"`
}

// VerifyStatus is the saved result of the latest verify run, as status shows it.
type VerifyStatus struct {
	FinishedAt time.Time      `json:"finished_at"`
	Mode       string         `json:"mode"`
	Summary    verify.Summary `json:"summary"`
}

// TableStatus is one table's copy progress.
type TableStatus struct {
	Table       string `json:"table"`
	State       string `json:"state"`
	Rows        int64  `json:"rows_copied"`
	Bytes       int64  `json:"bytes_copied"`
	SnapshotLSN string `json:"snapshot_lsn"`
	// EstRows and EstBytes are the source's size when the copy planned the table (rows -1
	// when never analyzed, both 0 when not recorded): with StartedAt they give an ETA.
	EstRows    int64      `json:"est_rows"`
	EstBytes   int64      `json:"est_bytes"`
	StartedAt  *time.Time `json:"started_at,omitempty"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
}

// ReadStatus gathers the status from the target, and from the source when cfg names one.
func ReadStatus(ctx context.Context, cfg config.Config, log *slog.Logger) (Status, error) {
	var st Status
	if err := cfg.RequireTarget(); err != nil {
		return st, err
	}
	target := db.Endpoint{Role: db.Target, DSN: cfg.Target}
	conn, err := target.Connect(ctx)
	if err != nil {
		return st, err
	}
	defer conn.Close(context.Background())
	st, facts, err := readTarget(ctx, conn)
	if err != nil {
		return st, target.Describe(err)
	}
	if st.Following && !facts.agentFresh && cfg.Source != "" {
		// No agent is applying (or its record is old): measure on the source. Caught up only
		// when the applied position has reached the source's current one. When the source
		// cannot be reached, the agent's last record stays, marked stale.
		live := st
		live.LagBytes, live.LagSeconds, live.RetainedBytes, live.ApplyRate, live.ETASeconds = 0, 0, 0, 0, -1
		live.CaughtUp, live.Stale, live.MeasuredAt = false, false, nil
		if measureLive(ctx, cfg, facts.m, facts.pos, facts.applied, &live, log) == nil {
			st = live
		}
	}
	return st, nil
}

// targetFacts are what readTarget read beside the Status, for a live measurement.
type targetFacts struct {
	m       state.Migration
	pos     state.Position
	applied pgtypes.LSN
	// agentFresh: a live agent's measurement younger than recordFresh is in the Status.
	agentFresh bool
}

// recordFresh is how old the agent's last measurement may be and still be shown as current
// (it measures every 5 s by default).
const recordFresh = 30 * time.Second

// measureLive measures lag on the source now: bytes from the applied position to the source's
// current one, seconds from the last applied commit (or the start of the migration, when
// nothing was applied since the copy) to the source's clock.
func measureLive(ctx context.Context, cfg config.Config, m state.Migration, pos state.Position, applied pgtypes.LSN, st *Status, log *slog.Logger) error {
	source := db.Endpoint{Role: db.Source, DSN: cfg.Source}
	src, err := source.Connect(ctx)
	if err != nil {
		log.Warn("cannot measure lag on the source; showing the agent's last measurement", "err", err)
		return err
	}
	defer src.Close(context.Background())
	slot, err := catalog.Slot(ctx, src, m.Slot)
	if err != nil {
		err = source.Describe(err)
		log.Warn("cannot measure lag on the source; showing the agent's last measurement", "err", err)
		return err
	}
	st.LagBytes = max(int64(slot.CurrentLSN)-int64(applied), 0)
	st.CaughtUp = st.LagBytes == 0
	st.RetainedBytes = slot.RetainedBytes
	if !st.CaughtUp {
		since := pos.CommitTime
		if since.IsZero() {
			since = m.CreatedAt
		}
		st.LagSeconds = max(slot.ServerTime.Sub(since).Seconds(), 0)
	}
	measured := time.Now()
	st.MeasuredAt, st.Live = &measured, true
	return nil
}

// readTargetStatus reads the status from the target's state alone: what `pgshift status`
// shows without --source, and what the agent serves from memory (it refreshes it with this).
func readTargetStatus(ctx context.Context, conn catalog.Querier) (Status, error) {
	st, _, err := readTarget(ctx, conn)
	return st, err
}

// readTarget is readTargetStatus with the facts a live measurement needs. The lag figures are
// the agent's last record: current when a live agent measured within recordFresh (caught up
// only when it had applied all it knew of), stale when no agent is running or its record is
// old (never caught up), none before the copy is complete.
func readTarget(ctx context.Context, conn catalog.Querier) (Status, targetFacts, error) {
	var st Status
	var facts targetFacts
	m, err := state.Load(ctx, conn)
	if err != nil {
		return st, facts, err
	}
	facts.m = m
	st.Phase, st.Slot, st.Publication = string(m.Phase), m.Slot, m.Publication
	tables, err := state.LoadTables(ctx, conn)
	if err != nil {
		return st, facts, err
	}
	for _, t := range tables {
		ts := TableStatus{Table: t.ID.String(), State: t.State, Rows: t.Rows, Bytes: t.Bytes, SnapshotLSN: t.SnapshotLSN.String(),
			EstRows: t.Estimate.Rows, EstBytes: t.Estimate.Bytes}
		if !t.StartedAt.IsZero() {
			at := t.StartedAt
			ts.StartedAt = &at
		}
		if !t.FinishedAt.IsZero() {
			at := t.FinishedAt
			ts.FinishedAt = &at
		}
		st.Tables = append(st.Tables, ts)
	}
	pos, err := state.LoadPosition(ctx, conn)
	if err != nil {
		return st, facts, err
	}
	facts.pos = pos
	// Everything before the copy's consistent point is in the copy: that is where following
	// starts, and what is applied before the first change is.
	applied := pos.AppliedLSN
	if m.Phase.AtLeast(pgtypes.PhaseCopied) {
		applied = max(applied, m.ConsistentLSN)
	}
	facts.applied = applied
	st.Following = m.Phase.AtLeast(pgtypes.PhaseCopied)
	st.AppliedLSN = applied.String()
	if !pos.CommitTime.IsZero() {
		ct := pos.CommitTime
		st.LastCommitTime = &ct
	}
	st.ETASeconds = -1
	fs, haveRecord, err := state.LoadFollowStatus(ctx, conn)
	if err != nil {
		return st, facts, err
	}
	if haveRecord {
		st.TxsApplied, st.ChangesApplied = fs.TxsApplied, fs.Changes
	}
	if st.LastVerify, err = lastVerify(ctx, conn); err != nil {
		return st, facts, err
	}
	ls, err := state.ReadLease(ctx, conn)
	if err != nil {
		return st, facts, err
	}
	if ls.Recorded || ls.Alive {
		a := &AgentStatus{Alive: ls.Alive, LockPID: ls.LockPID}
		if ls.Recorded {
			a.Holder = ls.Holder
			a.Identified = !ls.Alive || ls.Holder.LeasePID == ls.LockPID
		}
		st.Agent = a
	}
	deferred, err := state.LoadDeferred(ctx, conn)
	if err != nil {
		return st, facts, err
	}
	for _, d := range deferred {
		ds := DeferredStatus{Object: d.Object, Statement: d.Statement, Reason: d.Reason, Recorded: d.RecordedAt}
		if !d.AppliedAt.IsZero() {
			at := d.AppliedAt
			ds.Applied = &at
		}
		st.Deferred = append(st.Deferred, ds)
	}
	if st.Timeline, err = state.LoadPhaseHistory(ctx, conn); err != nil {
		return st, facts, err
	}
	steps, err := state.LoadCutoverSteps(ctx, conn)
	if err != nil {
		return st, facts, err
	}
	st.Cutover = cutoverStatus(steps)
	cs, err := state.LoadCutoverState(ctx, conn)
	if err != nil {
		return st, facts, err
	}
	st.Cutover.Live, st.Cutover.InProgress = cs.Live, cs.Op
	alive := st.Agent != nil && st.Agent.Alive
	switch {
	case !st.Following || !haveRecord:
		// The copy is not done (no lag to speak of yet), or nothing was measured.
	case alive && time.Since(fs.MeasuredAt) < recordFresh:
		// The running agent measures every few seconds, and knows what it has in hand.
		st.LagBytes, st.LagSeconds, st.RetainedBytes = fs.LagBytes, fs.LagSeconds, fs.RetainedBytes
		st.ETASeconds, st.ApplyRate, st.CaughtUp = fs.ETASeconds, fs.ApplyRate, fs.LagBytes == 0
		at := fs.MeasuredAt
		st.MeasuredAt = &at
		facts.agentFresh = true
	default:
		// The last record of an agent that is gone: shown as what it was, never as caught up.
		st.LagBytes, st.LagSeconds, st.RetainedBytes, st.ApplyRate = fs.LagBytes, fs.LagSeconds, fs.RetainedBytes, fs.ApplyRate
		at := fs.MeasuredAt
		st.MeasuredAt, st.Stale = &at, true
	}
	return st, facts, nil
}

// cutoverStatus is the latest attempt of steps, or the plan as not started when there is none.
func cutoverStatus(steps []state.CutoverStep) CutoverStatus {
	if len(steps) == 0 {
		c := CutoverStatus{State: "not started", Steps: []state.CutoverStep{}}
		for i, name := range state.PlannedCutover() {
			c.Steps = append(c.Steps, state.CutoverStep{No: i + 1, Name: name, State: state.StepPending})
		}
		return c
	}
	last := steps[len(steps)-1].Attempt
	c := CutoverStatus{Attempt: last, State: state.StepDone}
	for _, s := range steps {
		if s.Attempt != last {
			continue
		}
		c.Steps = append(c.Steps, s)
		switch s.State {
		case state.StepFailed:
			c.State = state.StepFailed
		case state.StepRunning, state.StepPending:
			if c.State != state.StepFailed {
				c.State = state.StepRunning
			}
		}
	}
	return c
}

// lastVerify reads the latest saved verify result's headline; nil when verify never ran.
func lastVerify(ctx context.Context, q catalog.Querier) (*VerifyStatus, error) {
	run, err := state.LatestVerifyRun(ctx, q)
	if errors.Is(err, state.ErrNoVerifyRun) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var saved struct {
		Summary verify.Summary `json:"summary"`
	}
	if err := json.Unmarshal(run.Result, &saved); err != nil {
		return nil, fmt.Errorf("read saved verify result %d: %w", run.ID, err)
	}
	return &VerifyStatus{FinishedAt: run.FinishedAt, Mode: run.Mode, Summary: saved.Summary}, nil
}

// verifyHeadline is the one-line form of a verify result.
func verifyHeadline(v *VerifyStatus) string {
	s := v.Summary
	var verdict string
	switch {
	case s.Identical:
		verdict = fmt.Sprintf("IDENTICAL, %d/%d tables", s.TablesIdentical, s.TablesCompared)
	case s.Differences > 0:
		verdict = fmt.Sprintf("%d differences (%d rows, %d schema, %d sequences)", s.Differences, s.RowDifferences, s.SchemaDiffs, s.SequenceDiffs)
	default:
		verdict = fmt.Sprintf("incomplete: %d of %d tables could not be compared", s.TablesFailed, s.TablesCompared)
	}
	return fmt.Sprintf("%s — %s mode, %s (%s ago)", verdict, v.Mode,
		v.FinishedAt.UTC().Format(time.RFC3339), time.Since(v.FinishedAt).Round(time.Second))
}

// PrintStatus writes st as text or JSON.
func PrintStatus(w io.Writer, st Status, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	alive := st.Agent != nil && st.Agent.Alive
	phase := st.Phase
	if !alive && (st.Phase == string(pgtypes.PhaseFollowing) || !st.Following) {
		phase += " — stopped: no agent is running (start pgshift run)"
	}
	fmt.Fprintf(tw, "phase:\t%s\n", phase)
	fmt.Fprintf(tw, "agent:\t%s\n", agentLine(st.Agent))
	if st.Cutover.Live == "target" || st.Cutover.InProgress != "" {
		live := "traffic on the " + st.Cutover.Live
		if st.Cutover.Live == "target" {
			live += " (cut over; reverse replication keeps the source current)"
		}
		if st.Cutover.InProgress != "" {
			live += "; a " + st.Cutover.InProgress + " is in progress"
		}
		fmt.Fprintf(tw, "live side:\t%s\n", live)
	}
	fmt.Fprintf(tw, "slot / publication:\t%s / %s\n", st.Slot, st.Publication)
	if !st.Following {
		fmt.Fprintf(tw, "applied position:\tnot following yet: the copy is not complete (the slot keeps every change since its snapshot)\n")
	} else {
		fmt.Fprintf(tw, "applied position:\t%s\n", st.AppliedLSN)
	}
	if st.LastCommitTime != nil {
		fmt.Fprintf(tw, "last applied commit:\t%s\n", st.LastCommitTime.UTC().Format(time.RFC3339Nano))
	}
	switch {
	case !st.Following:
	case st.MeasuredAt == nil:
		fmt.Fprintf(tw, "lag:\tnot measured yet (pass --source to measure it, or start pgshift run)\n")
	case st.Stale:
		fmt.Fprintf(tw, "lag:\tunknown: no agent is running, and without --source it cannot be measured (the last agent measured %s, %s %s ago)\n",
			bytesHuman(st.LagBytes), secondsHuman(st.LagSeconds), time.Since(*st.MeasuredAt).Round(time.Second))
	default:
		src := "the running agent's measurement"
		if st.Live {
			src = "measured now on the source"
		}
		fmt.Fprintf(tw, "lag:\t%s, %s (%s, %s ago)\n", bytesHuman(st.LagBytes), secondsHuman(st.LagSeconds), src, time.Since(*st.MeasuredAt).Round(time.Second))
		fmt.Fprintf(tw, "WAL retained by slot:\t%s\n", bytesHuman(st.RetainedBytes))
		switch {
		case st.CaughtUp:
			fmt.Fprintf(tw, "catch-up:\tcaught up\n")
		case !alive:
			fmt.Fprintf(tw, "catch-up:\tbehind, and no agent is applying (start pgshift run)\n")
		case st.ETASeconds > 0:
			fmt.Fprintf(tw, "catch-up:\tbehind; about %s at the current rates\n", (time.Duration(st.ETASeconds) * time.Second).String())
		default:
			fmt.Fprintf(tw, "catch-up:\tbehind, not gaining on the source yet\n")
		}
	}
	if st.LastVerify != nil {
		fmt.Fprintf(tw, "last verify:\t%s\n", verifyHeadline(st.LastVerify))
	} else {
		fmt.Fprintf(tw, "last verify:\tnever (run pgshift verify)\n")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(st.Deferred) > 0 {
		fmt.Fprintf(w, "\nkept back on the target until cutover (%d):\n", len(st.Deferred))
		for _, d := range st.Deferred {
			when := "pending"
			if d.Applied != nil {
				when = "applied " + d.Applied.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "  %s — %s [%s]\n    %s\n", d.Object, d.Reason, when, d.Statement)
		}
	}
	if len(st.Tables) > 0 {
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "TABLE\tSTATE\tROWS\tBYTES\tSNAPSHOT")
		for _, t := range st.Tables {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", t.Table, t.State, t.Rows, bytesHuman(t.Bytes), t.SnapshotLSN)
		}
		return tw.Flush()
	}
	return nil
}

// agentLine describes the lease holder in one line.
func agentLine(a *AgentStatus) string {
	switch {
	case a == nil:
		return "none running (start pgshift run)"
	case a.Alive && !a.Identified:
		return fmt.Sprintf("running, not yet identified (its lease session is target backend pid %d)", a.LockPID)
	case a.Alive:
		return fmt.Sprintf("alive — host %s pid %d running `%s` since %s (heartbeat %s ago, lease session pid %d)",
			a.Host, a.PID, a.Command, a.StartedAt.UTC().Format(time.RFC3339), time.Since(a.Heartbeat).Round(time.Second), a.LeasePID)
	default:
		return fmt.Sprintf("none running (start pgshift run); the last was host %s pid %d running `%s`, last heartbeat %s ago",
			a.Host, a.PID, a.Command, time.Since(a.Heartbeat).Round(time.Second))
	}
}

// secondsHuman writes a lag in seconds, with sub-second precision only below ten seconds.
func secondsHuman(s float64) string {
	if s < 10 {
		return fmt.Sprintf("%.1f s", s)
	}
	return (time.Duration(s) * time.Second).String()
}

func bytesHuman(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Report writes the migration up from the target's state (pgshift report).
func Report(ctx context.Context, cfg config.Config, now time.Time) (*report.Report, error) {
	if err := cfg.RequireTarget(); err != nil {
		return nil, err
	}
	target := db.Endpoint{Role: db.Target, DSN: cfg.Target}
	conn, err := target.Connect(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.Background())
	r, err := report.Load(ctx, conn, now)
	if err != nil {
		return nil, target.Describe(err)
	}
	return r, nil
}
