package state

import "errors"

// Sentinel errors let the API layer map a rejected mutation to an HTTP status
// without parsing messages.
var (
	// ErrNotFound means a referenced object does not exist.
	ErrNotFound = errors.New("not found")
	// ErrConflict means the object already exists or the mutation races another
	// one (for example a name that is already taken).
	ErrConflict = errors.New("conflict")
	// ErrInvalid means the request is malformed or violates a rule that does
	// not depend on other objects.
	ErrInvalid = errors.New("invalid")
	// ErrQuota means a project quota would be exceeded.
	ErrQuota = errors.New("quota exceeded")
	// ErrNoCapacity means a placement no longer fits its host or violates
	// a server-group policy.
	ErrNoCapacity = errors.New("placement rejected")
	// ErrExhausted means a pool (a network's addresses, the VNI range) has
	// no free entry left.
	ErrExhausted = errors.New("pool exhausted")
)
