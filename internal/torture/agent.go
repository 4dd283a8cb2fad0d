package torture

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// tail keeps the last bytes written to it.
type tail struct {
	mu  sync.Mutex
	buf []byte
	max int
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}

// proc is one pgshift process started by the harness.
type proc struct {
	name   string
	cmd    *exec.Cmd
	done   chan struct{}
	out    *tail
	killed bool // the harness sent SIGKILL or SIGTERM
	code   int
	maxRSS int64 // KiB, the highest VmHWM sampled while it ran
	// handled: its exit was taken care of (by the supervisor or the final settle, never
	// both: two restarts of one exited agent would start two agents).
	handled bool
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// pgshift runs the real binary; all its output goes to the case's log file too.
type pgshift struct {
	bin    string
	src    string
	dst    string
	logf   *os.File
	mu     sync.Mutex
	peak   int64 // highest VmHWM seen (KiB)
	starts int
}

// peakKiB is the highest VmHWM of any process started so far.
func (a *pgshift) peakKiB() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.peak
}

// watchMemory samples the process's own peak RSS (VmHWM of /proc/PID/status) until it ends.
// Not the rusage of wait4: Linux counts there the RSS of the process that forked it, which for
// a child started with vfork and exec is the test binary's own (hundreds of MiB late in a long
// run), so every agent seemed that large.
func (a *pgshift) watchMemory(pid int, p *proc) {
	path := fmt.Sprintf("/proc/%d/status", pid)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(path); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
					var kib int64
					if _, err := fmt.Sscanf(strings.TrimSpace(v), "%d", &kib); err == nil {
						a.mu.Lock()
						p.maxRSS = max(p.maxRSS, kib)
						a.peak = max(a.peak, kib)
						a.mu.Unlock()
					}
				}
			}
		}
		select {
		case <-p.done:
			return
		case <-tick.C:
		}
	}
}

func (a *pgshift) start(name string, args ...string) (*proc, error) {
	p := &proc{name: name, done: make(chan struct{}), out: &tail{max: 16 << 10}}
	cmd := exec.Command(a.bin, args...)
	w := io.MultiWriter(a.logf, p.out)
	cmd.Stdout, cmd.Stderr = w, w
	// Its own process group: a SIGKILL reaches it alone, and a Ctrl-C to the test does not
	// kill it behind the harness's back.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	fmt.Fprintf(a.logf, "\n===== %s %s: pgshift %s\n", time.Now().UTC().Format("15:04:05.000"), name, strings.Join(args, " "))
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start pgshift %s: %w", name, err)
	}
	a.mu.Lock()
	a.starts++
	a.mu.Unlock()
	p.cmd = cmd
	go a.watchMemory(cmd.Process.Pid, p)
	go func() {
		err := cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			p.code = -2
		}
		fmt.Fprintf(a.logf, "===== %s %s ended: exit %d (killed by harness: %v)\n", time.Now().UTC().Format("15:04:05.000"), name, p.code, p.killed)
		close(p.done)
	}()
	return p, nil
}

// kill sends SIGKILL and waits for the process to end.
func (p *proc) kill() {
	if p == nil || p.exited() {
		return
	}
	p.killed = true
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and waits up to d; a process still alive then is killed and false returned.
func (p *proc) stop(d time.Duration) bool {
	if p == nil || p.exited() {
		return true
	}
	p.killed = true
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return true
	case <-time.After(d):
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		return false
	}
}

// runOnce runs a pgshift command to completion (wait, verify, status) with a deadline.
func (a *pgshift) runOnce(ctx context.Context, d time.Duration, args ...string) (int, string, error) {
	return a.run(ctx, d, true, args...)
}

func (a *pgshift) run(ctx context.Context, d time.Duration, logged bool, args ...string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	cmd := exec.CommandContext(ctx, a.bin, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &out
	if logged {
		fmt.Fprintf(a.logf, "\n===== %s pgshift %s\n", time.Now().UTC().Format("15:04:05.000"), strings.Join(args, " "))
	}
	err := cmd.Run()
	if logged {
		a.logf.Write(out.Bytes())
	}
	if ctx.Err() != nil {
		return -1, out.String(), fmt.Errorf("pgshift %s did not finish within %s", args[0], d)
	}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return -1, out.String(), err
	}
	if logged {
		fmt.Fprintf(a.logf, "===== exit %d\n", cmd.ProcessState.ExitCode())
	}
	return cmd.ProcessState.ExitCode(), out.String(), nil
}

func (a *pgshift) dsnArgs() []string { return []string{"--source", a.src, "--target", a.dst} }
