package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// Format is an output format of a plan.
type Format string

// The formats: for people (text, markdown), for programs (json), and to apply the settings:
// ALTER SYSTEM statements (sql), a Terraform aws_db_parameter_group (terraform), the JSON of
// `aws rds modify-db-parameter-group --parameters` (rds-json).
const (
	FormatText      Format = "text"
	FormatJSON      Format = "json"
	FormatMarkdown  Format = "markdown"
	FormatSQL       Format = "sql"
	FormatTerraform Format = "terraform"
	FormatRDSJSON   Format = "rds-json"
)

var formats = []Format{FormatText, FormatJSON, FormatMarkdown, FormatSQL, FormatTerraform, FormatRDSJSON}

// ParseFormat checks a --format value.
func ParseFormat(s string) (Format, error) {
	for _, f := range formats {
		if string(f) == s {
			return f, nil
		}
	}
	names := make([]string, len(formats))
	for i, f := range formats {
		names[i] = string(f)
	}
	return "", fmt.Errorf("unknown format %q: want one of %s", s, strings.Join(names, ", "))
}

// Write renders the plan in the format.
func Write(w io.Writer, p Plan, f Format) error {
	switch f {
	case FormatJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(p)
	case FormatMarkdown:
		return WriteMarkdown(w, p)
	case FormatSQL:
		return WriteSQL(w, p)
	case FormatTerraform:
		return WriteTerraform(w, p)
	case FormatRDSJSON:
		return WriteRDSJSON(w, p)
	default:
		return WriteText(w, p)
	}
}

// ew keeps the first write error so the formatters read straight.
type ew struct {
	w   io.Writer
	err error
}

func (e *ew) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}

func target(p Plan) string {
	if p.Target == nil {
		return "not read (the plan says what to set, not what to change)"
	}
	return fmt.Sprintf("%s (PostgreSQL %s)", p.Target.Endpoint, p.Target.Version)
}

func resources(r Resources) string {
	var parts []string
	if r.MemoryBytes > 0 {
		parts = append(parts, human(r.MemoryBytes)+" memory")
	}
	if r.CPUs > 0 {
		parts = append(parts, fmt.Sprintf("%d cores", r.CPUs))
	}
	if len(parts) == 0 {
		return "not given"
	}
	return strings.Join(parts, ", ") + " (as given)"
}

func status(s Setting) string {
	switch {
	case s.Current == "" && s.Change:
		return ""
	case s.Change:
		return "target has " + s.Current + ": change"
	default:
		return "target has " + s.Current + ": ok"
	}
}

// WriteText renders the plan for a terminal.
func WriteText(w io.Writer, p Plan) error {
	e := &ew{w: w}
	e.printf("pgshift plan\n  source:    %s (PostgreSQL %s)\n  target:    %s\n  resources: %s\n\n", p.Source.Endpoint, p.Source.Version, target(p), resources(p.Resources))
	e.printf("Storage: %s\n  %s\n", human(p.StorageBytes), p.StorageReason)
	e.printf("IOPS: %d\n  %s\n\n", p.IOPS, p.IOPSReason)
	e.printf("Settings:\n")
	for _, s := range p.Settings {
		flags := []string{}
		if s.Restart {
			flags = append(flags, "restart")
		}
		if st := status(s); st != "" {
			flags = append(flags, st)
		}
		tail := ""
		if len(flags) > 0 {
			tail = "  [" + strings.Join(flags, "; ") + "]"
		}
		e.printf("  %s = %s%s\n      %s\n", s.Name, s.Value, tail, s.Reason)
	}
	if len(p.Notes) > 0 {
		e.printf("\nNotes:\n")
		for _, n := range p.Notes {
			e.printf("  - %s\n", n)
		}
	}
	return e.err
}

// WriteMarkdown renders the plan as a Markdown section.
func WriteMarkdown(w io.Writer, p Plan) error {
	e := &ew{w: w}
	e.printf("# pgshift plan\n\n- source: %s (PostgreSQL %s)\n- target: %s\n- resources: %s\n\n", md(p.Source.Endpoint), p.Source.Version, md(target(p)), resources(p.Resources))
	e.printf("| | plan | why |\n|---|---|---|\n| storage | %s | %s |\n| IOPS | %d | %s |\n\n", human(p.StorageBytes), md(p.StorageReason), p.IOPS, md(p.IOPSReason))
	e.printf("| setting | plan | target now | restart | why |\n|---|---|---|---|---|\n")
	for _, s := range p.Settings {
		now := s.Current
		if now != "" && !s.Change {
			now += " (ok)"
		}
		restart := ""
		if s.Restart {
			restart = "yes"
		}
		e.printf("| `%s` | `%s` | %s | %s | %s |\n", s.Name, md(s.Value), md(now), restart, md(s.Reason))
	}
	if len(p.Notes) > 0 {
		e.printf("\n")
		for _, n := range p.Notes {
			e.printf("- %s\n", md(n))
		}
	}
	return e.err
}

