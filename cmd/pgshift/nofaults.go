//go:build !faults

package main

import (
	"fmt"

	"github.com/pgshift/pgshift/internal/app"
)

// faultHooks refuses any fault point: a release binary carries none. Running on as if
// PGSHIFT_TEST_KILL_AT were not set would leave a crash test believing it had killed the agent.
func faultHooks(at string, _ *app.RunOptions) error {
	if at == "" {
		return nil
	}
	return fmt.Errorf("%s=%q: this pgshift was built without fault hooks, which exist only for pgshift's own crash tests (build it with go build -tags faults ./cmd/pgshift)", killHookEnv, at)
}
