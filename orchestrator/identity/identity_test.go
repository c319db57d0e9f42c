package identity

import (
	"errors"
	"testing"
	"time"
)

func TestPassword(t *testing.T) {
	h, err := HashPassword("correct horse", 4)
	if err != nil {
		t.Fatal(err)
	}
	if CheckPassword(h, "correct horse") != nil || !errors.Is(CheckPassword(h, "wrong horse"), ErrBadCredentials) {
		t.Fatal("password check wrong")
	}
	if _, err := HashPassword("short", 4); err == nil {
		t.Fatal("short password accepted")
	}
}

func TestTokenLifecycle(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k1 := Key{ID: "k1", Secret: NewSecret()}
	k2 := Key{ID: "k2", Secret: NewSecret()}
	keys := map[string][]byte{"k1": k1.Secret}
	lookup := func(id string) []byte { return keys[id] }
	revoked := map[string]bool{}
	isRevoked := func(id string) bool { return revoked[id] }
	c := Claims{ID: NewID(), UserID: "u", ProjectID: "p", IssuedAt: now, ExpiresAt: now.Add(DefaultTokenTTL)}
	tok, err := Sign(c, k1)
	if err != nil {
		t.Fatal(err)
	}
	forged, _ := Sign(c, Key{ID: "k1", Secret: NewSecret()})
	tampered := "x" + tok[1:]

	// Rotation: k2 signs new tokens, k1 still verifies until retired.
	keys["k2"] = k2.Secret
	tok2, _ := Sign(Claims{ID: NewID(), UserID: "u", ProjectID: "p", ExpiresAt: now.Add(time.Hour)}, k2)

	tests := []struct {
		name string
		tok  string
		at   time.Time
		prep func()
		want error
	}{
		{"valid", tok, now.Add(time.Minute), nil, nil},
		{"valid with new key", tok2, now, nil, nil},
		{"expired", tok, now.Add(DefaultTokenTTL), nil, ErrTokenExpired},
		{"forged", forged, now, nil, ErrTokenSignature},
		{"tampered", tampered, now, nil, nil},
		{"garbage", "abc", now, nil, ErrTokenMalformed},
		{"retired key", tok, now, func() { delete(keys, "k1") }, ErrTokenSignature},
		{"revoked", tok2, now, func() { revoked[mustClaims(t, tok2, lookup).ID] = true }, ErrTokenRevoked},
	}
	for _, tc := range tests {
		if tc.prep != nil {
			tc.prep()
		}
		_, err := Verify(tc.tok, lookup, isRevoked, tc.at)
		if tc.name == "tampered" {
			if err == nil {
				t.Errorf("tampered token accepted")
			}
			continue
		}
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

func mustClaims(t *testing.T, tok string, keys KeyLookup) Claims {
	c, err := Verify(tok, keys, func(string) bool { return false }, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPolicyTable(t *testing.T) {
	sub := func(role string, system bool) *Subject {
		return &Subject{Claims: Claims{ProjectID: "p1"}, Role: role, System: system}
	}
	tests := []struct {
		action Action
		s      *Subject
		target string
		ok     bool
	}{
		{"auth:token:create", nil, "", true},
		{"instance:list", nil, "", false},
		{"instance:list", sub("reader", false), "p1", true},
		{"instance:create", sub("reader", false), "p1", false},
		{"instance:create", sub("member", false), "p1", true},
		{"instance:create", sub("member", false), "p2", false},
		{"instance:delete", sub("admin", false), "p2", false},
		{"instance:delete", sub("admin", true), "p2", true},
		{"project:create", sub("admin", false), "", false},
		{"project:create", sub("member", true), "", false},
		{"project:create", sub("admin", true), "", true},
		{"host:list", sub("reader", true), "", true},
		{"flavor:list", sub("", false), "", true},
		{"image:create", sub("", false), "p1", false},
		{"no:such:action", sub("admin", true), "", false},
	}
	for _, tc := range tests {
		err := Authorize(tc.action, tc.s, tc.target)
		if (err == nil) != tc.ok {
			t.Errorf("%s by %+v on %q: got %v, want ok=%v", tc.action, tc.s, tc.target, err, tc.ok)
		}
	}
	for a, r := range Policy {
		if r.Scope >= ProjectScope && roleRank[r.Role] == 0 {
			t.Errorf("policy %s has no valid role", a)
		}
	}
}

func FuzzVerify(f *testing.F) {
	k := Key{ID: "k1", Secret: make([]byte, 32)}
	tok, _ := Sign(Claims{ID: "a", ExpiresAt: time.Unix(2e9, 0)}, k)
	f.Add(tok)
	f.Add("a.b")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Verify(s, func(id string) []byte {
			if id == "k1" {
				return k.Secret
			}
			return nil
		}, func(string) bool { return false }, time.Unix(1e9, 0))
		if err == nil && (c.KeyID != "k1" || c.ID == "") {
			t.Fatalf("accepted %q with claims %+v", s, c)
		}
	})
}
