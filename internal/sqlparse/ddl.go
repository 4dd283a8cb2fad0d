package sqlparse

// Captured DDL: a query string pgshift's event trigger recorded on the source (state.CaptureDDL)
// is judged here before apply replays it on the target. The rule is a list of what is known to
// be safe, not of what is known to be unsafe: a statement kind, an ALTER TABLE subcommand or an
// expression pgshift does not know is refused with the reason, never guessed at.
//
// Safe means: run on the target, at the same place in the stream, against a schema and rows
// that equal the source's at that place, it leaves the target's schema and rows equal to the
// source's. Statements whose effect depends on when or where they run are refused (a volatile
// or time-dependent value for existing rows), or handed to the applier with the proof it must
// make (DDL.CheckAdded, DDL.Functions), because only the servers' catalogs can
// settle them.

import (
	"fmt"
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Name is a relation or function name as written in the statement: Schema is empty when it was
// not qualified (the applier resolves it through the recorded search_path).
type Name struct {
	Schema, Name string
}

func (n Name) String() string {
	if n.Schema == "" {
		return n.Name
	}
	return n.Schema + "." + n.Name
}

// AddedColumn is a column an ALTER TABLE adds with a default that is not a plain constant: the
// rows the table already has get that default's value on each server separately, which is the
// same only if both stored the same value (attmissingval) or the table has no rows.
type AddedColumn struct {
	Table  Name
	Column string
}

// Function is a function called in an expression, with the number of arguments it is called
// with (which narrows the overloads that can be meant).
type Function struct {
	Name Name
	Args int
}

func (f Function) String() string { return fmt.Sprintf("%s/%d", f.Name, f.Args) }

// TableRename is a migrated-table candidate renamed (RENAME TO) or moved (SET SCHEMA): From as
// written; To.Schema empty means the schema does not change, To.Name empty that the name does not.
type TableRename struct {
	From, To Name
}

// DDL is one statement of a judged query string, as the applier must run it.
type DDL struct {
	// SQL is the statement's text to run on the target: the source's own text, or, when the
	// statement had to be changed (CONCURRENTLY removed), the parser's rendering of it.
	SQL string
	// Kind names the statement for messages and the audit log ("ALTER TABLE", "CREATE INDEX").
	Kind string
	// Concurrently: the source ran it CONCURRENTLY, which cannot run inside the target
	// transaction that keeps it in order with the rows; SQL runs it plainly there.
	Concurrently bool
	// CheckAdded are the columns whose values in existing rows the applier must prove equal.
	CheckAdded []AddedColumn
	// Functions and Operators are the names called in expressions evaluated over existing rows
	// (ALTER COLUMN TYPE ... USING): the applier refuses the statement unless every function
	// and operator of those names is immutable on the target.
	Functions []Function
	Operators []string
	// UsingProbes prove the same from the target's own rule, before Functions and Operators
	// are consulted: each is an ALTER TABLE on ProbeTable (a temporary, empty copy of the
	// changed table's columns, CREATE TEMP TABLE ... (LIKE table)) adding a stored generated
	// column computed by one USING expression and cast to the column's new type. PostgreSQL
	// accepts a generation expression only when every function, operator and cast it resolves
	// to is immutable (SQLSTATE 42P17 otherwise), which is the question, answered with the
	// overloads and casts the expression really resolves to rather than by name.
	UsingProbes []string
	usingDefs   []*pg_query.ColumnDef // rendered into UsingProbes with the tree's version
	// Relation is the table (or index, view) the statement changes, when it changes one that
	// must exist: the applier skips a statement whose relation the target does not have (a
	// table left out of the migration).
	Relation *Name
	// DropsTables are the tables a DROP TABLE names; RenamesTables the tables it renames or
	// moves. The applier keeps the migration's table list in step.
	DropsTables   []Name
	RenamesTables []TableRename
	// CreatesTable is the table a CREATE TABLE (or CREATE TABLE AS) creates: the applier makes
	// it part of the migration as the source's capture decided (state.CaptureDDL). CopyRows: its
	// rows were written by the statement itself, before the capture could publish it (CREATE
	// TABLE AS), so SQL creates it empty (WITH NO DATA) and it is copied in a snapshot of its own.
	CreatesTable *Name
	CopyRows     bool
	// Attaches and Detaches are the partition an ALTER TABLE ... ATTACH PARTITION or DETACH
	// PARTITION moves into or out of Relation's tree: the applier keeps the migration's table
	// list in step, as the source's capture recorded what became of the partition's rows there
	// (state.CaptureDDL). DETACH ... CONCURRENTLY and FINALIZE are refused.
	Attaches, Detaches *Name
}

// RefusedError says why a captured query string cannot be replayed safely, and what to do.
type RefusedError struct {
	Reason string
	Fix    string
}

func (e *RefusedError) Error() string { return e.Reason }

func refuse(fix, format string, args ...any) *RefusedError {
	return &RefusedError{Reason: fmt.Sprintf(format, args...), Fix: fix}
}

// Fixes named by refusals.
const (
	fixByHand = "make the same change on the target by hand if it is safe there, then run pgshift with ddl: stop until the agent has passed this transaction (ddl: follow again afterwards)"
	fixRecopy = "re-copy the table once the change is made on both sides (pgshift copy --force), or add the column without the default and set the rows' values with an UPDATE on the source, which is streamed"
)

// JudgeDDL parses a captured query string (current_query() of the source session: possibly
// several statements) and returns its statements as the applier must run them, or a
// *RefusedError.
func JudgeDDL(sql string) ([]DDL, error) {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return nil, refuse(fixByHand, "the captured statement does not parse (%v)", err)
	}
	if len(tree.Stmts) == 0 {
		return nil, refuse(fixByHand, "the captured query string holds no statement")
	}
	out := make([]DDL, 0, len(tree.Stmts))
	skipped := 0 // statements on objects that are not migrated, never replayed
	for _, raw := range tree.Stmts {
		if ownTriggerToggle(raw.Stmt) || notMigrated(raw.Stmt) {
			skipped++
			continue
		}
		if set := raw.Stmt.GetVariableSetStmt(); set != nil && len(out) == 0 && capturedSetting[strings.ToLower(set.Name)] {
			// SET ROLE or search_path before the first schema change of the string: what it
			// set is what the event trigger recorded at that change, and the applier runs
			// the string's statements under it.
			continue
		}
		st, err := judge(raw.Stmt)
		if err != nil {
			return nil, err
		}
		if st == nil {
			continue // a statement that changes nothing to replay (LOCK)
		}
		if st.SQL == "" {
			st.SQL = stmtText(sql, raw)
		} else if st.SQL, err = deparse(tree.Version, raw.Stmt); err != nil {
			return nil, refuse(fixByHand, "%s: cannot render the statement without CONCURRENTLY: %v", st.Kind, err)
		}
		for _, def := range st.usingDefs {
			if probe, err := usingProbe(tree.Version, def); err == nil {
				st.UsingProbes = append(st.UsingProbes, probe)
			}
		}
		st.usingDefs = nil
		out = append(out, *st)
	}
	if len(out) == 0 && skipped == 0 {
		return nil, refuse(fixByHand, "the captured query string holds no schema change to replay")
	}
	return out, nil
}

