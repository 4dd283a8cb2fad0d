package schema

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Item is one object of a pg_dump script: the statements pg_dump emits under one TOC header
// ("-- Name: x; Type: INDEX; Schema: s; Owner: -"). Statements of one item always run in order
// in one session; items are what post-data schedules in parallel.
type Item struct {
	Name, Type, Schema string // from the TOC header; empty for statements before the first header
	Statements         []string
}

// SQL is the item's statements joined, for hashing and messages.
func (it Item) SQL() string { return strings.Join(it.Statements, "\n") }

// Describe names the item for messages: "INDEX public.orders_idx".
func (it Item) Describe() string {
	if it.Type == "" {
		return "session setup"
	}
	if it.Schema == "" || it.Schema == "-" {
		return it.Type + " " + it.Name
	}
	return it.Type + " " + it.Schema + "." + it.Name
}

// Script is a parsed pg_dump plain-format script.
type Script struct {
	Items []Item
	// RestrictKey is the key of the script's `\restrict` meta-command, "" when it had none
	// (pg_dump before 17.6/16.10/15.14).
	RestrictKey string
}

// ErrMetaCommand is wrapped by Parse errors about psql meta-commands other than the
// \restrict/\unrestrict pair.
var ErrMetaCommand = errors.New("psql meta-command in schema script")

// tocHeader matches pg_dump's per-object comment. Object names are sanitized by pg_dump (no
// newlines), so one line always holds the whole header.
var tocHeader = regexp.MustCompile(`^-- (?:Data for )?Name: (.*); Type: (.*); Schema: (.*); Owner: (.*)$`)

// validKey is what pg_dump generates for \restrict: letters and digits.
var validKey = regexp.MustCompile(`^[A-Za-z0-9]+$`)

// Parse splits a pg_dump plain-format script into items of complete SQL statements, the way
// psql would: semicolons end statements only outside quotes, comments and parentheses.
//
// Scripts from current pg_dump (CVE-2025-8714) start with `\restrict KEY` and end with
// `\unrestrict KEY`. Under psql, \restrict forbids every other meta-command until the matching
// \unrestrict, so that a hostile source server cannot smuggle `\!` (a shell command) into the
// script through object names or comments. pgshift runs the statements through the driver,
// which knows no meta-commands at all; it keeps that protection by accepting only a
// \restrict/\unrestrict pair with the same key and rejecting any other meta-command, anywhere,
// with or without \restrict. COPY ... FROM stdin (inline data) is rejected too: schema
// sections never contain it.
func Parse(script string) (Script, error) { return parse(script, false) }

// ParseDatabase parses a script of `pg_dump --create`: like Parse, but it also accepts the
// `\connect DB` lines pg_dump writes after CREATE DATABASE, each between an `\unrestrict KEY`
// and a `\restrict KEY` with the script's one key (or, from a pg_dump without \restrict,
// anywhere). They are dropped: pgshift runs the statements in a session of its own, already
// connected to the target database. Any other meta-command is still rejected.
func ParseDatabase(script string) (Script, error) { return parse(script, true) }

// encodingName is what an `\encoding` line of pg_dump names: an encoding, nothing else.
var encodingName = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

