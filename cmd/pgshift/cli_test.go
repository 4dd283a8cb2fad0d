package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/pgshift/pgshift/internal/config"
)

// resolve runs a throwaway command with the shared connection flags and returns the resolved config.
func resolve(t *testing.T, args []string, env map[string]string) (config.Config, error) {
	t.Helper()
	c := newCLI(&bytes.Buffer{}, &bytes.Buffer{}, func(k string) string { return env[k] })
	var got config.Config
	var flags connFlags
	cmd := &cobra.Command{Use: "probe", RunE: func(cmd *cobra.Command, _ []string) error {
		var err error
		got, err = c.config(cmd, &flags)
		return err
	}}
	addConnFlags(cmd, &flags, true)
	root := c.rootCommand()
	root.AddCommand(cmd)
	root.SetArgs(append([]string{"probe"}, args...))
	err := root.Execute()
	return got, err
}

func TestConfigPrecedenceFlagsFileEnv(t *testing.T) {
	file := filepath.Join(t.TempDir(), "pgshift.yaml")
	os.WriteFile(file, []byte("source: host=file-src\ntarget: host=file-dst\njobs: 3\n"), 0o600)
	env := map[string]string{"PGSHIFT_SOURCE": "host=env-src", "PGSHIFT_TARGET": "host=env-dst"}

	cfg, err := resolve(t, []string{"-c", file, "--source", "host=flag-src"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source != "host=flag-src" || cfg.Target != "host=file-dst" || cfg.Jobs != 3 {
		t.Errorf("flags must win over the file, the file over env: %+v", cfg)
	}
	cfg, err = resolve(t, nil, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source != "host=env-src" || cfg.Target != "host=env-dst" || cfg.Jobs != 4 {
		t.Errorf("env and defaults: %+v", cfg)
	}
	cfg, err = resolve(t, []string{"-c", file, "--jobs", "9", "--exclude", "public.tmp_*"}, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Jobs != 9 || len(cfg.Exclude) != 1 {
		t.Errorf("flag values: %+v", cfg)
	}
	if _, err := resolve(t, []string{"--jobs", "0"}, nil); err == nil || !strings.Contains(err.Error(), "jobs") {
		t.Errorf("jobs=0: %v", err)
	}
}

func TestExitCodes(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"version"}, &out, &errOut, func(string) string { return "" })
	if code != 0 || !strings.HasPrefix(out.String(), "pgshift ") {
		t.Fatalf("version: exit %d: %s", code, errOut.String())
	}
	code = run(t.Context(), []string{"nosuchcommand"}, &out, &errOut, func(string) string { return "" })
	if code != 2 || !strings.Contains(errOut.String(), "unknown command") {
		t.Errorf("unknown command: exit %d, stderr %q", code, errOut.String())
	}
}

func TestLoggerScrubsSecrets(t *testing.T) {
	var errOut bytes.Buffer
	c := newCLI(&bytes.Buffer{}, &errOut, func(string) string { return "" })
	c.logLevel, c.logFormat = "info", "json"
	c.secrets = config.Secrets("postgres://u:pa55word@h/db")
	log, err := c.logger()
	if err != nil {
		t.Fatal(err)
	}
	log.Info("connecting", "dsn", "postgres://u:pa55word@h/db", "err", os.ErrNotExist)
	if strings.Contains(errOut.String(), "pa55word") {
		t.Errorf("secret in log: %s", errOut.String())
	}
	c.logFormat = "xml"
	if _, err := c.logger(); err == nil {
		t.Error("bad log format accepted")
	}
}

// TestPasswordOnCommandLineWarns: a password in --source/--target is visible to ps; the user is
// told once, with the alternatives, and the warning never repeats the password.
func TestPasswordOnCommandLineWarns(t *testing.T) {
	for _, tc := range []struct {
		args []string
		warn bool
	}{
		{[]string{"--source", "postgres://app:Sekr3tPw@db/prod", "--target", "postgresql://app:Sekr3tPw@db2/prod"}, true},
		{[]string{"--source", "host=db password=Sekr3tPw", "--target", "host=db2"}, true},
		{[]string{"--source", "postgress://app:Sekr3tPw@db/prod", "--target", "host=db2"}, true},
		{[]string{"--source", "postgres://app@db/prod", "--target", "host=db2"}, false},
	} {
		var stderr bytes.Buffer
		c := newCLI(&bytes.Buffer{}, &stderr, func(string) string { return "" })
		var flags connFlags
		cmd := &cobra.Command{Use: "probe", RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := c.config(cmd, &flags)
			return err
		}}
		addConnFlags(cmd, &flags, true)
		root := c.rootCommand()
		root.AddCommand(cmd)
		root.SetArgs(append([]string{"probe"}, tc.args...))
		_ = root.Execute()
		out := stderr.String()
		if got := strings.Count(out, "process list"); (got == 1) != tc.warn || got > 1 {
			t.Errorf("%v: warnings %d, want %v:\n%s", tc.args, got, tc.warn, out)
		}
		if tc.warn && !strings.Contains(out, "PGPASSWORD") {
			t.Errorf("%v: the warning does not name the alternatives: %s", tc.args, out)
		}
		if strings.Contains(out, "Sekr3tPw") {
			t.Errorf("%v: the password reached stderr: %s", tc.args, out)
		}
	}
}

// TestVersionNamesCommit builds the binary the way the Makefile does and checks that `version`
// names the commit it was built from, not "(devel)".
func TestVersionNamesCommit(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	head, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skip("not in a git checkout")
	}
	bin := filepath.Join(t.TempDir(), "pgshift")
	build := exec.Command("make", "-s", "-C", "../..", "build", "BIN="+bin)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if want := "commit " + strings.TrimSpace(string(head))[:12]; !strings.Contains(string(out), want) || strings.Contains(string(out), "(devel)") {
		t.Errorf("version printed %q, want it to contain %q", out, want)
	}
}