// capturedSetting are the settings the event trigger records with each schema change: a SET
// of one of them ahead of a query string's schema changes need not be replayed.
var capturedSetting = map[string]bool{"role": true, "search_path": true}

// stmtText is the source's own text of one statement of sql.
func stmtText(sql string, raw *pg_query.RawStmt) string {
	start := int(raw.StmtLocation)
	end := len(sql)
	if raw.StmtLen > 0 {
		end = start + int(raw.StmtLen)
	}
	if start < 0 || start > end || end > len(sql) {
		return sql
	}
	return strings.TrimSpace(sql[start:end])
}

// deparse renders a (changed) statement back to SQL.
func deparse(version int32, n *pg_query.Node) (string, error) {
	return pg_query.Deparse(&pg_query.ParseResult{Version: version, Stmts: []*pg_query.RawStmt{{Stmt: n}}})
}

// rewrite marks a statement whose SQL must be rendered from its changed tree.
const rewrite = "\x00rewrite"

// judge decides one statement: nil, nil for one that needs no replay.
func judge(n *pg_query.Node) (*DDL, error) {
	switch s := n.Node.(type) {
	case *pg_query.Node_SelectStmt:
		if into := s.SelectStmt.GetIntoClause(); into != nil {
			return nil, refuse("create the table with CREATE TABLE ... AS (which pgshift follows) or with CREATE TABLE and then INSERT ... SELECT; to go on now: "+fixByHand,
				"SELECT ... INTO %s: a table created by SELECT INTO is not followed", rangeName(into.Rel))
		}
		if s.SelectStmt.GetFromClause() == nil && len(s.SelectStmt.GetTargetList()) > 0 {
			return nil, refuse(fixByHand, "the schema change was made by a function called from a query (SELECT f(...)): what it runs cannot be proven the same on the target")
		}
		return nil, refuse("run the schema change in a query string of its own (the row changes are streamed on their own)",
			"the query string mixes a schema change with a statement that reads or writes rows: replayed together, the rows would be written twice")
	case *pg_query.Node_InsertStmt, *pg_query.Node_UpdateStmt, *pg_query.Node_DeleteStmt,
		*pg_query.Node_MergeStmt, *pg_query.Node_CopyStmt, *pg_query.Node_ExplainStmt:
		return nil, refuse("run the schema change in a query string of its own (the row changes are streamed on their own)",
			"the query string mixes a schema change with a statement that reads or writes rows: replayed together, the rows would be written twice")
	case *pg_query.Node_DoStmt:
		return nil, refuse(fixByHand, "a DO block changed the schema: what it runs cannot be proven the same on the target")
	case *pg_query.Node_CallStmt:
		return nil, refuse(fixByHand, "a procedure (CALL) changed the schema: what it runs cannot be proven the same on the target")
	case *pg_query.Node_TransactionStmt:
		return nil, refuse("send each transaction's schema changes in a query string of their own, without BEGIN/COMMIT inside it",
			"the query string holds transaction control (BEGIN, COMMIT, SAVEPOINT): its statements may belong to several transactions")
	case *pg_query.Node_VariableSetStmt:
		return nil, refuse("send the SET in a query string of its own", "the query string changes a setting (SET) next to the schema change (only SET ROLE and search_path before the first change are taken): replayed, it would change the applier's session")
	case *pg_query.Node_LockStmt:
		return nil, nil
	case *pg_query.Node_AlterTableStmt:
		return judgeAlterTable(s.AlterTableStmt)
	case *pg_query.Node_IndexStmt:
		rel := rangeName(s.IndexStmt.Relation)
		st := &DDL{Kind: "CREATE INDEX", Relation: &rel}
		if s.IndexStmt.Concurrent {
			s.IndexStmt.Concurrent = false
			st.Concurrently, st.SQL = true, rewrite
		}
		return st, nil
	case *pg_query.Node_DropStmt:
		return judgeDrop(s.DropStmt)
	case *pg_query.Node_RenameStmt:
		return judgeRename(s.RenameStmt)
	case *pg_query.Node_AlterObjectSchemaStmt:
		a := s.AlterObjectSchemaStmt
		st := &DDL{Kind: "ALTER " + objectName(a.ObjectType) + " SET SCHEMA"}
		if a.Relation != nil {
			rel := rangeName(a.Relation)
			st.Relation = &rel
		}
		if isTable(a.ObjectType) {
			st.RenamesTables = []TableRename{{From: rangeName(a.Relation), To: Name{Schema: a.Newschema}}}
		}
		return st, nil
	case *pg_query.Node_CreateStmt:
		c := s.CreateStmt
		if c.Relation.GetRelpersistence() == "t" {
			return nil, refuse(fixByHand, "the query string creates a temporary table next to the schema change")
		}
		name := rangeName(c.Relation)
		st := &DDL{Kind: "CREATE TABLE", CreatesTable: &name}
		if c.Partbound != nil && len(c.InhRelations) == 1 {
			// A partition of a table the target does not have (left out of the migration) is
			// not the migration's either.
			parent := rangeName(c.InhRelations[0].GetRangeVar())
			st.Kind, st.Relation = "CREATE TABLE ... PARTITION OF", &parent
		}
		return st, nil
	case *pg_query.Node_CreateTableAsStmt:
		c := s.CreateTableAsStmt
		if c.Objtype == pg_query.ObjectType_OBJECT_MATVIEW {
			return &DDL{Kind: "CREATE MATERIALIZED VIEW"}, nil
		}
		into := c.GetInto()
		if into.GetRel().GetRelpersistence() == "t" {
			return nil, refuse(fixByHand, "the query string creates a temporary table next to the schema change")
		}
		if _, ok := c.Query.GetNode().(*pg_query.Node_ExecuteStmt); ok {
			return nil, refuse("create the table with CREATE TABLE ... AS SELECT, or with CREATE TABLE and then INSERT ... SELECT; to go on now: "+fixByHand,
				"CREATE TABLE %s AS EXECUTE: the prepared statement is not known on the target", rangeName(into.GetRel()))
		}
		// Its rows were written before the capture could publish it: the target creates it
		// empty, and the rows are copied in a snapshot of its own.
		name := rangeName(into.GetRel())
		into.SkipData = true
		return &DDL{Kind: "CREATE TABLE AS", CreatesTable: &name, CopyRows: true, SQL: rewrite}, nil
	case *pg_query.Node_ViewStmt:
		if s.ViewStmt.View.GetRelpersistence() == "t" {
			return nil, refuse(fixByHand, "the query string creates a temporary view next to the schema change")
		}
		return &DDL{Kind: "CREATE VIEW"}, nil
	case *pg_query.Node_CreateSchemaStmt:
		for _, e := range s.CreateSchemaStmt.SchemaElts {
			if _, ok := e.Node.(*pg_query.Node_CreateStmt); ok {
				return nil, refuse("create the schema first, then its tables with CREATE TABLE of their own (which pgshift follows); to go on now: "+fixByHand,
					"CREATE SCHEMA %s creates a table: a table created inside CREATE SCHEMA is not followed", s.CreateSchemaStmt.Schemaname)
			}
		}
		return &DDL{Kind: "CREATE SCHEMA"}, nil
	case *pg_query.Node_ReindexStmt:
		for _, p := range s.ReindexStmt.Params {
			if strings.EqualFold(p.GetDefElem().GetDefname(), "concurrently") {
				return nil, refuse(fixByHand, "REINDEX CONCURRENTLY cannot run inside the applier's transaction")
			}
		}
		return &DDL{Kind: "REINDEX"}, nil
	case *pg_query.Node_CreateEventTrigStmt, *pg_query.Node_AlterEventTrigStmt:
		return nil, refuse(fixByHand, "event triggers are not migrated")
	}
	if t := n.GetCreateTrigStmt(); t != nil {
		rel := rangeName(t.Relation)
		return &DDL{Kind: "CREATE TRIGGER", Relation: &rel}, nil
	}
	if kind, ok := plainKinds[fmt.Sprintf("%T", n.Node)]; ok {
		return &DDL{Kind: kind}, nil
	}
	return nil, refuse(fixByHand, "%s is not a kind of statement pgshift knows how to replay", strings.TrimPrefix(fmt.Sprintf("%T", n.Node), "*pg_query.Node_"))
}

