package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// HeaderAuth carries a server's signature on a request to an agent's
// console endpoint: "v1 EXPIRY NONCE MAC" (EXPIRY in Unix seconds, NONCE
// 32 hex digits, MAC the hex HMAC-SHA256 of the signed string).
const HeaderAuth = "X-Kvmstack-Console-Auth"

// Signature timing: a signature expires ValidFor after it is made, and
// agents accept clocks that differ from the server's by up to Skew.
const (
	ValidFor = 30 * time.Second
	Skew     = 30 * time.Second
)

// maxNonces bounds the replay cache. Only correctly signed requests enter
// it, so only servers can fill it; when full, requests are refused rather
// than replays risked.
const maxNonces = 1 << 16

// ErrUnauthorized means a request's signature is missing, malformed,
// wrong, expired or replayed (HTTP 401).
var ErrUnauthorized = errors.New("console: unauthorized")

// NewKey returns a fresh 256-bit console key in hex: an agent makes one,
// keeps it in its data directory and registers it with its host.
func NewKey() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("console: key: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// ValidKey reports whether k has NewKey's form (64 lower-case hex digits).
func ValidKey(k string) bool {
	if len(k) != 64 {
		return false
	}
	for _, c := range k {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// signed is the string a MAC covers: everything that selects what the
// request does, so a signature cannot be moved to another instance,
// method or range.
func signed(method, path, query, expiry, nonce string) string {
	return strings.Join([]string{"kvmstack-console-v1", method, path, query, expiry, nonce}, "\n")
}

func mac(key []byte, s string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(s))
	return hex.EncodeToString(m.Sum(nil))
}

// Sign adds HeaderAuth to req, signed with key (as made by NewKey) and
// valid for ValidFor from now. Sign it after its URL is final.
func Sign(req *http.Request, key string, now time.Time) error {
	raw, err := hex.DecodeString(key)
	if err != nil || !ValidKey(key) {
		return fmt.Errorf("console: sign: malformed key")
	}
	var n [16]byte
	if _, err := rand.Read(n[:]); err != nil {
		return fmt.Errorf("console: nonce: %w", err)
	}
	exp := strconv.FormatInt(now.Add(ValidFor).Unix(), 10)
	nonce := hex.EncodeToString(n[:])
	sum := mac(raw, signed(req.Method, req.URL.EscapedPath(), req.URL.Query().Encode(), exp, nonce))
	req.Header.Set(HeaderAuth, "v1 "+exp+" "+nonce+" "+sum)
	return nil
}

// Verifier checks signatures made with one key and accepts each nonce
// once. It is safe for concurrent use.
type Verifier struct {
	key []byte
	now func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time // nonce → when it may be forgotten
}

// NewVerifier returns a Verifier for key; now is the clock (nil: time.Now).
func NewVerifier(key string, now func() time.Time) (*Verifier, error) {
	raw, err := hex.DecodeString(key)
	if err != nil || !ValidKey(key) {
		return nil, errors.New("console: malformed key")
	}
	if now == nil {
		now = time.Now
	}
	return &Verifier{key: raw, now: now, seen: map[string]time.Time{}}, nil
}

// Verify checks r's HeaderAuth; every failure wraps ErrUnauthorized.
func (v *Verifier) Verify(r *http.Request) error {
	parts := strings.Split(r.Header.Get(HeaderAuth), " ")
	if len(parts) != 4 || parts[0] != "v1" || len(parts[2]) != 32 || len(parts[3]) != 64 {
		return fmt.Errorf("%w: no valid %s header", ErrUnauthorized, HeaderAuth)
	}
	exp, nonce, sum := parts[1], parts[2], parts[3]
	e, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || e < 0 || strconv.FormatInt(e, 10) != exp {
		return fmt.Errorf("%w: malformed expiry", ErrUnauthorized)
	}
	want := mac(v.key, signed(r.Method, r.URL.EscapedPath(), r.URL.Query().Encode(), exp, nonce))
	if !hmac.Equal([]byte(want), []byte(sum)) {
		return fmt.Errorf("%w: bad signature", ErrUnauthorized)
	}
	now := v.now()
	expiry := time.Unix(e, 0)
	if now.After(expiry.Add(Skew)) {
		return fmt.Errorf("%w: signature expired at %s (clock skew?)", ErrUnauthorized, expiry.UTC().Format(time.RFC3339))
	}
	if expiry.After(now.Add(ValidFor + Skew)) {
		return fmt.Errorf("%w: signature expires too far in the future (clock skew?)", ErrUnauthorized)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.seen[nonce]; ok {
		return fmt.Errorf("%w: replayed signature", ErrUnauthorized)
	}
	if len(v.seen) >= maxNonces/2 {
		for n, t := range v.seen {
			if now.After(t) {
				delete(v.seen, n)
			}
		}
	}
	if len(v.seen) >= maxNonces {
		return fmt.Errorf("%w: too many signatures in flight", ErrUnauthorized)
	}
	v.seen[nonce] = expiry.Add(Skew)
	return nil
}
