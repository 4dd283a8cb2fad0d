package archtest

import (
	"bufio"
	"go/build"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

const module = "github.com/pgshift/pgshift/"

// layers reads the import rule from docs/architecture.md: the numbered list under "## Import
// rule", one layer per item, top first, each naming its packages in backquotes. A package may
// import packages of its own layer and of every layer below it.
func layers(t *testing.T, root string) map[string]int {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	item := regexp.MustCompile(`^\s*\d+\.\s`)
	pkg := regexp.MustCompile("`([a-z0-9/_.-]+)`")
	out := map[string]int{}
	in, n := false, 0
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.TrimSpace(line) == "## Import rule"
			continue
		case !in || !item.MatchString(line):
			continue
		}
		n++
		head, _, _ := strings.Cut(line, " — ") // what follows the dash explains the layer
		for _, m := range pkg.FindAllStringSubmatch(head, -1) {
			out[m[1]] = n
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal(`docs/architecture.md has no "## Import rule" list of layers`)
	}
	return out
}

// TestImportRule fails when a package imports one from a layer above its own, or is missing
// from the rule, or imports "testing" outside its tests. Only the files of a normal build
// count: tests may import anything (pgtest).
func TestImportRule(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	rank := layers(t, root)
	layerOf := func(p string) (int, bool) {
		for q := p; q != "" && q != "."; q = filepath.Dir(q) {
			if r, ok := rank[q]; ok {
				return r, true
			}
			if q == filepath.Dir(q) {
				break
			}
		}
		return 0, false
	}
	var problems []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "testdata") {
			return filepath.SkipDir
		}
		bp, err := build.Default.ImportDir(path, 0)
		if err != nil {
			if _, ok := err.(*build.NoGoError); ok {
				return nil
			}
			return err
		}
		rel, _ := filepath.Rel(root, path)
		rel = filepath.ToSlash(rel)
		if rel == "internal/archtest" {
			return nil
		}
		mine, ok := layerOf(rel)
		if !ok {
			problems = append(problems, rel+" is in no layer: add it to the import rule in docs/architecture.md")
			return nil
		}
		for _, imp := range bp.Imports {
			if imp == "testing" {
				// The demo links pgtest into the release binary: no package of a normal
				// build may drag the test framework (and its flags) in with it.
				problems = append(problems, rel+" imports testing outside its _test.go files")
			}
			dep, ok := strings.CutPrefix(imp, module)
			if !ok {
				continue
			}
			theirs, ok := layerOf(dep)
			if !ok {
				continue // reported as a package of its own
			}
			if theirs < mine {
				problems = append(problems, rel+" imports "+dep+", which is in a layer above it")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(problems)
	for _, p := range problems {
		t.Error(p)
	}
}
