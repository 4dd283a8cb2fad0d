package proxy

import (
	"bufio"
	"crypto/hmac"
	"crypto/md5"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/text/secure/precis"
)

// secretKind is how a password is stored in the auth file.
type secretKind int

const (
	secretPlain secretKind = iota
	secretMD5
	secretSCRAM
)

// Secret is one user's password as the auth file holds it. String() never shows it.
type Secret struct {
	kind  secretKind
	plain string // secretPlain
	md5   string // "md5" + hex(md5(password + user)), secretMD5
	scram *scramVerifier
}

func (s Secret) String() string { return "[secret]" }

// scramVerifier is SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey.
type scramVerifier struct {
	iterations int
	salt       []byte
	storedKey  []byte
	serverKey  []byte
}

// parseSecret recognises the three forms PgBouncer's userlist.txt allows.
func parseSecret(user, s string) (Secret, error) {
	switch {
	case strings.HasPrefix(s, "SCRAM-SHA-256$"):
		v, err := parseSCRAMVerifier(s)
		if err != nil {
			return Secret{}, fmt.Errorf("user %q: SCRAM secret: %w", user, err)
		}
		return Secret{kind: secretSCRAM, scram: v}, nil
	case len(s) == 35 && strings.HasPrefix(s, "md5") && isHex(s[3:]):
		return Secret{kind: secretMD5, md5: strings.ToLower(s)}, nil
	}
	return Secret{kind: secretPlain, plain: s}, nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}

func parseSCRAMVerifier(s string) (*scramVerifier, error) {
	rest := strings.TrimPrefix(s, "SCRAM-SHA-256$")
	iterSalt, keys, ok := strings.Cut(rest, "$")
	if !ok {
		return nil, errors.New("want SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")
	}
	iterText, saltText, ok1 := strings.Cut(iterSalt, ":")
	storedText, serverText, ok2 := strings.Cut(keys, ":")
	if !ok1 || !ok2 {
		return nil, errors.New("want SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>")
	}
	v := &scramVerifier{}
	var err error
	if v.iterations, err = strconv.Atoi(iterText); err != nil || v.iterations < 1 {
		return nil, errors.New("bad iteration count")
	}
	if v.salt, err = base64.StdEncoding.DecodeString(saltText); err != nil {
		return nil, errors.New("bad salt")
	}
	if v.storedKey, err = base64.StdEncoding.DecodeString(storedText); err != nil || len(v.storedKey) != sha256.Size {
		return nil, errors.New("bad StoredKey")
	}
	if v.serverKey, err = base64.StdEncoding.DecodeString(serverText); err != nil || len(v.serverKey) != sha256.Size {
		return nil, errors.New("bad ServerKey")
	}
	return v, nil
}

// AuthFile is a parsed PgBouncer userlist.txt: `"user" "secret"` per line, `""` for a quote
// inside a field, lines starting with ';' or '#' are comments.
type AuthFile struct {
	users map[string]Secret

	mu       sync.Mutex
	derived  map[string]*scramVerifier // SCRAM verifiers made for plain-text secrets
	verifier func(plain string) *scramVerifier
}

// LoadAuthFile reads and parses path.
func LoadAuthFile(path string) (*AuthFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth file: %w", err)
	}
	defer f.Close()
	af := newAuthFile()
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == ';' || text[0] == '#' {
			continue
		}
		fields, err := quotedFields(text)
		if err != nil || len(fields) < 2 {
			// The line may hold a secret: say where it is, never what it says.
			return nil, fmt.Errorf("auth file %s line %d: want \"user\" \"secret\"", path, line)
		}
		sec, err := parseSecret(fields[0], fields[1])
		if err != nil {
			return nil, fmt.Errorf("auth file %s line %d: %w", path, line, err)
		}
		af.users[fields[0]] = sec
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("auth file %s: %w", path, err)
	}
	return af, nil
}

func newAuthFile() *AuthFile {
	return &AuthFile{users: map[string]Secret{}, derived: map[string]*scramVerifier{}, verifier: newVerifier}
}

