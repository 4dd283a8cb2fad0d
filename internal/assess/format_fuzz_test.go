package assess

import (
	"strings"
	"testing"
)

// FuzzMarkdownCell checks that any object name or message stays inside its Markdown table
// cell: no line breaks, and every pipe escaped (preceded by an odd number of backslashes).
func FuzzMarkdownCell(f *testing.F) {
	for _, s := range []string{"public.orders", `a|b`, `a\|b`, "line\nbreak", "cr\rlf\r\n", `\\|`, `"Odd|Name"`, ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		cell := md(s)
		if strings.ContainsAny(cell, "\r\n") {
			t.Fatalf("md(%q) = %q has a line break", s, cell)
		}
		for i := 0; i < len(cell); i++ {
			if cell[i] != '|' {
				continue
			}
			n := 0
			for j := i - 1; j >= 0 && cell[j] == '\\'; j-- {
				n++
			}
			if n%2 == 0 {
				t.Fatalf("md(%q) = %q has an unescaped pipe at %d", s, cell, i)
			}
		}
	})
}
