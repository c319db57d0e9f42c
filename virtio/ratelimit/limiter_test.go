package ratelimit

import (
	"errors"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// step is one action on a limiter in a scripted test: advance the clock,
// then either charge bytes or check the delay.
type step struct {
	advance   time.Duration
	charge    uint64 // bytes; one op
	wantDelay time.Duration
	check     bool
}

func TestLimiterScript(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name   string
		limits Limits
		steps  []step
	}{
		{"unlimited never waits", Limits{}, []step{
			{charge: 1 << 40}, {charge: 1 << 40}, {check: true, wantDelay: 0},
		}},
		{"bandwidth: full bucket admits, debt waits", Limits{Bandwidth: TokenBucket{Size: 1000, RefillTime: time.Second}}, []step{
			{check: true, wantDelay: 0},
			{charge: 1000},
			// budget 0: one token takes 1 ms at 1000/s.
			{check: true, wantDelay: ms},
			{advance: ms, check: true, wantDelay: 0},
			{charge: 501},
			// budget -500: 501 tokens, 501 ms.
			{check: true, wantDelay: 501 * ms},
			{advance: 500 * ms, check: true, wantDelay: ms},
			{advance: ms, check: true, wantDelay: 0},
		}},
		{"request larger than the bucket goes into debt", Limits{Bandwidth: TokenBucket{Size: 100, RefillTime: 100 * ms}}, []step{
			{charge: 10_000},
			// budget -9900: 9901 ms.
			{check: true, wantDelay: 9901 * ms},
			{advance: 9901 * ms, check: true, wantDelay: 0},
		}},
		{"refill stops at size", Limits{Bandwidth: TokenBucket{Size: 100, RefillTime: 100 * ms}}, []step{
			{advance: time.Hour, charge: 100},
			{check: true, wantDelay: ms},
		}},
		{"ops bucket counts requests", Limits{Ops: TokenBucket{Size: 2, RefillTime: time.Second}}, []step{
			{charge: 1 << 30}, {check: true, wantDelay: 0}, {charge: 0},
			{check: true, wantDelay: 500 * ms},
			{advance: 499 * ms, check: true, wantDelay: ms},
			{advance: ms, check: true, wantDelay: 0},
		}},
		{"the slower bucket decides", Limits{
			Bandwidth: TokenBucket{Size: 1000, RefillTime: time.Second},
			Ops:       TokenBucket{Size: 1, RefillTime: 10 * ms},
		}, []step{
			{charge: 1000}, {check: true, wantDelay: 10 * ms},
			{advance: 10 * ms, check: true, wantDelay: 0},
			// bandwidth refilled 10 by now: 100 leaves -90, 91 ms.
			{charge: 100}, {check: true, wantDelay: 91 * ms},
		}},
		{"one-time burst first, never refilled", Limits{Bandwidth: TokenBucket{Size: 10, RefillTime: 10 * ms, OneTimeBurst: 1000}}, []step{
			{charge: 1000}, {check: true, wantDelay: 0}, // the bucket is still full
			{charge: 10}, {check: true, wantDelay: ms},
			{advance: time.Hour, charge: 20}, {check: true, wantDelay: 11 * ms},
		}},
		{"fractional rates round the wait up", Limits{Bandwidth: TokenBucket{Size: 3, RefillTime: 10 * ms}}, []step{
			{charge: 3},
			// 1 token every 3.33 ms: 3333334 ns.
			{check: true, wantDelay: 3333334},
			{advance: 3333333, check: true, wantDelay: 1},
			{advance: 1, check: true, wantDelay: 0},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := NewManualClock(t0)
			l, err := New(tt.limits, clk)
			if err != nil {
				t.Fatal(err)
			}
			for i, s := range tt.steps {
				clk.Advance(s.advance)
				if s.check {
					if got := l.Delay(); got != s.wantDelay {
						t.Fatalf("step %d: delay %v, want %v", i, got, s.wantDelay)
					}
					continue
				}
				l.Charge(s.charge)
			}
		})
	}
}

