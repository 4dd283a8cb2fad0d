package web

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Client calls a running agent's API (pgshift status --http, the control commands).
type Client struct {
	// Addr is host:port or a URL (http:// or https://).
	Addr  string
	Token string
	HTTP  *http.Client // default http.DefaultClient
}

func (c Client) url(path string) string {
	u := c.Addr
	if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
		u = "http://" + u
	}
	return strings.TrimRight(u, "/") + path
}

// Get reads path as JSON into v.
func (c Client) Get(ctx context.Context, path string, v any) error {
	return c.do(ctx, http.MethodGet, path, nil, v)
}

// Post runs a control action with an optional JSON body and reads the result into v.
func (c Client) Post(ctx context.Context, path string, query url.Values, body, v any) error {
	if len(query) > 0 {
		path += "?" + query.Encode()
	}
	return c.do(ctx, http.MethodPost, path, body, v)
}

func (c Client) do(ctx context.Context, method, path string, body, v any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, c.url(path), rd)
	if err != nil {
		return fmt.Errorf("agent at %s: %w", c.Addr, err)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	if method == http.MethodPost {
		req.Header.Set(requestHeader, "pgshift")
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("agent at %s: %w (is pgshift run --http %s running?)", c.Addr, err, c.Addr)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e map[string]string
		_ = json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e)
		return &StatusError{Code: resp.StatusCode, Status: resp.Status, Msg: e["error"], Addr: c.Addr, Path: path}
	}
	if v == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("agent at %s%s: %w", c.Addr, path, err)
	}
	return nil
}

// StatusError is a non-200 answer of the agent.
type StatusError struct {
	Code        int
	Status, Msg string
	Addr, Path  string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("agent at %s%s: %s: %s", e.Addr, e.Path, e.Status, e.Msg)
}

// FetchStatus reads /api/status from a running agent at addr (host:port or a URL) into v.
func FetchStatus(ctx context.Context, addr, token string, v any) error {
	return Client{Addr: addr, Token: token}.Get(ctx, "/api/status", v)
}