// plainKinds are the statements replayed as they are: they define or change objects that hold
// no rows, or only what every row already satisfies on both sides (the target checks it anew).
var plainKinds = map[string]string{
	"*pg_query.Node_CompositeTypeStmt":            "CREATE TYPE",
	"*pg_query.Node_CreateEnumStmt":               "CREATE TYPE",
	"*pg_query.Node_CreateRangeStmt":              "CREATE TYPE",
	"*pg_query.Node_AlterEnumStmt":                "ALTER TYPE",
	"*pg_query.Node_CreateDomainStmt":             "CREATE DOMAIN",
	"*pg_query.Node_AlterDomainStmt":              "ALTER DOMAIN",
	"*pg_query.Node_DefineStmt":                   "DEFINE",
	"*pg_query.Node_CreateFunctionStmt":           "CREATE FUNCTION",
	"*pg_query.Node_AlterFunctionStmt":            "ALTER FUNCTION",
	"*pg_query.Node_RuleStmt":                     "CREATE RULE",
	"*pg_query.Node_CommentStmt":                  "COMMENT",
	"*pg_query.Node_GrantStmt":                    "GRANT",
	"*pg_query.Node_AlterOwnerStmt":               "ALTER OWNER",
	"*pg_query.Node_AlterDefaultPrivilegesStmt":   "ALTER DEFAULT PRIVILEGES",
	"*pg_query.Node_CreateSeqStmt":                "CREATE SEQUENCE",
	"*pg_query.Node_AlterSeqStmt":                 "ALTER SEQUENCE",
	"*pg_query.Node_CreateExtensionStmt":          "CREATE EXTENSION",
	"*pg_query.Node_AlterExtensionStmt":           "ALTER EXTENSION",
	"*pg_query.Node_AlterExtensionContentsStmt":   "ALTER EXTENSION",
	"*pg_query.Node_CreatePolicyStmt":             "CREATE POLICY",
	"*pg_query.Node_AlterPolicyStmt":              "ALTER POLICY",
	"*pg_query.Node_CreateStatsStmt":              "CREATE STATISTICS",
	"*pg_query.Node_AlterStatsStmt":               "ALTER STATISTICS",
	"*pg_query.Node_RefreshMatViewStmt":           "REFRESH MATERIALIZED VIEW",
	"*pg_query.Node_CreateCastStmt":               "CREATE CAST",
	"*pg_query.Node_CreateOpClassStmt":            "CREATE OPERATOR CLASS",
	"*pg_query.Node_CreateOpFamilyStmt":           "CREATE OPERATOR FAMILY",
	"*pg_query.Node_AlterOpFamilyStmt":            "ALTER OPERATOR FAMILY",
	"*pg_query.Node_AlterOperatorStmt":            "ALTER OPERATOR",
	"*pg_query.Node_AlterTypeStmt":                "ALTER TYPE",
	"*pg_query.Node_CreateConversionStmt":         "CREATE CONVERSION",
	"*pg_query.Node_AlterCollationStmt":           "ALTER COLLATION",
	"*pg_query.Node_AlterTSDictionaryStmt":        "ALTER TEXT SEARCH DICTIONARY",
	"*pg_query.Node_AlterTSConfigurationStmt":     "ALTER TEXT SEARCH CONFIGURATION",
	"*pg_query.Node_SecLabelStmt":                 "SECURITY LABEL",
	"*pg_query.Node_CreateForeignTableStmt":       "CREATE FOREIGN TABLE",
	"*pg_query.Node_CreateFdwStmt":                "CREATE FOREIGN DATA WRAPPER",
	"*pg_query.Node_AlterFdwStmt":                 "ALTER FOREIGN DATA WRAPPER",
	"*pg_query.Node_CreateForeignServerStmt":      "CREATE SERVER",
	"*pg_query.Node_AlterForeignServerStmt":       "ALTER SERVER",
	"*pg_query.Node_ImportForeignSchemaStmt":      "IMPORT FOREIGN SCHEMA",
	"*pg_query.Node_CreateTransformStmt":          "CREATE TRANSFORM",
	"*pg_query.Node_CreateAmStmt":                 "CREATE ACCESS METHOD",
	"*pg_query.Node_CreatePLangStmt":              "CREATE LANGUAGE",
	"*pg_query.Node_AlterObjectDependsStmt":       "ALTER ... DEPENDS ON EXTENSION",
	"*pg_query.Node_AlterTableMoveAllStmt":        "ALTER ... SET TABLESPACE",
	"*pg_query.Node_AlterTableSpaceOptionsStmt":   "ALTER TABLESPACE",
	"*pg_query.Node_ReassignOwnedStmt":            "REASSIGN OWNED",
	"*pg_query.Node_DropOwnedStmt":                "DROP OWNED",
	"*pg_query.Node_AlterDatabaseRefreshCollStmt": "ALTER DATABASE",
}

