//go:build faults

package main

import (
	"fmt"
	"os"
	"syscall"

	"github.com/pgshift/pgshift/internal/app"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// faultHooks sets the fault point named by at (the value of PGSHIFT_TEST_KILL_AT; "" sets
// none) in opts. This file is compiled only with the build tag faults, for pgshift's own crash
// tests (internal/app's kill tests build the binary with it).
func faultHooks(at string, opts *app.RunOptions) error {
	switch at {
	case "":
		return nil
	case "after-target-commit":
		opts.Apply.AfterCommit = func(pgtypes.LSN) error {
			return syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		return nil
	}
	return fmt.Errorf("%s=%q: the only hook is after-target-commit", killHookEnv, at)
}
