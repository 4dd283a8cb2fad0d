package verify

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pgshift/pgshift/internal/catalog"
	"github.com/pgshift/pgshift/internal/db"
	"github.com/pgshift/pgshift/internal/pgtypes"
)

// sessionSettings fix every setting that changes how values print (db.TextSettings, pgshift's
// one definition), so both servers render a row as the same text whatever their
// configuration: the row text is what gets hashed.
//
// row_security = off makes a read that row-level security policies would filter fail (42501)
// instead of comparing only the rows they allow; tables whose policies apply to the verifying
// user are not compared at all (see pair).
func sessionSettings(v catalog.Version) string {
	s := strings.Join(db.SetTextSettings(true), "; ") + "; " +
		`SET LOCAL statement_timeout = 0; SET LOCAL row_security = off`
	if v.HasPlanCacheMode() {
		// Chunk statements repeat with different boundaries: plan each with its values, so the
		// range is seen and the key index used, never a generic plan that guesses. (Before 12
		// the server decides; the plans differ in speed, never in result.)
		s += `; SET LOCAL plan_cache_mode = force_custom_plan`
	}
	return s
}

// hashKind selects the row digest.
type hashKind int

const (
	// hashFast hashes each column's binary value with its type's own extended hash function
	// (the one hash partitioning uses, which PostgreSQL keeps stable across major versions
	// because pg_upgrade keeps hash-partitioned rows in place), each column with its own seed,
	// combined with XOR. It is used only for types whose equality is byte-for-byte identity of
	// their text form (integers, text in byte order, uuid, timestamps...) and whose declared
	// type is the same on both sides; every other column (numeric, floats, intervals, enums,
	// json, arrays, domains, or a column whose type differs between the sides) is hashed
	// through its canonical text instead, as one more term. Skipping the text conversion for
	// the common types is what makes the scan cost close to a plain read.
	hashFast hashKind = iota
	// hashPortable is the first 64 bits of md5 over the whole row's text converted to UTF-8:
	// the same characters give the same digest even when the two databases' encodings differ.
	hashPortable
)

// binaryHash maps type OIDs to an expression hashing a value of that type with a seed. Types
// are listed only if two values are equal under the hash exactly when their text forms (in
// verify's session settings) are equal; text-like types are hashed in byte order.
var binaryHash = map[uint32]string{
	16:   "hashint4extended(%s::int, %d)",                      // bool
	19:   `hashnameextended(%s COLLATE "C", %d)`,               // name
	20:   "hashint8extended(%s, %d)",                           // bigint
	21:   "hashint2extended(%s, %d)",                           // smallint
	23:   "hashint4extended(%s, %d)",                           // integer
	25:   `hashtextextended(%s COLLATE "C", %d)`,               // text
	26:   "hashoidextended(%s, %d)",                            // oid
	1042: `hashbpcharextended(%s COLLATE "C", %d)`,             // character(n): same n on both sides, so same padding
	1043: `hashtextextended(%s COLLATE "C", %d)`,               // character varying
	1083: "time_hash_extended(%s, %d)",                         // time
	1114: "timestamp_hash_extended(%s, %d)",                    // timestamp
	1184: "timestamp_hash_extended(%s AT TIME ZONE 'UTC', %d)", // timestamptz: the instant
	2950: "uuid_hash_extended(%s, %d)",                         // uuid
}

// tableSQL builds the statements for one table on one side. Columns are the ones both sides
// have, in source order; types are this side's, so literals are cast to what this side stores.
type tableSQL struct {
	table      string   // quoted schema.table
	cols       []string // quoted column names
	colHash    []string // per column: binaryHash expression, or "" to hash its text
	keyCols    []string // quoted key columns, in key order
	keyTypes   []string // this side's type of each key column
	collatable []bool   // key column has a collatable type: compare it with COLLATE "C"
	hash       hashKind
	// canon, per column, is a template (%[1]s: the column as x.col) of the expression hashed in
	// place of the column, "" for the column itself (see floatBits).
	canon []string
}

