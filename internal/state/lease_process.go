package state

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
)

// agentProcessAlive reports whether pid is a running pgshift process on this host: the process
// exists and its command line names pgshift (a recycled pid of another program does not count).
// Where /proc cannot be read, an existing process counts.
func agentProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	return bytes.Contains(cmdline, []byte("pgshift"))
}
