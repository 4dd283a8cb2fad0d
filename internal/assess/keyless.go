package assess

import (
	"fmt"
	"strings"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// IdentityPlan is copy's decision about tables whose UPDATEs and DELETEs could not be followed
// as they stand (the identity rule of IdentityFindings, partitions published as themselves).
type IdentityPlan struct {
	// SetFull are the tables to give REPLICA IDENTITY FULL on the source (--replica-identity-full):
	// no primary key and no usable identity.
	SetFull []pgtypes.TableID
	// Blocked lists the tables that stop the copy, each with why and the fix.
	Blocked []string
	// Warnings are tables accepted as they are, with what the user must know: REPLICA
	// IDENTITY NOTHING (insert-only) and FULL without a key.
	Warnings []string
}

// PlanIdentities applies the identity rule to the tables copy will publish. With setFull,
// a table that has no key and no usable identity (replica identity DEFAULT without a usable
// primary key, or USING INDEX an index PostgreSQL does not use) is planned for REPLICA IDENTITY
// FULL instead of being refused; without it, the refusal names the flag. A table whose USING
// INDEX index no longer exists stays refused either way: its original identity could not be
// put back.
func PlanIdentities(tables []catalog.Table, setFull bool) IdentityPlan {
	var p IdentityPlan
	byID := map[string]catalog.Table{}
	for _, t := range tables {
		byID[t.ID.String()] = t
	}
	for _, f := range IdentityFindings(TablesFromCatalog(tables), false) {
		if f.Severity != Blocker {
			if f.Code == CodeReplicaIdentityNothing {
				p.Warnings = append(p.Warnings, fmt.Sprintf("%s: %s", f.Object, f.Message))
			}
			continue
		}
		t, ok := byID[f.Object]
		fullable := ok && canSetFull(identityNames[t.ReplicaIdentity], t.IdentityIssue)
		switch {
		case fullable && setFull:
			p.SetFull = append(p.SetFull, t.ID)
		case fullable && !strings.Contains(f.Fix, "--replica-identity-full"):
			p.Blocked = append(p.Blocked, fmt.Sprintf("%s: %s; fix: pass --replica-identity-full (config: replica_identity_full) to let pgshift set REPLICA IDENTITY FULL on it on the source (recorded there; pgshift finish restores it), or %s",
				f.Object, f.Message, f.Fix))
		default:
			p.Blocked = append(p.Blocked, fmt.Sprintf("%s: %s; fix: %s", f.Object, f.Message, f.Fix))
		}
	}
	return p
}

// canSetFull says whether --replica-identity-full may give a table that the identity rule
// blocks REPLICA IDENTITY FULL: its identity is DEFAULT (no usable primary key), or USING INDEX
// an index PostgreSQL does not use. Not when that index no longer exists: the table's original
// identity could not be put back by pgshift finish.
func canSetFull(replicaIdentity, issue string) bool {
	return replicaIdentity == "default" || replicaIdentity == "index" && !strings.Contains(issue, "no longer exists")
}