// Redact returns a captured query string fit for messages and the audit log: unchanged unless
// it holds a statement that may carry a secret (a role's password, a user mapping's or a
// server's options, a subscription's connection string), in which case every constant in it
// is replaced by a placeholder ($1, $2, ...). A string that does not parse is shown as its
// statement kinds cannot be told: replaced whole.
func Redact(sql string) string {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return "<a query string that does not parse; not shown, as it may hold a secret>"
	}
	for _, raw := range tree.Stmts {
		switch raw.Stmt.Node.(type) {
		case *pg_query.Node_CreateRoleStmt, *pg_query.Node_AlterRoleStmt, *pg_query.Node_CreateUserMappingStmt,
			*pg_query.Node_AlterUserMappingStmt, *pg_query.Node_CreateForeignServerStmt, *pg_query.Node_AlterForeignServerStmt,
			*pg_query.Node_CreateSubscriptionStmt, *pg_query.Node_AlterSubscriptionStmt:
			norm, err := pg_query.Normalize(sql)
			if err != nil {
				return "<a query string that may hold a secret; not shown>"
			}
			return norm
		}
	}
	return sql
}

// TruncateCaptureTrigger is pgshift's TRUNCATE capture trigger on a source before 11
// (catalog.TruncateTrigger; apply's tests keep the two the same). It exists on the source only.
const TruncateCaptureTrigger = "pgshift_capture_truncate"

