package proxy

import (
	"bytes"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/pgshift/pgshift/internal/proxy/route"
)

func fuzzSession() (*session, *serverConn) {
	m := newOIDMap()
	m.to[Source] = map[uint32]uint32{16386: 16396, 16385: 16395, 16390: 16400}
	m.to[Target] = map[uint32]uint32{16396: 16386, 16395: 16385, 16400: 16390}
	for _, r := range []Role{Source, Target} {
		m.types[r] = map[uint32]typeInfo{16386 + 10*uint32(r): {kind: 'e'}, 16385 + 10*uint32(r): {kind: 'b', elem: 16386 + 10*uint32(r)},
			16390 + 10*uint32(r): {kind: 'c'}, 1007: {kind: 'b', elem: 23}}
	}
	p := &Proxy{oids: m}
	p.classify.Store(route.NewClassifier(route.ClassifierOptions{}))
	s := &session{p: p, stmts: map[string]*stmt{}, portals: map[string]*stmt{}, portalPlans: map[string][]uint32{}, clientParams: map[string]string{}}
	sc := &serverConn{role: Target, prepared: map[string]*stmt{}, mapped: true, params: map[string]string{}}
	s.conns[Target] = sc
	return s, sc
}

// FuzzClientMessages feeds arbitrary client bytes through the proxy's framing, classification
// and rewriting of client messages: it must reject or relay them, never panic or loop.
func FuzzClientMessages(f *testing.F) {
	var seed []byte
	seed = encode(seed, &pgproto3.Parse{Name: "s1", Query: "SELECT $1::mood[]", ParameterOIDs: []uint32{16385}})
	seed = encode(seed, &pgproto3.Bind{PreparedStatement: "s1", ParameterFormatCodes: []int16{1},
		Parameters: [][]byte{{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0x02, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 'o', 'k'}}, ResultFormatCodes: []int16{1}})
	seed = encode(seed, &pgproto3.Describe{ObjectType: 'S', Name: "s1"})
	seed = encode(seed, &pgproto3.Execute{})
	seed = encode(seed, &pgproto3.Close{ObjectType: 'S', Name: "s1"})
	seed = encode(seed, &pgproto3.Sync{})
	f.Add(seed)
	f.Add(encode(nil, &pgproto3.Query{String: "SELECT 1; DEALLOCATE ALL"}))
	f.Add(encode(nil, &pgproto3.Query{String: "COPY t FROM STDIN"}))
	f.Add([]byte{'P', 0, 0, 0, 4})
	f.Add([]byte{'B', 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte("GET / HTTP/1.1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, sc := fuzzSession()
		rd := newMsgReader(bytes.NewReader(data), &frontendTypes)
		for i := 0; i < 1000; i++ {
			msg, err := rd.next()
			if err != nil {
				return
			}
			seg := append([]byte(nil), msg...)
			switch seg[0] {
			case 'd', 'c', 'f', 'X', 'H', 'p':
				continue
			}
			_ = s.classifySeg(seg)
			if err := s.appendSegLocked(sc, seg, seg[0] == 'S' || seg[0] == 'Q'); err != nil {
				return
			}
		}
	})
}

// FuzzServerMessages feeds arbitrary server messages through the OID rewriting of results.
func FuzzServerMessages(f *testing.F) {
	rd := &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("ms"), TableOID: 16395, DataTypeOID: 16395, DataTypeSize: -1, TypeModifier: -1, Format: 1}}}
	f.Add(encode(nil, rd), encode(nil, &pgproto3.DataRow{Values: [][]byte{{0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0x0c, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 'o', 'k'}}}))
	f.Add(encode(nil, &pgproto3.ParameterDescription{ParameterOIDs: []uint32{16396, 23}}),
		encode(nil, &pgproto3.DataRow{Values: [][]byte{{0, 0, 0, 1, 0, 0, 0x40, 0x0c, 0, 0, 0, 2, 'o', 'k'}}}))
	f.Fuzz(func(t *testing.T, desc, row []byte) {
		s, _ := fuzzSession()
		m := s.p.oids
		for _, msg := range [][]byte{desc, row} {
			if len(msg) < 5 {
				return
			}
		}
		fix := func(b []byte) []byte { // make the length field right, keep the rest arbitrary
			out := append([]byte(nil), b...)
			n := uint32(len(out) - 1)
			out[1], out[2], out[3], out[4] = byte(n>>24), byte(n>>16), byte(n>>8), byte(n)
			return out
		}
		d, r := fix(desc), fix(row)
		_, plan := m.mapRowDescription(d, Source)
		_ = m.mapParamDescription(d, Source)
		_ = paramTypesOf(d)
		_ = rowTypesOf(d)
		_ = bindResultFormats(d)
		if plan == nil {
			plan = []uint32{16395, 16400, 2249, 2287}
		}
		out := m.mapDataRow(r, plan, Source)
		if len(out) != len(r) {
			t.Fatalf("rewriting changed the message length: %d -> %d", len(r), len(out))
		}
		st := &stmt{paramOIDs: []uint32{16385, 16390, 2249}}
		_ = m.mapBind(r, st, Source)
		_ = m.mapParse(r, st, Source)
	})
}
