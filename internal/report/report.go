// Package report writes the migration up from the state pgshift saved on the target: the
// timeline with each phase's duration, the data moved and its rates, replication lag over
// time, the validation summary (the case study's summary tree: tables matched, integrity %,
// schema consistency, discrepancies by class), sequences, the cutover with its measured
// pause, rollbacks, alerts and the audit log, and the query-performance comparison when one
// was run. It renders Markdown, JSON, and HTML: one self-contained file whose charts are
// inline SVG, readable offline.
//
// Load reads; the renderers do no I/O but writing. Figures the state does not hold are said
// to be missing, never estimated.
package report

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
	"github.com/pgshift/pgshift/internal/verify"
)

// Report is the migration written up.
type Report struct {
	GeneratedAt time.Time      `json:"generated_at"`
	Migration   Migration      `json:"migration"`
	Timeline    []PhaseSpan    `json:"timeline"`
	Copy        Copy           `json:"copy"`
	Follow      Follow         `json:"follow"`
	Validation  *Validation    `json:"validation,omitempty"`
	Cutover     Cutover        `json:"cutover"`
	Rollbacks   []Event        `json:"rollbacks"`
	Alerts      []Event        `json:"alerts"`
	Audit       []Event        `json:"audit"`
	Queries     []QueryRow     `json:"query_comparison,omitempty"`
	History     []HistoryRow   `json:"history"`
	Notes       []string       `json:"notes,omitempty"`
	verifyRep   *verify.Report // for the differing keys
	steps       []state.CutoverStep
}

// Migration identifies the migration.
type Migration struct {
	SourceDatabase string      `json:"source_database"`
	Slot           string      `json:"slot"`
	Publication    string      `json:"publication"`
	Phase          string      `json:"phase"`
	CreatedAt      time.Time   `json:"created_at"`
	ConsistentLSN  pgtypes.LSN `json:"consistent_lsn"`
	AppliedLSN     pgtypes.LSN `json:"applied_lsn"`
}

// PhaseSpan is one phase of the timeline; End is zero for the current phase.
type PhaseSpan struct {
	Phase   string    `json:"phase"`
	Start   time.Time `json:"start"`
	End     time.Time `json:"end,omitzero"`
	Seconds float64   `json:"seconds"`
	Current bool      `json:"current,omitempty"`
}

// Copy is the copy phase's figures.
type Copy struct {
	Tables      int        `json:"tables"`
	TablesDone  int        `json:"tables_done"`
	Rows        int64      `json:"rows"`
	Bytes       int64      `json:"bytes"`
	Start       time.Time  `json:"start,omitzero"`
	End         time.Time  `json:"end,omitzero"`
	Seconds     float64    `json:"seconds"`
	BytesPerSec float64    `json:"bytes_per_second"`
	RowsPerSec  float64    `json:"rows_per_second"`
	PostData    int        `json:"post_data_steps"`
	Largest     []TableRow `json:"largest_tables"`
}

// TableRow is one table's copy.
type TableRow struct {
	Table   string  `json:"table"`
	Rows    int64   `json:"rows"`
	Bytes   int64   `json:"bytes"`
	Seconds float64 `json:"seconds"`
}

// Follow is the follow phase's figures. Transactions and changes are those the agents
// measured (each agent counts from its start; a run's last few seconds after its final
// measurement are not in them).
type Follow struct {
	Start           time.Time `json:"start,omitzero"`
	WALBytes        int64     `json:"wal_applied_bytes"`
	Transactions    int64     `json:"transactions_measured"`
	Changes         int64     `json:"changes_measured"`
	AgentRuns       int       `json:"agent_runs_measured"`
	MaxLagSeconds   float64   `json:"max_lag_seconds"`
	MaxLagBytes     int64     `json:"max_lag_bytes"`
	MaxRetained     int64     `json:"max_retained_wal_bytes"`
	LastLagSeconds  float64   `json:"last_lag_seconds"`
	LastLagBytes    int64     `json:"last_lag_bytes"`
	LastMeasured    time.Time `json:"last_measured,omitzero"`
	MeanBytesPerSec float64   `json:"mean_applied_bytes_per_second"`
}