// ownTriggerToggle reports an ALTER TABLE whose every subcommand enables or disables pgshift's
// TRUNCATE capture trigger: pgshift's object, not the application's schema, and absent from the
// target, so it is not replayed (the follow session's check of the capture names what a disabled
// one lets escape).
func ownTriggerToggle(n *pg_query.Node) bool {
	s := n.GetAlterTableStmt()
	if s == nil || len(s.Cmds) == 0 {
		return false
	}
	for _, c := range s.Cmds {
		cmd := c.GetAlterTableCmd()
		if cmd == nil || cmd.Name != TruncateCaptureTrigger {
			return false
		}
		switch cmd.Subtype {
		case pg_query.AlterTableType_AT_EnableTrig, pg_query.AlterTableType_AT_DisableTrig,
			pg_query.AlterTableType_AT_EnableAlwaysTrig, pg_query.AlterTableType_AT_EnableReplicaTrig:
		default:
			return false
		}
	}
	return true
}

// notMigrated reports a statement on a publication or subscription, or on roles: none is
// migrated while following (roles are the cluster's, copied once by the copy's roles step; a
// role created later is made on the target by hand, which the target's refusal of a statement
// naming it says). The capture records none made alone; one sent in a query string with schema
// changes is left out of the replay.
func notMigrated(n *pg_query.Node) bool {
	switch s := n.Node.(type) {
	case *pg_query.Node_CreatePublicationStmt, *pg_query.Node_AlterPublicationStmt, *pg_query.Node_CreateSubscriptionStmt,
		*pg_query.Node_AlterSubscriptionStmt, *pg_query.Node_DropSubscriptionStmt,
		*pg_query.Node_CreateRoleStmt, *pg_query.Node_AlterRoleStmt, *pg_query.Node_AlterRoleSetStmt,
		*pg_query.Node_DropRoleStmt, *pg_query.Node_GrantRoleStmt:
		return true
	case *pg_query.Node_DropStmt:
		return s.DropStmt.RemoveType == pg_query.ObjectType_OBJECT_PUBLICATION
	}
	return false
}

