package console

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	key, err := NewKey()
	if err != nil || !ValidKey(key) {
		t.Fatalf("NewKey: %q %v", key, err)
	}
	other, _ := NewKey()
	t0 := time.Unix(1_800_000_000, 0)
	newReq := func(method, u string) *http.Request {
		r, err := http.NewRequest(method, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	const u = "http://agent:8482/v1/instances/abc/console?follow=1&tail=10"
	tests := []struct {
		name string
		// signKey signs newReq(method, u) at t0; tamper changes the request
		// the agent sees, which it verifies at t0+after.
		signKey string
		tamper  func(r *http.Request) *http.Request
		after   time.Duration
		ok      bool
	}{
		{"valid", key, nil, 0, true},
		{"valid at the edge of the skew", key, nil, ValidFor + Skew, true},
		{"expired", key, nil, ValidFor + Skew + time.Second, false},
		{"from a server clock far ahead", key, nil, -(Skew + time.Second), false},
		{"other key", other, nil, 0, false},
		{"other instance", key, func(r *http.Request) *http.Request {
			x := newReq(r.Method, strings.Replace(u, "/abc/", "/abd/", 1))
			x.Header = r.Header
			return x
		}, 0, false},
		{"other range", key, func(r *http.Request) *http.Request {
			x := newReq(r.Method, strings.Replace(u, "tail=10", "tail=11", 1))
			x.Header = r.Header
			return x
		}, 0, false},
		{"extra parameter", key, func(r *http.Request) *http.Request {
			x := newReq(r.Method, u+"&offset=1")
			x.Header = r.Header
			return x
		}, 0, false},
		{"other method", key, func(r *http.Request) *http.Request {
			x := newReq(http.MethodPost, u)
			x.Header = r.Header
			return x
		}, 0, false},
		{"no header", key, func(r *http.Request) *http.Request { r.Header.Del(HeaderAuth); return r }, 0, false},
		{"garbage header", key, func(r *http.Request) *http.Request { r.Header.Set(HeaderAuth, "v1 x y z"); return r }, 0, false},
		{"expiry rewritten", key, func(r *http.Request) *http.Request {
			p := strings.Split(r.Header.Get(HeaderAuth), " ")
			p[1] = "0" + p[1]
			r.Header.Set(HeaderAuth, strings.Join(p, " "))
			return r
		}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newReq(http.MethodGet, u)
			if err := Sign(r, tc.signKey, t0); err != nil {
				t.Fatal(err)
			}
			if tc.tamper != nil {
				r = tc.tamper(r)
			}
			v, err := NewVerifier(key, func() time.Time { return t0.Add(tc.after) })
			if err != nil {
				t.Fatal(err)
			}
			err = v.Verify(r)
			if (err == nil) != tc.ok || err != nil && !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Verify: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestReplayRefused(t *testing.T) {
	key, _ := NewKey()
	v, _ := NewVerifier(key, nil)
	r, _ := http.NewRequest(http.MethodPost, "http://a/v1/instances/x/console", nil)
	if err := Sign(r, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(r); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(r); !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "replayed") {
		t.Fatalf("replay: %v", err)
	}
	// A new signature of the same request is a new nonce.
	if err := Sign(r, key, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := v.Verify(r); err != nil {
		t.Fatalf("second signature: %v", err)
	}
}

func TestKeys(t *testing.T) {
	for k, ok := range map[string]bool{
		strings.Repeat("a", 64): true, strings.Repeat("A", 64): false, strings.Repeat("a", 63): false, strings.Repeat("g", 64): false, "": false,
	} {
		if ValidKey(k) != ok {
			t.Errorf("ValidKey(%q) != %v", k, ok)
		}
		if _, err := NewVerifier(k, nil); (err == nil) != ok {
			t.Errorf("NewVerifier(%q): %v", k, err)
		}
	}
	r, _ := http.NewRequest(http.MethodGet, "http://a/", nil)
	if err := Sign(r, "short", time.Now()); err == nil {
		t.Error("Sign with a malformed key succeeded")
	}
}