// Validation is the latest verify run as the case study summarised it.
type Validation struct {
	RunAt           time.Time      `json:"run_at"`
	Mode            string         `json:"mode"`
	Identical       bool           `json:"identical"`
	TablesCompared  int            `json:"tables_compared"`
	TablesMatched   int            `json:"tables_matched"`
	RowCountMatches int            `json:"row_count_matches"`
	SourceRows      int64          `json:"source_rows"`
	RowDifferences  int64          `json:"row_differences"`
	IntegrityPct    float64        `json:"integrity_percent"`
	SchemaObjects   int            `json:"schema_objects"`
	SchemaDiffs     int            `json:"schema_differences"`
	SchemaPct       float64        `json:"schema_consistency_percent"`
	Deferred        int            `json:"kept_back_until_cutover"`
	Classes         map[string]int `json:"discrepancies_by_class"`
	Sequences       int            `json:"sequences_compared"`
	SequenceDiffs   int            `json:"sequence_differences"`
	SequencesBehind bool           `json:"sequences_expected_behind"`
	Tables          []TableCheck   `json:"differing_tables,omitempty"`
}

// TableCheck is a table verify found different, with the first differing keys.
type TableCheck struct {
	Table       string   `json:"table"`
	SourceRows  int64    `json:"source_rows"`
	TargetRows  int64    `json:"target_rows"`
	Differences int64    `json:"differences"`
	Keys        []string `json:"keys"`
	Error       string   `json:"error,omitempty"`
}

// Cutover is the latest cutover attempt.
type Cutover struct {
	State        string              `json:"state"`
	Attempts     int                 `json:"attempts"`
	Steps        []state.CutoverStep `json:"steps"`
	PauseSeconds float64             `json:"pause_seconds"` // traffic held, measured; 0 when not measured
	PauseSource  string              `json:"pause_source,omitempty"`
}

// Event is an audit entry.
type Event struct {
	At      time.Time       `json:"at"`
	Actor   string          `json:"actor"`
	Action  string          `json:"action"`
	Outcome string          `json:"outcome"`
	Detail  json.RawMessage `json:"detail"`
}

// QueryRow is one query of the comparison.
type QueryRow struct {
	Name        string  `json:"name"`
	Runs        int     `json:"runs"`
	SourceMS    float64 `json:"source_ms"`
	TargetMS    float64 `json:"target_ms"`
	Improvement float64 `json:"improvement_percent"` // positive: faster on the target
}

// HistoryRow is a point of the lag and throughput series.
type HistoryRow struct {
	At            time.Time `json:"at"`
	LagSeconds    float64   `json:"lag_seconds_max"`
	LagBytes      int64     `json:"lag_bytes_max"`
	RetainedBytes int64     `json:"retained_wal_bytes_max"`
	// BytesPerSec and TxsPerSec are the applied rates since the previous point (TxsPerSec -1
	// across an agent restart, where the counter starts again).
	BytesPerSec float64 `json:"applied_bytes_per_second"`
	TxsPerSec   float64 `json:"transactions_per_second"`
}

