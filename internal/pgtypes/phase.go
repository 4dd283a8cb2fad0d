package pgtypes

// Phase is where a migration stands. Phases only move forward, in this order;
// each is recorded durably on the target so a restarted agent resumes from it.
type Phase string

const (
	PhaseNew       Phase = "new"       // nothing done yet
	PhaseSchema    Phase = "schema"    // slot created, pre-data schema being applied
	PhaseData      Phase = "data"      // table data being copied in the slot's snapshot
	PhasePostData  Phase = "post-data" // indexes and constraints being built
	PhaseSequences Phase = "sequences" // sequences and materialized views being brought up to date
	PhaseCopied    Phase = "copied"    // copy complete; ready to follow the slot
	PhaseFollowing Phase = "following" // applying changes from the slot
	PhaseCutover   Phase = "cutover"   // traffic switched to the target
	PhaseFinished  Phase = "finished"  // slots and state removed
)

var phaseOrder = map[Phase]int{
	PhaseNew: 0, PhaseSchema: 1, PhaseData: 2, PhasePostData: 3, PhaseSequences: 4,
	PhaseCopied: 5, PhaseFollowing: 6, PhaseCutover: 7, PhaseFinished: 8,
}

// String implements fmt.Stringer.
func (p Phase) String() string { return string(p) }

// Valid reports whether p is one of the known phases.
func (p Phase) Valid() bool { _, ok := phaseOrder[p]; return ok }

// AtLeast reports whether p is at or past q in the lifecycle.
func (p Phase) AtLeast(q Phase) bool { return phaseOrder[p] >= phaseOrder[q] }

// Phases returns every phase in lifecycle order.
func Phases() []Phase {
	return []Phase{PhaseNew, PhaseSchema, PhaseData, PhasePostData, PhaseSequences, PhaseCopied, PhaseFollowing, PhaseCutover, PhaseFinished}
}
