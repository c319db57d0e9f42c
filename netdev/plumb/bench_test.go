package plumb

import (
	"context"
	"fmt"
	"net/netip"
	"testing"

	"kvmstack/netdev"
)

// benchDesired is a busy host: 20 networks, 5 TAPs and 4 remotes each.
func benchDesired() Desired {
	var d Desired
	for i := range 20 {
		n := Network{
			Bridge: fmt.Sprintf("kvb-%d", i), VXLAN: fmt.Sprintf("kvx-%d", i), VNI: uint32(1000 + i),
			Local: addr("192.0.2.1"),
		}
		for r := range 4 {
			n.Remotes = append(n.Remotes, netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + r)}))
		}
		for k := range 5 {
			n.Taps = append(n.Taps, Tap{Name: fmt.Sprintf("kvt-%d-%d", i, k), Owner: netdev.NoTapOwner})
		}
		d.Networks = append(d.Networks, n)
	}
	return d
}

// BenchmarkReconcile measures the agent's steady state (a pass with nothing
// to change) and a whole build-up and tear-down, on 20 networks x 5 TAPs.
func BenchmarkReconcile(b *testing.B) {
	ctx := context.Background()
	b.Run("noop", func(b *testing.B) {
		ns := benchNamespace(b)
		r, err := New(Options{Namespace: ns, Prefixes: testPrefixes})
		if err != nil {
			b.Fatal(err)
		}
		d := benchDesired()
		if err := r.Reconcile(ctx, d); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := r.Reconcile(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("create-delete", func(b *testing.B) {
		ns := benchNamespace(b)
		r, err := New(Options{Namespace: ns, Prefixes: testPrefixes})
		if err != nil {
			b.Fatal(err)
		}
		d := benchDesired()
		for b.Loop() {
			if err := r.Reconcile(ctx, d); err != nil {
				b.Fatal(err)
			}
			if err := r.Reconcile(ctx, Desired{}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func benchNamespace(b *testing.B) *netdev.Namespace {
	b.Helper()
	ns, err := netdev.NewNamespace()
	if err != nil {
		b.Skipf("no network namespace: %v", err)
	}
	b.Cleanup(func() { ns.Close() })
	return ns
}
