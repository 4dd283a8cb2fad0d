package alert

import (
	"fmt"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/pgshift/pgshift/internal/metrics"
)

// PrometheusRules renders rules as a Prometheus rules file over the agent's metrics (the
// same conditions the agent evaluates itself, for users who alert from their own Prometheus
// and Alertmanager).
func PrometheusRules(rules []Rule) ([]byte, error) {
	type promRule struct {
		Alert       string            `yaml:"alert"`
		Expr        string            `yaml:"expr"`
		For         string            `yaml:"for,omitempty"`
		Labels      map[string]string `yaml:"labels"`
		Annotations map[string]string `yaml:"annotations"`
	}
	type group struct {
		Name  string     `yaml:"name"`
		Rules []promRule `yaml:"rules"`
	}
	g := group{Name: "pgshift"}
	num := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	for _, r := range rules {
		pr := promRule{Alert: r.Name, Labels: map[string]string{"severity": r.Severity},
			Annotations: map[string]string{"summary": "pgshift: " + r.Description()}}
		if r.For > 0 {
			pr.For = promDuration(r.For.Seconds())
		}
		switch r.Kind {
		case KindLagSeconds:
			pr.Expr = fmt.Sprintf("%s > %s", metrics.LagSeconds, num(r.Over))
			pr.Annotations["description"] = "Replication lag is {{ $value | humanizeDuration }} on {{ $labels.instance }}."
		case KindLagBytes:
			pr.Expr = fmt.Sprintf("%s > %s", metrics.LagBytes, num(r.Over))
			pr.Annotations["description"] = "Replication lag is {{ $value | humanize1024 }}B on {{ $labels.instance }}."
		case KindRetainedWAL:
			pr.Expr = fmt.Sprintf("%s > %s", metrics.RetainedWAL, num(r.Over))
			pr.Annotations["description"] = "The slot retains {{ $value | humanize1024 }}B of WAL on the source ({{ $labels.instance }})."
		case KindApplyStalled:
			w := promDuration(r.For.Seconds())
			pr.Expr = fmt.Sprintf("(%s{phase=\"following\"} == 1) and on(job, instance) ((changes(%s[%s]) == 0 and %s > 0) or (time() - %s > %s))",
				metrics.Phase, metrics.AppliedLSN, w, metrics.LagBytes, metrics.LastMeasurement, num(r.For.Seconds()))
			pr.For = ""
			pr.Annotations["description"] = "The applied position on {{ $labels.instance }} has not moved for " + w + " while there is lag, or no lag was measured."
		case KindVerifyDifferences:
			pr.Expr = fmt.Sprintf("%s > %s", metrics.VerifyDifferences, num(r.Over))
			pr.Annotations["description"] = "The latest pgshift verify found {{ $value }} differences."
		case KindCutoverStepFailed:
			pr.Expr = fmt.Sprintf("%s{state=\"failed\"} > 0", metrics.CutoverSteps)
			pr.Annotations["description"] = "A step of the latest cutover attempt failed; see the dashboard's audit log."
		case KindAgentRestarted:
			pr.Expr = fmt.Sprintf("changes(%s[15m]) > 0", metrics.AgentStart)
			pr.Annotations["description"] = "The pgshift agent on {{ $labels.instance }} restarted in the last 15 minutes."
		default:
			return nil, fmt.Errorf("alert rule %q: kind %q has no Prometheus form", r.Name, r.Kind)
		}
		g.Rules = append(g.Rules, pr)
	}
	out, err := yaml.Marshal(map[string][]group{"groups": {g}})
	if err != nil {
		return nil, fmt.Errorf("render Prometheus rules: %w", err)
	}
	return append([]byte("# Prometheus alerting rules for pgshift's agent metrics (pgshift alerts rules).\n"), out...), nil
}

// promDuration writes seconds in Prometheus's duration syntax.
func promDuration(secs float64) string {
	s := int64(secs)
	switch {
	case s <= 0:
		return "0s"
	case s%3600 == 0:
		return fmt.Sprintf("%dh", s/3600)
	case s%60 == 0:
		return fmt.Sprintf("%dm", s/60)
	}
	return fmt.Sprintf("%ds", s)
}
