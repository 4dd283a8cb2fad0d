package verify

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// Mode is how deeply table data is compared.
type Mode string

const (
	// ModeCount compares exact row counts only.
	ModeCount Mode = "count"
	// ModeChecksum hashes key-range chunks on both sides and bisects differing chunks down to rows.
	ModeChecksum Mode = "checksum"
	// ModeRows compares every row's full-width digest (no chunk shortcut).
	ModeRows Mode = "rows"
)

// ParseMode validates a --mode value.
func ParseMode(s string) (Mode, bool) {
	switch Mode(s) {
	case ModeCount, ModeChecksum, ModeRows:
		return Mode(s), true
	}
	return "", false
}

// Kind says how a row differs.
type Kind string

const (
	KindMissing   Kind = "missing"   // on the source, not on the target
	KindExtra     Kind = "extra"     // on the target, not on the source
	KindDifferent Kind = "different" // same key, different values
	KindDuplicate Kind = "duplicate" // (tables without a key) the same row more often on the target
	KindUnstable  Kind = "unstable"  // still changing on the source after every re-check: unconfirmed (live mode only)
)

// Discrepancy classes: why two values differ, named the way an operator would name the fix.
const (
	ClassMissingRow   = "missing row"
	ClassExtraRow     = "extra row"
	ClassDuplicateRow = "duplicate row"
	ClassTimestamp    = "timestamp precision"
	ClassEncoding     = "encoding"
	ClassFloat        = "float rounding"
	ClassNumeric      = "numeric rounding"
	ClassCharPadding  = "trailing spaces in char(n)"
	ClassCollation    = "collation"
	ClassNullEmpty    = "NULL vs empty string"
	ClassSequence     = "sequence drift"
	ClassValue        = "value changed"
	ClassSchema       = "schema"
	ClassDeferred     = "kept back until cutover"
	ClassUnstable     = "unconfirmed (still changing on the source)"
	ClassLagging      = "unconfirmed (the target did not catch up in time)"
)

// Report is the outcome of one verify run. It is what the text and JSON output show and what
// is saved in pgshift.verify_runs.
type Report struct {
	Mode      Mode      `json:"mode"`
	Source    string    `json:"source"` // endpoint description, never the DSN
	Target    string    `json:"target"`
	StartedAt time.Time `json:"started_at"`
	Duration  Duration  `json:"duration"`

	Tables    []TableResult     `json:"tables"`
	Schema    *SchemaResult     `json:"schema,omitempty"`
	Sequences *SequenceResult   `json:"sequences,omitempty"`
	Live      *LiveResult       `json:"live,omitempty"`
	Repair    []RepairResult    `json:"repair,omitempty"`
	Classes   map[string]int    `json:"classes"` // discrepancy class → number of differences
	Summary   Summary           `json:"summary"`
	Notes     []string          `json:"notes,omitempty"`
	Snapshots map[string]string `json:"snapshot_lsn,omitempty"` // side → WAL position when its snapshot was taken
}

// Summary is the headline of a report.
type Summary struct {
	TablesCompared  int   `json:"tables_compared"`
	TablesIdentical int   `json:"tables_identical"`
	TablesFailed    int   `json:"tables_failed"`
	SourceRows      int64 `json:"source_rows"`
	RowsCompared    int64 `json:"rows_compared"` // source rows of the tables that could be compared
	RowDifferences  int64 `json:"row_differences"`
	RowsUnstable    int64 `json:"rows_unstable"`
	RowsUnconfirmed int64 `json:"rows_unconfirmed"` // the target lagged too far to re-check them
	SchemaDiffs     int   `json:"schema_differences"`
	SequenceDiffs   int   `json:"sequence_differences"`
	Differences     int64 `json:"differences"` // everything that makes the exit code 1
	Identical       bool  `json:"identical"`
}

// TableResult is the comparison of one table.
type TableResult struct {
	Table       pgtypes.TableID `json:"-"`
	Name        string          `json:"table"`
	Keyed       bool            `json:"keyed"` // compared by primary key (else as a multiset of rows)
	SourceRows  int64           `json:"source_rows"`
	TargetRows  int64           `json:"target_rows"`
	Chunks      int             `json:"chunks,omitempty"`
	ChunksDiff  int             `json:"chunks_differing,omitempty"`
	Differences int64           `json:"differences"`        // all differing rows, also those beyond the listing cap
	Unstable    int64           `json:"unstable,omitempty"` // rows still changing on the source
	Rows        []RowDiff       `json:"rows,omitempty"`     // at most Options.MaxRowsPerTable
	Classes     map[string]int  `json:"classes,omitempty"`  // class → differing rows of this table
	Error       string          `json:"error,omitempty"`    // the table could not be compared
	Duration    Duration        `json:"duration"`
}

// Identical reports whether the table compared equal (and could be compared).
func (t TableResult) Identical() bool {
	return t.Error == "" && t.Differences == 0 && t.SourceRows == t.TargetRows
}

