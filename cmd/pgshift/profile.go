//go:build profile

package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// A binary built with -tags profile writes a CPU profile of the whole run to the file
// PGSHIFT_CPUPROFILE names (bench/follow.sh with PROFILE=1). Release builds have no such hook.
func init() {
	path := os.Getenv("PGSHIFT_CPUPROFILE")
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pgshift: cpu profile:", err)
		return
	}
	stopProfile = func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
