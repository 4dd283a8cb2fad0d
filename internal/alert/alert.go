// Package alert evaluates the agent's alert rules and sends what changes to webhooks and the
// log: lag over a limit, retained WAL over a limit, apply stalled, verify differences, a
// failed cutover step, an agent restart. Rules come from the configuration (config.AlertRule);
// PrometheusRules writes the same rules as a Prometheus rules file for users who alert from
// their own Prometheus.
//
// An alert goes inactive → pending (its condition holds, for less than For) → firing (sent
// once) → resolved (sent once) → inactive. De-duplication is by rule: while an alert fires,
// nothing more is sent for it unless Repeat is set. Evaluation (Engine) is pure and clocked by
// the caller; delivery (Notifier) runs in its own goroutine and never blocks evaluation.
package alert

import (
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pgshift/pgshift/internal/config"
)

// Rule kinds.
const (
	KindLagSeconds        = "lag_seconds"
	KindLagBytes          = "lag_bytes"
	KindRetainedWAL       = "retained_wal_bytes"
	KindApplyStalled      = "apply_stalled"
	KindVerifyDifferences = "verify_differences"
	KindCutoverStepFailed = "cutover_step_failed"
	KindAgentRestarted    = "agent_restarted"
)

// Rule is a parsed, validated rule. Over is in base units: seconds or bytes or a count.
type Rule struct {
	Name     string
	Kind     string
	Over     float64
	For      time.Duration
	Severity string
}

// Description says what the rule watches, for people.
func (r Rule) Description() string {
	switch r.Kind {
	case KindLagSeconds:
		return fmt.Sprintf("replication lag over %s", fmtSeconds(r.Over))
	case KindLagBytes:
		return fmt.Sprintf("replication lag over %s", fmtBytes(r.Over))
	case KindRetainedWAL:
		return fmt.Sprintf("WAL retained by the slot over %s", fmtBytes(r.Over))
	case KindApplyStalled:
		return fmt.Sprintf("applied position not moving for %s while there is lag", r.For)
	case KindVerifyDifferences:
		return fmt.Sprintf("latest verify found more than %g differences", r.Over)
	case KindCutoverStepFailed:
		return "a cutover step failed"
	case KindAgentRestarted:
		return "the agent restarted"
	}
	return r.Kind
}

var namePattern = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// FromConfig parses and validates rules.
func FromConfig(rules []config.AlertRule) ([]Rule, error) {
	var out []Rule
	seen := map[string]bool{}
	for i, c := range rules {
		r := Rule{Name: c.Name, Kind: c.Kind, For: c.For, Severity: c.Severity}
		if r.Name == "" {
			r.Name = "Pgshift_" + c.Kind
		}
		if !namePattern.MatchString(r.Name) {
			return nil, fmt.Errorf("alert rule %d: name %q: want letters, digits and underscores (a Prometheus alert name)", i+1, r.Name)
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("alert rule %q is listed twice", r.Name)
		}
		seen[r.Name] = true
		if r.Severity == "" {
			r.Severity = "warning"
		}
		if c.For < 0 {
			return nil, fmt.Errorf("alert rule %q: for must not be negative", r.Name)
		}
		var err error
		switch c.Kind {
		case KindLagSeconds:
			var d time.Duration
			if d, err = time.ParseDuration(c.Over); err != nil || d <= 0 {
				return nil, fmt.Errorf("alert rule %q: over %q: want a positive duration such as 5m", r.Name, c.Over)
			}
			r.Over = d.Seconds()
		case KindLagBytes, KindRetainedWAL:
			if r.Over, err = ParseBytes(c.Over); err != nil || r.Over <= 0 {
				return nil, fmt.Errorf("alert rule %q: over %q: want a positive size such as 10GiB", r.Name, c.Over)
			}
		case KindApplyStalled:
			if r.For <= 0 {
				r.For = 5 * time.Minute
			}
		case KindVerifyDifferences:
			if c.Over != "" {
				if r.Over, err = strconv.ParseFloat(c.Over, 64); err != nil || r.Over < 0 {
					return nil, fmt.Errorf("alert rule %q: over %q: want a count such as 0", r.Name, c.Over)
				}
			}
		case KindCutoverStepFailed, KindAgentRestarted:
		default:
			return nil, fmt.Errorf("alert rule %q: kind %q: want lag_seconds, lag_bytes, retained_wal_bytes, apply_stalled, verify_differences, cutover_step_failed or agent_restarted", r.Name, c.Kind)
		}
		out = append(out, r)
	}
	return out, nil
}

