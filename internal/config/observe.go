package config

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// HTTPSettings secure the agent's HTTP API (run --http). Bound to a loopback address it may
// run without a token; bound elsewhere it needs one.
type HTTPSettings struct {
	// TokenFile holds the bearer token (one line). PGSHIFT_HTTP_TOKEN, when set, wins.
	TokenFile string `yaml:"token_file"`
	// TLSCertFile and TLSKeyFile serve the API over HTTPS.
	TLSCertFile string `yaml:"tls_cert_file"`
	TLSKeyFile  string `yaml:"tls_key_file"`
}

// Alerts configure the agent's alerting: rules evaluated on its own status, sent to webhooks
// and the log. With no rules listed, DefaultAlertRules apply.
type Alerts struct {
	// Interval between evaluations (default 10 s).
	Interval time.Duration `yaml:"interval"`
	// Repeat re-sends a firing alert at this interval (default 0: once, then resolved once).
	Repeat time.Duration `yaml:"repeat"`
	// Webhooks receive every firing and resolved alert.
	Webhooks []Webhook `yaml:"webhooks"`
	// Rules replace the default rules (lag, retained WAL, stalled apply, verify differences,
	// failed cutover step, agent restart) when given.
	Rules []AlertRule `yaml:"rules"`
	// Disabled turns alerting off.
	Disabled bool `yaml:"disabled"`
	// Labels are added to every alert sent (e.g. env: prod).
	Labels map[string]string `yaml:"labels"`
}

// Webhook is one receiver. The URL is a secret (Slack's carries its token): it is never
// logged, only its host.
type Webhook struct {
	// URL, or URLFile holding it (one line).
	URL     string `yaml:"url"`
	URLFile string `yaml:"url_file"`
	// Format is slack (Slack-compatible {"text": ...}) or alertmanager (Alertmanager's
	// webhook payload, version 4).
	Format string `yaml:"format"`
	// Timeout of one delivery (default 10 s); failed deliveries are retried with backoff.
	Timeout time.Duration `yaml:"timeout"`
}

// AlertRule is one rule. Kind decides what Over means:
//
//	lag_seconds          replication lag over a duration ("5m")
//	lag_bytes            replication lag over a size ("1GiB")
//	retained_wal_bytes   WAL retained by the slot over a size ("20GiB")
//	apply_stalled        applied position not moving while there is lag, for For (Over unused)
//	verify_differences   the latest verify found more than Over differences (default 0)
//	cutover_step_failed  a step of the latest cutover attempt failed
//	agent_restarted      this agent started after an earlier one (fires once, resolves when following again)
type AlertRule struct {
	// Name is the alert's name, as Alertmanager and the dashboard show it.
	Name string `yaml:"name"`
	// Kind is what the rule watches: lag_seconds, retained_wal_bytes, apply_stalled,
	// verify_differences, cutover_step_failed or agent_restarted.
	Kind string `yaml:"kind"`
	// Over is the threshold: a duration for lag_seconds, a size for retained_wal_bytes, a
	// count for verify_differences.
	Over string `yaml:"over"`
	// For is how long the condition must hold before the alert fires (pending until then).
	For time.Duration `yaml:"for"`
	// Severity is passed to the webhooks: critical, warning or info.
	Severity string `yaml:"severity"`
}

// DefaultAlertRules are the rules used when the configuration lists none: the case study's
// lag alarm (at lag_warn, 5 minutes by default), a full-disk guard on retained WAL, a stalled
// applier, verify differences, a failed cutover step and an agent restart.
func DefaultAlertRules(lagWarn time.Duration) []AlertRule {
	if lagWarn <= 0 {
		lagWarn = 5 * time.Minute
	}
	return []AlertRule{
		{Name: "PgshiftReplicationLagHigh", Kind: "lag_seconds", Over: lagWarn.String(), For: time.Minute, Severity: "critical"},
		{Name: "PgshiftSlotRetainedWALHigh", Kind: "retained_wal_bytes", Over: "20GiB", For: 5 * time.Minute, Severity: "warning"},
		{Name: "PgshiftApplyStalled", Kind: "apply_stalled", For: 5 * time.Minute, Severity: "critical"},
		{Name: "PgshiftVerifyDifferences", Kind: "verify_differences", Over: "0", Severity: "warning"},
		{Name: "PgshiftCutoverStepFailed", Kind: "cutover_step_failed", Severity: "critical"},
		{Name: "PgshiftAgentRestarted", Kind: "agent_restarted", Severity: "warning"},
	}
}

// AlertRules returns the configured rules, or the defaults when none are listed.
func (c Config) AlertRules() []AlertRule {
	if len(c.Alerts.Rules) > 0 {
		return c.Alerts.Rules
	}
	return DefaultAlertRules(c.LagWarn)
}

// HTTPTokenValue returns the API token: PGSHIFT_HTTP_TOKEN (read by Load), else the token file.
func (c Config) HTTPTokenValue() (string, error) {
	if c.HTTPToken != "" {
		return c.HTTPToken, nil
	}
	if c.HTTPSettings.TokenFile == "" {
		return "", nil
	}
	return readSecretFile(c.HTTPSettings.TokenFile, "http_settings.token_file")
}

// URLValue returns the webhook's URL, from URL or URLFile.
func (w Webhook) URLValue() (string, error) {
	if w.URL != "" {
		return w.URL, nil
	}
	if w.URLFile == "" {
		return "", fmt.Errorf("webhook without url or url_file")
	}
	return readSecretFile(w.URLFile, "webhook url_file")
}

func readSecretFile(path, what string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", what, path, err)
	}
	v := strings.TrimSpace(string(b))
	if v == "" {
		return "", fmt.Errorf("%s %s is empty", what, path)
	}
	return v, nil
}
