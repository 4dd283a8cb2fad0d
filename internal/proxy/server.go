package proxy

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Role names the two servers.
type Role int

const (
	Source Role = iota
	Target
)

func (r Role) String() string {
	if r == Target {
		return "target"
	}
	return "source"
}

// ParseRole reads "source" or "target".
func ParseRole(s string) (Role, error) {
	switch strings.ToLower(s) {
	case "source":
		return Source, nil
	case "target":
		return Target, nil
	}
	return 0, fmt.Errorf("%q: want source or target", s)
}

// endpoint is one server as its DSN describes it.
type endpoint struct {
	role     Role
	cfg      *pgconn.Config
	database string
	timeout  time.Duration
	salted   saltedCache
}

func newEndpoint(role Role, dsn string, timeout time.Duration) (*endpoint, error) {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		// pgconn's parse errors redact the password.
		return nil, fmt.Errorf("%s DSN: %w", role, err)
	}
	return &endpoint{role: role, cfg: cfg, database: cfg.Database, timeout: timeout}, nil
}

// dialTarget is one address to try and how to secure it.
type dialTarget struct {
	host string
	port uint16
	tls  *tls.Config
}

func (e *endpoint) targets() []dialTarget {
	ts := []dialTarget{{host: e.cfg.Host, port: e.cfg.Port, tls: e.cfg.TLSConfig}}
	for _, f := range e.cfg.Fallbacks {
		ts = append(ts, dialTarget{host: f.Host, port: f.Port, tls: f.TLSConfig})
	}
	return ts
}

// dial opens a connection to the first address that accepts one, with TLS as the DSN's sslmode
// asks (prefer: TLS if offered, else plain; require and verify-*: TLS or nothing).
func (e *endpoint) dial(ctx context.Context) (net.Conn, dialTarget, error) {
	var errs []error
	for _, t := range e.targets() {
		c, err := dialOne(ctx, t, e.timeout)
		if err == nil {
			return c, t, nil
		}
		errs = append(errs, err)
	}
	return nil, dialTarget{}, fmt.Errorf("connect to %s server: %w", e.role, errors.Join(errs...))
}

func dialOne(ctx context.Context, t dialTarget, timeout time.Duration) (net.Conn, error) {
	network, addr := "tcp", net.JoinHostPort(t.host, strconv.Itoa(int(t.port)))
	if strings.HasPrefix(t.host, "/") {
		network, addr = "unix", fmt.Sprintf("%s/.s.PGSQL.%d", t.host, t.port)
	}
	d := net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if t.tls == nil {
		return c, nil
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
	if err := writeAll(c, []byte{0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f}); err != nil { // SSLRequest
		c.Close()
		return nil, err
	}
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		c.Close()
		return nil, err
	}
	if b[0] != 'S' {
		c.Close()
		return nil, fmt.Errorf("%s: server refused TLS", addr)
	}
	tc := tls.Client(c, t.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("%s: TLS handshake: %w", addr, err)
	}
	_ = c.SetDeadline(time.Time{})
	return tc, nil
}

// credentials are what the proxy logs into a server with.
type credentials struct {
	user string
	// password is a plain-text password (from the auth file or the DSN), "" when not known.
	password string
	// md5 is the stored md5 form, when the auth file holds only that.
	md5 string
	// verifier and clientKey allow SCRAM pass-through: the client proved it knows ClientKey for
	// this verifier, so the proxy can answer the server's challenge if the server holds the same
	// verifier (same salt and iterations).
	verifier  *scramVerifier
	clientKey []byte
}

// serverError is an ErrorResponse from a server during login, relayed to the client as is.
type serverError struct {
	role Role
	resp *pgproto3.ErrorResponse
}

func (e *serverError) Error() string {
	return fmt.Sprintf("%s server: %s: %s (SQLSTATE %s)", e.role, e.resp.Severity, e.resp.Message, e.resp.Code)
}

// login opens a connection and authenticates as creds.user with the given startup parameters.
func (e *endpoint) login(ctx context.Context, creds credentials, params map[string]string) (*serverConn, error) {
	c, t, err := e.dial(ctx)
	if err != nil {
		return nil, err
	}
	sc := &serverConn{role: e.role, conn: c, dialed: t, params: map[string]string{}, txStatus: 'I', prepared: map[string]*stmt{},
		connectedAt: time.Now()}
	sc.rd = newMsgReader(c, &backendTypes)
	_ = c.SetDeadline(time.Now().Add(e.timeout))
	if err := sc.startup(creds, params, &e.salted); err != nil {
		c.Close()
		var se *serverError
		if errors.As(err, &se) {
			se.role = e.role
			return nil, se
		}
		return nil, fmt.Errorf("log into %s server as %q: %w", e.role, creds.user, err)
	}
	_ = c.SetDeadline(time.Time{})
	return sc, nil
}

