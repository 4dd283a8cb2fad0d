package app

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/state"
)

// TestPrintStatusAgentAndDeferred: the text status names the lease holder and whether it is
// alive, and lists the statements kept back until cutover.
func TestPrintStatusAgentAndDeferred(t *testing.T) {
	started := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	h := state.Holder{Host: "db-runner", PID: 4242, Command: "run", StartedAt: started, LeasePID: 777, Heartbeat: time.Now()}
	cases := []struct {
		agent *AgentStatus
		want  string
	}{
		{nil, "none running (start pgshift run)\n"},
		{&AgentStatus{Holder: h, Alive: true, Identified: true, LockPID: 777},
			"alive — host db-runner pid 4242 running `run` since 2026-03-04T05:06:07Z"},
		{&AgentStatus{Holder: h}, "none running (start pgshift run); the last was host db-runner pid 4242 running `run`"},
		{&AgentStatus{Alive: true, LockPID: 99}, "running, not yet identified (its lease session is target backend pid 99)"},
	}
	for _, c := range cases {
		var b bytes.Buffer
		st := Status{Phase: "following", Agent: c.agent, Deferred: []DeferredStatus{{Object: "trigger audit on public.t",
			Statement: "ALTER TABLE public.t ENABLE ALWAYS TRIGGER audit;", Reason: "fires in replica mode", Recorded: started}}}
		if err := PrintStatus(&b, st, false); err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if !strings.Contains(out, c.want) {
			t.Errorf("status for %+v:\n%s\nwant %q", c.agent, out, c.want)
		}
		if !strings.Contains(out, "kept back on the target until cutover (1)") || !strings.Contains(out, "trigger audit on public.t — fires in replica mode [pending]") ||
			!strings.Contains(out, "ALTER TABLE public.t ENABLE ALWAYS TRIGGER audit;") {
			t.Errorf("deferred statements missing:\n%s", out)
		}
	}
}
