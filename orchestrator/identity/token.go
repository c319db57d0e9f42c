package identity

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Token errors; all map to 401.
var (
	ErrTokenMalformed = errors.New("token is malformed")
	ErrTokenSignature = errors.New("token signature is invalid")
	ErrTokenExpired   = errors.New("token has expired")
	ErrTokenRevoked   = errors.New("token has been revoked")
)

// DefaultTokenTTL is how long an issued token is valid.
const DefaultTokenTTL = time.Hour

// Claims is what a token asserts. Roles are not in the token: they are looked
// up at every request, so removing a role takes effect at once.
type Claims struct {
	ID        string    `json:"jti"`
	UserID    string    `json:"sub"`
	ProjectID string    `json:"project"`
	KeyID     string    `json:"kid"`
	IssuedAt  time.Time `json:"iat"`
	ExpiresAt time.Time `json:"exp"`
	// Service marks a token a server minted for itself (peer blob fetches).
	Service bool `json:"svc,omitempty"`
}

// Key is a signing secret with its id.
type Key struct {
	ID     string
	Secret []byte
}

// NewID returns a random 128-bit hex id.
func NewID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return hex.EncodeToString(b[:])
}

// NewSecret returns a fresh 256-bit signing secret.
func NewSecret() []byte {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err))
	}
	return b
}

var b64 = base64.RawURLEncoding

// Sign returns "payload.signature" where the signature is HMAC-SHA256 over
// the encoded payload with the key.
func Sign(c Claims, k Key) (string, error) {
	c.KeyID = k.ID
	body, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	p := b64.EncodeToString(body)
	return p + "." + b64.EncodeToString(mac(k.Secret, p)), nil
}

func mac(secret []byte, payload string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(payload))
	return m.Sum(nil)
}

// KeyLookup returns the secret for a key id, or nil if the key is unknown
// (never issued, or retired by rotation).
type KeyLookup func(id string) []byte

// Verify checks the token's signature with the key it names, its expiry at
// now, and revocation.
func Verify(tok string, keys KeyLookup, revoked func(id string) bool, now time.Time) (Claims, error) {
	var c Claims
	if len(tok) > 4096 {
		return c, ErrTokenMalformed
	}
	p, sig, ok := strings.Cut(tok, ".")
	if !ok {
		return c, ErrTokenMalformed
	}
	body, err := b64.DecodeString(p)
	if err != nil {
		return c, ErrTokenMalformed
	}
	want, err := b64.DecodeString(sig)
	if err != nil {
		return c, ErrTokenMalformed
	}
	if err := json.Unmarshal(body, &c); err != nil || c.ID == "" || c.KeyID == "" {
		return Claims{}, ErrTokenMalformed
	}
	secret := keys(c.KeyID)
	if secret == nil || !hmac.Equal(mac(secret, p), want) {
		return Claims{}, ErrTokenSignature
	}
	if !now.Before(c.ExpiresAt) {
		return Claims{}, ErrTokenExpired
	}
	if revoked(c.ID) {
		return Claims{}, ErrTokenRevoked
	}
	return c, nil
}
