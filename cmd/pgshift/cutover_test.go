package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/pgshift/pgshift/internal/cutover"
)

// fakeAgent answers /api/status and the cutover and rollback actions with fixed results, as a
// running agent would.
func fakeAgent(t *testing.T, result *cutover.Result, code int) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(`{"cutover":{"state":"not started","steps":[]}}`))
	})
	answer := func(w http.ResponseWriter, r *http.Request) {
		if code != http.StatusOK {
			w.WriteHeader(code)
			w.Write([]byte(`{"error":"conflict: a rollback is in progress"}`))
			return
		}
		json.NewEncoder(w).Encode(result)
	}
	mux.HandleFunc("POST /api/cutover", answer)
	mux.HandleFunc("POST /api/rollback", answer)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv.URL
}

// TestCutoverCommandExitCodes: 0 done (steps and the pause printed), 1 aborted, 2 could not
// run (refused by the agent, no agent, or no --yes).
func TestCutoverCommandExitCodes(t *testing.T) {
	env := func(string) string { return "" }
	done := &cutover.Result{Op: "cutover", Attempt: 1, Outcome: cutover.OutcomeDone, Live: "target", PauseSeconds: 0.0421,
		Steps: []cutover.StepResult{{No: 1, Name: "pre-checks", State: "done", Seconds: 0.001}, {No: 2, Name: "pause traffic", State: "done", Seconds: 0.01}}}
	aborted := &cutover.Result{Op: "cutover", Attempt: 2, Outcome: cutover.OutcomeAborted, Live: "source", Error: "pause timed out",
		Steps: []cutover.StepResult{{No: 2, Name: "pause traffic", State: "failed", Detail: "pause timed out"}}}
	for _, c := range []struct {
		name string
		args []string
		res  *cutover.Result
		code int
		want int
		out  string
	}{
		{"done", []string{"cutover", "--yes"}, done, 200, 0, "write pause 42.1 ms"},
		{"aborted", []string{"cutover", "--yes"}, aborted, 200, 1, "cutover aborted"},
		{"refused", []string{"cutover", "--yes"}, nil, 409, 2, ""},
		{"no yes", []string{"cutover"}, done, 200, 2, ""},
		{"rollback done", []string{"rollback"}, &cutover.Result{Op: "rollback", Attempt: 3, Outcome: cutover.OutcomeDone, Live: "source"}, 200, 0, "traffic is on the source"},
	} {
		t.Run(c.name, func(t *testing.T) {
			addr := fakeAgent(t, c.res, c.code)
			var stdout, stderr bytes.Buffer
			got := run(context.Background(), append(c.args, "--http", addr), &stdout, &stderr, env)
			if got != c.want {
				t.Errorf("exit %d, want %d; stdout %s stderr %s", got, c.want, stdout.String(), stderr.String())
			}
			if c.out != "" && !strings.Contains(stdout.String(), c.out) {
				t.Errorf("stdout lacks %q: %s", c.out, stdout.String())
			}
		})
	}
	var stdout, stderr bytes.Buffer
	if got := run(context.Background(), []string{"cutover", "--yes", "--http", "127.0.0.1:1"}, &stdout, &stderr, env); got != 2 {
		t.Errorf("no agent: exit %d", got)
	}
}