// Load reads everything the report needs from the target's pgshift schema.
func Load(ctx context.Context, q catalog.Querier, now time.Time) (*Report, error) {
	m, err := state.Load(ctx, q)
	if err != nil {
		return nil, err
	}
	r := &Report{GeneratedAt: now, Rollbacks: []Event{}, Alerts: []Event{}, Audit: []Event{}, History: []HistoryRow{}}
	r.Migration = Migration{SourceDatabase: m.SourceDatabase, Slot: m.Slot, Publication: m.Publication, Phase: string(m.Phase),
		CreatedAt: m.CreatedAt, ConsistentLSN: m.ConsistentLSN}
	phases, err := state.LoadPhaseHistory(ctx, q)
	if err != nil {
		return nil, err
	}
	tables, err := state.LoadTables(ctx, q)
	if err != nil {
		return nil, err
	}
	post, err := state.PostDataDone(ctx, q)
	if err != nil {
		return nil, err
	}
	pos, err := state.LoadPosition(ctx, q)
	if err != nil {
		return nil, err
	}
	r.Migration.AppliedLSN = pos.AppliedLSN
	fs, measured, err := state.LoadFollowStatus(ctx, q)
	if err != nil {
		return nil, err
	}
	hist, err := state.LoadFollowHistory(ctx, q, time.Time{})
	if err != nil {
		return nil, err
	}
	steps, err := state.LoadCutoverSteps(ctx, q)
	if err != nil {
		return nil, err
	}
	audit, err := state.LoadAudit(ctx, q, 0, 0)
	if err != nil {
		return nil, err
	}
	queries, err := state.LoadQueryComparisons(ctx, q)
	if err != nil {
		return nil, err
	}
	r.timeline(m, phases, now)
	r.copyFigures(tables, len(post))
	r.followFigures(m, pos, fs, measured, hist)
	run, err := state.LatestVerifyRun(ctx, q)
	switch {
	case errors.Is(err, state.ErrNoVerifyRun):
		r.Notes = append(r.Notes, "no verify run was saved: run pgshift verify for the validation summary")
	case err != nil:
		return nil, err
	default:
		var rep verify.Report
		if err := json.Unmarshal(run.Result, &rep); err != nil {
			return nil, fmt.Errorf("read saved verify result %d: %w", run.ID, err)
		}
		r.Validation = validation(&rep, run.FinishedAt)
	}
	for _, e := range audit {
		ev := Event{At: e.At, Actor: e.Actor, Action: e.Action, Outcome: e.Outcome, Detail: e.Detail}
		r.Audit = append(r.Audit, ev)
		switch {
		case strings.HasPrefix(e.Action, "rollback"):
			r.Rollbacks = append(r.Rollbacks, ev)
		case strings.HasPrefix(e.Action, "alert."):
			r.Alerts = append(r.Alerts, ev)
		}
	}
	r.cutover(steps, audit)
	for _, c := range queries {
		qr := QueryRow{Name: c.Name, Runs: c.Runs, SourceMS: c.SourceMS, TargetMS: c.TargetMS}
		if c.SourceMS > 0 {
			qr.Improvement = (c.SourceMS - c.TargetMS) / c.SourceMS * 100
		}
		r.Queries = append(r.Queries, qr)
	}
	return r, nil
}

func (r *Report) timeline(m state.Migration, phases []state.PhaseEntry, now time.Time) {
	if len(phases) == 0 {
		r.Notes = append(r.Notes, "no phase history was recorded (the migration began under a pgshift without it): the timeline starts at the migration's creation")
		phases = []state.PhaseEntry{{Phase: m.Phase, EnteredAt: m.CreatedAt}}
	}
	for i, p := range phases {
		s := PhaseSpan{Phase: string(p.Phase), Start: p.EnteredAt}
		if i+1 < len(phases) {
			s.End = phases[i+1].EnteredAt
			s.Seconds = s.End.Sub(s.Start).Seconds()
		} else {
			s.Current = true
			s.Seconds = now.Sub(s.Start).Seconds()
		}
		r.Timeline = append(r.Timeline, s)
	}
}