func (sc *serverConn) startup(creds credentials, params map[string]string, salted *saltedCache) error {
	sm := &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: params}
	if err := writeAll(sc.conn, encode(nil, sm)); err != nil {
		return err
	}
	var scram *scramClient
	for {
		msg, err := sc.rd.next()
		if err != nil {
			return err
		}
		switch msg[0] {
		case 'R':
			if len(msg) < 9 {
				return errProtocol
			}
			code := binary.BigEndian.Uint32(msg[5:9])
			var reply []byte
			switch code {
			case 0: // AuthenticationOk
				continue
			case 3: // cleartext
				if creds.password == "" {
					return fmt.Errorf("the server asks for a clear-text password, and the auth file holds only a hash for this user: put the plain password in the auth file")
				}
				reply = encode(nil, &pgproto3.PasswordMessage{Password: creds.password})
			case 5: // md5
				if len(msg) < 13 {
					return errProtocol
				}
				var salt [4]byte
				copy(salt[:], msg[9:13])
				m5 := creds.md5
				if creds.password != "" {
					m5 = md5Secret(creds.password, creds.user)
				}
				if m5 == "" {
					return fmt.Errorf("the server asks for md5, and the auth file holds a SCRAM secret for this user: put the plain password in the auth file, or use SCRAM on the server")
				}
				reply = encode(nil, &pgproto3.PasswordMessage{Password: md5Response(m5, salt)})
			case 10: // SASL
				mechs := strings.Split(strings.TrimRight(string(msg[9:]), "\x00"), "\x00")
				if !contains(mechs, "SCRAM-SHA-256") {
					return fmt.Errorf("the server offers SASL mechanisms %v, not SCRAM-SHA-256", mechs)
				}
				scram = &scramClient{creds: creds, nonce: nonce(), salted: salted}
				reply = encode(nil, &pgproto3.SASLInitialResponse{AuthMechanism: "SCRAM-SHA-256", Data: scram.first()})
			case 11: // SASL continue
				if scram == nil {
					return errProtocol
				}
				final, err := scram.final(string(msg[9:]))
				if err != nil {
					return err
				}
				reply = encode(nil, &pgproto3.SASLResponse{Data: final})
			case 12: // SASL final
				if scram == nil || !scram.verify(string(msg[9:])) {
					return fmt.Errorf("the server's SCRAM signature does not match: it is not the server the DSN names, or its verifier changed")
				}
				continue
			default:
				return fmt.Errorf("the server asks for authentication method %d, which the proxy does not support (use scram-sha-256, md5 or password)", code)
			}
			if err := writeAll(sc.conn, reply); err != nil {
				return err
			}
		case 'E':
			var er pgproto3.ErrorResponse
			if err := er.Decode(body(msg)); err != nil {
				return err
			}
			return &serverError{resp: &er}
		case 'S':
			name, rest, _ := cstring(body(msg))
			val, _, _ := cstring(rest)
			sc.params[name] = val
		case 'K':
			if len(msg) < 13 {
				return errProtocol
			}
			sc.pid = binary.BigEndian.Uint32(msg[5:9])
			sc.secret = append([]byte(nil), msg[9:]...)
		case 'N', 'v':
		case 'Z':
			sc.txStatus = msg[5]
			return nil
		default:
			return fmt.Errorf("%w: message %q during login", errProtocol, msg[0])
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// scramClient is the client side of SCRAM-SHA-256 (no channel binding), with a password or by
// pass-through of the client's ClientKey.
type scramClient struct {
	creds     credentials
	salted    *saltedCache
	nonce     string
	firstBare string
	authMsg   string
	serverKey []byte
}

func (s *scramClient) first() []byte {
	s.firstBare = "n=,r=" + s.nonce
	return []byte("n,," + s.firstBare)
}

func (s *scramClient) final(serverFirst string) ([]byte, error) {
	a := scramAttrs(serverFirst)
	if !strings.HasPrefix(a['r'], s.nonce) {
		return nil, errors.New("SCRAM: the server's nonce does not extend ours")
	}
	salt, err := base64.StdEncoding.DecodeString(a['s'])
	if err != nil {
		return nil, errors.New("SCRAM: bad salt from server")
	}
	iter, err := strconv.Atoi(a['i'])
	if err != nil || iter < 1 {
		return nil, errors.New("SCRAM: bad iteration count from server")
	}
	var clientKey, storedKey []byte
	switch {
	case s.creds.password != "":
		sp := s.salted.get(s.creds.password, salt, iter)
		clientKey = hmacSHA256(sp, "Client Key")
		sum := sha256.Sum256(clientKey)
		storedKey = sum[:]
		s.serverKey = hmacSHA256(sp, "Server Key")
	case s.creds.clientKey != nil && s.creds.verifier != nil:
		v := s.creds.verifier
		if v.iterations != iter || !hmac.Equal(v.salt, salt) {
			return nil, errors.New("SCRAM pass-through needs the server to hold the same verifier as the auth file (its salt or iteration count differs): " +
				"copy the verifier from the server's pg_authid, or put the plain password in the auth file")
		}
		clientKey, storedKey, s.serverKey = s.creds.clientKey, v.storedKey, v.serverKey
	default:
		return nil, errors.New("the server asks for SCRAM and the proxy has no password for this user: put the plain password or the server's SCRAM verifier in the auth file, and let the client log in with SCRAM")
	}
	withoutProof := "c=biws,r=" + a['r']
	s.authMsg = s.firstBare + "," + serverFirst + "," + withoutProof
	proof := xorBytes(clientKey, hmacSHA256(storedKey, s.authMsg))
	return []byte(withoutProof + ",p=" + base64.StdEncoding.EncodeToString(proof)), nil
}

func (s *scramClient) verify(serverFinal string) bool {
	got, err := base64.StdEncoding.DecodeString(scramAttrs(serverFinal)['v'])
	return err == nil && s.serverKey != nil && hmac.Equal(got, hmacSHA256(s.serverKey, s.authMsg))
}

// sendCancel asks a server to cancel the query running on backend pid, on a new connection to
// the same address and with the same TLS the session's connection used.
func sendCancel(ctx context.Context, t dialTarget, pid uint32, secret []byte, timeout time.Duration) error {
	c, err := dialOne(ctx, t, timeout)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	msg := encode(nil, &pgproto3.CancelRequest{ProcessID: pid, SecretKey: secret})
	if err := writeAll(c, msg); err != nil {
		return err
	}
	// The server closes the connection when done; wait for that so the cancel is delivered.
	var b [1]byte
	_, _ = c.Read(b[:])
	return nil
}
