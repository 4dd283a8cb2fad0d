//go:build faults

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
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
	case "after-ddl":
		// Right after a captured schema change ran on the target, before its transaction commits.
		opts.Apply.AfterDDL = func() error {
			return syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
		return nil
	}
	// cutover-N / rollback-N: SIGKILL before step N of a cutover or rollback (70 and 50: between
	// the switch's commit and the proxy's switch).
	if op, n, ok := strings.Cut(at, "-"); ok && (op == "cutover" || op == "rollback") {
		step, err := strconv.Atoi(n)
		if err != nil {
			return fmt.Errorf("%s=%q: want cutover-N or rollback-N", killHookEnv, at)
		}
		opts.CutoverFault = func(o string, s int) error {
			if o == op && s == step {
				return syscall.Kill(os.Getpid(), syscall.SIGKILL)
			}
			return nil
		}
		return nil
	}
	return fmt.Errorf("%s=%q: the hooks are after-target-commit, after-ddl, cutover-N and rollback-N", killHookEnv, at)
}
