package config

import (
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestPrecedenceEnvThenFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte("target: host=file-target\njobs: 7\nlag_warn: 90s\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(file, env(map[string]string{"PGSHIFT_SOURCE": "host=env-source", "PGSHIFT_TARGET": "host=env-target"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Source != "host=env-source" {
		t.Errorf("source from env lost: %q", cfg.Source)
	}
	if cfg.Target != "host=file-target" {
		t.Errorf("file must win over env: %q", cfg.Target)
	}
	if cfg.Jobs != 7 || cfg.LagWarn != 90*time.Second {
		t.Errorf("file values: jobs=%d lag=%s", cfg.Jobs, cfg.LagWarn)
	}
}

func TestDefaultsWithoutFile(t *testing.T) {
	cfg, err := Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Jobs != 4 || cfg.LagWarn != 5*time.Minute {
		t.Errorf("defaults: %+v", cfg)
	}
	if err := cfg.RequireSource(); err == nil || !strings.Contains(err.Error(), "PGSHIFT_SOURCE") {
		t.Errorf("RequireSource must name the fix: %v", err)
	}
}

func TestMalformedConfig(t *testing.T) {
	dir := t.TempDir()
	cases := map[string]string{
		"unknown key": "sorce: host=x\n",
		"bad yaml":    "source: [unclosed\n",
		"bad type":    "jobs: many\n",
	}
	for name, body := range cases {
		file := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
		os.WriteFile(file, []byte(body), 0o600)
		_, err := Load(file, env(nil))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), file) {
			t.Errorf("%s: error does not name the file: %v", name, err)
		}
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), env(nil)); err == nil {
		t.Error("missing file accepted")
	}
}

func TestValidate(t *testing.T) {
	c := Defaults()
	c.Jobs = 0
	if c.Validate() == nil {
		t.Error("jobs=0 accepted")
	}
	c = Defaults()
	c.Include = []string{"public.[x"}
	if c.Validate() == nil {
		t.Error("bad pattern accepted")
	}
}

func TestFilter(t *testing.T) {
	f := TableFilter{Include: []string{"public.*", "audit"}, Exclude: []string{"public.tmp_*"}}
	cases := []struct {
		schema, name string
		want         bool
	}{
		{"public", "orders", true},
		{"public", "tmp_x", false},
		{"sales", "audit", true},
		{"sales", "orders", false},
	}
	for _, c := range cases {
		if got := f.Match(c.schema, c.name); got != c.want {
			t.Errorf("Match(%s.%s) = %v", c.schema, c.name, got)
		}
	}
	if !(TableFilter{}).Match("any", "thing") {
		t.Error("empty filter must match all")
	}
}

func TestRedactDSN(t *testing.T) {
	cases := map[string]string{
		"postgres://app:s3cret@db:5432/prod?sslmode=require": "s3cret",
		"postgresql://app:p%40ss@db/prod":                    "p%40ss",
		"postgres://db/prod?password=qwerty&user=app":        "qwerty",
		"host=db user=app password=hunter2 dbname=prod":      "hunter2",
		"host=db password='with space' dbname=prod":          "with space",
		"host=db PASSWORD = abc123 dbname=prod":              "abc123",
	}
	for dsn, secret := range cases {
		got := RedactDSN(dsn)
		if strings.Contains(got, secret) {
			t.Errorf("RedactDSN(%q) = %q still has the password", dsn, got)
		}
		if !strings.Contains(got, "db") {
			t.Errorf("RedactDSN(%q) = %q lost the host", dsn, got)
		}
	}
	if got := RedactDSN("host=db user=app"); got != "host=db user=app" {
		t.Errorf("no password: changed to %q", got)
	}
}

func TestSecretsAndScrub(t *testing.T) {
	s := Secrets("postgres://app:p%40ss@db/prod", "host=x password=hunter2", "")
	msg := Scrub("failed for p@ss and hunter2 and p%40ss", s)
	for _, bad := range []string{"p@ss", "hunter2", "p%40ss"} {
		if strings.Contains(msg, bad) {
			t.Errorf("Scrub left %q in %q", bad, msg)
		}
	}
}

// cutover.matviews: the first matching rule decides, unnamed views are refreshed in the pause,
// and a rule with an unknown refresh or a broken pattern is refused by Validate.
func TestMatViewRules(t *testing.T) {
	cs := CutoverSettings{MatViews: []MatViewRule{{Name: "reports.*", Refresh: "after"}, {Name: "big_*", Refresh: "skip"}, {Name: "big_one", Refresh: "pause"}}}
	for _, c := range []struct{ schema, name, want string }{
		{"reports", "daily", "after"}, {"public", "big_one", "skip"}, {"public", "small", "pause"}, {"reports", "big_x", "after"},
	} {
		if got := cs.MatViewRefresh(c.schema, c.name); got != c.want {
			t.Errorf("%s.%s: %s, want %s", c.schema, c.name, got, c.want)
		}
	}
	cfg := Defaults()
	cfg.Cutover = cs
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []MatViewRule{{Name: "x", Refresh: "later"}, {Name: "[", Refresh: "skip"}, {Name: "", Refresh: "skip"}} {
		cfg.Cutover.MatViews = []MatViewRule{bad}
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "cutover.matviews") {
			t.Errorf("%+v: %v, want a cutover.matviews error", bad, err)
		}
	}
}

// TestSQLPatterns: the regular expressions the source's event trigger matches new tables with
// accept exactly what path.Match accepts (checked here with Go's regexp, whose syntax agrees
// with PostgreSQL's for what globRegexp emits).
func TestSQLPatterns(t *testing.T) {
	patterns := []string{"public.*", "audit", "public.tmp_*", "s?.t[a-c]x", "x[^0-9]", `a\*b`, "we.ird$+(name)", "ü*"}
	subjects := []string{"public.orders", "audit", "public.tmp_x", "sales.audit", "s1.tbx", "s1.tdx", "x5", "xa", "a*b", "ab",
		"we.ird$+(name)", "weXird$+(name)", "über", "public.a/b", "public."}
	inc, _ := TableFilter{Include: patterns}.SQLPatterns()
	for i, p := range patterns {
		re := regexp.MustCompile(inc[i].Regexp)
		if inc[i].Qualified != strings.Contains(p, ".") {
			t.Errorf("%s: qualified %v", p, inc[i].Qualified)
		}
		for _, s := range subjects {
			want, _ := path.Match(p, s)
			if got := re.MatchString(s); got != want {
				t.Errorf("pattern %q (regexp %s) on %q: %v, path.Match %v", p, inc[i].Regexp, s, got, want)
			}
		}
	}
}
