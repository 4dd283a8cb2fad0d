package config

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestConfigReference keeps docs/config.md, the configuration file's reference, generated from
// the structs and their comments: a field added without updating the page fails here.
// PGSHIFT_UPDATE_DOCS=1 rewrites the page.
func TestConfigReference(test *testing.T) {
	t := test
	fset := token.NewFileSet()
	docs := map[string]map[string]string{} // struct type → field name → doc
	for _, f := range []string{"config.go", "observe.go"} {
		file, err := parser.ParseFile(fset, f, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			ts, ok := n.(*ast.TypeSpec)
			if !ok {
				return true
			}
			st, ok := ts.Type.(*ast.StructType)
			if !ok {
				return true
			}
			fields := map[string]string{}
			prev, prevLine := "", -1
			for _, fl := range st.Fields.List {
				doc := strings.TrimSpace(fl.Doc.Text())
				line := fset.Position(fl.Pos()).Line
				if doc == "" && line == prevLine+1 {
					doc = prev // the next line of a group of fields under one comment
				}
				prev, prevLine = doc, fset.Position(fl.End()).Line
				for _, name := range fl.Names {
					fields[name.Name] = strings.Join(strings.Fields(doc), " ")
				}
			}
			docs[ts.Name.Name] = fields
			return false
		})
	}
	var b strings.Builder
	b.WriteString("# Configuration file reference\n\n")
	b.WriteString("Generated from `internal/config` by `PGSHIFT_UPDATE_DOCS=1 go test -run TestConfigReference ./internal/config/`; ")
	b.WriteString("do not edit by hand. Pass the file with `-c FILE`; flags win over the file, the file over the environment ")
	b.WriteString("(`PGSHIFT_SOURCE`, `PGSHIFT_TARGET`, `PGSHIFT_HTTP_TOKEN`). Unknown keys are errors. Durations are Go durations (`90s`, `5m`, `1h30m`).\n")
	var walk func(t reflect.Type, def reflect.Value, prefix string, depth int)
	walk = func(typ reflect.Type, def reflect.Value, prefix string, depth int) {
		var nested []reflect.StructField
		rows := []string{}
		for i := range typ.NumField() {
			f := typ.Field(i)
			key := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if key == "-" || key == "" {
				continue
			}
			ft := f.Type
			if ft.Kind() == reflect.Struct && ft.PkgPath() != "time" {
				nested = append(nested, f)
				continue
			}
			d := ""
			if def.IsValid() {
				if v := def.Field(i); !v.IsZero() {
					d = fmt.Sprintf("`%v`", v.Interface())
				}
			}
			doc := docs[typ.Name()][f.Name]
			if doc == "" {
				test.Errorf("%s.%s (%s) has no comment: say what it is for", typ.Name(), f.Name, prefix+key)
			}
			rows = append(rows, fmt.Sprintf("| `%s` | %s | %s | %s |", prefix+key, typeName(ft), d, strings.ReplaceAll(doc, "|", `\|`)))
		}
		if len(rows) > 0 {
			title := "Top level"
			if prefix != "" {
				title = "`" + strings.TrimSuffix(prefix, ".") + "`"
			}
			fmt.Fprintf(&b, "\n%s %s\n\n| key | type | default | meaning |\n|---|---|---|---|\n%s\n", strings.Repeat("#", min(depth+2, 4)), title, strings.Join(rows, "\n"))
		}
		for _, f := range nested {
			var dv reflect.Value
			if def.IsValid() {
				dv = def.FieldByIndex(f.Index)
			}
			walk(f.Type, dv, prefix+strings.Split(f.Tag.Get("yaml"), ",")[0]+".", depth+1)
		}
		// Lists of structs (alert rules, webhooks, route rules) are described once, by element.
		for i := range typ.NumField() {
			f := typ.Field(i)
			key := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct && key != "-" {
				walk(f.Type.Elem(), reflect.Value{}, prefix+key+"[].", depth+1)
			}
		}
	}
	walk(reflect.TypeFor[Config](), reflect.ValueOf(Defaults()), "", 0)
	const page = "../../docs/config.md"
	if os.Getenv("PGSHIFT_UPDATE_DOCS") != "" {
		if err := os.WriteFile(page, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	got, err := os.ReadFile(page)
	if err != nil || string(got) != b.String() {
		t.Errorf("docs/config.md is not what the config structs say (err %v): run PGSHIFT_UPDATE_DOCS=1 go test -run TestConfigReference ./internal/config/", err)
	}
}

func typeName(t reflect.Type) string {
	switch {
	case t.String() == "time.Duration":
		return "duration"
	case t.Kind() == reflect.Pointer:
		return typeName(t.Elem())
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.Struct:
		return "list of objects (below)"
	case t.Kind() == reflect.Slice:
		return "list of " + typeName(t.Elem())
	case t.Kind() == reflect.Map:
		return "map of " + typeName(t.Elem())
	case t.Kind() == reflect.Bool:
		return "boolean"
	case t.Kind() == reflect.Int, t.Kind() == reflect.Int64:
		return "integer"
	case t.Kind() == reflect.Float64:
		return "number"
	}
	return t.Kind().String()
}
