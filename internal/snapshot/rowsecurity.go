package snapshot

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/catalog"
)

// CheckRowSecurity refuses tables whose row-level security policies apply to the user that
// read the catalog (catalog.Table.RowSecurityApplies): copied as that user, they would hold
// only the rows the policies allow. pg_dump refuses them the same way. The error names the
// tables and the fix; it is meant for copy's preflight, before anything is created.
func CheckRowSecurity(tables []catalog.Table, user string) error {
	var bad []string
	forced := false
	for _, t := range tables {
		if t.HoldsData() && t.RowSecurityApplies {
			bad = append(bad, t.ID.String())
			forced = forced || t.ForceRowSecurity
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%d table(s) have row-level security policies that apply to %s, so reading them as %s would copy only the rows the policies allow: %s — %s",
		len(bad), user, user, strings.Join(bad, ", "), catalog.RowSecurityFix(user, forced))
}

// rowSecurityHint explains a failure that row-level security can cause: pgshift's sessions
// run with row_security = off, so a read the policies would filter fails with 42501, and COPY
// FROM into a table whose policies apply to the user fails with 0A000.
func rowSecurityHint(err error, t *catalog.Table) string {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "42501" && pgErr.Code != "0A000" {
		return ""
	}
	// Which side's policies, and whether FORCE is set there, is not known here: name both fixes.
	return fmt.Sprintf(" (if row-level security is the cause: pgshift reads and writes every row of %s with row_security = off; %s)",
		t.ID, catalog.RowSecurityFix("", true))
}