// judgeAlterTable decides ALTER TABLE (and ALTER INDEX/VIEW/SEQUENCE/TYPE, which share its node).
func judgeAlterTable(s *pg_query.AlterTableStmt) (*DDL, error) {
	table := rangeName(s.Relation)
	st := &DDL{Kind: "ALTER " + objectName(s.Objtype), Relation: &table}
	for _, c := range s.Cmds {
		cmd := c.GetAlterTableCmd()
		if cmd == nil {
			return nil, refuse(fixByHand, "ALTER %s %s: a subcommand pgshift does not know", objectName(s.Objtype), table)
		}
		switch cmd.Subtype {
		case pg_query.AlterTableType_AT_AddColumn:
			if err := judgeAddColumn(table, cmd.Def.GetColumnDef(), st); err != nil {
				return nil, err
			}
		case pg_query.AlterTableType_AT_AlterColumnType:
			// The rows are rewritten with the USING expression (or the assignment cast): the
			// same on both sides when it is immutable, with the source session's settings.
			if def := cmd.Def.GetColumnDef(); def != nil && def.RawDefault != nil {
				walkNames(def.RawDefault, st)
				st.usingDefs = append(st.usingDefs, def)
			}
		case pg_query.AlterTableType_AT_ColumnDefault, pg_query.AlterTableType_AT_DropNotNull, pg_query.AlterTableType_AT_SetNotNull,
			pg_query.AlterTableType_AT_DropExpression, pg_query.AlterTableType_AT_SetExpression,
			pg_query.AlterTableType_AT_SetStatistics, pg_query.AlterTableType_AT_SetOptions, pg_query.AlterTableType_AT_ResetOptions,
			pg_query.AlterTableType_AT_SetStorage, pg_query.AlterTableType_AT_SetCompression, pg_query.AlterTableType_AT_DropColumn,
			pg_query.AlterTableType_AT_AddConstraint, pg_query.AlterTableType_AT_AlterConstraint, pg_query.AlterTableType_AT_ValidateConstraint,
			pg_query.AlterTableType_AT_DropConstraint, pg_query.AlterTableType_AT_AlterColumnGenericOptions, pg_query.AlterTableType_AT_ChangeOwner,
			pg_query.AlterTableType_AT_ClusterOn, pg_query.AlterTableType_AT_DropCluster, pg_query.AlterTableType_AT_SetAccessMethod,
			pg_query.AlterTableType_AT_SetTableSpace, pg_query.AlterTableType_AT_SetRelOptions, pg_query.AlterTableType_AT_ResetRelOptions,
			pg_query.AlterTableType_AT_ReplaceRelOptions, pg_query.AlterTableType_AT_EnableTrig, pg_query.AlterTableType_AT_DisableTrig,
			pg_query.AlterTableType_AT_EnableTrigAll, pg_query.AlterTableType_AT_DisableTrigAll, pg_query.AlterTableType_AT_EnableTrigUser,
			pg_query.AlterTableType_AT_DisableTrigUser, pg_query.AlterTableType_AT_EnableRule, pg_query.AlterTableType_AT_DisableRule,
			pg_query.AlterTableType_AT_ReplicaIdentity, pg_query.AlterTableType_AT_EnableRowSecurity, pg_query.AlterTableType_AT_DisableRowSecurity,
			pg_query.AlterTableType_AT_ForceRowSecurity, pg_query.AlterTableType_AT_NoForceRowSecurity, pg_query.AlterTableType_AT_GenericOptions,
			pg_query.AlterTableType_AT_AddIdentity, pg_query.AlterTableType_AT_SetIdentity, pg_query.AlterTableType_AT_DropIdentity:
		case pg_query.AlterTableType_AT_EnableAlwaysTrig, pg_query.AlterTableType_AT_EnableReplicaTrig,
			pg_query.AlterTableType_AT_EnableAlwaysRule, pg_query.AlterTableType_AT_EnableReplicaRule:
			return nil, refuse("make it on the target at cutover (pgshift keeps such triggers and rules off on the target while it applies); to go on now: "+fixByHand,
				"ALTER TABLE %s: a trigger or rule set ENABLE ALWAYS or REPLICA would fire on the target for the changes pgshift applies", table)
		case pg_query.AlterTableType_AT_SetLogged, pg_query.AlterTableType_AT_SetUnLogged:
			return nil, refuse(fixByHand, "ALTER TABLE %s SET LOGGED/UNLOGGED: an unlogged table's changes are not in the WAL, so it cannot be followed", table)
		case pg_query.AlterTableType_AT_AttachPartition, pg_query.AlterTableType_AT_DetachPartition, pg_query.AlterTableType_AT_DetachPartitionFinalize:
			if len(s.Cmds) != 1 || st.Attaches != nil || st.Detaches != nil {
				return nil, refuse("attach or detach the partition in an ALTER TABLE of its own; to go on now: "+fixByHand,
					"ALTER TABLE %s: a partition attached or detached next to other subcommands is not followed", table)
			}
			pc := cmd.Def.GetPartitionCmd()
			if pc == nil || pc.Name == nil {
				return nil, refuse(fixByHand, "ALTER TABLE %s: an ATTACH or DETACH PARTITION without the partition's name", table)
			}
			part := rangeName(pc.Name)
			if cmd.Subtype == pg_query.AlterTableType_AT_AttachPartition {
				st.Kind, st.Attaches = "ALTER TABLE ... ATTACH PARTITION", &part
				continue
			}
			if pc.Concurrent || cmd.Subtype == pg_query.AlterTableType_AT_DetachPartitionFinalize {
				// It cannot run in the applier's transaction, and a plain DETACH is not the
				// same: CONCURRENTLY leaves a CHECK constraint copying the partition's bound on
				// the detached table.
				return nil, refuse("detach partitions without CONCURRENTLY while pgshift follows the schema; to go on now: run the same DETACH PARTITION ... CONCURRENTLY on the target, then "+fixByHand,
					"ALTER TABLE %s DETACH PARTITION %s CONCURRENTLY (or FINALIZE) is not followed: it cannot run inside the applier's transaction, and a plain DETACH would not add the CHECK constraint it leaves on the partition", table, part)
			}
			st.Kind, st.Detaches = "ALTER TABLE ... DETACH PARTITION", &part
		case pg_query.AlterTableType_AT_AddInherit, pg_query.AlterTableType_AT_DropInherit, pg_query.AlterTableType_AT_AddOf, pg_query.AlterTableType_AT_DropOf:
			return nil, refuse(fixByHand, "ALTER TABLE %s: a change of inheritance or of the table's type is not followed", table)
		default:
			return nil, refuse(fixByHand, "ALTER TABLE %s: subcommand %s is not one pgshift knows how to replay", table, strings.TrimPrefix(cmd.Subtype.String(), "AT_"))
		}
	}
	return st, nil
}

