package torture

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ownerRole is the non-superuser that owns the source's objects in owner-role cases; it is
// created on both clusters (roles are cluster-wide) once per run.
const ownerRole = "torture_owner"

type colKind int

const (
	colPlain colKind = iota
	colIdentityAlways
	colIdentityDefault
	colGenerated
	colSerial
)

// Column is one live column of a table model.
type Column struct {
	Name    string
	Type    *colType // nil for key columns (keyType) and special columns
	SQLType string
	Kind    colKind
	Expr    string // generated expression
	NotNull bool
	// fromN, for key columns and the selector, derives the value from the row number.
	fromN func(n int64) string
	// Part marks the partition-key column of a partitioned tree.
	Part bool
	// Ref marks a foreign-key column (value: a row number of the referenced table).
	Ref bool
	// Uniq marks a column under a UNIQUE constraint other than the key; rows start with their
	// row number there and the workload hands values from row to row.
	Uniq bool
	// Renamable: a plain column nothing else depends on (not key, not in an expression).
	Renamable bool
}

type tableKind int

const (
	kPlain tableKind = iota
	kPartRoot
	kPartition // a partition (leaf or intermediate)
	kInhParent
	kInhChild
	kZero
	kGenOnly
	kAudit
	kMarks
)

// Table is the generator's model of one table. Cols is guarded by the case's schema lock.
type Table struct {
	Schema, Name string
	Kind         tableKind
	Cols         []*Column
	N            *Column // the row-number selector; nil for zero-column and generated-only tables
	KeyKind      string  // pk-single, pk-composite, pk-comptype, pk-deferrable, pk-include, ri-index, ri-full, nokey, part-root, part-leaves
	RIFull       bool
	Parent       *Table
	Children     []*Table
	Leaf         bool      // holds rows (not a partitioned table)
	partValues   []int     // partition-column values a row may take (partition roots)
	partMethod   string    // range, list or hash (partition roots)
	Identity     *Column   // an identity column, if any
	Uniq         *Column   // a column under a UNIQUE constraint besides the key
	FKTo         *Table    // the table a Ref column points to
	Toast        []*Column // columns that get long values
	Trigger      string    // "", "origin", "always", "replica"
	RLS          bool
	Unsupported  string // why pgshift must refuse this table ("" if supported)
	initialRows  int
	bulk         bool
}

// ID is the schema-qualified, quoted name.
func (t *Table) ID() string { return qi(t.Schema) + "." + qi(t.Name) }

// Label is a readable name for reports.
func (t *Table) Label() string { return t.Schema + "." + t.Name }

// Schema is a whole drawn database.
type Schema struct {
	DB         string
	Schemas    []string
	Tables     []*Table
	Sequences  []*Sequence
	Audit      *Table
	Marks      *Table
	huge       *Table   // the table of the one huge unstreamed transaction, if drawn
	SearchPath []string // ALTER DATABASE ... SET search_path, nil for none
	OwnerRole  bool
	DDL        []string // run in order, one statement each, before the data
	// postStmts run after the initial data (setval, ALTER DATABASE), dropLater drops the
	// columns that leave holes in attnum, after rows were written with them.
	postStmts   []stmt
	dropLater   []string
	auditFn     string
	userTypes   []string // qualified names of user types, for regtype values
	names       map[string]bool
	enumLabels  []string
	Unsupported []string
}

// Sequence is a standalone sequence.
type Sequence struct {
	Schema, Name string
}

// ID is the quoted qualified name.
func (s *Sequence) ID() string { return qi(s.Schema) + "." + qi(s.Name) }

var (
	plainNames  = []string{"items", "orders", "accounts", "events", "notes", "people", "parts", "metrics", "logs", "tags", "docs", "ledger", "stock", "prices"}
	weirdNames  = []string{"Order", "select", "user", "my table", "Tëst", `we"ird`, "CamelCase", "group", "table", "1st", "x-y", "ÄÖÜ", "where"}
	plainCols   = []string{"a", "b", "c", "val", "note", "amount", "payload", "created", "flag", "data", "info", "qty"}
	weirdCols   = []string{"Value", "order", "user", "col umn", "äöü", `x"y`, "from", "desc", "Mixed Case", "select"}
	plainSchema = []string{"app", "data", "sales"}
	weirdSchema = []string{"My Schema", "select", "Ünï code", `sch"ema`, "with space"}
)

// generator draws one schema.
type generator struct {
	g       *rng
	cl      Classes
	s       *Schema
	types   []*colType
	keys    []keyType
	pairTyp string // composite type used for composite-type keys
	scale   float64
}

