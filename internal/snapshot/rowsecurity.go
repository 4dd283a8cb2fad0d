package snapshot

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
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

// CheckTargetRowSecurity refuses, before anything is created, tables whose row-level security
// will apply on the target to the user pgshift writes them with: post-data enables their
// policies there, and from then on every change pgshift applies to them fails (its sessions run
// with row_security = off) or, without it, would be filtered. On the target the policies spare
// a superuser, a role with BYPASSRLS, and the table's owner — the source's owner role, since
// copy keeps owners (or the target user itself with noOwner), counting membership with its
// privileges — unless FORCE ROW LEVEL SECURITY applies them to the owner as well.
func CheckTargetRowSecurity(ctx context.Context, dst catalog.Querier, tables []catalog.Table, noOwner bool) error {
	var user string
	var bypass bool
	if err := dst.QueryRow(ctx, `SELECT current_user, rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user`).Scan(&user, &bypass); err != nil {
		return fmt.Errorf("check row-level security on the target: %w", err)
	}
	if bypass {
		return nil
	}
	var bad []string
	forced := false
	for _, t := range tables {
		if !t.HoldsData() || !t.RowSecurity {
			continue
		}
		applies := t.ForceRowSecurity
		if !applies && !noOwner {
			// A role the target lacks is created by the roles step and granted to this user
			// (schema.PlanRoles refuses a user that could not inherit it).
			var owner bool
			if err := dst.QueryRow(ctx, `SELECT coalesce((SELECT pg_has_role(current_user, oid, 'USAGE') FROM pg_roles WHERE rolname = $1::text), true)`,
				t.Owner).Scan(&owner); err != nil {
				return fmt.Errorf("check row-level security on the target: %w", err)
			}
			applies = !owner
		}
		if applies {
			bad = append(bad, t.ID.String())
			forced = forced || t.ForceRowSecurity
		}
	}
	if len(bad) == 0 {
		return nil
	}
	fix := fmt.Sprintf("connect to the target as a superuser or a role with BYPASSRLS (ALTER ROLE %s BYPASSRLS)", pgtypes.QuoteIdent(user))
	if !forced {
		fix += ", or as a member of the tables' owners"
	}
	return fmt.Errorf("%d table(s) have row-level security policies that would apply on the target to %s, which applies the source's changes to them (nothing was created): %s — %s",
		len(bad), user, strings.Join(bad, ", "), fix)
}
