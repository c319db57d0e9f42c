package ratelimit

import (
	"errors"
	"fmt"
	"math"
	"math/bits"
	"time"
)

// ErrInvalid is wrapped by every error about invalid limits.
var ErrInvalid = errors.New("invalid rate limit")

// maxTokens bounds sizes and bursts so that budgets, debts and their sums
// stay far inside int64.
const maxTokens = 1 << 60

// maxRefill bounds a refill time (one day): a longer one is surely a unit
// mistake.
const maxRefill = 24 * time.Hour

// maxDelay caps a computed wait; a worker re-checks when it wakes anyway.
const maxDelay = time.Hour

// TokenBucket configures one bucket: Size tokens, refilled from empty to
// full in RefillTime (so the rate is Size/RefillTime per second), plus
// OneTimeBurst tokens available once at the start and never refilled. Size
// 0 means no limit.
type TokenBucket struct {
	Size         uint64
	RefillTime   time.Duration
	OneTimeBurst uint64
}

// Enabled reports whether the bucket limits anything.
func (b TokenBucket) Enabled() bool { return b.Size != 0 }

// Validate checks the bucket's fields.
func (b TokenBucket) Validate() error {
	switch {
	case b.Size == 0 && (b.RefillTime != 0 || b.OneTimeBurst != 0):
		return fmt.Errorf("%w: refill time or one-time burst without a size", ErrInvalid)
	case b.Size == 0:
		return nil
	case b.Size > maxTokens || b.OneTimeBurst > maxTokens:
		return fmt.Errorf("%w: size %d or burst %d above %d", ErrInvalid, b.Size, b.OneTimeBurst, uint64(maxTokens))
	case b.RefillTime <= 0 || b.RefillTime > maxRefill:
		return fmt.Errorf("%w: refill time %v: want more than 0 and at most %v", ErrInvalid, b.RefillTime, maxRefill)
	}
	return nil
}

// PerSecond is the sustained rate in tokens per second (0 when disabled).
func (b TokenBucket) PerSecond() float64 {
	if !b.Enabled() {
		return 0
	}
	return float64(b.Size) / b.RefillTime.Seconds()
}

// bucket is a TokenBucket's state. budget may go negative: a charge larger
// than what is left is taken in full and repaid by later refills.
type bucket struct {
	cfg    TokenBucket
	budget int64
	burst  uint64
	last   time.Time
	// carry is the remainder of the last refill's division, so refills in
	// small steps add up to exactly what one large step would.
	carry uint64
}

func newBucket(cfg TokenBucket, now time.Time) bucket {
	return bucket{cfg: cfg, budget: int64(cfg.Size), burst: cfg.OneTimeBurst, last: now}
}

// refill adds the tokens earned since the last call, up to Size.
func (b *bucket) refill(now time.Time) {
	if !b.cfg.Enabled() {
		return
	}
	el := now.Sub(b.last)
	if el <= 0 {
		return
	}
	b.last = now
	size, refill := b.cfg.Size, uint64(b.cfg.RefillTime)
	// tokens = (el*size + carry) / refill in 128 bits.
	hi, lo := bits.Mul64(uint64(el), size)
	lo, c := bits.Add64(lo, b.carry, 0)
	hi += c
	if hi >= refill {
		// The quotient does not fit 64 bits: far more than any debt.
		b.budget, b.carry = int64(size), 0
		return
	}
	add, rem := bits.Div64(hi, lo, refill)
	b.carry = rem
	if add >= uint64(int64(size)-b.budget) {
		b.budget, b.carry = int64(size), 0
		return
	}
	b.budget += int64(add)
}

// ready reports whether the bucket admits work now.
func (b *bucket) ready() bool {
	return !b.cfg.Enabled() || b.budget > 0 || b.burst > 0
}

// charge takes n tokens, from the one-time burst first.
func (b *bucket) charge(n uint64) {
	if !b.cfg.Enabled() {
		return
	}
	from := min(b.burst, n)
	b.burst -= from
	n -= from
	b.budget -= int64(min(n, maxTokens))
	// A long run of huge charges cannot wrap: debt is bounded, the
	// excess is forgiven (it would be hours of waiting anyway).
	if b.budget < -maxTokens {
		b.budget = -maxTokens
	}
}

// delay is how long until the bucket admits work again (0: now).
func (b *bucket) delay() time.Duration {
	if b.ready() {
		return 0
	}
	// Time for budget to reach 1: ceil((need*refill - carry) / size).
	need := uint64(1 - b.budget)
	hi, lo := bits.Mul64(need, uint64(b.cfg.RefillTime))
	lo, borrow := bits.Sub64(lo, b.carry, 0)
	hi -= borrow
	if hi >= b.cfg.Size {
		return maxDelay
	}
	q, r := bits.Div64(hi, lo, b.cfg.Size)
	if r != 0 {
		q++
	}
	if q > uint64(maxDelay) || q > math.MaxInt64 {
		return maxDelay
	}
	return time.Duration(q)
}