func (gen *generator) unique(scope, base string) string {
	name := base
	for i := 2; gen.s.names[scope+"\x00"+name]; i++ {
		name = base + "_" + strconv.Itoa(i)
	}
	gen.s.names[scope+"\x00"+name] = true
	return name
}

func (gen *generator) ident(plain, weird []string) string {
	if gen.g.chance(gen.cl.P("names", 0.35)) {
		return pick(gen.g, weird)
	}
	return pick(gen.g, plain)
}

// drawSchema draws a whole database from g.
func drawSchema(g *rng, cl Classes, dbname string, scale float64) *Schema {
	s := &Schema{DB: dbname, names: map[string]bool{}}
	gen := &generator{g: g, cl: cl, s: s, scale: scale}
	s.OwnerRole = g.chance(cl.P("owner-role", 0.2))

	// Schemas: public plus one or two more.
	s.Schemas = []string{"public"}
	for i, n := 0, g.between(0, 2); i < n; i++ {
		s.Schemas = append(s.Schemas, gen.unique("schema", gen.ident(plainSchema, weirdSchema)))
	}
	for _, sc := range s.Schemas[1:] {
		s.DDL = append(s.DDL, "CREATE SCHEMA "+qi(sc))
	}
	extra := gen.userTypes()
	gen.types = append(builtinTypes(cl, s), extra...)
	gen.keys = keyTypes(cl)

	if g.chance(cl.P("triggers", 0.5)) {
		gen.audit()
	}
	if cl.On("async-commit") {
		gen.marks()
	}
	ntables := g.between(2, 6)
	for i := 0; i < ntables; i++ {
		gen.table()
	}
	if g.chance(cl.P("fk", 0.4)) {
		gen.fkTable()
	}
	if g.chance(cl.P("sequences", 0.6)) {
		gen.sequences()
	}
	if len(s.SearchPath) > 0 {
		parts := make([]string, len(s.SearchPath))
		for i, p := range s.SearchPath {
			parts[i] = qi(p)
		}
		s.postStmts = append(s.postStmts, stmt{sql: fmt.Sprintf("ALTER DATABASE %s SET search_path = %s", qi(dbname), strings.Join(parts, ", "))})
	}
	for _, t := range s.Tables {
		if t.RLS && s.OwnerRole && t.Unsupported == "" {
			// The owner without BYPASSRLS reads a FORCE ROW LEVEL SECURITY table through its
			// policies: pgshift must refuse, as pg_dump does, rather than copy what they allow.
			t.Unsupported = "FORCE ROW LEVEL SECURITY policies apply to the reading owner, who has no BYPASSRLS"
		}
		if t.Unsupported != "" {
			s.Unsupported = append(s.Unsupported, t.Label()+": "+t.Unsupported)
		}
	}
	return s
}

func (gen *generator) schemaName() string { return pick(gen.g, gen.s.Schemas) }