// ParseBytes reads a size: a number with an optional unit B, kB, MB, GB, TB (powers of 1000)
// or KiB, MiB, GiB, TiB (powers of 1024).
func ParseBytes(s string) (float64, error) {
	s = strings.TrimSpace(s)
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := s, ""
	if i >= 0 {
		num, unit = s[:i], strings.TrimSpace(s[i:])
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: %w", s, err)
	}
	mult := map[string]float64{"": 1, "B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
		"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("size %q: unknown unit %q", s, unit)
	}
	return v * mult, nil
}

// Observation is what the rules are evaluated against: the agent's status at Now.
type Observation struct {
	Now           time.Time
	Phase         string
	Measured      bool // a lag measurement exists
	MeasuredAt    time.Time
	LagSeconds    float64
	LagBytes      int64
	RetainedBytes int64
	AppliedLSN    uint64
	Verified      bool
	Differences   int64
	// FailedSteps names the failed steps of the latest cutover attempt.
	FailedSteps []string
	// Restarted describes the earlier agent when this one started after it ("" if none).
	Restarted string
	// StreamingSinceStart: this agent has measured lag itself (it follows the slot).
	StreamingSinceStart bool
}

// State is one rule's alert as the API shows it.
type State struct {
	Name        string    `json:"name"`
	Kind        string    `json:"kind"`
	Severity    string    `json:"severity"`
	Description string    `json:"description"`
	State       string    `json:"state"` // inactive, pending, firing
	Since       time.Time `json:"since,omitzero"`
	Message     string    `json:"message,omitempty"`
}

// Notification is a transition to send: an alert started firing, repeats, or resolved.
type Notification struct {
	Rule     Rule
	Status   string // firing or resolved
	Message  string
	StartsAt time.Time
	EndsAt   time.Time // zero while firing
	Labels   map[string]string
}

type ruleState struct {
	state    string
	since    time.Time // pending or firing since
	sentAt   time.Time
	message  string
	startsAt time.Time
}

// Engine holds the alerts' states between evaluations. Not safe for concurrent use.
type Engine struct {
	rules  []Rule
	repeat time.Duration
	labels map[string]string
	states []ruleState
	// apply_stalled: when the applied position last moved.
	lastApplied     uint64
	lastAppliedMove time.Time
}

// NewEngine returns an engine for rules; labels are added to every alert (e.g. the migration).
func NewEngine(rules []Rule, repeat time.Duration, labels map[string]string) *Engine {
	e := &Engine{rules: rules, repeat: repeat, labels: labels, states: make([]ruleState, len(rules))}
	for i := range e.states {
		e.states[i].state = "inactive"
	}
	return e
}

// Evaluate advances every alert to the observation and returns what to send.
func (e *Engine) Evaluate(o Observation) []Notification {
	if o.AppliedLSN != e.lastApplied || e.lastAppliedMove.IsZero() {
		e.lastApplied, e.lastAppliedMove = o.AppliedLSN, o.Now
	}
	var out []Notification
	for i, r := range e.rules {
		holds, msg := e.condition(r, o)
		s := &e.states[i]
		wait := r.For
		if r.Kind == KindApplyStalled || r.Kind == KindAgentRestarted || r.Kind == KindCutoverStepFailed {
			wait = 0 // the condition has its own time (or is an event)
		}
		switch {
		case holds && s.state == "inactive":
			s.state, s.since = "pending", o.Now
			fallthrough
		case holds && s.state == "pending":
			s.message = msg
			if o.Now.Sub(s.since) >= wait {
				s.state, s.startsAt, s.sentAt = "firing", o.Now, o.Now
				out = append(out, e.note(r, "firing", msg, s.startsAt, time.Time{}))
			}
		case holds && s.state == "firing":
			s.message = msg
			if e.repeat > 0 && o.Now.Sub(s.sentAt) >= e.repeat {
				s.sentAt = o.Now
				out = append(out, e.note(r, "firing", msg, s.startsAt, time.Time{}))
			}
		case !holds && s.state == "firing":
			out = append(out, e.note(r, "resolved", resolvedMessage(r, o), s.startsAt, o.Now))
			*s = ruleState{state: "inactive"}
		case !holds:
			*s = ruleState{state: "inactive"}
		}
	}
	return out
}