// judgeAddColumn decides ADD COLUMN: the existing rows get the column's default on each server
// separately. A plain constant gives them the same value; anything else is handed to the
// applier to prove (CheckAdded) — except what cannot be the same anywhere: an identity or
// serial column numbers the rows in each server's physical order.
func judgeAddColumn(table Name, def *pg_query.ColumnDef, st *DDL) error {
	if def == nil {
		return refuse(fixByHand, "ALTER TABLE %s ADD COLUMN without a column definition", table)
	}
	col := def.Colname
	typ := typeName(def.TypeName)
	if typ == "serial" || typ == "serial2" || typ == "serial4" || typ == "serial8" || typ == "bigserial" || typ == "smallserial" {
		return refuse(fixRecopy, "ALTER TABLE %s ADD COLUMN %s %s: the existing rows are numbered in each server's physical order, so their values would differ on the target", table, col, typ)
	}
	expr := def.RawDefault
	for _, c := range def.Constraints {
		k := c.GetConstraint()
		switch k.GetContype() {
		case pg_query.ConstrType_CONSTR_DEFAULT:
			expr = k.RawExpr
		case pg_query.ConstrType_CONSTR_IDENTITY:
			return refuse(fixRecopy, "ALTER TABLE %s ADD COLUMN %s ... GENERATED AS IDENTITY: the existing rows are numbered in each server's physical order, so their values would differ on the target", table, col)
		}
	}
	if expr == nil || constant(expr, typ) {
		return nil
	}
	st.CheckAdded = append(st.CheckAdded, AddedColumn{Table: table, Column: col})
	return nil
}

// constSafeTypes are the types whose input of a string literal does not depend on the moment
// or the session ('now', 'today' and the like are date and time inputs): a literal default of
// one of them is the same value on both servers.
var constSafeTypes = map[string]bool{
	"text": true, "varchar": true, "bpchar": true, "char": true, "name": true, "int2": true, "int4": true, "int8": true,
	"smallint": true, "integer": true, "int": true, "bigint": true, "numeric": true, "decimal": true, "float4": true, "float8": true,
	"real": true, "bool": true, "boolean": true, "json": true, "jsonb": true, "uuid": true, "bytea": true, "inet": true, "cidr": true,
	"macaddr": true, "bit": true, "varbit": true, "money": false,
}

// constant reports whether a default expression is a plain constant (a literal, possibly cast
// to a type of constSafeTypes) for a column of type colType.
func constant(n *pg_query.Node, colType string) bool {
	switch e := n.Node.(type) {
	case *pg_query.Node_AConst:
		if _, isString := e.AConst.Val.(*pg_query.A_Const_Sval); isString {
			return constSafeTypes[colType]
		}
		return true
	case *pg_query.Node_TypeCast:
		t := typeName(e.TypeCast.TypeName)
		return constSafeTypes[t] && constant(e.TypeCast.Arg, t)
	}
	return false
}

// typeName is the last part of a type's name, lower case ("int4", "timestamptz", "mytype").
func typeName(t *pg_query.TypeName) string {
	if t == nil || len(t.Names) == 0 || len(t.ArrayBounds) > 0 {
		return ""
	}
	return strings.ToLower(t.Names[len(t.Names)-1].GetString_().GetSval())
}

// ProbeTable is the temporary table UsingProbes add their column to.
const ProbeTable = "pgshift_using_probe"