// quotedFields splits `"a" "b""c"` into [a, b"c].
func quotedFields(s string) ([]string, error) {
	var out []string
	for {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			return out, nil
		}
		if s[0] != '"' {
			return nil, errors.New("unquoted field")
		}
		var b strings.Builder
		i := 1
		for {
			if i >= len(s) {
				return nil, errors.New("unterminated quote")
			}
			if s[i] == '"' {
				if i+1 < len(s) && s[i+1] == '"' {
					b.WriteByte('"')
					i += 2
					continue
				}
				i++
				break
			}
			b.WriteByte(s[i])
			i++
		}
		out = append(out, b.String())
		s = s[i:]
	}
}

// Lookup returns a user's secret.
func (a *AuthFile) Lookup(user string) (Secret, bool) {
	if a == nil {
		return Secret{}, false
	}
	s, ok := a.users[user]
	return s, ok
}

// Users returns how many users the file holds.
func (a *AuthFile) Users() int {
	if a == nil {
		return 0
	}
	return len(a.users)
}

// scramFor returns the SCRAM verifier to check a client against: the stored one, or one derived
// once from a plain-text secret (a fresh salt per process).
func (a *AuthFile) scramFor(user string, s Secret) *scramVerifier {
	if s.kind == secretSCRAM {
		return s.scram
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if v, ok := a.derived[user]; ok {
		return v
	}
	v := a.verifier(s.plain)
	a.derived[user] = v
	return v
}

const scramIterations = 4096

func newVerifier(plain string) *scramVerifier {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	return verifierFromPassword(plain, salt, scramIterations)
}

func verifierFromPassword(plain string, salt []byte, iterations int) *scramVerifier {
	sp := saltedPassword(plain, salt, iterations)
	ck := hmacSHA256(sp, "Client Key")
	sk := sha256.Sum256(ck)
	return &scramVerifier{iterations: iterations, salt: salt, storedKey: sk[:], serverKey: hmacSHA256(sp, "Server Key")}
}

func saltedPassword(plain string, salt []byte, iterations int) []byte {
	sp, _ := pbkdf2.Key(sha256.New, normalizePassword(plain), salt, iterations, sha256.Size)
	return sp
}

// saltedCache remembers SCRAM salted passwords: PBKDF2 is deliberately slow (4096 rounds), and
// the proxy logs into the same server, with the same salt, for every session and every switch.
// Keys are hashes of password, salt and iterations.
type saltedCache struct{ m sync.Map }

func (c *saltedCache) get(plain string, salt []byte, iterations int) []byte {
	h := sha256.New()
	h.Write([]byte(plain))
	h.Write([]byte{0})
	h.Write(salt)
	h.Write([]byte(strconv.Itoa(iterations)))
	var key [32]byte
	copy(key[:], h.Sum(nil))
	if v, ok := c.m.Load(key); ok {
		return v.([]byte)
	}
	sp := saltedPassword(plain, salt, iterations)
	c.m.Store(key, sp)
	return sp
}

// normalizePassword applies SASLprep like PostgreSQL does, falling back to the raw password
// where SASLprep refuses it (as the server does).
func normalizePassword(p string) string {
	ascii := true
	for i := 0; i < len(p); i++ {
		if p[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return p
	}
	n, err := precis.OpaqueString.String(p)
	if err != nil {
		return p
	}
	return n
}

func hmacSHA256(key []byte, msg string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// md5Secret is "md5" + hex(md5(password + user)), what pg_authid stores for md5.
func md5Secret(plain, user string) string {
	sum := md5.Sum([]byte(plain + user))
	return "md5" + hex.EncodeToString(sum[:])
}

// md5Response answers an md5 challenge from the stored form: "md5" + hex(md5(hexhash + salt)).
func md5Response(secretMD5 string, salt [4]byte) string {
	sum := md5.Sum(append([]byte(secretMD5[3:]), salt[:]...))
	return "md5" + hex.EncodeToString(sum[:])
}

func xorBytes(a, b []byte) []byte {
	out := make([]byte, len(a))
	for i := range a {
		out[i] = a[i] ^ b[i]
	}
	return out
}

func constEq(a, b []byte) bool { return subtle.ConstantTimeCompare(a, b) == 1 }

func nonce() string {
	b := make([]byte, 18)
	_, _ = rand.Read(b)
	return base64.RawStdEncoding.EncodeToString(b)
}

// scramAttrs parses "a=x,b=y" SCRAM attributes.
func scramAttrs(msg string) map[byte]string {
	m := map[byte]string{}
	for _, part := range strings.Split(msg, ",") {
		if len(part) >= 2 && part[1] == '=' {
			m[part[0]] = part[2:]
		}
	}
	return m
}