// floatBits is the canon of a real (send function float4send) or double precision (float8send)
// column when the two servers print floats differently: 12+ prints the shortest text that reads
// back exactly, 11 and older all 17 (9) digits, which read back exactly too but are other text.
// The value is hashed by its IEEE bits instead, every NaN alike (PostgreSQL holds them equal,
// and a NaN's bits need not survive a copy through text).
func floatBits(send string) string {
	return "CASE WHEN %[1]s = 'NaN' THEN 'NaN' ELSE " + send + "(%[1]s)::text END"
}

// floatArrayBits is floatBits for an array of real or double precision: its dimensions, then
// every element's bits in storage order (NULL elements as NULL).
func floatArrayBits(send string) string {
	return "CASE WHEN %[1]s IS NULL THEN NULL ELSE coalesce(array_dims(%[1]s), '') || ':' || coalesce((SELECT string_agg(" +
		"coalesce(CASE WHEN u.e = 'NaN' THEN 'NaN' ELSE " + send + "(u.e)::text END, 'NULL'), ',' ORDER BY u.n) " +
		"FROM unnest(%[1]s) WITH ORDINALITY AS u(e, n)), '') END"
}

// col is the expression of column i in a hashed row.
func (q *tableSQL) col(i int) string {
	if i < len(q.canon) && q.canon[i] != "" {
		return fmt.Sprintf(q.canon[i], "x."+q.cols[i])
	}
	return "x." + q.cols[i]
}

// rowText is the canonical text of a row: the record's output form over the compared columns.
func (q *tableSQL) rowText() string {
	parts := make([]string, len(q.cols))
	for i := range q.cols {
		parts[i] = q.col(i)
	}
	return "ROW(" + strings.Join(parts, ", ") + ")::text"
}

// rowHash is a bigint digest of the row.
func (q *tableSQL) rowHash() string {
	if q.hash == hashPortable {
		return "('x' || left(md5(convert_to(" + q.rowText() + ", 'UTF8')), 16))::bit(64)::bigint"
	}
	var terms, viaText []string
	for i, c := range q.cols {
		if i < len(q.colHash) && q.colHash[i] != "" {
			// NULL gets a per-position constant: a strict hash function returns NULL for it,
			// which would otherwise erase the whole row from the sum.
			terms = append(terms, fmt.Sprintf("coalesce(%s, %d)", fmt.Sprintf(q.colHash[i], "x."+c, i+1), nullHash-int64(i)))
			continue
		}
		viaText = append(viaText, q.col(i))
	}
	if len(viaText) > 0 || len(terms) == 0 { // a table without columns: every row is ROW() = '()'
		terms = append(terms, "hashtextextended(ROW("+strings.Join(viaText, ", ")+`)::text COLLATE "C", 0)`)
	}
	return "(" + strings.Join(terms, " # ") + ")"
}

// nullHash is the hash term of a NULL in the first column (minus the position for the others).
const nullHash = int64(-7046029254386353131)

// rowDigest is the full 128-bit digest used by rows mode, where every row is compared alone.
func (q *tableSQL) rowDigest() string {
	if q.hash == hashPortable {
		return "md5(convert_to(" + q.rowText() + ", 'UTF8'))"
	}
	return "md5(" + q.rowText() + ")"
}

