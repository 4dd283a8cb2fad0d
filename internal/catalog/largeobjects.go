package catalog

import (
	"context"
	"fmt"
)

// LargeObject is one large object's metadata: what must be the same on both sides besides its
// contents.
type LargeObject struct {
	OID   uint32
	Owner string
	// ACL is the privileges as sorted aclitem texts joined by commas, the owner's default when
	// none were granted, so that "never granted" and "granted back to the default" compare equal.
	ACL     string
	Comment string
}

// LargeObjectContent identifies a large object's contents without moving them: its size and
// the md5 of the md5s of its 1 MiB pieces, computed by the server.
type LargeObjectContent struct {
	Size int64
	Hash string
}

// LargeObjectChunk is the piece size large objects are read, hashed and written in.
const LargeObjectChunk = 1 << 20

// LargeObjects lists every large object's metadata in OID order. It reads in q's snapshot.
func LargeObjects(ctx context.Context, q Querier) ([]LargeObject, error) {
	rows, err := q.Query(ctx, `
SELECT m.oid, pg_catalog.pg_get_userbyid(m.lomowner),
       array_to_string(ARRAY(SELECT a::text FROM unnest(coalesce(m.lomacl, pg_catalog.acldefault('L', m.lomowner))) a ORDER BY 1), ','),
       coalesce(pg_catalog.obj_description(m.oid, 'pg_largeobject'), '')
FROM pg_catalog.pg_largeobject_metadata m ORDER BY m.oid`)
	if err != nil {
		return nil, fmt.Errorf("list large objects: %w", err)
	}
	defer rows.Close()
	var out []LargeObject
	for rows.Next() {
		var lo LargeObject
		if err := rows.Scan(&lo.OID, &lo.Owner, &lo.ACL, &lo.Comment); err != nil {
			return nil, fmt.Errorf("list large objects: %w", err)
		}
		out = append(out, lo)
	}
	return out, rows.Err()
}

// largeObjectContentSQL reads each large object in 1 MiB pieces with lo_get (which reads in
// the transaction's snapshot and checks the SELECT privilege) until a piece comes back short,
// keeping only each piece's length and md5: nothing but two values per object leaves the
// server. The pieces' boundaries are fixed offsets, so equal contents hash equally whatever
// pages either server stores them in (holes included).
const largeObjectContentSQL = `
WITH RECURSIVE c(oid, o, n, h) AS (
  SELECT u.oid, 0::bigint, length(x.d), md5(x.d)
  FROM unnest($1::oid[]) AS u(oid) CROSS JOIN LATERAL (SELECT pg_catalog.lo_get(u.oid, 0, $2::int) AS d OFFSET 0) x
  UNION ALL
  SELECT c.oid, c.o + $2::int, length(x.d), md5(x.d)
  FROM c CROSS JOIN LATERAL (SELECT pg_catalog.lo_get(c.oid, c.o + $2::int, $2::int) AS d OFFSET 0) x
  WHERE c.n = $2::int
)
SELECT oid, sum(n)::bigint, md5(string_agg(h, '' ORDER BY o)) FROM c GROUP BY oid`

// LargeObjectContents identifies the contents of the given large objects (see
// LargeObjectContent), in q's snapshot. An object missing from the result does not exist.
func LargeObjectContents(ctx context.Context, q Querier, oids []uint32) (map[uint32]LargeObjectContent, error) {
	out := make(map[uint32]LargeObjectContent, len(oids))
	const batch = 256
	for start := 0; start < len(oids); start += batch {
		part := oids[start:min(start+batch, len(oids))]
		rows, err := q.Query(ctx, largeObjectContentSQL, part, LargeObjectChunk)
		if err != nil {
			return nil, fmt.Errorf("hash large objects %d ... %d: %w", part[0], part[len(part)-1], err)
		}
		for rows.Next() {
			var oid uint32
			var c LargeObjectContent
			if err := rows.Scan(&oid, &c.Size, &c.Hash); err != nil {
				rows.Close()
				return nil, fmt.Errorf("hash large objects: %w", err)
			}
			out[oid] = c
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("hash large objects %d ... %d: %w", part[0], part[len(part)-1], err)
		}
	}
	return out, nil
}
