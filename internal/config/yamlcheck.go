package config

import (
	"fmt"
	"reflect"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// checkYAML walks a decoded YAML document against the type it will be decoded into and
// reports, in the file's own terms, the first key that type does not have and the first value
// of the wrong kind: "line 3: unknown key "proxy_settings.mdoe" (valid here: mode, ...)". yaml's
// own errors name Go types (config.ProxySettings, time.Duration), which mean nothing to a user.
func checkYAML(n *yaml.Node, t reflect.Type, path string) error {
	if n.Kind == yaml.DocumentNode {
		for _, c := range n.Content {
			if err := checkYAML(c, t, path); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		return checkYAML(n.Alias, t, path)
	}
	if n.Tag == "!!null" {
		return nil
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("line %d: %s: want %s", n.Line, keyName(path), describeType(t))
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := range t.NumField() {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			fields[name] = f.Type
			names = append(names, name)
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				return fmt.Errorf("line %d: unknown key %q (valid keys here: %s)", k.Line, join(path, k.Value), strings.Join(names, ", "))
			}
			if err := checkYAML(v, ft, join(path, k.Value)); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return fmt.Errorf("line %d: %s: want %s, got %q", n.Line, keyName(path), describeType(t), n.Value)
		}
		for i, c := range n.Content {
			if err := checkYAML(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Map:
		// A mapping of free keys (alerts.labels): every key and value is checked, none refused
		// by name.
		if n.Kind != yaml.MappingNode {
			return fmt.Errorf("line %d: %s: want %s", n.Line, keyName(path), describeType(t))
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if err := checkYAML(k, t.Key(), path); err != nil {
				return err
			}
			if err := checkYAML(v, t.Elem(), join(path, k.Value)); err != nil {
				return err
			}
		}
		return nil
	}
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("line %d: %s: want %s", n.Line, keyName(path), describeType(t))
	}
	if err := n.Decode(reflect.New(t).Interface()); err != nil {
		return fmt.Errorf("line %d: %s: want %s, got %q", n.Line, keyName(path), describeType(t), n.Value)
	}
	return nil
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func keyName(path string) string {
	if path == "" {
		return "the file"
	}
	return path
}

var durationType = reflect.TypeFor[time.Duration]()

// describeType says in words what a YAML value for t looks like.
func describeType(t reflect.Type) string {
	if t == durationType {
		return "a duration such as 30s or 5m"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return describeType(t.Elem())
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "text"
	case reflect.Slice:
		return "a list (one item per line, each starting with -) of " + plural(describeType(t.Elem()))
	case reflect.Struct:
		return "a mapping of keys"
	case reflect.Map:
		return "a mapping of names to " + plural(describeType(t.Elem()))
	}
	return "a value of another kind"
}

func plural(s string) string {
	switch s {
	case "text":
		return "text values"
	case "a mapping of keys":
		return "mappings"
	}
	return strings.TrimPrefix(s, "a ") + "s"
}
