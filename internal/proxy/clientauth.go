package proxy

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// errBadPassword is every authentication failure, so a client learns nothing about which users
// exist or why it failed; the log says more, never the secret.
var errBadPassword = errors.New("password does not match")

// secretFor finds the user's secret in the auth file (or, without one, the source DSN's user).
func (p *Proxy) secretFor(user string) (Secret, bool) {
	p.mu.Lock()
	af := p.auth
	p.mu.Unlock()
	return af.Lookup(user)
}

// authenticate checks the client's password and returns what the proxy logs into the servers
// with.
func (p *Proxy) authenticate(c net.Conn, rd *msgReader, user string, tlsOn bool) (credentials, error) {
	sec, ok := p.secretFor(user)
	if !ok {
		return credentials{}, fmt.Errorf("no such user in the auth file")
	}
	creds := credentials{user: user}
	switch sec.kind {
	case secretPlain:
		creds.password = sec.plain
	case secretMD5:
		creds.md5 = sec.md5
	}
	method := p.cfg.AuthType
	switch {
	case method == "password":
	case sec.kind == secretMD5:
		method = "md5"
	case sec.kind == secretSCRAM:
		method = "scram-sha-256"
	}
	switch method {
	case "password":
		if !tlsOn {
			return creds, errors.New("clear-text passwords are accepted over TLS only (configure a certificate, or use scram-sha-256)")
		}
		if err := writeAll(c, encode(nil, &pgproto3.AuthenticationCleartextPassword{})); err != nil {
			return creds, err
		}
		pw, err := readPassword(rd)
		if err != nil {
			return creds, err
		}
		switch sec.kind {
		case secretPlain:
			if !constEq([]byte(pw), []byte(sec.plain)) {
				return creds, errBadPassword
			}
		case secretMD5:
			if !constEq([]byte(md5Secret(pw, user)), []byte(sec.md5)) {
				return creds, errBadPassword
			}
			creds.password = pw
		case secretSCRAM:
			v := sec.scram
			if !constEq(verifierFromPassword(pw, v.salt, v.iterations).storedKey, v.storedKey) {
				return creds, errBadPassword
			}
			creds.password = pw
		}
		return creds, nil
	case "md5":
		var salt [4]byte
		_, _ = rand.Read(salt[:])
		if err := writeAll(c, encode(nil, &pgproto3.AuthenticationMD5Password{Salt: salt})); err != nil {
			return creds, err
		}
		resp, err := readPassword(rd)
		if err != nil {
			return creds, err
		}
		stored := sec.md5
		if sec.kind == secretPlain {
			stored = md5Secret(sec.plain, user)
		}
		if !constEq([]byte(resp), []byte(md5Response(stored, salt))) {
			return creds, errBadPassword
		}
		return creds, nil
	}
	p.mu.Lock()
	af := p.auth
	p.mu.Unlock()
	v := af.scramFor(user, sec)
	clientKey, err := scramServer(c, rd, v)
	if err != nil {
		return creds, err
	}
	if sec.kind == secretSCRAM {
		creds.verifier, creds.clientKey = v, clientKey
	}
	return creds, nil
}

// readPassword reads a PasswordMessage.
func readPassword(rd *msgReader) (string, error) {
	msg, err := rd.next()
	if err != nil {
		return "", err
	}
	if msg[0] != 'p' {
		return "", fmt.Errorf("%w: expected a password message, got %q", errProtocol, msg[0])
	}
	pw, _, ok := cstring(body(msg))
	if !ok {
		return "", fmt.Errorf("%w: malformed password message", errProtocol)
	}
	return pw, nil
}

// scramServer runs the server side of SCRAM-SHA-256 against verifier v and returns the
// client's ClientKey (which it proved to know), for pass-through to the servers.
func scramServer(c net.Conn, rd *msgReader, v *scramVerifier) ([]byte, error) {
	if err := writeAll(c, encode(nil, &pgproto3.AuthenticationSASL{AuthMechanisms: []string{"SCRAM-SHA-256"}})); err != nil {
		return nil, err
	}
	msg, err := rd.next()
	if err != nil {
		return nil, err
	}
	if msg[0] != 'p' {
		return nil, fmt.Errorf("%w: expected SASLInitialResponse", errProtocol)
	}
	var init pgproto3.SASLInitialResponse
	if err := init.Decode(body(msg)); err != nil {
		return nil, fmt.Errorf("%w: %v", errProtocol, err)
	}
	if init.AuthMechanism != "SCRAM-SHA-256" {
		return nil, fmt.Errorf("client chose SASL mechanism %q", init.AuthMechanism)
	}
	first := string(init.Data)
	// gs2-header: "n,," or "y,," (no channel binding; the proxy does not offer -PLUS).
	var gs2 string
	switch {
	case strings.HasPrefix(first, "n,"), strings.HasPrefix(first, "y,"):
		i := strings.Index(first[2:], ",")
		if i < 0 {
			return nil, fmt.Errorf("%w: malformed SCRAM client-first-message", errProtocol)
		}
		gs2 = first[:2+i+1]
	default:
		return nil, errors.New("client asked for SCRAM channel binding, which the proxy does not offer")
	}
	bare := first[len(gs2):]
	clientNonce := scramAttrs(bare)['r']
	if clientNonce == "" {
		return nil, fmt.Errorf("%w: SCRAM client-first-message without a nonce", errProtocol)
	}
	fullNonce := clientNonce + nonce()
	serverFirst := "r=" + fullNonce + ",s=" + base64.StdEncoding.EncodeToString(v.salt) + ",i=" + strconv.Itoa(v.iterations)
	if err := writeAll(c, encode(nil, &pgproto3.AuthenticationSASLContinue{Data: []byte(serverFirst)})); err != nil {
		return nil, err
	}
	msg, err = rd.next()
	if err != nil {
		return nil, err
	}
	if msg[0] != 'p' {
		return nil, fmt.Errorf("%w: expected SASLResponse", errProtocol)
	}
	final := string(body(msg))
	pi := strings.LastIndex(final, ",p=")
	if pi < 0 {
		return nil, fmt.Errorf("%w: SCRAM client-final-message without a proof", errProtocol)
	}
	withoutProof := final[:pi]
	a := scramAttrs(withoutProof)
	if a['r'] != fullNonce {
		return nil, errors.New("SCRAM nonce mismatch")
	}
	if cb, err := base64.StdEncoding.DecodeString(a['c']); err != nil || string(cb) != gs2 {
		return nil, errors.New("SCRAM channel-binding data mismatch")
	}
	proof, err := base64.StdEncoding.DecodeString(final[pi+3:])
	if err != nil || len(proof) != sha256.Size {
		return nil, errors.New("malformed SCRAM proof")
	}
	authMsg := bare + "," + serverFirst + "," + withoutProof
	clientKey := xorBytes(proof, hmacSHA256(v.storedKey, authMsg))
	sum := sha256.Sum256(clientKey)
	if !constEq(sum[:], v.storedKey) {
		return nil, errBadPassword
	}
	sig := hmacSHA256(v.serverKey, authMsg)
	if err := writeAll(c, encode(nil, &pgproto3.AuthenticationSASLFinal{Data: []byte("v=" + base64.StdEncoding.EncodeToString(sig))})); err != nil {
		return nil, err
	}
	return clientKey, nil
}
