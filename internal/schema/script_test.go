package schema

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const dumpHead = "--\n-- PostgreSQL database dump\n--\n\n\\restrict abc123XYZ\n\nSET statement_timeout = 0;\nSELECT pg_catalog.set_config('search_path', '', false);\n\n"
const dumpTail = "\n--\n-- PostgreSQL database dump complete\n--\n\n\\unrestrict abc123XYZ\n\n"

func TestParseStatementsAndItems(t *testing.T) {
	script := dumpHead + `--
-- Name: odd; Type: FUNCTION; Schema: public; Owner: -
--

CREATE FUNCTION public.odd() RETURNS text
    LANGUAGE plpgsql
    AS $_$ BEGIN RETURN 'a;b' || $x$;$x$ || E'\';'; END $_$;


--
-- Name: r; Type: RULE; Schema: public; Owner: -
--

CREATE RULE r AS ON INSERT TO public.t DO INSTEAD (INSERT INTO public.a VALUES (1); INSERT INTO public.b VALUES (2));
COMMENT ON RULE r ON public.t IS 'semi; colon ''quoted''';

--
-- Name: Weird "name"; Type: TABLE; Schema: My Schema; Owner: -
--

CREATE TABLE "My Schema"."Weird ""name;""" (
    a integer -- a comment; with a semicolon
    /* block /* nested; */ comment */
);
` + dumpTail
	s, err := Parse(script)
	if err != nil {
		t.Fatal(err)
	}
	if s.RestrictKey != "abc123XYZ" {
		t.Errorf("restrict key %q", s.RestrictKey)
	}
	if got := s.Preamble(); len(got) != 2 || got[1] != "SELECT pg_catalog.set_config('search_path', '', false);" {
		t.Errorf("preamble %q", got)
	}
	objs := s.Objects()
	if len(objs) != 3 {
		t.Fatalf("%d items, want 3: %+v", len(objs), objs)
	}
	if objs[0].Type != "FUNCTION" || len(objs[0].Statements) != 1 || !strings.HasSuffix(objs[0].Statements[0], "END $_$;") {
		t.Errorf("function item: %+v", objs[0])
	}
	if objs[1].Type != "RULE" || len(objs[1].Statements) != 2 {
		t.Errorf("rule item: %+v", objs[1])
	}
	if objs[2].Schema != "My Schema" || objs[2].Name != `Weird "name"` || len(objs[2].Statements) != 1 {
		t.Errorf("table item: %+v", objs[2])
	}
}

func TestParseMetaCommands(t *testing.T) {
	cases := []struct {
		name, script string
		ok           bool
	}{
		{"restrict pair", dumpHead + "CREATE TABLE a (i int);\n" + dumpTail, true},
		{"no restrict (older pg_dump)", "SET x = 1;\nCREATE TABLE a (i int);\n", true},
		{"shell escape", dumpHead + "\\! rm -rf /\n" + dumpTail, false},
		{"shell escape without restrict", "CREATE TABLE a (i int);\n\\! touch /tmp/x\n", false},
		{"connect", "\\connect other\nCREATE TABLE a (i int);\n", false},
		{"wrong unrestrict key", dumpHead + "CREATE TABLE a (i int);\n\\unrestrict other\n", false},
		{"unrestrict without restrict", "CREATE TABLE a (i int);\n\\unrestrict abc\n", false},
		{"second restrict", dumpHead + "\\restrict abc123XYZ\n" + dumpTail, false},
		{"restrict never lifted", dumpHead + "CREATE TABLE a (i int);\n", false},
		{"meta after unrestrict", dumpHead + dumpTail + "\\! id\n", false},
		{"backslash inside a statement", "CREATE TABLE a (i int) \\gexec\n;", false},
		{"bad key", "\\restrict a;b\n\\unrestrict a;b\n", false},
		{"backslash in strings is data", "SELECT '\\! no', E'\\\\! no', $$\\! no$$;\n", true},
	}
	for _, c := range cases {
		_, err := Parse(c.script)
		if c.ok && err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
		if !c.ok && !errors.Is(err, ErrMetaCommand) {
			t.Errorf("%s: want ErrMetaCommand, got %v", c.name, err)
		}
	}
}

func TestParseRejects(t *testing.T) {
	for name, script := range map[string]string{
		"copy data":       "COPY public.t (a) FROM stdin;\n1\n\\.\n",
		"truncated":       "CREATE TABLE a (i int",
		"open string":     "SELECT 'abc;\n",
		"open dollar":     "SELECT $$abc;\n",
		"open identifier": `SELECT "abc;`,
		"open comment":    "/* never closed",
	} {
		if _, err := Parse(script); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add(dumpHead + "CREATE TABLE a (i int);\n" + dumpTail)
	f.Add("SELECT $a$ ; $a$, E'\\'', \"x;\" /* ; */ -- ;\n;")
	f.Add("\\restrict k\n\\unrestrict k\n")
	f.Fuzz(func(t *testing.T, script string) {
		s, err := Parse(script)
		if err != nil {
			return
		}
		for _, it := range s.Items {
			for _, st := range it.Statements {
				if !strings.HasSuffix(st, ";") || strings.TrimSpace(st) == ";" {
					t.Fatalf("bad statement %q", st)
				}
			}
		}
	})
}

func TestParseLargeScriptIsLinear(t *testing.T) {
	var b strings.Builder
	for i := 0; i < 200; i++ {
		b.WriteString("--\n-- Name: t; Type: TABLE; Schema: public; Owner: -\n--\n\nCREATE TABLE public.t" + strings.Repeat("x", i%7) + " (\n")
		for c := 0; c < 1000; c++ {
			b.WriteString("    column_with_a_long_name integer DEFAULT 42,\n")
		}
		b.WriteString("    last text\n);\n\n")
	}
	start := time.Now()
	s, err := Parse(b.String()) // about 9 MB
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Objects()) != 200 {
		t.Fatalf("%d items", len(s.Objects()))
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("parsing %d bytes took %s", b.Len(), took)
	}
}
