package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestCopyCommandFailsWithCode2(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"copy", "--target", "host=x"}, "no source database"},
		{[]string{"copy", "--source", "host=x", "--target", "host=y", "--progress", "fancy"}, "--progress"},
		// The target is reached first: copy takes the migration's lease there before anything else.
		{[]string{"copy", "--source", "host=127.0.0.1 port=1", "--target", "host=127.0.0.1 port=1 password=s3cretpw connect_timeout=2"}, "target"},
		{[]string{"copy", "--source", "host=a", "--target", "host=b", "--jobs", "0"}, "jobs"},
	}
	for _, c := range cases {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), c.args, &stdout, &stderr, func(string) string { return "" })
		if code != 2 || !strings.Contains(stderr.String(), c.want) || strings.Contains(stderr.String(), "s3cretpw") {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 mentioning %q without the password", c.args, code, stderr.String(), c.want)
		}
	}
}
