package main

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// clockTicks is the kernel's USER_HZ, the unit of utime and stime in /proc/PID/stat: 100 on
// every Linux this benchmark runs on.
const clockTicks = 100

// cpuSeconds sums the CPU time (user + system) used so far by the processes that belong to the
// benchmark, by role: the children of the source's and the target's postmasters (by the title
// PostgreSQL gives them: walsender, apply worker, client backends, the rest) and every process
// whose command line runs bin (pgshift). Processes that have exited are not counted: call it
// before and after a phase and subtract, with the followers' processes alive at the end.
func cpuSeconds(srcDir, dstDir, bin string) map[string]float64 {
	out := map[string]float64{}
	srcPM, dstPM := postmasterPID(srcDir), postmasterPID(dstDir)
	procs, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, statPath := range procs {
		raw, err := os.ReadFile(statPath)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ... utime stime: comm may hold spaces, so split after ')'.
		s := string(raw)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		ut, _ := strconv.ParseFloat(f[11], 64)
		st, _ := strconv.ParseFloat(f[12], 64)
		secs := (ut + st) / clockTicks
		cmd, _ := os.ReadFile(filepath.Join(filepath.Dir(statPath), "cmdline"))
		title := strings.ReplaceAll(string(cmd), "\x00", " ")
		side := ""
		switch ppid {
		case srcPM:
			side = "source "
		case dstPM:
			side = "target "
		}
		switch {
		case side != "":
			out[side+processRole(title)] += secs
		case bin != "" && strings.Contains(title, bin):
			out["pgshift"] += secs
		}
	}
	return out
}

// processRole names a PostgreSQL child process by its title.
func processRole(title string) string {
	switch {
	case strings.Contains(title, "walsender"):
		return "walsender"
	case strings.Contains(title, "logical replication apply worker"), strings.Contains(title, "logical replication worker"):
		return "apply worker"
	case strings.Contains(title, "checkpointer"), strings.Contains(title, "walwriter"), strings.Contains(title, "background writer"),
		strings.Contains(title, "autovacuum"), strings.Contains(title, "logical replication launcher"), strings.Contains(title, "stats"),
		strings.Contains(title, "archiver"), strings.Contains(title, "startup"):
		return "background"
	}
	return "backends"
}

// postmasterPID reads the postmaster's PID from its cluster's data directory (0 if unknown).
func postmasterPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	pid, _ := strconv.Atoi(strings.TrimSpace(line))
	return pid
}

// cpuDelta is after − before, per role, without roles that used nothing.
func cpuDelta(before, after map[string]float64) map[string]float64 {
	d := map[string]float64{}
	for k, v := range after {
		if x := v - before[k]; x > 0.005 {
			d[k] = x
		}
	}
	return d
}