// TestLongRunRate drives a limiter the way a worker does (take work when
// Delay says 0, else sleep the delay) with mixed request sizes and checks
// the achieved rates against the configured ones.
func TestLongRunRate(t *testing.T) {
	tests := []struct {
		name    string
		limits  Limits
		sizes   []uint64
		horizon time.Duration
		wantBps float64 // expected bytes/s (0: don't check)
		wantOps float64 // expected ops/s (0: don't check)
	}{
		{"2 MiB/s, 4K-128K requests", Limits{Bandwidth: TokenBucket{Size: 2 << 20 / 10, RefillTime: 100 * time.Millisecond}},
			[]uint64{4096, 131072, 65536, 512, 8192}, 60 * time.Second, 2 << 20, 0},
		{"requests 10x the bucket", Limits{Bandwidth: TokenBucket{Size: 10_000, RefillTime: 10 * time.Millisecond}},
			[]uint64{100_000, 70_000}, 60 * time.Second, 1_000_000, 0},
		{"500 iops", Limits{Ops: TokenBucket{Size: 50, RefillTime: 100 * time.Millisecond}},
			[]uint64{4096}, 60 * time.Second, 0, 500},
		{"iops binds before bandwidth", Limits{
			Bandwidth: TokenBucket{Size: 1 << 30, RefillTime: time.Second},
			Ops:       TokenBucket{Size: 10, RefillTime: 100 * time.Millisecond}},
			[]uint64{1 << 20}, 60 * time.Second, 100 << 20, 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := NewManualClock(t0)
			l, err := New(tt.limits, clk)
			if err != nil {
				t.Fatal(err)
			}
			var bytes, ops uint64
			for i := 0; clk.Now().Sub(t0) < tt.horizon; {
				if d := l.Delay(); d > 0 {
					clk.Advance(d)
					continue
				}
				l.Charge(tt.sizes[i%len(tt.sizes)])
				bytes += tt.sizes[i%len(tt.sizes)]
				ops++
				i++
			}
			secs := clk.Now().Sub(t0).Seconds()
			if tt.wantBps != 0 {
				if got := float64(bytes) / secs; got < 0.99*tt.wantBps || got > 1.01*tt.wantBps {
					t.Errorf("%.0f bytes/s, want %.0f ±1%%", got, tt.wantBps)
				}
			}
			if tt.wantOps != 0 {
				if got := float64(ops) / secs; got < 0.99*tt.wantOps || got > 1.01*tt.wantOps {
					t.Errorf("%.1f ops/s, want %.1f ±1%%", got, tt.wantOps)
				}
			}
		})
	}
}

// TestRefillStepsAddUp checks that refilling in tiny steps earns exactly
// what one big step does (the remainder is carried, not dropped).
func TestRefillStepsAddUp(t *testing.T) {
	cfg := TokenBucket{Size: 7, RefillTime: time.Second}
	a, b := newBucket(cfg, t0), newBucket(cfg, t0)
	a.charge(7)
	b.charge(7)
	now := t0
	for range 1000 {
		now = now.Add(time.Millisecond / 3)
		a.refill(now)
	}
	b.refill(now)
	if a.budget != b.budget || a.carry != b.carry {
		t.Fatalf("stepwise budget %d carry %d, one step budget %d carry %d", a.budget, a.carry, b.budget, b.carry)
	}
	if a.budget != 2 { // 333.33 ms at 7/s
		t.Fatalf("budget %d after 333 ms at 7/s, want 2", a.budget)
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		b    TokenBucket
		ok   bool
	}{
		{"zero", TokenBucket{}, true},
		{"plain", TokenBucket{Size: 1, RefillTime: time.Nanosecond}, true},
		{"burst without size", TokenBucket{OneTimeBurst: 5}, false},
		{"refill without size", TokenBucket{RefillTime: time.Second}, false},
		{"size without refill", TokenBucket{Size: 5}, false},
		{"negative refill", TokenBucket{Size: 5, RefillTime: -1}, false},
		{"refill too long", TokenBucket{Size: 5, RefillTime: 25 * time.Hour}, false},
		{"size too large", TokenBucket{Size: 1 << 61, RefillTime: time.Second}, false},
		{"largest", TokenBucket{Size: 1 << 60, RefillTime: 24 * time.Hour, OneTimeBurst: 1 << 60}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Limits{Ops: tt.b}.Validate()
			if (err == nil) != tt.ok {
				t.Fatalf("Validate = %v, want ok=%v", err, tt.ok)
			}
			if err != nil && !errors.Is(err, ErrInvalid) {
				t.Fatalf("%v does not wrap ErrInvalid", err)
			}
			if _, err := New(Limits{Bandwidth: tt.b}, nil); (err == nil) != tt.ok {
				t.Fatalf("New = %v, want ok=%v", err, tt.ok)
			}
		})
	}
}

