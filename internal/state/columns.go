package state

// Column identities: for every source table the applier has planned, the attnum each of its
// columns had on the source and the attnum of the target column it was matched to. pgoutput's
// relation messages carry column names and types but no attnums, so a column dropped and
// added again on the source under the same name and type looks unchanged; only the source's
// catalog tells (its attnum moved). A restarted agent has no previous description in memory,
// so the pairs are kept here, written in the target transaction that applies the rows they
// describe. A pair whose source attnum moved while its target attnum did not means the
// target's column still holds the old column's values; both moved means the user dropped and
// added the column on the target too.

import (
	"context"
	"fmt"

	"github.com/pgshift/pgshift/internal/catalog"
)

// columnsDDL adds the column identity table; Ensure runs it with the rest of the state schema.
var columnsDDL = []string{
	`CREATE TABLE IF NOT EXISTS pgshift.column_identity (
		source_oid    oid NOT NULL,
		column_name   text NOT NULL,
		source_attnum int2 NOT NULL,
		target_attnum int2 NOT NULL,
		PRIMARY KEY (source_oid, column_name)
	)`,
}

// ColumnIdentity pairs a source column's attnum with its target column's.
type ColumnIdentity struct {
	Source, Target int16
}

// ColumnIdentities reads the recorded pairs of one source table, by column name (empty when
// none were recorded).
func ColumnIdentities(ctx context.Context, q catalog.Querier, sourceOID uint32) (map[string]ColumnIdentity, error) {
	rows, err := q.Query(ctx, `SELECT column_name, source_attnum, target_attnum FROM pgshift.column_identity WHERE source_oid = $1`, sourceOID)
	if err != nil {
		return nil, fmt.Errorf("read column identities of source table %d: %w", sourceOID, err)
	}
	defer rows.Close()
	out := map[string]ColumnIdentity{}
	for rows.Next() {
		var name string
		var c ColumnIdentity
		if err := rows.Scan(&name, &c.Source, &c.Target); err != nil {
			return nil, fmt.Errorf("read column identities of source table %d: %w", sourceOID, err)
		}
		out[name] = c
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read column identities of source table %d: %w", sourceOID, err)
	}
	return out, nil
}

// SaveColumnIdentities replaces the recorded pairs of one source table. q should be the
// target transaction applying the rows the pairs describe.
func SaveColumnIdentities(ctx context.Context, q catalog.Querier, sourceOID uint32, cols map[string]ColumnIdentity) error {
	names := make([]string, 0, len(cols))
	src := make([]int16, 0, len(cols))
	dst := make([]int16, 0, len(cols))
	for n, c := range cols {
		names, src, dst = append(names, n), append(src, c.Source), append(dst, c.Target)
	}
	if _, err := q.Exec(ctx, `DELETE FROM pgshift.column_identity WHERE source_oid = $1`, sourceOID); err != nil {
		return fmt.Errorf("save column identities of source table %d: %w", sourceOID, err)
	}
	if _, err := q.Exec(ctx, `INSERT INTO pgshift.column_identity (source_oid, column_name, source_attnum, target_attnum)
		SELECT $1, n, s, d FROM unnest($2::text[], $3::int2[], $4::int2[]) AS u(n, s, d)`, sourceOID, names, src, dst); err != nil {
		return fmt.Errorf("save column identities of source table %d: %w", sourceOID, err)
	}
	return nil
}
