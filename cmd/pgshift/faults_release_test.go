//go:build !faults

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestReleaseBuildHasNoKillHook: the kill-at fault point is for pgshift's own crash tests and is
// compiled in only with the build tag faults. A release binary asked for it refuses at once,
// before it connects anywhere, saying so — it never kills itself, and never runs on as if the
// variable were not set.
func TestReleaseBuildHasNoKillHook(t *testing.T) {
	var stdout, stderr bytes.Buffer
	env := map[string]string{killHookEnv: "after-target-commit"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Nothing listens on port 1: a binary that went on would fail to connect instead.
	code := run(ctx, []string{"run", "--source", "host=127.0.0.1 port=1 user=x dbname=x", "--target", "host=127.0.0.1 port=1 user=x dbname=y"},
		&stdout, &stderr, func(k string) string { return env[k] })
	msg := stderr.String()
	if code != 2 || !strings.Contains(msg, killHookEnv) || !strings.Contains(msg, "-tags faults") {
		t.Fatalf("exit %d, stderr %q: want exit 2 naming %s and the build tag faults", code, msg, killHookEnv)
	}
	if strings.Contains(msg, "connect") || strings.Contains(msg, "refused") {
		t.Errorf("the refusal came after trying to connect: %s", msg)
	}
}
