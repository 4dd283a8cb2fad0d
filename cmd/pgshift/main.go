// Command pgshift moves a live PostgreSQL database to another PostgreSQL server with zero
// downtime. This package only wires the command line to internal/app: flags, config
// precedence, logging, signals and exit codes.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
)

// defaultMemoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT sets one. What
// the agent holds is bounded (the stream-to-applier queue, 64 MiB; one target transaction's
// recorded changes, 32 MiB), but the collector lets the heap grow to twice what is live before
// it runs: a large transaction showed as 290 MiB of RSS (torture harness). Under the limit the
// collector runs sooner instead; it is soft, so a larger live heap slows pgshift, never stops it.
const defaultMemoryLimit = 200 << 20

func main() {
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	stopProfile()
	os.Exit(code)
}

// run executes one pgshift invocation and returns its exit code; main is the only caller
// of os.Exit so everything below stays testable.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c := newCLI(stdout, stderr, getenv)
	root := c.rootCommand()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	code := 2
	if errors.As(err, &ee) {
		code = ee.code
		err = ee.err
	}
	if err != nil {
		fmt.Fprintln(stderr, "pgshift: "+c.scrub(err.Error()))
	}
	return code
}

// exitError carries a specific exit code out of a command. A nil err means the command already
// reported what happened (e.g. an assessment with blockers) and only the code remains.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// withCode wraps err (which may be nil) so the process exits with code.
func withCode(code int, err error) error { return &exitError{code: code, err: err} }
