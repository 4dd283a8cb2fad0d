package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestWaitRefusesBadDurations: a negative --timeout (or a non-positive --agent-grace) is a usage
// error, exit 2, before anything is contacted.
func TestWaitRefusesBadDurations(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"wait", "--source", "host=a", "--target", "host=b", "--timeout", "-5s"}, "--timeout -5s is negative"},
		{[]string{"wait", "--source", "host=a", "--target", "host=b", "--agent-grace", "0s"}, "--agent-grace"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), c.args, &stdout, &stderr, func(string) string { return "" })
		if code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 mentioning %q", c.args, code, stderr.String(), c.want)
		}
	}
}
