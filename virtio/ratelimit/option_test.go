package ratelimit

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestSetOption(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		opts string // k=v,k=v
		want Limits
		err  bool
	}{
		{"bw=2M", Limits{Bandwidth: TokenBucket{Size: 209715, RefillTime: 100 * ms}}, false},
		{"bw=1000", Limits{Bandwidth: TokenBucket{Size: 100, RefillTime: 100 * ms}}, false},
		{"iops=5", Limits{Ops: TokenBucket{Size: 5, RefillTime: time.Second}}, false},
		{"iops=1k,iops_burst=100", Limits{Ops: TokenBucket{Size: 102, RefillTime: 100 * ms, OneTimeBurst: 100}}, false},
		{"bw_burst=1G,bw=10m", Limits{Bandwidth: TokenBucket{Size: 1048576, RefillTime: 100 * ms, OneTimeBurst: 1 << 30}}, false},
		{"bw=0", Limits{}, false},
		{"bw=", Limits{}, true},
		{"bw=-1", Limits{}, true},
		{"bw=1.5M", Limits{}, true},
		{"bw=2T", Limits{}, true},
		{"bw=99999999999G", Limits{}, true},
		{"speed=1", Limits{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.opts, func(t *testing.T) {
			var l Limits
			var err error
			for _, kv := range strings.Split(tt.opts, ",") {
				k, v, _ := strings.Cut(kv, "=")
				if err = l.SetOption(k, v); err != nil {
					break
				}
			}
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("%v does not wrap ErrInvalid", err)
				}
				return
			}
			if l != tt.want {
				t.Fatalf("got %+v, want %+v", l, tt.want)
			}
			if err := l.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestJSON(t *testing.T) {
	tests := []struct {
		in   string
		want Limits
		out  string // canonical form; "" = same as in
		err  bool
	}{
		{`{}`, Limits{}, "", false},
		{`{"bandwidth":{"size":1048576,"refill_time":100}}`,
			Limits{Bandwidth: TokenBucket{Size: 1 << 20, RefillTime: 100 * time.Millisecond}}, "", false},
		{`{"ops":{"size":10,"one_time_burst":5,"refill_time":1000}}`,
			Limits{Ops: TokenBucket{Size: 10, RefillTime: time.Second, OneTimeBurst: 5}}, "", false},
		{`{"bandwidth":{"size":0,"refill_time":0}}`, Limits{}, `{}`, false},
		{`{"bandwidth":null}`, Limits{}, `{}`, false},
		{`{"bandwidth":{"size":1}}`, Limits{}, "", true},
		{`{"bandwidth":{"size":1,"refill_time":1,"rate":3}}`, Limits{}, "", true},
		{`{"iops":{}}`, Limits{}, "", true},
		{`{"ops":{"size":1,"refill_time":86400001}}`, Limits{}, "", true},
		{`{"ops":{"size":-1,"refill_time":1}}`, Limits{}, "", true},
		{`[]`, Limits{}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var l Limits
			err := json.Unmarshal([]byte(tt.in), &l)
			if (err != nil) != tt.err {
				t.Fatalf("err = %v, want error %v", err, tt.err)
			}
			if err != nil {
				return
			}
			if l != tt.want {
				t.Fatalf("got %+v, want %+v", l, tt.want)
			}
			b, err := json.Marshal(l)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.out
			if want == "" {
				want = tt.in
			}
			if string(b) != want {
				t.Fatalf("marshal = %s, want %s", b, want)
			}
		})
	}
}

// FuzzSetOption feeds user-controlled flag values: a value either fails
// with ErrInvalid or yields limits that validate and survive JSON.
func FuzzSetOption(f *testing.F) {
	for _, s := range []string{"bw=2M", "iops=3", "bw_burst=1G", "iops_burst=0", "bw=", "x=1", "bw=18446744073709551615", "iops=9k"} {
		k, v, _ := strings.Cut(s, "=")
		f.Add(k, v)
	}
	f.Fuzz(func(t *testing.T, key, value string) {
		var l Limits
		if err := l.SetOption(key, value); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%v does not wrap ErrInvalid", err)
			}
			return
		}
		if strings.HasSuffix(key, "_burst") {
			return // a burst alone is incomplete until its rate is set
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("%s=%s gave invalid %+v: %v", key, value, l, err)
		}
		roundTrip(t, l)
	})
}

// FuzzLimitsJSON feeds API bodies: they decode to valid limits or fail.
func FuzzLimitsJSON(f *testing.F) {
	for _, s := range []string{`{}`, `{"bandwidth":{"size":1,"refill_time":1}}`, `{"ops":{"size":5,"one_time_burst":9,"refill_time":100}}`, `{"ops":{"size":1}}`, `null`, `{"bandwidth":{"size":1e30}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var l Limits
		if err := json.Unmarshal(b, &l); err != nil {
			return
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("%s decoded to invalid %+v: %v", b, l, err)
		}
		roundTrip(t, l)
	})
}

func roundTrip(t *testing.T, l Limits) {
	t.Helper()
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	var back Limits
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	if back != l {
		t.Fatalf("round trip %+v -> %s -> %+v", l, b, back)
	}
}
