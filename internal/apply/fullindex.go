package apply

// REPLICA IDENTITY FULL changes carry the whole old row and no key: the target must find a row
// equal in every column. Compared by text alone, no index can help, and each UPDATE or DELETE
// scans the whole table (a 36,000-row UPDATE of such a table took 7-31 s to apply). Like
// PostgreSQL 16's subscriber, the applier looks the row up through an index of the target
// table when one fits, and still compares every column exactly as before: the index
// conditions only narrow the scan, they never decide which row matches.
//
// An index fits when it is valid, ready, not partial, a btree or hash index, and its leading
// key columns are plain columns the source sends that are NOT NULL on the target; those leading
// columns are used (btree can search on a prefix; hash needs its one column). A NOT NULL
// column's old value is never NULL, so `col = $n` matches every row the exact comparison
// matches, the one wanted among them: a value equal as text is equal by the type's btree or
// hash equality, which is reflexive. Nullable columns are left out (`col = NULL` is never
// true). Among fitting indexes the one with the most usable columns wins, unique ones first.

import (
	"context"
	"fmt"
	"slices"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// fullIndexSQL lists the target table's candidate indexes with their key columns in order: 0
// for an expression column, the name and NOT NULL of each plain one.
const fullIndexSQL = `
SELECT ic.relname::text, am.amname::text, i.indisunique,
       ARRAY(SELECT k.attnum::int FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord) WHERE k.ord <= i.indnkeyatts ORDER BY k.ord),
       ARRAY(SELECT coalesce(a.attname::text, '') FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE k.ord <= i.indnkeyatts ORDER BY k.ord),
       ARRAY(SELECT coalesce(a.attnotnull, false) FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_am am ON am.oid = ic.relam
WHERE i.indrelid = pg_catalog.to_regclass($1::text) AND i.indisvalid AND i.indisready AND i.indislive
  AND i.indpred IS NULL AND am.amname IN ('btree', 'hash')
ORDER BY ic.relname`

// fullIdentityIndex returns the index a FULL plan looks its rows up through (its name, "" for
// none) and the source column indexes of the index's usable leading columns.
func fullIdentityIndex(ctx context.Context, q catalog.Querier, t pgtypes.TableID, p *plan) (string, []int, error) {
	rows, err := q.Query(ctx, fullIndexSQL, t.Sanitize())
	if err != nil {
		return "", nil, fmt.Errorf("read indexes of %s on the target: %w", t, err)
	}
	defer rows.Close()
	sent := make(map[string]int, len(p.rel.Columns))
	for i, c := range p.rel.Columns {
		sent[c.Name] = i
	}
	bestName, bestUnique := "", false
	var best []int
	for rows.Next() {
		var name, am string
		var unique bool
		var attnums []int32
		var names []string
		var notNull []bool
		if err := rows.Scan(&name, &am, &unique, &attnums, &names, &notNull); err != nil {
			return "", nil, fmt.Errorf("read indexes of %s on the target: %w", t, err)
		}
		var cols []int
		for k := range attnums {
			i, ok := sent[names[k]]
			if attnums[k] == 0 || !ok || !notNull[k] {
				break
			}
			cols = append(cols, i)
		}
		if am == "hash" && len(cols) != len(attnums) || len(cols) == 0 {
			continue
		}
		if len(cols) > len(best) || len(cols) == len(best) && unique && !bestUnique {
			bestName, bestUnique, best = name, unique, cols
		}
	}
	if err := rows.Err(); err != nil {
		return "", nil, fmt.Errorf("read indexes of %s on the target: %w", t, err)
	}
	return bestName, best, nil
}

// indexed reports whether source column i is one of the FULL plan's index columns.
func (p *plan) indexed(i int) bool { return slices.Contains(p.fullIndex, i) }