// keyExpr returns the key for comparisons: one column, or a row constructor, collatable parts in byte order.
func (q *tableSQL) keyExpr() string {
	parts := make([]string, len(q.keyCols))
	for i, c := range q.keyCols {
		parts[i] = "x." + c
		if q.collatable[i] {
			parts[i] += ` COLLATE "C"`
		}
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// keyOrder is the ORDER BY list for the key in byte order.
func (q *tableSQL) keyOrder() string {
	parts := make([]string, len(q.keyCols))
	for i, c := range q.keyCols {
		parts[i] = "x." + c
		if q.collatable[i] {
			parts[i] += ` COLLATE "C"`
		}
	}
	return strings.Join(parts, ", ")
}

// keyText selects the key columns as text.
func (q *tableSQL) keyText() string {
	parts := make([]string, len(q.keyCols))
	for i, c := range q.keyCols {
		parts[i] = "x." + c + "::text"
	}
	return strings.Join(parts, ", ")
}

// args collects query parameters; every value travels as text and is cast on the server.
type args struct{ vals []any }

func (a *args) add(v any) string {
	a.vals = append(a.vals, v)
	return "$" + strconv.Itoa(len(a.vals))
}

// keyLit renders a key value list as parameters cast to this side's key types.
func (q *tableSQL) keyLit(a *args, key []string) string {
	parts := make([]string, len(key))
	for i, v := range key {
		parts[i] = a.add(v) + "::text::" + q.keyTypes[i]
		if q.collatable[i] {
			parts[i] += ` COLLATE "C"`
		}
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// rangeWhere restricts to keys in (lo, hi]; nil bounds are open.
func (q *tableSQL) rangeWhere(a *args, lo, hi []string) string {
	var conds []string
	if lo != nil {
		conds = append(conds, q.keyExpr()+" > "+q.keyLit(a, lo))
	}
	if hi != nil {
		conds = append(conds, q.keyExpr()+" <= "+q.keyLit(a, hi))
	}
	if len(conds) == 0 {
		return "true"
	}
	return strings.Join(conds, " AND ")
}

// bucketExpr assigns each row the index of the range it falls in among bounds (ascending):
// bucket i holds keys in (bounds[i-1], bounds[i]]. It is a balanced CASE tree, so a row costs
// log2(len(bounds)) key comparisons.
func (q *tableSQL) bucketExpr(a *args, bounds [][]string) string {
	var tree func(i, j int) string
	tree = func(i, j int) string {
		if i == j {
			return strconv.Itoa(i)
		}
		mid := (i + j) / 2
		return "CASE WHEN " + q.keyExpr() + " <= " + q.keyLit(a, bounds[mid]) + " THEN " + tree(i, mid) + " ELSE " + tree(mid+1, j) + " END"
	}
	return tree(0, len(bounds))
}

// bucketHashSQL hashes every row in (lo, hi] and sums the hashes per bucket of bounds. The sum
// of per-row hashes is independent of row order, so neither side has to sort.
func (q *tableSQL) bucketHashSQL(lo, hi []string, bounds [][]string) (string, []any) {
	var a args
	where := q.rangeWhere(&a, lo, hi)
	if len(bounds) == 0 {
		// One range: a plain aggregate, which a range scan on the key's index can feed.
		return fmt.Sprintf(`SELECT 0, count(*), coalesce(sum(%s), 0)::text FROM %s AS x WHERE %s`, q.rowHash(), q.table, where), a.vals
	}
	bucket := q.bucketExpr(&a, bounds)
	sql := fmt.Sprintf(`SELECT b, count(*), sum(h)::text FROM (SELECT %s AS b, %s AS h FROM %s AS x WHERE %s) s GROUP BY b`,
		bucket, q.rowHash(), q.table, where)
	return sql, a.vals
}

// quantilesSQL returns every step-th key of (lo, hi] in byte order: boundaries that split the
// range into pieces of step rows.
func (q *tableSQL) quantilesSQL(lo, hi []string, step int64) (string, []any) {
	var a args
	where := q.rangeWhere(&a, lo, hi)
	st := a.add(step)
	outer := make([]string, len(q.keyCols))
	for i := range q.keyCols {
		outer[i] = "k.k" + strconv.Itoa(i)
	}
	return fmt.Sprintf(`SELECT %s FROM (SELECT %s, row_number() OVER (ORDER BY %s) AS rn FROM %s AS x WHERE %s) k
		WHERE k.rn %% %s::bigint = 0 ORDER BY k.rn`, strings.Join(outer, ", "), q.keyTextAliased(), q.keyOrder(), q.table, where, st), a.vals
}

func (q *tableSQL) keyTextAliased() string {
	parts := make([]string, len(q.keyCols))
	for i, c := range q.keyCols {
		parts[i] = "x." + c + "::text AS k" + strconv.Itoa(i)
	}
	return strings.Join(parts, ", ")
}

// sampleSQL draws keys from a block sample of the table, in byte order, for chunk boundaries.
func (q *tableSQL) sampleSQL(percent float64) (string, []any) {
	return fmt.Sprintf(`SELECT %s FROM %s AS x TABLESAMPLE SYSTEM ($1::float8) ORDER BY %s`,
		q.keyText(), q.table, q.keyOrder()), []any{percent}
}

// leafSQL lists key and digest of every row in (lo, hi].
func (q *tableSQL) leafSQL(lo, hi []string, full bool) (string, []any) {
	var a args
	where := q.rangeWhere(&a, lo, hi)
	d := q.rowHash() + "::text"
	if full {
		d = q.rowDigest()
	}
	return fmt.Sprintf(`SELECT %s, %s FROM %s AS x WHERE %s`, q.keyText(), d, q.table, where), a.vals
}

// byKeysJoin joins the table to a list of keys given as parallel text arrays.
func (q *tableSQL) byKeysJoin(a *args, keys [][]string) string {
	params, names, on := q.keyArrays(a, keys)
	return fmt.Sprintf(`%s AS x JOIN unnest(%s) AS u(%s) ON %s`, q.table, params, names, on)
}

// keyArrays passes keys as one text array per key column and returns the unnest arguments,
// the column aliases and the condition matching x's key to u's.
func (q *tableSQL) keyArrays(a *args, keys [][]string) (params, names, on string) {
	cols := make([][]string, len(q.keyCols))
	for _, k := range keys {
		for i := range q.keyCols {
			cols[i] = append(cols[i], k[i])
		}
	}
	ps := make([]string, len(q.keyCols))
	ns := make([]string, len(q.keyCols))
	conds := make([]string, len(q.keyCols))
	for i := range q.keyCols {
		ps[i] = a.add(cols[i]) + "::text[]"
		ns[i] = "k" + strconv.Itoa(i)
		conds[i] = "x." + q.keyCols[i] + " = u.k" + strconv.Itoa(i) + "::" + q.keyTypes[i]
	}
	return strings.Join(ps, ", "), strings.Join(ns, ", "), strings.Join(conds, " AND ")
}

// deleteByKeysSQL deletes the rows with the given keys.
func (q *tableSQL) deleteByKeysSQL(keys [][]string) (string, []any) {
	var a args
	params, names, on := q.keyArrays(&a, keys)
	return fmt.Sprintf(`DELETE FROM %s AS x USING unnest(%s) AS u(%s) WHERE %s`, q.table, params, names, on), a.vals
}

// valuesByKeySQL fetches the key and every compared column as text for the given keys.
func (q *tableSQL) valuesByKeySQL(keys [][]string) (string, []any) {
	var a args
	from := q.byKeysJoin(&a, keys)
	return fmt.Sprintf(`SELECT %s, %s FROM %s`, q.keyText(), q.colsText(), from), a.vals
}

// recheckSQL fetches key, digest and (withXmin) the row version's xmin for the given keys.
func (q *tableSQL) recheckSQL(keys [][]string, withXmin bool) (string, []any) {
	var a args
	from := q.byKeysJoin(&a, keys)
	x := "''"
	if withXmin {
		x = "x.xmin::text"
	}
	return fmt.Sprintf(`SELECT %s, %s::text, %s FROM %s`, q.keyText(), q.rowHash(), x, from), a.vals
}

func (q *tableSQL) colsText() string {
	parts := make([]string, len(q.cols))
	for i, c := range q.cols {
		parts[i] = "x." + c + "::text"
	}
	return strings.Join(parts, ", ")
}

// Tables without a key are compared as multisets of rows, grouped by their 64-bit row hash.
// Bucket sums compute the hash in a subquery kept apart by OFFSET 0: flattened, the planner
// would compute it once for the filter, once for the bucket and once for the sum. Listings are
// left flattened, so their row texts are built only for the rows the filter keeps.
// Level buckets use successive groups of the hash's bits: a filter (h & mask) = val picks the
// rows of one bucket, and ((h >> shift) & 15) splits it in 16.

// multisetBucketSQL counts and sums row hashes per sub-bucket of the rows matching the filter.
func (q *tableSQL) multisetBucketSQL(mask, val int64, shift uint, width uint) (string, []any) {
	sub := fmt.Sprintf("((h >> %d) & %d)", shift, int64(1)<<width-1)
	return fmt.Sprintf(`SELECT %s AS b, count(*), sum(h)::text FROM (SELECT %s AS h FROM %s AS x OFFSET 0) s
		WHERE (h & $1::bigint) = $2::bigint GROUP BY 1`, sub, q.rowHash(), q.table), []any{mask, val}
}

// multisetLeafSQL counts every distinct row hash in the buckets (h & mask) = any of vals (full
// digests in rows mode).
func (q *tableSQL) multisetLeafSQL(mask int64, vals []int64, full bool) (string, []any) {
	d := "h::text"
	if full {
		d = "d"
	}
	return fmt.Sprintf(`SELECT %s, count(*), min(h)::text FROM (SELECT %s AS h, %s AS d FROM %s AS x) s
		WHERE (h & $1::bigint) = ANY($2::bigint[]) GROUP BY 1`, d, q.rowHash(), q.rowDigestOrNull(full), q.table), []any{mask, vals}
}

// withPages limits a statement of the form "... FROM table AS x OFFSET 0) s WHERE ..." to the heap
// pages [from, to) of the table (-1: unbounded), as a TID range scan (PostgreSQL 14+).
func (q *tableSQL) withPages(sql string, a []any, fromPage, toPage int64) (string, []any) {
	var conds []string
	if fromPage >= 0 {
		a = append(a, fmt.Sprintf("(%d,0)", fromPage))
		conds = append(conds, fmt.Sprintf("x.ctid >= $%d::text::tid", len(a)))
	}
	if toPage >= 0 {
		a = append(a, fmt.Sprintf("(%d,0)", toPage))
		conds = append(conds, fmt.Sprintf("x.ctid < $%d::text::tid", len(a)))
	}
	if len(conds) == 0 {
		return sql, a
	}
	from := "FROM " + q.table + " AS x OFFSET 0)"
	return strings.Replace(sql, from, "FROM "+q.table+" AS x WHERE "+strings.Join(conds, " AND ")+" OFFSET 0)", 1), a
}

func (q *tableSQL) rowDigestOrNull(full bool) string {
	if full {
		return q.rowDigest()
	}
	return "NULL::text"
}

// multisetRowsSQL fetches one copy of each row whose 64-bit hash is in the list, with how
// often it occurs and (withXmin) its row versions' xmins.
func (q *tableSQL) multisetRowsSQL(hashes []int64, withXmin bool) (string, []any) {
	x := "''"
	if withXmin {
		x = "string_agg(x.xmin::text, ',' ORDER BY x.xmin::text)"
	}
	return fmt.Sprintf(`SELECT h::text, count(*), %s, min(r) FROM (SELECT %s AS h, x.xmin, ARRAY[%s]::text[] AS r FROM %s AS x) x
		WHERE h = ANY($1::bigint[]) GROUP BY h`, x, q.rowHash(), q.colsText(), q.table), []any{hashes}
}

// countSQL counts rows.
func (q *tableSQL) countSQL() string { return "SELECT count(*) FROM " + q.table }

// newTableSQL builds the per-side statement builder.
func newTableSQL(id pgtypes.TableID, cols, colHash, keyCols, keyTypes []string, collatable []bool, h hashKind) *tableSQL {
	qc := make([]string, len(cols))
	for i, c := range cols {
		qc[i] = pgtypes.QuoteIdent(c)
	}
	qk := make([]string, len(keyCols))
	for i, c := range keyCols {
		qk[i] = pgtypes.QuoteIdent(c)
	}
	return &tableSQL{table: id.Sanitize(), cols: qc, colHash: colHash, keyCols: qk, keyTypes: keyTypes, collatable: collatable, hash: h}
}
