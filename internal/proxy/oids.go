package proxy

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"

	"github.com/jackc/pgx/v5"
)

// firstUserOID is FirstNormalObjectId: every OID below it is built in and the same on every
// server of a major version; user types, relations and extension objects get OIDs above it,
// which differ between the source and the target.
const firstUserOID = 16384

// typeInfo is what rewriting binary values needs to know of a type.
type typeInfo struct {
	kind byte   // typtype: b base, c composite, d domain, e enum, p pseudo, r range, m multirange
	elem uint32 // array element type (typelem of a varlena array), 0 otherwise
	base uint32 // domain base type
}

// oidMap translates the OIDs of user types and relations between the two servers, matched by
// schema-qualified name, so a client that cached the OIDs of the server it met first keeps
// working on the other one. Messages are rewritten in place in a copy: an OID is 4 bytes in
// every message that carries one, so lengths never change.
type oidMap struct {
	mu sync.RWMutex
	// to[r] maps an OID of the server r to the other server's OID.
	to    [2]map[uint32]uint32
	types [2]map[uint32]typeInfo
}

func newOIDMap() *oidMap {
	return &oidMap{to: [2]map[uint32]uint32{{}, {}}, types: [2]map[uint32]typeInfo{{}, {}}}
}

type namedOID struct {
	key string
	oid uint32
	ti  typeInfo
}

const typesSQL = `SELECT 't' || n.nspname || '.' || t.typname, t.oid::int8, t.typtype::text,
	CASE WHEN t.typlen = -1 AND t.typelem <> 0 THEN t.typelem ELSE 0 END::int8, t.typbasetype::int8
	FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
	UNION ALL
	SELECT 'r' || n.nspname || '.' || c.relname, c.oid::int8, '', 0, 0
	FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE c.oid >= 16384 AND c.relkind IN ('r', 'p', 'v', 'm', 'f')`