func parse(script string, allowConnect bool) (Script, error) {
	var s Script
	p := parser{src: script}
	cur := Item{}
	restricted := false
	flush := func() {
		if len(cur.Statements) > 0 || cur.Type != "" {
			s.Items = append(s.Items, cur)
		}
	}
	for {
		stmt, ev, err := p.next()
		if err != nil {
			return s, err
		}
		switch ev.kind {
		case evEOF:
			if restricted {
				return s, fmt.Errorf("%w: \\restrict %s without matching \\unrestrict (truncated script?)", ErrMetaCommand, s.RestrictKey)
			}
			flush()
			return s, nil
		case evHeader:
			flush()
			cur = Item{Name: ev.header[1], Type: ev.header[2], Schema: ev.header[3]}
		case evMeta:
			cmd, arg, _ := strings.Cut(strings.TrimSpace(ev.text), " ")
			arg = strings.TrimSpace(arg)
			switch {
			case cmd == `\restrict` && !restricted && s.RestrictKey == "" && validKey.MatchString(arg):
				restricted, s.RestrictKey = true, arg
			case cmd == `\unrestrict` && restricted && arg == s.RestrictKey:
				restricted = false
			case allowConnect && cmd == `\connect` && !restricted && arg != "":
				// dropped: the caller's session is the target database
			case allowConnect && cmd == `\encoding` && !restricted && encodingName.MatchString(arg):
				// dropped: written after \connect for a database whose encoding is not the
				// dump's client encoding (SQL_ASCII, for one); the statements that follow
				// (settings, comments) are sent in the caller's session encoding
			case allowConnect && cmd == `\restrict` && !restricted && s.RestrictKey != "" && arg == s.RestrictKey:
				restricted = true
			default:
				return s, fmt.Errorf("%w at line %d: %q; pgshift runs only SQL statements and the \\restrict/\\unrestrict pair of pg_dump, never other meta-commands",
					ErrMetaCommand, ev.line, truncate(ev.text, 60))
			}
		case evStatement:
			if isCopyFromStdin(stmt) {
				return s, fmt.Errorf("schema script line %d: COPY ... FROM stdin is not expected in a schema section", ev.line)
			}
			cur.Statements = append(cur.Statements, stmt)
		}
	}
}

type eventKind int

const (
	evEOF eventKind = iota
	evStatement
	evHeader
	evMeta
)

type event struct {
	kind   eventKind
	line   int
	text   string
	header []string
}

// parser is a minimal psql-compatible lexer: just enough to find statement boundaries,
// comments and meta-commands in pg_dump output.
type parser struct {
	src  string
	pos  int
	line int
}

// next returns the next statement, TOC header or meta-command. It runs in time linear in the
// script's length (schemas with thousands of objects and wide tables are common).
func (p *parser) next() (string, event, error) {
	var b strings.Builder
	depth := 0
	startLine := p.line + 1
	content := false // b holds more than white space
	mark := func() {
		if !content {
			content = true
			startLine = p.line + 1
		}
	}
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case c == '\n':
			p.line++
			b.WriteByte(c)
			p.pos++
		case c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v':
			b.WriteByte(c)
			p.pos++
		case c == '-' && p.peek(1) == '-':
			end := p.lineEnd()
			comment := p.src[p.pos:end]
			p.pos = end
			if !content {
				if m := tocHeader.FindStringSubmatch(comment); m != nil {
					return "", event{kind: evHeader, line: p.line + 1, header: m}, nil
				}
				continue // comments between statements are dropped
			}
			b.WriteString(comment)
		case c == '/' && p.peek(1) == '*':
			start := p.pos
			if err := p.skipBlockComment(); err != nil {
				return "", event{}, err
			}
			if content {
				b.WriteString(p.src[start:p.pos])
			}
		case c == '\\':
			if content {
				return "", event{}, fmt.Errorf("%w at line %d: backslash outside a string inside a statement", ErrMetaCommand, p.line+1)
			}
			end := p.lineEnd()
			text := p.src[p.pos:end]
			line := p.line + 1
			p.pos = end
			return "", event{kind: evMeta, line: line, text: text}, nil
		case c == '\'':
			mark()
			escapes := p.pos > 0 && (p.src[p.pos-1] == 'E' || p.src[p.pos-1] == 'e') &&
				(p.pos < 2 || !isIdentChar(p.src[p.pos-2]))
			start := p.pos
			if err := p.skipString(escapes); err != nil {
				return "", event{}, err
			}
			b.WriteString(p.src[start:p.pos])
		case c == '"':
			mark()
			start := p.pos
			if err := p.skipQuoted('"'); err != nil {
				return "", event{}, err
			}
			b.WriteString(p.src[start:p.pos])
		case c == '$' && (p.pos == 0 || !isIdentChar(p.src[p.pos-1])):
			mark()
			start := p.pos
			if tag, ok := p.dollarTag(); ok {
				if err := p.skipDollar(tag); err != nil {
					return "", event{}, err
				}
			} else {
				p.pos++
			}
			b.WriteString(p.src[start:p.pos])
		case c == ';' && depth == 0:
			p.pos++
			stmt := strings.TrimSpace(b.String())
			if !content || stmt == "" {
				b.Reset()
				content = false
				continue
			}
			return stmt + ";", event{kind: evStatement, line: startLine}, nil
		default:
			mark()
			switch c {
			case '(':
				depth++
			case ')':
				if depth > 0 {
					depth--
				}
			}
			b.WriteByte(c)
			p.pos++
		}
	}
	if content {
		return "", event{}, fmt.Errorf("schema script ends inside a statement starting at line %d (truncated dump?)", startLine)
	}
	return "", event{kind: evEOF}, nil
}