func (e *Engine) note(r Rule, status, msg string, starts, ends time.Time) Notification {
	labels := map[string]string{"alertname": r.Name, "severity": r.Severity, "kind": r.Kind}
	for k, v := range e.labels {
		labels[k] = v
	}
	return Notification{Rule: r, Status: status, Message: msg, StartsAt: starts, EndsAt: ends, Labels: labels}
}

// States returns every rule's current state, firing first.
func (e *Engine) States() []State {
	out := make([]State, len(e.rules))
	for i, r := range e.rules {
		s := e.states[i]
		out[i] = State{Name: r.Name, Kind: r.Kind, Severity: r.Severity, Description: r.Description(), State: s.state, Since: s.since, Message: s.message}
	}
	rank := map[string]int{"firing": 0, "pending": 1, "inactive": 2}
	sort.SliceStable(out, func(i, j int) bool { return rank[out[i].State] < rank[out[j].State] })
	return out
}

func (e *Engine) condition(r Rule, o Observation) (bool, string) {
	switch r.Kind {
	case KindLagSeconds:
		if o.Measured && o.LagSeconds > r.Over {
			return true, fmt.Sprintf("replication lag is %s (%s), over the limit of %s", fmtSeconds(o.LagSeconds), fmtBytes(float64(o.LagBytes)), fmtSeconds(r.Over))
		}
	case KindLagBytes:
		if o.Measured && float64(o.LagBytes) > r.Over {
			return true, fmt.Sprintf("replication lag is %s, over the limit of %s", fmtBytes(float64(o.LagBytes)), fmtBytes(r.Over))
		}
	case KindRetainedWAL:
		if o.Measured && float64(o.RetainedBytes) > r.Over {
			return true, fmt.Sprintf("the replication slot retains %s of WAL on the source, over the limit of %s; the source's disk fills while it grows",
				fmtBytes(float64(o.RetainedBytes)), fmtBytes(r.Over))
		}
	case KindApplyStalled:
		if o.Phase != "following" || !o.Measured {
			return false, ""
		}
		if age := o.Now.Sub(o.MeasuredAt); age >= r.For {
			return true, fmt.Sprintf("no lag measurement for %s: following has stopped or cannot reach the servers", age.Round(time.Second))
		}
		if still := o.Now.Sub(e.lastAppliedMove); o.LagBytes > 0 && still >= r.For {
			return true, fmt.Sprintf("the applied position has not moved for %s while the target is %s behind", still.Round(time.Second), fmtBytes(float64(o.LagBytes)))
		}
	case KindVerifyDifferences:
		if o.Verified && float64(o.Differences) > r.Over {
			return true, fmt.Sprintf("the latest verify found %d differences between source and target", o.Differences)
		}
	case KindCutoverStepFailed:
		if len(o.FailedSteps) > 0 {
			return true, "cutover step failed: " + strings.Join(o.FailedSteps, ", ")
		}
	case KindAgentRestarted:
		if o.Restarted != "" && !o.StreamingSinceStart {
			return true, "the agent restarted; " + o.Restarted
		}
	}
	return false, ""
}

func resolvedMessage(r Rule, o Observation) string {
	switch r.Kind {
	case KindLagSeconds, KindLagBytes:
		return fmt.Sprintf("replication lag is back to %s (%s)", fmtSeconds(o.LagSeconds), fmtBytes(float64(o.LagBytes)))
	case KindRetainedWAL:
		return fmt.Sprintf("the replication slot retains %s of WAL", fmtBytes(float64(o.RetainedBytes)))
	case KindApplyStalled:
		return "the applied position moves again"
	case KindVerifyDifferences:
		return fmt.Sprintf("the latest verify found %d differences", o.Differences)
	case KindCutoverStepFailed:
		return "no failed step in the latest cutover attempt"
	case KindAgentRestarted:
		return "the restarted agent follows the slot again"
	}
	return "resolved"
}

func fmtSeconds(s float64) string {
	return (time.Duration(math.Round(s*10)) * time.Second / 10).String()
}

func fmtBytes(b float64) string {
	const unit = 1024
	if b < unit {
		return fmt.Sprintf("%.0f B", b)
	}
	div, exp := float64(unit), 0
	for n := b / unit; n >= unit && exp < 4; n /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", b/div, "KMGTP"[exp])
}
