package identity

import (
	"errors"
	"fmt"

	"golang.org/x/crypto/bcrypt"
)

// ErrBadCredentials is returned for an unknown user or a wrong password; the
// two are not distinguished so user names cannot be probed.
var ErrBadCredentials = errors.New("invalid user name or password")

// HashPassword returns a bcrypt hash of pw at the given cost (0 = default).
func HashPassword(pw string, cost int) (string, error) {
	if len(pw) < 8 || len(pw) > 72 {
		return "", fmt.Errorf("password must be 8 to 72 bytes")
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	h, err := bcrypt.GenerateFromPassword([]byte(pw), cost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// CheckPassword compares pw with a hash made by HashPassword.
func CheckPassword(hash, pw string) error {
	if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(pw)); err != nil {
		return ErrBadCredentials
	}
	return nil
}
