package copy

import (
	"context"
	"errors"
	"fmt"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/pgshift/pgshift/internal/pgtypes"
	"github.com/pgshift/pgshift/internal/state"
)

// Step is one numbered step of the copy. Each is idempotent and resumable, re-derived from the
// stored phase, and each can run alone (`pgshift copy schema|data|indexes|sequences`) once the
// steps before it are done; StepAll runs every step that is not done yet, in order.
type Step int

const (
	StepAll Step = iota
	// StepSchema (1) creates the publication and the slot and applies pre-data. Run alone, it
	// ends with the slot's exported snapshot unused: the data step then copies every table in a
	// new snapshot of its own, as a resumed copy does (see Run), and the slot keeps the changes
	// from its consistent point on.
	StepSchema
	// StepData (2) copies every table's rows.
	StepData
	// StepIndexes (3) builds indexes and constraints (post-data) in parallel, then gathers
	// planner statistics (ANALYZE) table by table in parallel.
	StepIndexes
	// StepSequences (4) sets sequences to the source's values and refreshes materialized
	// views. Run alone after the copy, it sets the sequences again.
	StepSequences
)

// stepNames are the names of the steps, in order, as the command line spells them.
var stepNames = []string{StepSchema: "schema", StepData: "data", StepIndexes: "indexes", StepSequences: "sequences"}

func (s Step) String() string {
	if s <= StepAll || int(s) >= len(stepNames) {
		return "all"
	}
	return stepNames[s]
}

// ParseStep reads a step name: schema, data, indexes or sequences ("" is every step).
func ParseStep(name string) (Step, error) {
	if name == "" {
		return StepAll, nil
	}
	for s, n := range stepNames {
		if n == name && s != int(StepAll) {
			return Step(s), nil
		}
	}
	return StepAll, fmt.Errorf("copy step %q: want schema, data, indexes or sequences", name)
}

// doneAt is the phase from which a step is done.
func (s Step) doneAt() pgtypes.Phase {
	switch s {
	case StepSchema:
		return pgtypes.PhaseData
	case StepData:
		return pgtypes.PhasePostData
	case StepIndexes:
		return pgtypes.PhaseSequences
	default:
		return pgtypes.PhaseCopied
	}
}

// ErrInterrupted is returned when the copy was stopped (Ctrl-C, SIGTERM) before it finished;
// its message names the step and the command that resumes it.
var ErrInterrupted = errors.New("copy interrupted")

// interrupted words a copy stopped by its context.
func (r *copyRun) interrupted() error {
	step := r.step
	if step == "" {
		step = "preparation"
	}
	return fmt.Errorf("%w during step %s: nothing is lost; run %s again and it resumes where it stopped", ErrInterrupted, step, r.opts.resumeCommand())
}

func (o Options) resumeCommand() string {
	if o.Resume != "" {
		return o.Resume
	}
	if o.Step != StepAll {
		return "pgshift copy " + o.Step.String()
	}
	return "pgshift copy"
}

// steps runs the copy's steps from phase on: every one not done yet, or only opts.Step.
func (r *copyRun) steps(ctx context.Context, phase pgtypes.Phase, fresh bool) error {
	only := r.opts.Step
	for s := StepSchema; s <= StepSequences; s++ {
		if only != StepAll && s < only {
			if !phase.AtLeast(s.doneAt()) {
				return fmt.Errorf("step %d (%s) is not done yet (the migration is in phase %s): run pgshift copy %s first, or pgshift copy for every step",
					s, s, phase, s)
			}
			continue
		}
		if only != StepAll && s > only {
			return nil
		}
		r.step = s.String()
		if s == StepSchema {
			if !phase.AtLeast(pgtypes.PhaseData) {
				// Nothing copied yet: (re)start the migration's snapshot.
				if err := r.schemaAndData(ctx, phase, only == StepAll); err != nil {
					return err
				}
			} else if only == StepSchema {
				r.log.Info("copy step schema is already done", "phase", phase.String())
			}
		} else {
			if !fresh {
				if err := r.checkSlot(ctx); err != nil {
					return err
				}
				fresh = true // checked once
			}
			if err := r.runStep(ctx, s, phase); err != nil {
				return err
			}
		}
		r.sum.Steps = append(r.sum.Steps, r.step)
		m, err := state.Load(ctx, r.dstConn)
		if err != nil {
			return r.dst.Describe(err)
		}
		phase = m.Phase
	}
	return nil
}

func (r *copyRun) runStep(ctx context.Context, s Step, phase pgtypes.Phase) error {
	switch s {
	case StepData:
		if phase == pgtypes.PhaseData {
			return r.resumeData(ctx, nil)
		}
	case StepIndexes:
		if phase == pgtypes.PhasePostData {
			return r.postData(ctx)
		}
	case StepSequences:
		if !phase.AtLeast(pgtypes.PhaseSequences) {
			return nil
		}
		if err := r.sequencesAndViews(ctx); err != nil {
			return err
		}
		if phase == pgtypes.PhaseSequences {
			if err := state.Advance(ctx, r.dstConn, pgtypes.PhaseSequences, pgtypes.PhaseCopied); err != nil {
				return r.dst.Describe(err)
			}
		}
	}
	return nil
}

// analyze gathers planner statistics for every copied table, Jobs at a time: a freshly loaded
// table has none, and autovacuum would take its time. Partitions are analyzed one by one;
// partitioned parents are left to the user, as autovacuum leaves them (ANALYZE of a parent
// would read every partition again). ANALYZE is idempotent: a resumed step runs it again.
func (r *copyRun) analyze(ctx context.Context) error {
	t0 := time.Now()
	pool, err := r.dst.Pool(ctx, r.cfg.Jobs)
	if err != nil {
		return err
	}
	defer pool.Close()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(r.cfg.Jobs)
	n := 0
	for _, t := range r.tables {
		if !t.HoldsData() {
			continue
		}
		n++
		g.Go(func() error {
			if _, err := pool.Exec(gctx, "ANALYZE "+t.ID.Sanitize()); err != nil {
				return r.dst.Describe(fmt.Errorf("analyze %s: %w", t.ID, err))
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	r.sum.Analyzed = n
	r.sum.AnalyzeTime = time.Since(t0)
	r.log.Info("statistics gathered (ANALYZE)", "tables", n, "took", r.sum.AnalyzeTime.Round(time.Millisecond).String())
	return nil
}