func md(s string) string { return strings.ReplaceAll(strings.ReplaceAll(s, "|", `\|`), "\n", " ") }

// WriteSQL renders the settings as ALTER SYSTEM statements for the target, each after its
// reason. With a target read, only the settings it needs changed are written. ALTER SYSTEM
// takes no parameters, so values are written as quoted literals; a list setting is written
// as one literal per item (a single 'a,b' would name one library called "a,b").
func WriteSQL(w io.Writer, p Plan) error {
	e := &ew{w: w}
	settings := p.Settings
	e.printf("-- pgshift plan: settings for the target %s\n", targetName(p))
	e.printf("-- Run as a superuser (or a role granted ALTER SYSTEM, PostgreSQL 15+); settings marked\n")
	e.printf("-- \"restart\" take effect after a server restart, the others at pg_reload_conf() below.\n")
	if p.Target != nil {
		settings = p.Changes()
		if len(settings) == 0 {
			e.printf("-- The target already has every planned setting.\n")
			return e.err
		}
	}
	restart := false
	for _, s := range settings {
		tag := ""
		if s.Restart {
			tag, restart = " (restart)", true
		}
		e.printf("\n-- %s%s\n", s.Reason, tag)
		if s.kind == kindList {
			items := make([]string, len(s.List))
			for i, l := range s.List {
				items[i] = quoteLiteral(l)
			}
			e.printf("ALTER SYSTEM SET %s = %s;\n", s.Name, strings.Join(items, ", "))
			continue
		}
		e.printf("ALTER SYSTEM SET %s = %s;\n", s.Name, quoteLiteral(s.Value))
	}
	e.printf("\nSELECT pg_reload_conf();\n")
	if restart {
		e.printf("-- Then restart the server for the settings marked (restart).\n")
	}
	return e.err
}

func targetName(p Plan) string {
	if p.Target == nil {
		return "(not read: every planned setting)"
	}
	return p.Target.Endpoint + " (only what it needs changed)"
}

// quoteLiteral quotes a value as an SQL string literal, whatever standard_conforming_strings says.
func quoteLiteral(s string) string {
	q := "'" + strings.ReplaceAll(s, "'", "''") + "'"
	if strings.Contains(s, `\`) {
		return "E" + strings.ReplaceAll(q, `\`, `\\`)
	}
	return q
}

func applyMethod(s Setting) string {
	if s.Restart {
		return "pending-reboot"
	}
	return "immediate"
}

// WriteTerraform renders the settings as an aws_db_parameter_group resource: every planned
// setting, in the units RDS takes (a parameter group defines the whole target).
func WriteTerraform(w io.Writer, p Plan) error {
	e := &ew{w: w}
	e.printf("# pgshift plan: parameter group for the target (source %s, PostgreSQL %s)\n", hclComment(p.Source.Endpoint), p.Source.Version)
	e.printf("resource \"aws_db_parameter_group\" \"pgshift_target\" {\n")
	e.printf("  name        = %s\n  family      = %s\n  description = %s\n", hcl("pgshift-target-"+p.Family), hcl(p.Family), hcl("Planned by pgshift plan"))
	for _, s := range p.Settings {
		e.printf("\n  # %s\n  parameter {\n    name         = %s\n    value        = %s\n    apply_method = %s\n  }\n",
			hclComment(s.Reason), hcl(s.RDSName), hcl(s.RDSValue), hcl(applyMethod(s)))
	}
	e.printf("}\n")
	return e.err
}

// hcl quotes a Terraform string: JSON escapes, and template sequences ${ and %{ doubled.
func hcl(s string) string {
	b, _ := json.Marshal(s) // a string always marshals
	q := string(b)
	q = strings.ReplaceAll(q, "${", "$${")
	return strings.ReplaceAll(q, "%{", "%%{")
}

func hclComment(s string) string { return strings.ReplaceAll(s, "\n", " ") }

// rdsParameter is one element of `aws rds modify-db-parameter-group --parameters`.
type rdsParameter struct {
	ParameterName  string `json:"ParameterName"`
	ParameterValue string `json:"ParameterValue"`
	ApplyMethod    string `json:"ApplyMethod"`
}

// WriteRDSJSON renders every planned setting as the JSON list that
// `aws rds modify-db-parameter-group --db-parameter-group-name NAME --parameters file://plan.json` takes.
func WriteRDSJSON(w io.Writer, p Plan) error {
	params := make([]rdsParameter, 0, len(p.Settings))
	for _, s := range p.Settings {
		params = append(params, rdsParameter{ParameterName: s.RDSName, ParameterValue: s.RDSValue, ApplyMethod: applyMethod(s)})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(params)
}
