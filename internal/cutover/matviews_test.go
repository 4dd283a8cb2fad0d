package cutover

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/pgshift/pgshift/internal/config"
	"github.com/pgshift/pgshift/internal/pgtest"
)

// TestCutoverMatViewRules: cutover.matviews keeps a view out of the pause. balance_total (no
// rule) is refreshed in the pause, account_stats ("after", with a unique index) once traffic
// runs on the target, CONCURRENTLY, and skipped ("skip") is left as the copy made it.
func TestCutoverMatViewRules(t *testing.T) {
	e := newEnvWith(t, func(ctx context.Context, src *pgtest.Cluster) {
		if out, err := src.Psql(ctx, "shop", `
			CREATE MATERIALIZED VIEW account_stats AS SELECT 1 AS one, count(*) AS n, sum(balance) AS total FROM accounts;
			CREATE UNIQUE INDEX ON account_stats (one);
			CREATE MATERIALIZED VIEW skipped AS SELECT sum(balance) AS total FROM accounts;`); err != nil {
			t.Fatalf("%v %s", err, out)
		}
	}, func(c *config.Config) {
		c.Cutover.MatViews = []config.MatViewRule{{Name: "account_stats", Refresh: "after"}, {Name: "public.skip*", Refresh: "skip"}}
	})
	e.start(nil)
	e.waitFollowing()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.q(e.src, `UPDATE accounts SET balance = balance + id`) // sum 210 (ids 1..20); the views say 0
	e.waitSame()
	r, err := e.agent.engine.Cutover(ctx, false)
	if err != nil || r.Outcome != OutcomeDone {
		t.Fatalf("cutover: %v %+v", err, r)
	}
	logResult(t, r)
	var pause, after string
	for _, s := range r.Steps {
		switch s.No {
		case 5:
			pause = s.Detail
		case 9:
			after = s.Detail
		}
	}
	if !strings.Contains(pause, "1 materialized views refreshed (1 after the switch, 1 skipped") {
		t.Errorf("pause step: %q", pause)
	}
	if !strings.Contains(after, "1 materialized views refreshed after the switch") {
		t.Errorf("post-switch step: %q", after)
	}
	for view, want := range map[string]string{"balance_total": "210", "account_stats": "210", "skipped": "0"} {
		if got := e.q(e.dst, `SELECT total FROM `+view); got != want {
			t.Errorf("target's %s after the cutover: total %s, want %s", view, got, want)
		}
	}
}
