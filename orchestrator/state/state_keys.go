package state

import (
	"fmt"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

const (
	tableKeys    = "signing_keys"
	tableRevoked = "revoked_tokens"
)

// SigningKey is a cluster token-signing secret. The newest key signs; older
// keys still verify until they are retired by a later rotation.
type SigningKey struct {
	ID        string    `json:"id"`
	Secret    []byte    `json:"secret"`
	CreatedAt time.Time `json:"created_at"`
}

// RevokedToken marks a token id as unusable until its expiry, after which the
// entry is pruned (an expired token is rejected anyway).
type RevokedToken struct {
	ID        string    `json:"id"`
	ExpiresAt time.Time `json:"expires_at"`
}

func init() {
	register(&memdb.TableSchema{Name: tableKeys, Indexes: map[string]*memdb.IndexSchema{"id": idIndex("ID")}},
		func() any { return &SigningKey{} })
	register(&memdb.TableSchema{Name: tableRevoked, Indexes: map[string]*memdb.IndexSchema{"id": idIndex("ID")}},
		func() any { return &RevokedToken{} })
}

// RotateKey adds a new signing key and retires keys created before
// retireBefore (tokens they signed have expired by then).
func (w *WriteTxn) RotateKey(k *SigningKey, retireBefore time.Time) error {
	if err := checkID("key", k.ID); err != nil {
		return err
	}
	if len(k.Secret) < 32 {
		return fmt.Errorf("signing key must have at least 32 bytes: %w", ErrInvalid)
	}
	if x, err := first[SigningKey](w.tx, nil, tableKeys, "id", k.ID); err != nil || x != nil {
		return firstErr(err, fmt.Errorf("key %s exists: %w", k.ID, ErrConflict))
	}
	keys, err := all[SigningKey](w.tx, nil, tableKeys, "id")
	if err != nil {
		return err
	}
	for _, old := range keys {
		if old.CreatedAt.Before(retireBefore) {
			if err := w.delete(tableKeys, old); err != nil {
				return err
			}
		}
	}
	c := *k
	c.CreatedAt = fixedTime(c.CreatedAt)
	return w.insert(tableKeys, &c)
}

// RevokeToken records a revoked token id and prunes entries that expired
// before now.
func (w *WriteTxn) RevokeToken(t *RevokedToken, now time.Time) error {
	if t.ID == "" || len(t.ID) > 64 {
		return fmt.Errorf("token id is malformed: %w", ErrInvalid)
	}
	olds, err := all[RevokedToken](w.tx, nil, tableRevoked, "id")
	if err != nil {
		return err
	}
	for _, o := range olds {
		if o.ExpiresAt.Before(now) {
			if err := w.delete(tableRevoked, o); err != nil {
				return err
			}
		}
	}
	c := *t
	c.ExpiresAt = fixedTime(c.ExpiresAt)
	return w.insert(tableRevoked, &c)
}

// SigningKeys returns all keys, oldest first.
func (r *ReadTxn) SigningKeys() ([]*SigningKey, error) {
	keys, err := all[SigningKey](r.tx, r.ws, tableKeys, "id")
	if err != nil {
		return nil, err
	}
	sortBy(keys, func(a, b *SigningKey) bool {
		return a.CreatedAt.Before(b.CreatedAt) || (a.CreatedAt.Equal(b.CreatedAt) && a.ID < b.ID)
	})
	return keys, nil
}

// SigningKey returns one key by id.
func (r *ReadTxn) SigningKey(id string) (*SigningKey, error) {
	return first[SigningKey](r.tx, r.ws, tableKeys, "id", id)
}

// TokenRevoked reports whether the token id has been revoked.
func (r *ReadTxn) TokenRevoked(id string) bool {
	t, err := first[RevokedToken](r.tx, r.ws, tableRevoked, "id", id)
	return err != nil || t != nil
}