// RowDiff is one differing row.
type RowDiff struct {
	Kind  Kind         `json:"kind"`
	Key   string       `json:"key"`             // "id=42" or "(a, b)=(1, x)"; for tables without a key, the row itself
	Class string       `json:"class,omitempty"` // the dominant class of this row
	Cols  []ColumnDiff `json:"columns,omitempty"`
	// SourceCount and TargetCount are how often the row occurs, for tables without a key.
	SourceCount int64 `json:"source_count,omitempty"`
	TargetCount int64 `json:"target_count,omitempty"`
	// Repaired is set when --repair rewrote the row and it then compared equal.
	Repaired bool `json:"repaired,omitempty"`
	// keyVals is the key as text values, for re-checking and repair; digest is the row hash
	// (tables without a key).
	keyVals []string
	digest  string
}

// ColumnDiff is one differing column of a row.
type ColumnDiff struct {
	Column string  `json:"column"`
	Source *string `json:"source"` // nil is SQL NULL; long values are truncated
	Target *string `json:"target"`
	Class  string  `json:"class"`
}

// SchemaResult lists schema objects that differ.
type SchemaResult struct {
	Compared int          `json:"objects_compared"`
	Diffs    []SchemaDiff `json:"differences,omitempty"`
	// Deferred are triggers and rules whose enable state pgshift keeps back on the target until
	// cutover (pgshift.deferred_ddl): expected, not differences.
	Deferred []SchemaDiff `json:"deferred,omitempty"`
}

// SchemaDiff is one schema object missing on a side or defined differently.
type SchemaDiff struct {
	Kind   string `json:"kind"` // table, column, constraint, index, sequence, view, function, trigger, extension
	Name   string `json:"name"`
	Issue  string `json:"issue"` // "missing on target", "extra on target", "different"
	Source string `json:"source,omitempty"`
	Target string `json:"target,omitempty"`
	Class  string `json:"class"`
}

// SequenceResult compares sequence positions.
type SequenceResult struct {
	Compared int            `json:"compared"`
	Diffs    []SequenceDiff `json:"differences,omitempty"`
	// Expected is true while the target is being followed: sequences are synced at cutover, so
	// a sequence out of step is reported but not counted as a difference. Behind is the usual
	// case; ahead happens when the source's sequence went back (ALTER SEQUENCE … RESTART,
	// TRUNCATE … RESTART IDENTITY, setval), which a torture run showed as a false alarm.
	Expected bool `json:"expected_before_cutover,omitempty"`
}

// SequenceDiff is a sequence whose next value differs between the sides.
type SequenceDiff struct {
	Name         string `json:"sequence"`
	Source       int64  `json:"source_last_value"`
	Target       int64  `json:"target_last_value"`
	SourceCalled bool   `json:"source_is_called"`
	TargetCalled bool   `json:"target_is_called"`
	// Behind is how many increments the target's next value trails the source's; negative
	// when the target is ahead.
	Behind int64  `json:"behind"`
	Class  string `json:"class"`
	// Repaired is set when --repair moved the target sequence to the source's position.
	Repaired bool `json:"repaired,omitempty"`

	seq pgtypes.TableID
}

// counts says whether the difference counts against IDENTICAL: all do, except while the target
// is being followed (expected until cutover syncs sequences, whichever way they differ).
func (d SequenceDiff) counts(expected bool) bool {
	return !d.Repaired && !expected
}

// LiveResult describes the re-check of differing rows while the target is being followed.
type LiveResult struct {
	Following bool  `json:"following"`
	Rounds    int   `json:"rounds"`
	Resolved  int64 `json:"resolved"`  // first-pass differences that were only replication lag
	Confirmed int64 `json:"confirmed"` // differences that held on a source row that did not change
	Unstable  int64 `json:"unstable"`
	// Lagging is set when the target did not reach a round's source position before the
	// deadline: the rows still in question are unconfirmed and the result is incomplete.
	Lagging    bool   `json:"lagging,omitempty"`
	SourceLSN0 string `json:"source_lsn_start,omitempty"`
	SourceLSN1 string `json:"source_lsn_end,omitempty"`
	Note       string `json:"note,omitempty"`
}

// RepairResult is what --repair did to one table.
type RepairResult struct {
	Table     string `json:"table"`
	Deleted   int64  `json:"deleted"`
	Inserted  int64  `json:"inserted"`
	Remaining int64  `json:"remaining"` // differences left after re-verifying the repaired rows
	Error     string `json:"error,omitempty"`
}

// Duration marshals as seconds with millisecond precision.
type Duration time.Duration

// MarshalJSON renders the duration in seconds.
func (d Duration) MarshalJSON() ([]byte, error) {
	s := time.Duration(d).Round(time.Millisecond).Seconds()
	return []byte(formatFloat(s)), nil
}

// UnmarshalJSON reads the seconds MarshalJSON writes (saved reports are read back by status
// and the migration report).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s float64
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	*d = Duration(time.Duration(s * float64(time.Second)))
	return nil
}