func readOIDs(ctx context.Context, conn *pgx.Conn) ([]namedOID, error) {
	rows, err := conn.Query(ctx, typesSQL)
	if err != nil {
		return nil, err
	}
	var out []namedOID
	for rows.Next() {
		var key, kind string
		var oid, elem, base int64
		if err := rows.Scan(&key, &oid, &kind, &elem, &base); err != nil {
			rows.Close()
			return nil, err
		}
		n := namedOID{key: key, oid: uint32(oid), ti: typeInfo{elem: uint32(elem), base: uint32(base)}}
		if kind != "" {
			n.ti.kind = kind[0]
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// load reads both servers' types and relations and replaces the map.
func (m *oidMap) load(ctx context.Context, src, dst *pgx.Conn) (int, error) {
	a, err := readOIDs(ctx, src)
	if err != nil {
		return 0, fmt.Errorf("read the source's types: %w", err)
	}
	b, err := readOIDs(ctx, dst)
	if err != nil {
		return 0, fmt.Errorf("read the target's types: %w", err)
	}
	var to [2]map[uint32]uint32
	var types [2]map[uint32]typeInfo
	to[Source], to[Target] = map[uint32]uint32{}, map[uint32]uint32{}
	types[Source], types[Target] = map[uint32]typeInfo{}, map[uint32]typeInfo{}
	byKey := map[string]uint32{}
	for _, x := range b {
		byKey[x.key] = x.oid
		if x.key[0] == 't' {
			types[Target][x.oid] = x.ti
		}
	}
	mapped := 0
	for _, x := range a {
		if x.key[0] == 't' {
			types[Source][x.oid] = x.ti
		}
		d, ok := byKey[x.key]
		if !ok || (x.oid < firstUserOID && d < firstUserOID) {
			continue
		}
		to[Source][x.oid] = d
		to[Target][d] = x.oid
		if x.oid != d {
			mapped++
		}
	}
	m.mu.Lock()
	m.to, m.types = to, types
	m.mu.Unlock()
	return mapped, nil
}

// oid maps one OID from the server from to the other one (unchanged when unknown).
func (m *oidMap) oid(o uint32, from Role) uint32 {
	if o < firstUserOID {
		return o
	}
	if d, ok := m.to[from][o]; ok {
		return d
	}
	return o
}

// mayHoldOIDs reports whether a binary value of type t (on server r) carries OIDs inside it
// that need mapping: arrays (their element OID), composites and records (a type OID per field).
func (m *oidMap) mayHoldOIDs(t uint32, r Role, depth int) bool {
	if depth > 8 {
		return false
	}
	switch t {
	case 2249, 2287: // record, record[]
		return true
	}
	ti, ok := m.types[r][t]
	if !ok {
		return false
	}
	switch {
	case ti.elem != 0:
		return ti.elem >= firstUserOID || m.mayHoldOIDs(ti.elem, r, depth+1)
	case ti.kind == 'c':
		return true
	case ti.kind == 'd':
		return m.mayHoldOIDs(ti.base, r, depth+1)
	}
	return false
}

// rewriteValue maps the OIDs inside one binary value of type t from server from, in place.
// Malformed values are left alone: the server or client will reject them as it would have.
func (m *oidMap) rewriteValue(v []byte, t uint32, from Role, depth int) {
	if depth > 8 {
		return
	}
	ti := m.types[from][t]
	if ti.kind == 'd' {
		m.rewriteValue(v, ti.base, from, depth+1)
		return
	}
	isArray := ti.elem != 0 || t == 2287
	isRecord := ti.kind == 'c' || t == 2249
	switch {
	case isArray:
		if len(v) < 12 {
			return
		}
		ndim := int(int32(binary.BigEndian.Uint32(v)))
		elem := binary.BigEndian.Uint32(v[8:])
		binary.BigEndian.PutUint32(v[8:], m.oid(elem, from))
		p := 12 + 8*ndim
		if ndim < 0 || p > len(v) || !m.mayHoldOIDs(elem, from, depth+1) {
			return
		}
		for p+4 <= len(v) {
			l := int(int32(binary.BigEndian.Uint32(v[p:])))
			p += 4
			if l < 0 {
				continue
			}
			if p+l > len(v) {
				return
			}
			m.rewriteValue(v[p:p+l], elem, from, depth+1)
			p += l
		}
	case isRecord:
		if len(v) < 4 {
			return
		}
		n := int(int32(binary.BigEndian.Uint32(v)))
		p := 4
		for i := 0; i < n && p+8 <= len(v); i++ {
			ft := binary.BigEndian.Uint32(v[p:])
			binary.BigEndian.PutUint32(v[p:], m.oid(ft, from))
			l := int(int32(binary.BigEndian.Uint32(v[p+4:])))
			p += 8
			if l < 0 {
				continue
			}
			if p+l > len(v) {
				return
			}
			if m.mayHoldOIDs(ft, from, depth+1) {
				m.rewriteValue(v[p:p+l], ft, from, depth+1)
			}
			p += l
		}
	}
}

// mapParse rewrites a client Parse's parameter type OIDs for the other server.
func (m *oidMap) mapParse(msg []byte, st *stmt, origin Role) []byte {
	if st == nil || len(st.paramOIDs) == 0 {
		return msg
	}
	out := append([]byte(nil), msg...)
	_, rest, ok := cstringBytes(body(out))
	if ok {
		_, rest, ok = cstringBytes(rest)
	}
	if !ok || len(rest) < 2 {
		return msg
	}
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	m.mu.RLock()
	for i := 0; i < n && 4*i+4 <= len(rest); i++ {
		o := binary.BigEndian.Uint32(rest[4*i:])
		binary.BigEndian.PutUint32(rest[4*i:], m.oid(o, origin))
	}
	m.mu.RUnlock()
	return out
}

// mapBind rewrites OIDs inside binary array and composite parameters whose type the proxy knows
// (from the Parse or the server's ParameterDescription), for the other server.
func (m *oidMap) mapBind(msg []byte, st *stmt, origin Role) []byte {
	if st == nil {
		return msg
	}
	types := st.paramTypes
	if len(types) == 0 {
		types = st.paramOIDs
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	need := false
	for _, t := range types {
		if m.mayHoldOIDs(t, origin, 0) {
			need = true
			break
		}
	}
	if !need {
		return msg
	}
	out := append([]byte(nil), msg...)
	_, rest, ok := cstringBytes(body(out))
	if ok {
		_, rest, ok = cstringBytes(rest)
	}
	if !ok || len(rest) < 2 {
		return msg
	}
	nf := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) < 2*nf+2 {
		return msg
	}
	formats := make([]uint16, nf)
	for i := range formats {
		formats[i] = binary.BigEndian.Uint16(rest[2*i:])
	}
	rest = rest[2*nf:]
	np := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	for i := 0; i < np && len(rest) >= 4; i++ {
		l := int(int32(binary.BigEndian.Uint32(rest)))
		rest = rest[4:]
		if l < 0 {
			continue
		}
		if l > len(rest) {
			return msg
		}
		f := uint16(0)
		switch {
		case nf == 1:
			f = formats[0]
		case i < nf:
			f = formats[i]
		}
		if f == 1 && i < len(types) && m.mayHoldOIDs(types[i], origin, 0) {
			m.rewriteValue(rest[:l], types[i], origin, 0)
		}
		rest = rest[l:]
	}
	return out
}

// mapRowDescription maps table and type OIDs of a RowDescription back to the client's server.
// It returns the rewritten message and, when binary columns carry OIDs inside their values, the
// column types (in the server's space) to rewrite in the DataRows that follow; nil otherwise.
func (m *oidMap) mapRowDescription(msg []byte, origin Role) ([]byte, []uint32) {
	from := other(origin)
	out := append([]byte(nil), msg...)
	b := body(out)
	if len(b) < 2 {
		return msg, nil
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	var plan []uint32
	m.mu.RLock()
	defer m.mu.RUnlock()
	for i := 0; i < n; i++ {
		_, rest, ok := cstringBytes(b)
		if !ok || len(rest) < 18 {
			return msg, nil
		}
		binary.BigEndian.PutUint32(rest[0:], m.oid(binary.BigEndian.Uint32(rest[0:]), from))
		t := binary.BigEndian.Uint32(rest[6:])
		binary.BigEndian.PutUint32(rest[6:], m.oid(t, from))
		if binary.BigEndian.Uint16(rest[16:]) == 1 && m.mayHoldOIDs(t, from, 0) {
			if plan == nil {
				plan = make([]uint32, n)
			}
			plan[i] = t
		}
		b = rest[18:]
	}
	return out, plan
}

// mapParamDescription maps a ParameterDescription's type OIDs back to the client's server.
func (m *oidMap) mapParamDescription(msg []byte, origin Role) []byte {
	from := other(origin)
	out := append([]byte(nil), msg...)
	b := body(out)
	if len(b) < 2 {
		return msg
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	m.mu.RLock()
	for i := 0; i < n && 4*i+4 <= len(b); i++ {
		binary.BigEndian.PutUint32(b[4*i:], m.oid(binary.BigEndian.Uint32(b[4*i:]), from))
	}
	m.mu.RUnlock()
	return out
}

// mapDataRow rewrites OIDs inside the binary values of the planned columns.
func (m *oidMap) mapDataRow(msg []byte, plan []uint32, origin Role) []byte {
	from := other(origin)
	out := append([]byte(nil), msg...)
	b := body(out)
	if len(b) < 2 {
		return msg
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	m.mu.RLock()
	defer m.mu.RUnlock()
	for i := 0; i < n && len(b) >= 4; i++ {
		l := int(int32(binary.BigEndian.Uint32(b)))
		b = b[4:]
		if l < 0 {
			continue
		}
		if l > len(b) {
			return msg
		}
		if i < len(plan) && plan[i] != 0 {
			m.rewriteValue(b[:l], plan[i], from, 0)
		}
		b = b[l:]
	}
	return out
}

// paramTypesOf decodes a ParameterDescription (already in the client's space).
func paramTypesOf(msg []byte) []uint32 {
	b := body(msg)
	if len(b) < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	out := make([]uint32, 0, n)
	for i := 0; i < n && 4*i+4 <= len(b); i++ {
		out = append(out, binary.BigEndian.Uint32(b[4*i:]))
	}
	return out
}

func other(r Role) Role {
	if r == Source {
		return Target
	}
	return Source
}

// bindResultFormats returns a Bind's result format codes.
func bindResultFormats(msg []byte) []uint16 {
	_, rest, ok := cstringBytes(body(msg))
	if !ok {
		return nil
	}
	if _, rest, ok = cstringBytes(rest); !ok || len(rest) < 2 {
		return nil
	}
	nf := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if len(rest) < 2*nf+2 {
		return nil
	}
	rest = rest[2*nf:]
	np := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	for i := 0; i < np; i++ {
		if len(rest) < 4 {
			return nil
		}
		l := int(int32(binary.BigEndian.Uint32(rest)))
		rest = rest[4:]
		if l > 0 {
			if l > len(rest) {
				return nil
			}
			rest = rest[l:]
		}
	}
	if len(rest) < 2 {
		return nil
	}
	nr := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	out := make([]uint16, 0, nr)
	for i := 0; i < nr && len(rest) >= 2; i++ {
		out = append(out, binary.BigEndian.Uint16(rest))
		rest = rest[2:]
	}
	return out
}

// resultPlan is mapRowDescription's plan for a statement executed without a RowDescription:
// its described result types (client space) with the Bind's result formats. The plan's types
// are in the server's space, as the DataRows are.
func (m *oidMap) resultPlan(st *stmt, formats []uint16, origin Role) []uint32 {
	if st == nil || len(st.rowTypes) == 0 || len(formats) == 0 {
		return nil
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	server := other(origin)
	var plan []uint32
	for i, t := range st.rowTypes {
		f := formats[0]
		if len(formats) > 1 {
			if i >= len(formats) {
				break
			}
			f = formats[i]
		}
		srv := m.oid(t, origin)
		if f == 1 && m.mayHoldOIDs(srv, server, 0) {
			if plan == nil {
				plan = make([]uint32, len(st.rowTypes))
			}
			plan[i] = srv
		}
	}
	return plan
}

// rowTypesOf decodes the type OIDs of a RowDescription (nil for NoData).
func rowTypesOf(msg []byte) []uint32 {
	if msg[0] != 'T' {
		return nil
	}
	b := body(msg)
	if len(b) < 2 {
		return nil
	}
	n := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	out := make([]uint32, 0, n)
	for i := 0; i < n; i++ {
		_, rest, ok := cstringBytes(b)
		if !ok || len(rest) < 18 {
			return out
		}
		out = append(out, binary.BigEndian.Uint32(rest[6:]))
		b = rest[18:]
	}
	return out
}
