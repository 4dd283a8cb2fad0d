package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgproto3"
)

// maxMessageLen bounds one protocol message (PostgreSQL's own limit for most messages is 1 GB).
const maxMessageLen = 1 << 30

// ioBufSize is the read buffer of each connection; messages that fit are relayed without copies.
const ioBufSize = 32 << 10

// errProtocol is a message stream that is not the PostgreSQL protocol.
var errProtocol = errors.New("protocol violation")

// msgReader frames protocol messages (type byte, int32 length, body) from a buffered connection.
type msgReader struct {
	r *bufio.Reader
	// valid lists the message types accepted; nil accepts any.
	valid *[256]bool
}

func newMsgReader(c io.Reader, valid *[256]bool) *msgReader {
	return &msgReader{r: bufio.NewReaderSize(c, ioBufSize), valid: valid}
}

// next returns the next whole message, header included. The slice is valid until the next call.
func (m *msgReader) next() ([]byte, error) {
	hdr, err := m.r.Peek(5)
	if err != nil {
		return nil, err
	}
	typ := hdr[0]
	n := int(binary.BigEndian.Uint32(hdr[1:5]))
	if n < 4 || n > maxMessageLen || (m.valid != nil && !m.valid[typ]) {
		return nil, fmt.Errorf("%w: message type %q with length %d", errProtocol, typ, n)
	}
	total := n + 1
	if total <= m.r.Size() {
		msg, err := m.r.Peek(total)
		if err != nil {
			return nil, noEOF(err)
		}
		_, _ = m.r.Discard(total)
		return msg, nil
	}
	// Grow with the data that actually arrives: a peer announcing a huge message must send it
	// before the proxy holds that much memory.
	var b bytes.Buffer
	b.Grow(min(total, 1<<20))
	if _, err := io.CopyN(&b, m.r, int64(total)); err != nil {
		return nil, noEOF(err)
	}
	return b.Bytes(), nil
}

// complete reports whether a whole message is buffered, so reading it will not block.
func (m *msgReader) complete() bool {
	b := m.r.Buffered()
	if b < 5 {
		return false
	}
	hdr, _ := m.r.Peek(5)
	return int(binary.BigEndian.Uint32(hdr[1:5]))+1 <= b
}

func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// frontendTypes and backendTypes are the message types each side may send after startup.
var frontendTypes, backendTypes = func() (f, b [256]bool) {
	for _, t := range "BCdcfDEHFPpQSX" {
		f[t] = true
	}
	for _, t := range "R123CcdDEIGHWKnNtSZTsAVv" {
		b[t] = true
	}
	return
}()

// body returns a message's body (after type and length).
func body(msg []byte) []byte { return msg[5:] }

// encode appends a pgproto3 message to buf.
func encode(buf []byte, msg interface{ Encode([]byte) ([]byte, error) }) []byte {
	out, err := msg.Encode(buf)
	if err != nil {
		// Only oversized fields fail to encode; the messages the proxy builds itself are small.
		return buf
	}
	return out
}

// errorMsg builds an ErrorResponse.
func errorMsg(severity, code, message string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: severity, SeverityUnlocalized: severity, Code: code, Message: message}
}

// readyForQuery is the 6-byte ReadyForQuery message for a transaction status.
func readyForQuery(status byte) []byte { return []byte{'Z', 0, 0, 0, 5, status} }

// cstring splits a NUL-terminated string off b.
func cstring(b []byte) (string, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return string(b[:i]), b[i+1:], true
		}
	}
	return "", nil, false
}

// cstringBytes is cstring without allocating.
func cstringBytes(b []byte) ([]byte, []byte, bool) {
	for i, c := range b {
		if c == 0 {
			return b[:i], b[i+1:], true
		}
	}
	return nil, nil, false
}

// writeAll writes b to c; a short write is an error.
func writeAll(c net.Conn, b []byte) error {
	_, err := c.Write(b)
	return err
}

// readStartup reads one startup-phase message (length-prefixed, no type byte).
func readStartup(r *bufio.Reader) ([]byte, error) {
	hdr, err := r.Peek(4)
	if err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr))
	if n < 8 || n > 10000 {
		return nil, fmt.Errorf("%w: startup packet length %d", errProtocol, n)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return nil, noEOF(err)
	}
	return msg, nil
}
