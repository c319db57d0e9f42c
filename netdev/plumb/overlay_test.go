package plumb

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"

	"kvmstack/netdev"
)

// host is a test "host": a namespace with an underlay link and a reconciler.
type host struct {
	ns       *netdev.Namespace
	r        *Reconciler
	underlay netip.Addr
}

// twoHosts joins two namespaces by a veth pair as their underlay
// (192.0.2.0/24, a documentation range that exists only inside them).
func twoHosts(t *testing.T) (a, b *host) {
	t.Helper()
	a = &host{ns: newNamespace(t), underlay: addr("192.0.2.1")}
	b = &host{ns: newNamespace(t), underlay: addr("192.0.2.2")}
	if err := a.ns.AddVeth("ul0", "ul0", b.ns); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*host{a, b} {
		if err := h.ns.AddAddress("ul0", h.underlay.String()+"/24"); err != nil {
			t.Fatal(err)
		}
		if err := h.ns.SetUp("ul0"); err != nil {
			t.Fatal(err)
		}
		h.r = newReconciler(t, h.ns)
	}
	return a, b
}

// guest is an instance stand-in: its own namespace with eth0, a veth whose
// other end is a port of a host's bridge.
func guest(t *testing.T, h *host, bridge, port, cidr string) *netdev.Namespace {
	t.Helper()
	g := newNamespace(t)
	if err := h.ns.AddVeth(port, "eth0", g); err != nil {
		t.Fatal(err)
	}
	nl := h.ns.Netlink()
	p, err := nl.LinkByName(port)
	if err != nil {
		t.Fatal(err)
	}
	br, err := nl.LinkByName(bridge)
	if err != nil {
		t.Fatal(err)
	}
	if err := nl.LinkSetMaster(p, br); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		ns   *netdev.Namespace
		link string
	}{{h.ns, port}, {g, "eth0"}} {
		if err := s.ns.SetMTU(s.link, DefaultMTU); err != nil {
			t.Fatal(err)
		}
		if err := s.ns.SetUp(s.link); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.AddAddress("eth0", cidr); err != nil {
		t.Fatal(err)
	}
	return g
}

// exchange sends a message larger than the MTU from one guest to a TCP echo
// server in another and checks it comes back whole.
func exchange(from, to *netdev.Namespace, toIP string) error {
	ln, err := to.Listen("tcp", net.JoinHostPort(toIP, "0"))
	if err != nil {
		return err
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.Copy(c, c)
	}()
	var c net.Conn
	err = from.Do(func() error {
		var err error
		c, err = net.DialTimeout("tcp", ln.Addr().String(), 4*time.Second)
		return err
	})
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := bytes.Repeat([]byte("vxlan!"), 20000)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if !bytes.Equal(got, msg) {
		return io.ErrUnexpectedEOF
	}
	return nil
}

// TestOverlayAcrossHosts puts two networks with overlapping guest subnets on
// two hosts: guests of one network reach each other across VXLAN, guests of
// different networks cannot, and without the flooding entries nothing
// crosses.
func TestOverlayAcrossHosts(t *testing.T) {
	a, b := twoHosts(t)
	desired := func(self, other *host) Desired {
		net := func(name string, vni uint32) Network {
			return Network{
				Bridge: "kvb-" + name, VXLAN: "kvx-" + name, VNI: vni,
				Local: self.underlay, UnderlayDevice: "ul0",
				Remotes: []netip.Addr{other.underlay},
			}
		}
		return Desired{Networks: []Network{net("red", 100), net("blue", 200)}}
	}
	ctx := context.Background()
	for _, p := range [][2]*host{{a, b}, {b, a}} {
		if err := p[0].r.Reconcile(ctx, desired(p[0], p[1])); err != nil {
			t.Fatal(err)
		}
	}
	// 198.51.100.0/24 (documentation range) on both networks: only the
	// VNI keeps them apart.
	redA := guest(t, a, "kvb-red", "vg-red", "198.51.100.1/24")
	redB := guest(t, b, "kvb-red", "vg-red", "198.51.100.2/24")
	blueA := guest(t, a, "kvb-blue", "vg-blue", "198.51.100.3/24")
	blueB := guest(t, b, "kvb-blue", "vg-blue", "198.51.100.4/24")

	start := time.Now()
	if err := exchange(redA, redB, "198.51.100.2"); err != nil {
		t.Fatalf("red A -> red B: %v", err)
	}
	if err := exchange(blueB, blueA, "198.51.100.3"); err != nil {
		t.Fatalf("blue B -> blue A: %v", err)
	}
	t.Logf("two 120 kB echoes across VXLAN in %v", time.Since(start))
	if err := exchange(blueA, redB, "198.51.100.2"); err == nil {
		t.Fatal("blue A reached red B: VNIs are not isolated")
	}
	if err := exchange(redB, blueA, "198.51.100.3"); err == nil {
		t.Fatal("red B reached blue A: VNIs are not isolated")
	}

	// Host B leaves red on A's side: with no flooding entry, red A's
	// frames have nowhere to go, while blue still works.
	da := desired(a, b)
	da.Networks[0].Remotes = nil
	if err := a.r.Reconcile(ctx, da); err != nil {
		t.Fatal(err)
	}
	if err := exchange(redA, redB, "198.51.100.2"); err == nil {
		t.Fatal("red A reached red B without an FDB entry for host B")
	}
	if err := exchange(blueA, blueB, "198.51.100.4"); err != nil {
		t.Fatalf("blue A -> blue B after red's change: %v", err)
	}
}