// usingProbe renders the probe of an ALTER COLUMN ... TYPE ... USING (see DDL.UsingProbes):
// the expression, unchanged, as the generation expression of a column of the new type (and
// collation) on ProbeTable. A rendering that fails leaves the name rule alone to decide.
func usingProbe(version int32, def *pg_query.ColumnDef) (string, error) {
	gen := &pg_query.Constraint{Contype: pg_query.ConstrType_CONSTR_GENERATED, GeneratedWhen: "a", RawExpr: def.RawDefault, Location: -1}
	col := &pg_query.ColumnDef{Colname: ProbeTable, TypeName: def.TypeName, CollClause: def.CollClause, IsLocal: true,
		Constraints: []*pg_query.Node{{Node: &pg_query.Node_Constraint{Constraint: gen}}}, Location: -1}
	stmt := &pg_query.AlterTableStmt{
		Relation: &pg_query.RangeVar{Schemaname: "pg_temp", Relname: ProbeTable, Inh: true, Relpersistence: "t", Location: -1},
		Objtype:  pg_query.ObjectType_OBJECT_TABLE,
		Cmds: []*pg_query.Node{{Node: &pg_query.Node_AlterTableCmd{AlterTableCmd: &pg_query.AlterTableCmd{
			Subtype: pg_query.AlterTableType_AT_AddColumn, Def: &pg_query.Node{Node: &pg_query.Node_ColumnDef{ColumnDef: col}},
			Behavior: pg_query.DropBehavior_DROP_RESTRICT}}}},
	}
	return deparse(version, &pg_query.Node{Node: &pg_query.Node_AlterTableStmt{AlterTableStmt: stmt}})
}

// walkNames collects the functions and operators an expression calls.
func walkNames(n *pg_query.Node, st *DDL) {
	walk(n.ProtoReflect(), func(m protoreflect.Message) {
		switch v := m.Interface().(type) {
		case *pg_query.FuncCall:
			st.Functions = append(st.Functions, Function{Name: qualified(v.Funcname), Args: len(v.Args)})
		case *pg_query.A_Expr:
			if len(v.Name) > 0 {
				st.Operators = append(st.Operators, v.Name[len(v.Name)-1].GetString_().GetSval())
			}
		}
	})
}

// judgeDrop decides DROP: the same objects exist on the target, so the same ones go (with
// CASCADE, the same dependents); a migrated table dropped is forgotten by the migration.
func judgeDrop(s *pg_query.DropStmt) (*DDL, error) {
	st := &DDL{Kind: "DROP " + objectName(s.RemoveType)}
	if s.Concurrent {
		s.Concurrent = false
		st.Concurrently, st.SQL = true, rewrite
	}
	switch s.RemoveType {
	case pg_query.ObjectType_OBJECT_SCHEMA:
		if s.Behavior == pg_query.DropBehavior_DROP_CASCADE {
			return nil, refuse(fixByHand, "DROP SCHEMA ... CASCADE may drop migrated tables, which pgshift would not know to forget")
		}
	case pg_query.ObjectType_OBJECT_TABLE:
		for _, o := range s.Objects {
			st.DropsTables = append(st.DropsTables, qualified(o.GetList().GetItems()))
		}
	}
	return st, nil
}

// judgeRename decides RENAME: of a table, the migration must follow the new name.
func judgeRename(s *pg_query.RenameStmt) (*DDL, error) {
	st := &DDL{Kind: "ALTER " + objectName(s.RenameType) + " RENAME"}
	if s.Relation != nil {
		rel := rangeName(s.Relation)
		st.Relation = &rel
	}
	switch {
	case s.RenameType == pg_query.ObjectType_OBJECT_SCHEMA:
		return nil, refuse(fixByHand, "ALTER SCHEMA %s RENAME: renaming a schema renames every migrated table in it, which is not followed yet", s.Subname)
	case isTable(s.RenameType):
		st.RenamesTables = []TableRename{{From: rangeName(s.Relation), To: Name{Name: s.Newname}}}
	}
	return st, nil
}

func isTable(t pg_query.ObjectType) bool {
	return t == pg_query.ObjectType_OBJECT_TABLE || t == pg_query.ObjectType_OBJECT_FOREIGN_TABLE
}

// objectName renders an object type for messages: OBJECT_MATVIEW → "MATVIEW".
func objectName(t pg_query.ObjectType) string {
	return strings.ReplaceAll(strings.TrimPrefix(t.String(), "OBJECT_"), "_", " ")
}

func rangeName(r *pg_query.RangeVar) Name {
	if r == nil {
		return Name{}
	}
	return Name{Schema: r.Schemaname, Name: r.Relname}
}

// qualified turns a list of String nodes (a possibly qualified name) into a Name; a name of
// three parts (database.schema.name) keeps its last two.
func qualified(parts []*pg_query.Node) Name {
	s := make([]string, 0, len(parts))
	for _, p := range parts {
		s = append(s, p.GetString_().GetSval())
	}
	switch len(s) {
	case 0:
		return Name{}
	case 1:
		return Name{Name: s[0]}
	}
	return Name{Schema: s[len(s)-2], Name: s[len(s)-1]}
}
