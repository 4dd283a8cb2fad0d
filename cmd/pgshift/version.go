package main

import (
	"fmt"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

func (c *cli) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print pgshift's version and the commit it was built from",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fmt.Fprintln(c.stdout, versionString())
			return nil
		},
	}
}

// buildCommit and buildTime are set by the Makefile (-ldflags -X) from git, for builds where
// the toolchain's own VCS stamping is off (GOFLAGS=-buildvcs=false) or impossible.
var (
	buildCommit string
	buildTime   string
)

// versionString describes the build from the information the Go toolchain stamps into it: the
// module version when built from a tagged release, otherwise the VCS commit, its time and
// whether the tree had uncommitted changes.
func versionString() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "pgshift (no build information)"
	}
	v := bi.Main.Version
	var rev, at string
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		rev, at = buildCommit, buildTime
	}
	out := "pgshift"
	if v != "" && v != "(devel)" {
		out += " " + v
	}
	if rev != "" {
		if r, mod, ok := strings.Cut(rev, "-"); ok && mod == "modified" {
			rev, dirty = r, true
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		out += " commit " + rev
		if dirty {
			out += " (modified)"
		}
		if at != "" {
			out += " of " + at
		}
	}
	if out == "pgshift" {
		out += " (development build without version control information)"
	}
	return out + ", " + bi.GoVersion
}
