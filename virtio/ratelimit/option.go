package ratelimit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// OptionKeys are the keys of the command-line syntax (--disk and --net
// take them beside their own keys): bw and iops are sustained rates per
// second, bw_burst and iops_burst one-time bursts.
var OptionKeys = []string{"bw", "bw_burst", "iops", "iops_burst"}

// rateRefill is the refill time of a bucket made from a rate: the bucket
// holds a tenth of a second's worth, so a limited device bursts little
// above its rate over any second.
const rateRefill = 100 * time.Millisecond

// SetOption applies one key=value of the command-line syntax. Values are
// decimal, with an optional binary suffix K, M or G (2M = 2 MiB/s for bw).
// A rate of 0 removes the limit.
func (l *Limits) SetOption(key, value string) error {
	n, err := parseAmount(value)
	if err != nil {
		return fmt.Errorf("%w: %s=%q: %w", ErrInvalid, key, value, err)
	}
	switch key {
	case "bw":
		l.Bandwidth = fromRate(n, l.Bandwidth.OneTimeBurst)
	case "iops":
		l.Ops = fromRate(n, l.Ops.OneTimeBurst)
	case "bw_burst":
		l.Bandwidth.OneTimeBurst = n
	case "iops_burst":
		l.Ops.OneTimeBurst = n
	default:
		return fmt.Errorf("%w: unknown key %q (want %s)", ErrInvalid, key, strings.Join(OptionKeys, ", "))
	}
	return nil
}

// fromRate is a bucket for rate tokens per second.
func fromRate(rate, burst uint64) TokenBucket {
	switch {
	case rate == 0:
		return TokenBucket{OneTimeBurst: burst}
	case rate < uint64(time.Second/rateRefill):
		return TokenBucket{Size: rate, RefillTime: time.Second, OneTimeBurst: burst}
	}
	return TokenBucket{Size: rate / uint64(time.Second/rateRefill), RefillTime: rateRefill, OneTimeBurst: burst}
}

// parseAmount reads a decimal with an optional K/M/G (1024-based) suffix.
func parseAmount(s string) (uint64, error) {
	shift := 0
	if s != "" {
		switch s[len(s)-1] {
		case 'k', 'K':
			shift = 10
		case 'm', 'M':
			shift = 20
		case 'g', 'G':
			shift = 30
		}
		if shift != 0 {
			s = s[:len(s)-1]
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, err
	}
	if n > maxTokens>>shift {
		return 0, fmt.Errorf("above %d", uint64(maxTokens))
	}
	return n << shift, nil
}

// tokenBucketJSON is the wire form, Firecracker's: the refill time in
// milliseconds.
type tokenBucketJSON struct {
	Size         uint64 `json:"size"`
	OneTimeBurst uint64 `json:"one_time_burst,omitempty"`
	RefillTime   uint64 `json:"refill_time"`
}

// MarshalJSON writes {"size":N,"one_time_burst":N,"refill_time":MS}.
func (b TokenBucket) MarshalJSON() ([]byte, error) {
	return json.Marshal(tokenBucketJSON{Size: b.Size, OneTimeBurst: b.OneTimeBurst, RefillTime: uint64(b.RefillTime / time.Millisecond)})
}

// UnmarshalJSON reads the form MarshalJSON writes, rejecting unknown
// fields, and validates the bucket.
func (b *TokenBucket) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var w tokenBucketJSON
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("%w: token bucket: %w", ErrInvalid, err)
	}
	if w.RefillTime > uint64(maxRefill/time.Millisecond) {
		return fmt.Errorf("%w: refill time %d ms above %v", ErrInvalid, w.RefillTime, maxRefill)
	}
	tb := TokenBucket{Size: w.Size, OneTimeBurst: w.OneTimeBurst, RefillTime: time.Duration(w.RefillTime) * time.Millisecond}
	if err := tb.Validate(); err != nil {
		return err
	}
	*b = tb
	return nil
}

// limitsJSON is Limits' wire form; absent buckets do not limit.
type limitsJSON struct {
	Bandwidth *TokenBucket `json:"bandwidth,omitempty"`
	Ops       *TokenBucket `json:"ops,omitempty"`
}

// MarshalJSON writes {"bandwidth":{...},"ops":{...}}, leaving out buckets
// that do not limit.
func (l Limits) MarshalJSON() ([]byte, error) {
	var w limitsJSON
	if l.Bandwidth != (TokenBucket{}) {
		w.Bandwidth = &l.Bandwidth
	}
	if l.Ops != (TokenBucket{}) {
		w.Ops = &l.Ops
	}
	return json.Marshal(w)
}

// UnmarshalJSON reads the form MarshalJSON writes, rejecting unknown
// fields.
func (l *Limits) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var w limitsJSON
	if err := dec.Decode(&w); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	var out Limits
	if w.Bandwidth != nil {
		out.Bandwidth = *w.Bandwidth
	}
	if w.Ops != nil {
		out.Ops = *w.Ops
	}
	*l = out
	return nil
}
