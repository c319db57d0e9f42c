package net

import (
	"errors"
	"testing"
	"time"

	"kvmstack/netdev"
	"kvmstack/virtio/ratelimit"
	"kvmstack/vmm/memory"
)

// newLimitedHarness is newHarness with the two directions' limiters on a
// manual clock, set before the workers start.
func newLimitedHarness(t *testing.T, rx, tx ratelimit.Limits) (*harness, *ratelimit.ManualClock) {
	t.Helper()
	a, b, err := netdev.SocketPair()
	if err != nil {
		t.Fatal(err)
	}
	mem, err := memory.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	tap := &fakeTap{PacketFile: a, supported: allOffloads, mtu: 1500}
	dev, err := NewWithBackend("fake", tap, nil)
	if err != nil {
		t.Fatal(err)
	}
	clk := ratelimit.NewManualClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	if dev.rxLim, err = ratelimit.New(rx, clk); err != nil {
		t.Fatal(err)
	}
	if dev.txLim, err = ratelimit.New(tx, clk); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, dev: dev, tap: tap, host: b, mem: mem, broken: make(chan error, 4)}
	h.rx = newRing(t, mem, 0x100000, 256)
	h.tx = newRing(t, mem, 0x400000, 256)
	for i := range 2 {
		h.kicks[i] = make(chan struct{}, 1)
		h.irqs[i] = make(chan struct{}, 1024)
	}
	t.Cleanup(func() {
		dev.Close()
		b.Close()
		mem.Close()
	})
	if err := dev.Activate(h.activation(0)); err != nil {
		t.Fatal(err)
	}
	return h, clk
}

// settle waits until a worker sleeps on the clock.
func settle(t *testing.T, clk *ratelimit.ManualClock) {
	t.Helper()
	if !clk.WaitPending(1, 10*time.Second) {
		t.Fatal("no worker waits for tokens")
	}
}

// TestTransmitThrottled checks packet counts at each point of a
// manual-clock run with an ops limit, and that lifting the limit at run
// time sends the rest at once.
func TestTransmitThrottled(t *testing.T) {
	h, clk := newLimitedHarness(t, ratelimit.Limits{}, ratelimit.Limits{Ops: ratelimit.TokenBucket{Size: 5, RefillTime: time.Second}})
	const n = 20
	for i := range n {
		h.tx.add([][]byte{hdr(0, 0, 0, 0, 0), frame(1000, byte(i))}, nil)
	}
	h.kick(txQueue)
	steps := []struct {
		advance time.Duration
		want    uint64
	}{
		{0, 5},                        // the full bucket
		{100 * time.Millisecond, 5},   // half a token
		{100 * time.Millisecond, 6},   // one more
		{time.Second, 11},             // five more
		{10 * time.Second, 16},        // a full bucket, not more
		{200 * time.Millisecond, 17},  // one more
		{1000 * time.Millisecond, 20}, // the last three (the queue runs dry)
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		if s.want < n {
			settle(t, clk)
		} else {
			h.tx.waitUsed(n)
		}
		if got := h.dev.Stats().TxPackets.Load(); got != s.want {
			t.Fatalf("step %d (+%v): %d packets sent, want %d", i, s.advance, got, s.want)
		}
	}
	for range n {
		h.hostRead()
	}
	// Throttle again, then lift the limit: the waiting worker goes on
	// without the clock moving.
	if err := h.dev.SetTxRateLimit(ratelimit.Limits{Ops: ratelimit.TokenBucket{Size: 1, RefillTime: time.Hour}}); err != nil {
		t.Fatal(err)
	}
	for i := range 4 {
		h.tx.add([][]byte{hdr(0, 0, 0, 0, 0), frame(100, byte(i))}, nil)
	}
	h.kick(txQueue)
	settle(t, clk)
	if got := h.dev.Stats().TxPackets.Load(); got != n+1 {
		t.Fatalf("%d packets, want %d", got, n+1)
	}
	if err := h.dev.SetRateLimit(ratelimit.Limits{}); err != nil {
		t.Fatal(err)
	}
	h.tx.waitUsed(4)
	if rx, tx := h.dev.Throttled(); rx != 0 || tx == 0 {
		t.Fatalf("throttled rx %d tx %d: want only transmit", rx, tx)
	}
	if rx, tx := h.dev.RateLimit(); rx.Enabled() || tx.Enabled() {
		t.Fatalf("limits %+v %+v after removal", rx, tx)
	}
	h.wantNotBroken()
}

// TestReceiveThrottled checks that received bytes follow a bandwidth limit:
// packets wait in the tap while the bucket is in debt.
func TestReceiveThrottled(t *testing.T) {
	h, clk := newLimitedHarness(t, ratelimit.Limits{Bandwidth: ratelimit.TokenBucket{Size: 1000, RefillTime: time.Second}}, ratelimit.Limits{})
	for range 8 {
		h.rx.add(nil, []uint32{HdrLen + 1518})
	}
	h.kick(rxQueue)
	for i := range 5 {
		h.hostWrite(append(hdr(0, 0, 0, 0, 0), frame(1000, byte(i))...))
	}
	ms := time.Millisecond
	steps := []struct {
		advance time.Duration
		want    uint64
	}{
		{0, 1},        // 1000 bytes empty the bucket
		{ms, 2},       // one token admits the next: 999 in debt
		{999 * ms, 2}, // 999 refilled: budget 0
		{ms, 3},
		{1000 * ms, 4},
	}
	for i, s := range steps {
		clk.Advance(s.advance)
		settle(t, clk)
		if got := h.dev.Stats().RxPackets.Load(); got != s.want {
			t.Fatalf("step %d (+%v): %d packets received, want %d", i, s.advance, got, s.want)
		}
	}
	h.wantNotBroken()
}

func TestSetRateLimitInvalid(t *testing.T) {
	h, _ := newLimitedHarness(t, ratelimit.Limits{}, ratelimit.Limits{})
	bad := ratelimit.Limits{Bandwidth: ratelimit.TokenBucket{Size: 10}}
	for _, f := range []func(ratelimit.Limits) error{h.dev.SetRateLimit, h.dev.SetRxRateLimit, h.dev.SetTxRateLimit} {
		if err := f(bad); !errors.Is(err, ratelimit.ErrInvalid) {
			t.Fatalf("err = %v, want ErrInvalid", err)
		}
	}
}