func (p *parser) peek(n int) byte {
	if p.pos+n < len(p.src) {
		return p.src[p.pos+n]
	}
	return 0
}

func (p *parser) lineEnd() int {
	if i := strings.IndexByte(p.src[p.pos:], '\n'); i >= 0 {
		return p.pos + i
	}
	return len(p.src)
}

func (p *parser) countLines(from int) { p.line += strings.Count(p.src[from:p.pos], "\n") }

func (p *parser) skipBlockComment() error {
	start, depth := p.pos, 0
	for p.pos < len(p.src) {
		switch {
		case strings.HasPrefix(p.src[p.pos:], "/*"):
			depth++
			p.pos += 2
		case strings.HasPrefix(p.src[p.pos:], "*/"):
			depth--
			p.pos += 2
			if depth == 0 {
				p.countLines(start)
				return nil
			}
		default:
			p.pos++
		}
	}
	return fmt.Errorf("schema script: unterminated /* comment */")
}

// skipString skips a '...' literal; with escapes (E'...') a backslash escapes the next byte.
func (p *parser) skipString(escapes bool) error {
	start := p.pos
	p.pos++
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case escapes && c == '\\':
			p.pos += 2
		case c == '\'':
			if p.peek(1) == '\'' {
				p.pos += 2
				continue
			}
			p.pos++
			p.countLines(start)
			return nil
		default:
			p.pos++
		}
	}
	return fmt.Errorf("schema script: unterminated string literal starting at line %d", p.line+1)
}

func (p *parser) skipQuoted(q byte) error {
	start := p.pos
	p.pos++
	for p.pos < len(p.src) {
		if p.src[p.pos] == q {
			if p.peek(1) == q {
				p.pos += 2
				continue
			}
			p.pos++
			p.countLines(start)
			return nil
		}
		p.pos++
	}
	return fmt.Errorf("schema script: unterminated quoted identifier starting at line %d", p.line+1)
}

// dollarTag recognises $tag$ at p.pos (tag may be empty); $1 (a parameter) is not a tag.
func (p *parser) dollarTag() (string, bool) {
	i := p.pos + 1
	for i < len(p.src) && isIdentChar(p.src[i]) && p.src[i] != '$' {
		i++
	}
	if i >= len(p.src) || p.src[i] != '$' {
		return "", false
	}
	tag := p.src[p.pos : i+1]
	if len(tag) > 2 && tag[1] >= '0' && tag[1] <= '9' {
		return "", false
	}
	return tag, true
}

func (p *parser) skipDollar(tag string) error {
	start := p.pos
	end := strings.Index(p.src[p.pos+len(tag):], tag)
	if end < 0 {
		return fmt.Errorf("schema script: unterminated dollar-quoted string %s starting at line %d", tag, p.line+1)
	}
	p.pos += len(tag) + end + len(tag)
	p.countLines(start)
	return nil
}

func isIdentChar(c byte) bool {
	return c == '_' || c == '$' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}

var copyFromStdin = regexp.MustCompile(`(?is)^COPY\s.*\sFROM\s+stdin`)

func isCopyFromStdin(stmt string) bool { return copyFromStdin.MatchString(stmt) }

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
