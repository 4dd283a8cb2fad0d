package main

import (
	"strings"
	"testing"
)

// TestHelpListsOnlyFlagsTheCommandUses: wait and status do not offer table selection, jobs,
// slot or publication flags they would ignore.
func TestHelpListsOnlyFlagsTheCommandUses(t *testing.T) {
	for cmd, ignored := range map[string][]string{
		"wait":   {"--jobs", "--include", "--exclude", "--slot", "--publication"},
		"status": {"--jobs", "--include", "--exclude", "--slot", "--publication"},
	} {
		code, out, errOut := pgshift(t, nil, cmd, "--help")
		if code != 0 {
			t.Fatalf("%s --help: exit %d: %s", cmd, code, errOut)
		}
		for _, f := range ignored {
			if strings.Contains(out, f) {
				t.Errorf("%s --help lists %s, which it ignores", cmd, f)
			}
		}
		for _, f := range []string{"--source", "--target"} {
			if !strings.Contains(out, f) {
				t.Errorf("%s --help lacks %s", cmd, f)
			}
		}
	}
}

// TestChunkSizeIsChecked: --chunk-size of 0, a negative or an absurd size is refused (exit 2)
// before anything connects.
func TestChunkSizeIsChecked(t *testing.T) {
	for _, v := range []string{"0", "-5", "10000000"} {
		code, _, errOut := pgshift(t, nil, "copy", "--source", "host=127.0.0.1 port=1", "--target", "host=127.0.0.1 port=1", "--chunk-size", v)
		if code != 2 || !strings.Contains(errOut, "--chunk-size") {
			t.Errorf("--chunk-size %s: exit %d, stderr %q", v, code, errOut)
		}
	}
}

// TestErrorsNameFlags: a bad --jobs is reported as --jobs.
func TestErrorsNameFlags(t *testing.T) {
	code, _, errOut := pgshift(t, nil, "copy", "--source", "host=a", "--target", "host=b", "--jobs", "0")
	if code != 2 || !strings.Contains(errOut, "--jobs") {
		t.Errorf("--jobs 0: exit %d, stderr %q", code, errOut)
	}
}

// TestDemoHelpDescribesTheDemo: the help names the steps the demo really runs.
func TestDemoHelpDescribesTheDemo(t *testing.T) {
	_, out, _ := pgshift(t, nil, "demo", "--help")
	for _, w := range []string{"copies", "follows", "verif", "--follow-for"} {
		if !strings.Contains(out, w) {
			t.Errorf("demo --help lacks %q:\n%s", w, out)
		}
	}
}
