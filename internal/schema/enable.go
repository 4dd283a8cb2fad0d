package schema

import (
	"fmt"
	"strings"

	"github.com/pgshift/pgshift/internal/pgtypes"
)

// EnableState is one enable-state statement of post-data that must not take effect on the
// target while pgshift applies changes: `ALTER TABLE t ENABLE ALWAYS|REPLICA TRIGGER|RULE x`.
// Apply sessions run with session_replication_role = replica, where exactly those triggers and
// rules fire; on the target they would repeat what the source's own trigger or rule already
// did (an audit row written twice). Until cutover the object is kept DISABLED instead.
type EnableState struct {
	Kind      string          // "trigger" or "rule"
	Table     pgtypes.TableID // the table (or view) the object belongs to
	Name      string          // the trigger's or rule's name
	Statement string          // the statement as pg_dump wrote it: what cutover runs
	Reason    string
}

// Object names the trigger or rule for people: `trigger "Audit" on public.orders`.
func (e EnableState) Object() string {
	name := pgtypes.TableID{Schema: "x", Name: e.Name}.String()[2:] // quoted only when needed
	return e.Kind + " " + name + " on " + e.Table.String()
}

// enableStmt is a parsed `ALTER [FOREIGN] TABLE|VIEW [ONLY] t ENABLE|DISABLE [ALWAYS|REPLICA]
// TRIGGER|RULE name`.
type enableStmt struct {
	relKind string // "TABLE", "FOREIGN TABLE", "VIEW", "MATERIALIZED VIEW"
	only    bool
	table   pgtypes.TableID
	action  string // "ENABLE", "ENABLE ALWAYS", "ENABLE REPLICA", "DISABLE"
	kind    string // "TRIGGER" or "RULE"
	name    string
}

// parseEnable recognises an enable-state statement; ok is false for anything else.
func parseEnable(stmt string) (enableStmt, bool) {
	var e enableStmt
	toks := tokens(strings.TrimSuffix(strings.TrimSpace(stmt), ";"), 12)
	up := func(i int) string {
		if i < len(toks) {
			return strings.ToUpper(toks[i])
		}
		return ""
	}
	i := 0
	if up(i) != "ALTER" {
		return e, false
	}
	i++
	switch {
	case up(i) == "TABLE", up(i) == "VIEW":
		e.relKind = up(i)
		i++
	case up(i) == "FOREIGN" && up(i+1) == "TABLE", up(i) == "MATERIALIZED" && up(i+1) == "VIEW":
		e.relKind = up(i) + " " + up(i+1)
		i += 2
	default:
		return e, false
	}
	if up(i) == "ONLY" {
		e.only = true
		i++
	}
	if i >= len(toks) {
		return e, false
	}
	var ok bool
	if e.table, ok = parseQualified(toks[i]); !ok {
		return e, false
	}
	i++
	switch {
	case up(i) == "DISABLE":
		e.action = "DISABLE"
		i++
	case up(i) == "ENABLE" && (up(i+1) == "ALWAYS" || up(i+1) == "REPLICA"):
		e.action = "ENABLE " + up(i+1)
		i += 2
	case up(i) == "ENABLE":
		e.action = "ENABLE"
		i++
	default:
		return e, false
	}
	if up(i) != "TRIGGER" && up(i) != "RULE" {
		return e, false
	}
	e.kind = up(i)
	i++
	if i != len(toks)-1 {
		return e, false // no name, or more than one (ALL, USER, ...): not pg_dump's form
	}
	parts, ok := parseNameParts(toks[i])
	if !ok || len(parts) != 1 {
		return e, false
	}
	e.name = parts[0]
	return e, true
}

// sql renders the statement with a different action, identifiers quoted.
func (e enableStmt) sql(action string) string {
	only := ""
	if e.only {
		only = "ONLY "
	}
	return fmt.Sprintf("ALTER %s %s%s %s %s %s;", e.relKind, only, e.table.Sanitize(), action, e.kind, pgtypes.QuoteIdent(e.name))
}

// ApplySafe is the form of a statement kept back by DeferReplicaEnables that fires in no apply
// session: an ENABLE ALWAYS or ENABLE REPLICA becomes DISABLE; the others (a plain ENABLE or
// DISABLE kept back to run again after one) stay as they are. Run in order on a side that
// replication applies to, the kept-back statements leave it as copy left the target.
func ApplySafe(stmt string) string {
	e, ok := parseEnable(stmt)
	if !ok || (e.action != "ENABLE ALWAYS" && e.action != "ENABLE REPLICA") {
		return stmt
	}
	return e.sql("DISABLE")
}

// DeferReplicaEnables rewrites the plan's trigger and rule items so that nothing in them fires
// during apply, and returns, per rewritten item (by its new Key), the statements kept back for
// cutover, in dump order:
//
//   - `ENABLE ALWAYS` / `ENABLE REPLICA` of a trigger or rule becomes `DISABLE` now, and the
//     original statement is kept back;
//   - a later `ENABLE` or `DISABLE` of a trigger or rule with the same name as one kept back
//     runs now as written (it fires in no apply session) and is kept back too: on a partitioned
//     table the deferred statement changes every partition's clone when cutover runs it, and
//     pg_dump's per-partition statements after it must then be run again, in order.
//
// Items are rewritten deterministically, so a resumed copy plans the same keys.
func DeferReplicaEnables(p PostDataPlan) (PostDataPlan, map[string][]EnableState) {
	out := p
	out.Other = make([]Item, len(p.Other))
	kept := map[string][]EnableState{}
	deferredNames := map[string]string{} // kind + name → the object whose statement was kept back
	for i, it := range p.Other {
		out.Other[i] = it
		if it.Type != "TRIGGER" && it.Type != "RULE" {
			continue
		}
		var states []EnableState
		stmts := make([]string, len(it.Statements))
		for j, st := range it.Statements {
			stmts[j] = st
			e, ok := parseEnable(st)
			if !ok {
				continue
			}
			es := EnableState{Kind: strings.ToLower(e.kind), Table: e.table, Name: e.name, Statement: st}
			key := e.kind + "\x00" + e.name
			switch {
			case e.action == "ENABLE ALWAYS" || e.action == "ENABLE REPLICA":
				stmts[j] = e.sql("DISABLE")
				es.Reason = fmt.Sprintf("%s fires while pgshift applies changes (session_replication_role = replica) and would repeat on the target what the source's %s already did; kept DISABLED until cutover",
					e.action, es.Kind)
				deferredNames[key] = es.Object()
			case deferredNames[key] != "":
				es.Reason = fmt.Sprintf("run again at cutover after the deferred statement for %s, which also changes the partitions' %ss", deferredNames[key], es.Kind)
			default:
				continue
			}
			states = append(states, es)
		}
		if len(states) == 0 {
			continue
		}
		rewritten := it
		rewritten.Statements = stmts
		out.Other[i] = rewritten
		kept[rewritten.Key()] = states
	}
	return out, kept
}