func (r *Report) copyFigures(tables []state.TableProgress, postData int) {
	c := &r.Copy
	c.PostData = postData
	for _, t := range tables {
		if t.Kind != state.KindData {
			continue
		}
		c.Tables++
		if t.State == state.TableDone {
			c.TablesDone++
		}
		c.Rows += t.Rows
		c.Bytes += t.Bytes
		if !t.StartedAt.IsZero() && (c.Start.IsZero() || t.StartedAt.Before(c.Start)) {
			c.Start = t.StartedAt
		}
		if t.FinishedAt.After(c.End) {
			c.End = t.FinishedAt
		}
		row := TableRow{Table: t.ID.String(), Rows: t.Rows, Bytes: t.Bytes}
		if !t.StartedAt.IsZero() && !t.FinishedAt.IsZero() {
			row.Seconds = t.FinishedAt.Sub(t.StartedAt).Seconds()
		}
		c.Largest = append(c.Largest, row)
	}
	sort.Slice(c.Largest, func(i, j int) bool { return c.Largest[i].Bytes > c.Largest[j].Bytes })
	if len(c.Largest) > 10 {
		c.Largest = c.Largest[:10]
	}
	// The data phase's span, from the timeline when recorded (it includes planning), else
	// from the first table's start to the last one's end.
	for _, p := range r.Timeline {
		if p.Phase == string(pgtypes.PhaseData) && !p.End.IsZero() {
			c.Start, c.End = p.Start, p.End
		}
	}
	if !c.Start.IsZero() && c.End.After(c.Start) {
		c.Seconds = c.End.Sub(c.Start).Seconds()
		c.BytesPerSec = float64(c.Bytes) / c.Seconds
		c.RowsPerSec = float64(c.Rows) / c.Seconds
	}
}

func (r *Report) followFigures(m state.Migration, pos state.Position, fs state.FollowStatus, measured bool, hist []state.HistoryPoint) {
	f := &r.Follow
	for _, p := range r.Timeline {
		if p.Phase == string(pgtypes.PhaseFollowing) {
			f.Start = p.Start
		}
	}
	if pos.AppliedLSN > m.ConsistentLSN {
		f.WALBytes = int64(pos.AppliedLSN - m.ConsistentLSN)
	}
	// Counters restart with each agent: a run's total is its last value before the counter
	// fell back.
	var runTxs, runChanges int64
	var prev *state.HistoryPoint
	for i := range hist {
		h := &hist[i]
		f.MaxLagSeconds = max(f.MaxLagSeconds, h.LagSeconds)
		f.MaxLagBytes = max(f.MaxLagBytes, h.LagBytes)
		f.MaxRetained = max(f.MaxRetained, h.RetainedBytes)
		row := HistoryRow{At: h.At, LagSeconds: h.LagSeconds, LagBytes: h.LagBytes, RetainedBytes: h.RetainedBytes, TxsPerSec: -1}
		if prev == nil || h.TxsApplied < prev.TxsApplied {
			if prev != nil {
				f.Transactions += runTxs
				f.Changes += runChanges
			}
			f.AgentRuns++
		}
		if prev != nil {
			if dt := h.At.Sub(prev.At).Seconds(); dt > 0 {
				row.BytesPerSec = max(float64(h.AppliedLSN)-float64(prev.AppliedLSN), 0) / dt
				if h.TxsApplied >= prev.TxsApplied {
					row.TxsPerSec = float64(h.TxsApplied-prev.TxsApplied) / dt
				}
			}
		}
		runTxs, runChanges = h.TxsApplied, h.ChangesApplied
		r.History = append(r.History, row)
		prev = h
	}
	f.Transactions += runTxs
	f.Changes += runChanges
	if len(hist) > 1 {
		first, last := hist[0], hist[len(hist)-1]
		if dt := last.At.Sub(first.At).Seconds(); dt > 0 && last.AppliedLSN > first.AppliedLSN {
			f.MeanBytesPerSec = float64(last.AppliedLSN-first.AppliedLSN) / dt
		}
	}
	if measured {
		f.LastLagSeconds, f.LastLagBytes, f.LastMeasured = fs.LagSeconds, fs.LagBytes, fs.MeasuredAt
	}
	if len(hist) == 0 {
		r.Notes = append(r.Notes, "no lag history was recorded: the agent has not followed the slot yet")
	}
}

