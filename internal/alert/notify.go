package alert

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/pgshift/pgshift/internal/config"
)

// Webhook formats.
const (
	FormatSlack        = "slack"
	FormatAlertmanager = "alertmanager"
)

// Webhook is a resolved receiver. Its URL is a secret and is never logged: Host names it.
type Webhook struct {
	URL     string
	Format  string
	Timeout time.Duration
}

// Host is the receiver's host, the only part of its URL ever shown.
func (w Webhook) Host() string {
	if u, err := url.Parse(w.URL); err == nil && u.Host != "" {
		return u.Host
	}
	return "(invalid URL)"
}

// WebhooksFromConfig resolves the configured receivers (reading URL files).
func WebhooksFromConfig(ws []config.Webhook) ([]Webhook, error) {
	var out []Webhook
	for i, c := range ws {
		u, err := c.URLValue()
		if err != nil {
			return nil, fmt.Errorf("alert webhook %d: %w", i+1, err)
		}
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return nil, fmt.Errorf("alert webhook %d: the URL is not an http(s) URL", i+1) // not printed: it is a secret
		}
		f := c.Format
		if f == "" {
			f = FormatSlack
		}
		if f != FormatSlack && f != FormatAlertmanager {
			return nil, fmt.Errorf("alert webhook %d (%s): format %q: want slack or alertmanager", i+1, pu.Host, c.Format)
		}
		t := c.Timeout
		if t <= 0 {
			t = 10 * time.Second
		}
		out = append(out, Webhook{URL: u, Format: f, Timeout: t})
	}
	return out, nil
}

// Notifier delivers notifications to the webhooks and the log, in order, from its own
// goroutine (Run). Send never blocks: when the queue is full the oldest queued notification
// is dropped with a log line.
type Notifier struct {
	hooks  []Webhook
	log    *slog.Logger
	client *http.Client
	queue  chan Notification
	// Retries per delivery after the first attempt (default 3), with backoff from RetryDelay
	// (default 1 s, doubling).
	Retries    int
	RetryDelay time.Duration
	// ExternalURL is put in Alertmanager payloads (the dashboard's address), may be empty.
	ExternalURL string
}

// NewNotifier returns a notifier for hooks; log receives every notification.
func NewNotifier(hooks []Webhook, log *slog.Logger) *Notifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Notifier{hooks: hooks, log: log, client: &http.Client{}, queue: make(chan Notification, 256), Retries: 3, RetryDelay: time.Second}
}

// Send queues n for delivery and logs it at once.
func (nt *Notifier) Send(n Notification) {
	attrs := []any{"alert", n.Rule.Name, "severity", n.Rule.Severity, "message", n.Message}
	if n.Status == "firing" {
		nt.log.Warn("alert firing", attrs...)
	} else {
		nt.log.Info("alert resolved", attrs...)
	}
	if len(nt.hooks) == 0 {
		return
	}
	for {
		select {
		case nt.queue <- n:
			return
		default:
			select {
			case old := <-nt.queue:
				nt.log.Warn("alert queue full; dropped a notification", "alert", old.Rule.Name, "status", old.Status)
			default:
			}
		}
	}
}

// Run delivers until ctx ends.
func (nt *Notifier) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-nt.queue:
			for _, h := range nt.hooks {
				nt.deliver(ctx, h, n)
			}
		}
	}
}

func (nt *Notifier) deliver(ctx context.Context, h Webhook, n Notification) {
	body, err := Payload(h.Format, n, nt.ExternalURL)
	if err != nil {
		nt.log.Error("alert payload", "alert", n.Rule.Name, "err", err)
		return
	}
	delay := nt.RetryDelay
	for attempt := 0; ; attempt++ {
		err := nt.post(ctx, h, body)
		if err == nil {
			nt.log.Debug("alert delivered", "alert", n.Rule.Name, "status", n.Status, "webhook", h.Host())
			return
		}
		if ctx.Err() != nil {
			return
		}
		if attempt >= nt.Retries {
			nt.log.Error("alert not delivered", "alert", n.Rule.Name, "status", n.Status, "webhook", h.Host(), "attempts", attempt+1, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay *= 2
	}
}

func (nt *Notifier) post(ctx context.Context, h Webhook, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, h.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request to %s", h.Host())
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := nt.client.Do(req)
	if err != nil {
		// The error text of net/http carries the URL: name the host only.
		return fmt.Errorf("post to %s failed (%s)", h.Host(), errorKind(err))
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s answered %s", h.Host(), resp.Status)
	}
	return nil
}

// errorKind describes a client error without the URL it carries.
func errorKind(err error) string {
	var ue *url.Error
	if e, ok := err.(*url.Error); ok {
		ue = e
	}
	if ue != nil {
		if ue.Timeout() {
			return "timeout"
		}
		return ue.Err.Error()
	}
	return "request error"
}

// Payload renders n in a webhook format.
func Payload(format string, n Notification, externalURL string) ([]byte, error) {
	switch format {
	case FormatSlack:
		icon := ":rotating_light:"
		if n.Status == "resolved" {
			icon = ":white_check_mark:"
		}
		text := fmt.Sprintf("%s [%s] %s — %s", icon, strings.ToUpper(n.Status), n.Rule.Name, n.Message)
		if m := n.Labels["migration"]; m != "" {
			text += " (migration " + m + ")"
		}
		return json.Marshal(map[string]string{"text": text})
	case FormatAlertmanager:
		return json.Marshal(alertmanagerPayload(n, externalURL))
	}
	return nil, fmt.Errorf("unknown webhook format %q", format)
}

type amAlert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

type amPayload struct {
	Version           string            `json:"version"`
	GroupKey          string            `json:"groupKey"`
	TruncatedAlerts   int               `json:"truncatedAlerts"`
	Status            string            `json:"status"`
	Receiver          string            `json:"receiver"`
	GroupLabels       map[string]string `json:"groupLabels"`
	CommonLabels      map[string]string `json:"commonLabels"`
	CommonAnnotations map[string]string `json:"commonAnnotations"`
	ExternalURL       string            `json:"externalURL"`
	Alerts            []amAlert         `json:"alerts"`
}

// alertmanagerPayload is Alertmanager's webhook payload (version 4) for one alert.
func alertmanagerPayload(n Notification, externalURL string) amPayload {
	ann := map[string]string{"summary": n.Rule.Description(), "description": n.Message}
	keys := make([]string, 0, len(n.Labels))
	for k := range n.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var fp strings.Builder
	for _, k := range keys {
		fp.WriteString(k + "=" + n.Labels[k] + "\x00")
	}
	sum := sha256.Sum256([]byte(fp.String()))
	return amPayload{
		Version: "4", GroupKey: fmt.Sprintf("{}:{alertname=%q}", n.Rule.Name), Status: n.Status, Receiver: "pgshift",
		GroupLabels: map[string]string{"alertname": n.Rule.Name}, CommonLabels: n.Labels, CommonAnnotations: ann,
		ExternalURL: externalURL,
		Alerts: []amAlert{{Status: n.Status, Labels: n.Labels, Annotations: ann, StartsAt: n.StartsAt.UTC(), EndsAt: n.EndsAt.UTC(),
			GeneratorURL: externalURL, Fingerprint: hex.EncodeToString(sum[:8])}},
	}
}