// TestExtremes checks that the largest sizes, debts and idle times neither
// overflow nor wait unbounded.
func TestExtremes(t *testing.T) {
	clk := NewManualClock(t0)
	l, err := New(Limits{Bandwidth: TokenBucket{Size: 1 << 60, RefillTime: 24 * time.Hour}}, clk)
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		l.Charge(^uint64(0))
	}
	if d := l.Delay(); d != maxDelay {
		t.Fatalf("delay %v after huge debt, want the cap %v", d, maxDelay)
	}
	clk.Advance(1000 * 24 * time.Hour)
	if d := l.Delay(); d != 0 {
		t.Fatalf("delay %v after a long idle time", d)
	}
	small, err := New(Limits{Bandwidth: TokenBucket{Size: 1, RefillTime: 24 * time.Hour}}, clk)
	if err != nil {
		t.Fatal(err)
	}
	small.Charge(1 << 40)
	if d := small.Delay(); d != maxDelay {
		t.Fatalf("delay %v, want the cap %v", d, maxDelay)
	}
}

func TestSetWakesWaiter(t *testing.T) {
	clk := NewManualClock(t0)
	l, err := New(Limits{Bandwidth: TokenBucket{Size: 10, RefillTime: time.Second}}, clk)
	if err != nil {
		t.Fatal(err)
	}
	l.Charge(1000)
	d := l.Delay()
	if d == 0 {
		t.Fatal("not throttled")
	}
	woke := make(chan bool)
	go func() { woke <- l.Wait(d, nil) }()
	if !clk.WaitPending(1, 5*time.Second) {
		t.Fatal("waiter never armed a timer")
	}
	if err := l.Set(Limits{}); err != nil {
		t.Fatal(err)
	}
	if !<-woke {
		t.Fatal("Wait reported stop")
	}
	if d := l.Delay(); d != 0 {
		t.Fatalf("delay %v after removing the limit", d)
	}
	if clk.Pending() != 0 {
		t.Fatal("Wait left its timer pending")
	}
	if l.Throttled() != 1 {
		t.Fatalf("throttled %d, want 1", l.Throttled())
	}
	if err := l.Set(Limits{Ops: TokenBucket{Size: 1}}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Set(invalid) = %v", err)
	}
}

func TestWaitTimerAndStop(t *testing.T) {
	clk := NewManualClock(t0)
	l, err := New(Limits{}, clk)
	if err != nil {
		t.Fatal(err)
	}
	woke := make(chan bool)
	go func() { woke <- l.Wait(time.Second, nil) }()
	if !clk.WaitPending(1, 5*time.Second) {
		t.Fatal("no timer")
	}
	clk.Advance(999 * time.Millisecond)
	select {
	case <-woke:
		t.Fatal("woke before the timer")
	case <-time.After(10 * time.Millisecond):
	}
	clk.Advance(time.Millisecond)
	if !<-woke {
		t.Fatal("Wait reported stop")
	}
	stop := make(chan struct{})
	go func() { woke <- l.Wait(time.Second, stop) }()
	if !clk.WaitPending(1, 5*time.Second) {
		t.Fatal("no timer")
	}
	close(stop)
	if <-woke {
		t.Fatal("Wait did not report stop")
	}
}

func TestNilLimiter(t *testing.T) {
	var l *Limiter
	l.Charge(100)
	if l.Delay() != 0 || l.Limits().Enabled() || l.Throttled() != 0 || l.Changed() != nil {
		t.Fatal("nil limiter limits")
	}
}

func TestSystemClockTimer(t *testing.T) {
	tm := SystemClock{}.NewTimer(time.Millisecond)
	select {
	case <-tm.C():
	case <-time.After(5 * time.Second):
		t.Fatal("system timer did not fire")
	}
	if tm.Stop() {
		t.Fatal("Stop after fire reported a pending timer")
	}
}
