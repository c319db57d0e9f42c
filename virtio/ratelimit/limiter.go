package ratelimit

import (
	"fmt"
	"sync"
	"time"
)

// Limits is one limiter's configuration: bytes and operations. A zero
// bucket does not limit.
type Limits struct {
	// Bandwidth counts bytes of data (request payloads, frames).
	Bandwidth TokenBucket
	// Ops counts requests (block) or packets (net).
	Ops TokenBucket
}

// Enabled reports whether either bucket limits anything.
func (l Limits) Enabled() bool { return l.Bandwidth.Enabled() || l.Ops.Enabled() }

// Validate checks both buckets.
func (l Limits) Validate() error {
	if err := l.Bandwidth.Validate(); err != nil {
		return fmt.Errorf("bandwidth: %w", err)
	}
	if err := l.Ops.Validate(); err != nil {
		return fmt.Errorf("ops: %w", err)
	}
	return nil
}

// Limiter throttles one stream of work (a block queue, one direction of a
// NIC). It is safe for concurrent use: the worker calls Delay and Charge,
// the control API calls Set. A nil *Limiter never throttles.
type Limiter struct {
	clock Clock

	mu      sync.Mutex
	limits  Limits
	bw, ops bucket
	// throttled counts the Delay calls that answered "wait".
	throttled uint64

	changed chan struct{}
}

// New returns a limiter with full buckets; a nil clock means SystemClock.
func New(l Limits, clock Clock) (*Limiter, error) {
	if err := l.Validate(); err != nil {
		return nil, err
	}
	if clock == nil {
		clock = SystemClock{}
	}
	lim := &Limiter{clock: clock, changed: make(chan struct{}, 1)}
	lim.reset(l)
	return lim, nil
}

func (l *Limiter) reset(lim Limits) {
	now := l.clock.Now()
	l.limits = lim
	l.bw = newBucket(lim.Bandwidth, now)
	l.ops = newBucket(lim.Ops, now)
}

// Clock is the limiter's time source, for the worker's timers.
func (l *Limiter) Clock() Clock {
	if l == nil {
		return SystemClock{}
	}
	return l.clock
}

// Delay reports how long the caller must wait before taking more work; 0
// means go ahead. It does not take tokens.
func (l *Limiter) Delay() time.Duration {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	l.bw.refill(now)
	l.ops.refill(now)
	d := max(l.bw.delay(), l.ops.delay())
	if d > 0 {
		l.throttled++
	}
	return d
}

// Charge takes one operation and n bytes. Call it for work admitted by
// Delay; the buckets may go into debt.
func (l *Limiter) Charge(n uint64) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock.Now()
	l.bw.refill(now)
	l.ops.refill(now)
	l.bw.charge(n)
	l.ops.charge(1)
}

// Set replaces the limits. The new buckets start full (and with their
// one-time burst), as if the limiter were new; a worker waiting for tokens
// is woken through Changed to look again.
func (l *Limiter) Set(lim Limits) error {
	if err := lim.Validate(); err != nil {
		return err
	}
	l.mu.Lock()
	l.reset(lim)
	l.mu.Unlock()
	select {
	case l.changed <- struct{}{}:
	default:
	}
	return nil
}

// Limits returns the current configuration.
func (l *Limiter) Limits() Limits {
	if l == nil {
		return Limits{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.limits
}

// Throttled is how many times Delay told the worker to wait.
func (l *Limiter) Throttled() uint64 {
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.throttled
}

// Changed receives after Set. One worker per limiter waits on it (the
// notifications coalesce).
func (l *Limiter) Changed() <-chan struct{} {
	if l == nil {
		return nil
	}
	return l.changed
}

// Wait sleeps on the limiter's clock for d, or until Set changes the limits
// or stop is closed; it reports false if stop was closed. Workers call it
// with the answer of Delay.
func (l *Limiter) Wait(d time.Duration, stop <-chan struct{}) bool {
	t := l.Clock().NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-l.Changed():
		return true
	case <-stop:
		return false
	}
}