func validation(rep *verify.Report, at time.Time) *Validation {
	s := rep.Summary
	v := &Validation{RunAt: at, Mode: string(rep.Mode), Identical: s.Identical, TablesCompared: s.TablesCompared,
		TablesMatched: s.TablesIdentical, SourceRows: s.SourceRows, RowDifferences: s.RowDifferences, Classes: map[string]int{}}
	for k, n := range rep.Classes {
		v.Classes[k] = n
	}
	for _, t := range rep.Tables {
		if t.Error == "" && t.SourceRows == t.TargetRows {
			v.RowCountMatches++
		}
		if t.Identical() {
			continue
		}
		tc := TableCheck{Table: t.Name, SourceRows: t.SourceRows, TargetRows: t.TargetRows, Differences: t.Differences, Error: t.Error, Keys: []string{}}
		for i, d := range t.Rows {
			if i == 10 {
				break
			}
			k := string(d.Kind) + " " + d.Key
			if len(d.Cols) > 0 {
				var cols []string
				for _, c := range d.Cols {
					cols = append(cols, c.Column)
				}
				k += " (" + strings.Join(cols, ", ") + ")"
			}
			tc.Keys = append(tc.Keys, k)
		}
		v.Tables = append(v.Tables, tc)
	}
	if s.SourceRows > 0 {
		v.IntegrityPct = float64(s.SourceRows-min(s.RowDifferences, s.SourceRows)) / float64(s.SourceRows) * 100
	} else if s.RowDifferences == 0 {
		v.IntegrityPct = 100
	}
	if rep.Schema != nil {
		v.SchemaObjects, v.SchemaDiffs, v.Deferred = rep.Schema.Compared, len(rep.Schema.Diffs), len(rep.Schema.Deferred)
		if v.SchemaObjects > 0 {
			v.SchemaPct = float64(v.SchemaObjects-min(v.SchemaDiffs, v.SchemaObjects)) / float64(v.SchemaObjects) * 100
		}
	}
	if rep.Sequences != nil {
		v.Sequences, v.SequenceDiffs, v.SequencesBehind = rep.Sequences.Compared, len(rep.Sequences.Diffs), rep.Sequences.Expected
	}
	return v
}

func (r *Report) cutover(steps []state.CutoverStep, audit []state.AuditEntry) {
	c := &r.Cutover
	c.State, c.Steps = "not started", []state.CutoverStep{}
	if len(steps) > 0 {
		last := steps[len(steps)-1].Attempt
		c.Attempts, c.State = last, state.StepDone
		var pauseStart, resumeEnd time.Time
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
			name := strings.ToLower(s.Name)
			if strings.HasPrefix(name, "pause") && !s.StartedAt.IsZero() {
				pauseStart = s.StartedAt
			}
			if strings.HasPrefix(name, "resume") && !s.FinishedAt.IsZero() {
				resumeEnd = s.FinishedAt
			}
		}
		if !pauseStart.IsZero() && resumeEnd.After(pauseStart) {
			c.PauseSeconds, c.PauseSource = resumeEnd.Sub(pauseStart).Seconds(), "cutover steps: from the pause to the resume"
		}
	} else {
		for i, n := range state.PlannedCutover() {
			c.Steps = append(c.Steps, state.CutoverStep{No: i + 1, Name: n, State: state.StepPending})
		}
	}
	if c.PauseSeconds == 0 {
		// Pauses taken through the agent's API (POST /api/pause, /api/resume) are measured too.
		for _, e := range audit {
			if e.Action != "proxy.resume" {
				continue
			}
			var d struct {
				Paused float64 `json:"paused_seconds"`
			}
			if json.Unmarshal(e.Detail, &d) == nil && d.Paused > 0 {
				c.PauseSeconds, c.PauseSource = d.Paused, "the last proxy pause through the agent's API ("+e.At.UTC().Format(time.RFC3339)+")"
			}
		}
	}
}