// userTypes creates enums, domains, composite and range types, in random schemas.
func (gen *generator) userTypes() []*colType {
	g, s, cl := gen.g, gen.s, gen.cl
	var extra []*colType
	// A same-named type in two schemas, with the source's database search_path set so that
	// one of them is rendered unqualified: tests type names rendered under another search_path.
	shadow := cl.On("enum") && len(s.Schemas) > 1 && g.chance(cl.P("search-path", 0.5))
	if cl.On("enum") {
		sc := gen.schemaName()
		if shadow {
			sc = s.Schemas[1]
		}
		name := gen.unique("rel:"+sc, pick(g, []string{"mood", "Status", "select"}))
		labels := []string{"happy", "sad", "Ünïcödé", "with space", "quote'd", "NULL", "z"}
		shuffle(g, labels)
		labels = labels[:g.between(2, len(labels))]
		lit := make([]string, len(labels))
		for i, l := range labels {
			lit[i] = ql(l)
		}
		q := qi(sc) + "." + qi(name)
		s.DDL = append(s.DDL, fmt.Sprintf("CREATE TYPE %s AS ENUM (%s)", q, strings.Join(lit, ", ")))
		// A label added before the first: sort order no longer follows OIDs.
		s.DDL = append(s.DDL, fmt.Sprintf("ALTER TYPE %s ADD VALUE 'aaa first' BEFORE %s", q, ql(labels[0])))
		labels = append(labels, "aaa first")
		s.enumLabels = labels
		s.userTypes = append(s.userTypes, q)
		extra = append(extra, &colType{class: "enum", sql: q, gen: func(g *rng) string { return pick(g, labels) }})
		if shadow {
			// public gets a different type of the same name, and the database's search_path
			// puts the first schema in front, so unqualified "name" means different things
			// on the two sides unless pgshift qualifies it.
			gen.s.names["rel:public\x00"+name] = true // the shadow owns the name in public too
			s.DDL = append(s.DDL, fmt.Sprintf("CREATE TYPE public.%s AS ENUM ('other', 'labels')", qi(name)))
			s.SearchPath = []string{sc, "public"}
		}
	}
	if !shadow && len(s.Schemas) > 1 && g.chance(cl.P("search-path", 0.3)) {
		s.SearchPath = []string{s.Schemas[len(s.Schemas)-1], "public"}
	}
	if cl.On("domain") {
		sc := gen.schemaName()
		name := gen.unique("rel:"+sc, pick(g, []string{"posint", "Positive"}))
		q := qi(sc) + "." + qi(name)
		s.DDL = append(s.DDL, fmt.Sprintf("CREATE DOMAIN %s AS int4 CHECK (VALUE > 0)", q))
		s.userTypes = append(s.userTypes, q)
		extra = append(extra, &colType{class: "domain", sql: q, gen: func(g *rng) string { return strconv.Itoa(g.between(1, 1<<30)) }})
		name2 := gen.unique("rel:"+sc, "short text")
		q2 := qi(sc) + "." + qi(name2)
		s.DDL = append(s.DDL, fmt.Sprintf("CREATE DOMAIN %s AS varchar(30) CHECK (VALUE <> 'forbidden')", q2))
		extra = append(extra, &colType{class: "domain", sql: q2, gen: func(g *rng) string { return truncRunes(genText(g), 30) }})
	}
	if cl.On("composite") || cl.On("pk-comptype") {
		sc := gen.schemaName()
		name := gen.unique("rel:"+sc, pick(g, []string{"pair", "Pair Type"}))
		q := qi(sc) + "." + qi(name)
		s.DDL = append(s.DDL, fmt.Sprintf("CREATE TYPE %s AS (a int4, b text)", q))
		s.userTypes = append(s.userTypes, q)
		gen.pairTyp = q
		if cl.On("composite") {
			extra = append(extra, &colType{class: "composite", sql: q, gen: func(g *rng) string {
				return "(" + recordField(genInt(g, 32), g.chance(0.1)) + "," + recordField(genText(g), g.chance(0.2)) + ")"
			}})
			name2 := gen.unique("rel:"+sc, "thing")
			q2 := qi(sc) + "." + qi(name2)
			s.DDL = append(s.DDL, fmt.Sprintf("CREATE TYPE %s AS (x numeric, y text[], w %s)", q2, q))
			extra = append(extra, &colType{class: "composite", sql: q2, gen: func(g *rng) string {
				inner := "(" + recordField(genInt(g, 32), false) + "," + recordField(pick(g, scripts), g.chance(0.3)) + ")"
				return "(" + recordField(genNumeric(g), g.chance(0.1)) + "," + recordField(genArray(g, func() string { return pick(g, scripts) }), g.chance(0.2)) + "," + recordField(inner, g.chance(0.2)) + ")"
			}})
		}
	}
	if cl.On("range") {
		sc := gen.schemaName()
		name := gen.unique("rel:"+sc, "floatrange")
		q := qi(sc) + "." + qi(name)
		s.DDL = append(s.DDL, fmt.Sprintf("CREATE TYPE %s AS RANGE (subtype = float8)", q))
		extra = append(extra, &colType{class: "range", sql: q, gen: func(g *rng) string {
			a := (g.float() - 0.5) * 100
			return fmt.Sprintf("[%g,%g)", a, a+g.float()*10+0.5)
		}})
	}
	return extra
}

func (s *Schema) userTypeNames() []string { return s.userTypes }

// regclassValue names a table of this schema (as its qualified, quoted name).
func (s *Schema) regclassValue(g *rng) string {
	if len(s.Tables) == 0 || g.chance(0.2) {
		return pick(g, []string{"pg_catalog.pg_class", "pg_catalog.pg_type"})
	}
	return pick(g, s.Tables).ID()
}

func dateFromDays(n int64) string {
	return time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC).AddDate(0, 0, int(n)).Format("2006-01-02")
}

func tstzFromN(n int64) string {
	return time.Date(1990, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(n)*time.Minute+time.Duration(n%1000)*time.Microsecond).Format("2006-01-02 15:04:05.999999") + "+00"
}
