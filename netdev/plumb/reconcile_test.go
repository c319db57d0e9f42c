package plumb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/vishvananda/netlink"

	"kvmstack/netdev"
)

var testPrefixes = []string{"kvb-", "kvx-", "kvt-"}

// newNamespace gives the test a fresh network namespace of its own, gone
// with its links once the test ends (pass or fail).
func newNamespace(t *testing.T) *netdev.Namespace {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN driver: %v", err)
	}
	ns, err := netdev.NewNamespace()
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("not allowed to create a network namespace: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

// changeCounter counts the reconciler's change records.
type changeCounter struct{ n atomic.Int64 }

func (c *changeCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *changeCounter) Handle(context.Context, slog.Record) error {
	c.n.Add(1)
	return nil
}
func (c *changeCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *changeCounter) WithGroup(string) slog.Handler      { return c }

func newReconciler(t *testing.T, ns *netdev.Namespace) *Reconciler {
	t.Helper()
	r, _ := newCountingReconciler(t, ns)
	return r
}

func newCountingReconciler(t *testing.T, ns *netdev.Namespace) (*Reconciler, *changeCounter) {
	t.Helper()
	c := &changeCounter{}
	r, err := New(Options{Namespace: ns, Prefixes: testPrefixes, Logger: slog.New(c)})
	if err != nil {
		t.Fatal(err)
	}
	return r, c
}

// linkState is what the tests compare of one link.
type linkState struct {
	Kind   string
	Master string
	MTU    int
	Up     bool
	// VXLAN only.
	VNI      int
	Local    string
	Port     int
	Learning bool
	FDB      []string // "mac>dst", sorted
	// Bridge only.
	Snooping bool
	// TAP only.
	Owner uint32
	// Managed links only: net.ipv4.conf.NAME.forwarding and
	// net.ipv6.conf.NAME.disable_ipv6.
	Sysctls string
}

func (s linkState) String() string {
	type fields linkState // without the String method
	return fmt.Sprintf("%+v", fields(s))
}

// snapshot reads every link of the namespace but loopback.
func snapshot(t *testing.T, ns *netdev.Namespace) map[string]linkState {
	t.Helper()
	nl := ns.Netlink()
	links, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	names := map[int]string{}
	for _, l := range links {
		names[l.Attrs().Index] = l.Attrs().Name
	}
	out := map[string]linkState{}
	for _, l := range links {
		a := l.Attrs()
		if a.Name == "lo" {
			continue
		}
		s := linkState{Kind: l.Type(), Master: names[a.MasterIndex], MTU: a.MTU, Up: a.Flags&net.FlagUp != 0}
		switch v := l.(type) {
		case *netlink.Vxlan:
			s.VNI, s.Local, s.Port, s.Learning = v.VxlanId, v.SrcAddr.String(), v.Port, v.Learning
			fdb, err := FDB(nl, a.Index)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range fdb {
				s.FDB = append(s.FDB, e.HardwareAddr.String()+">"+e.IP.String())
			}
			slices.Sort(s.FDB)
		case *netlink.Bridge:
			s.Snooping = v.MulticastSnooping == nil || *v.MulticastSnooping
		case *netlink.Tuntap:
			s.Owner = v.Owner
		}
		if kindOf(l) != kindOther {
			s.Sysctls = readSysctls(t, ns, a.Name, kindOf(l) == kindBridge)
		}
		out[a.Name] = s
	}
	return out
}

// readSysctls gives forwarding (bridges only: ports keep the namespace's
// default) and disable_ipv6.
func readSysctls(t *testing.T, ns *netdev.Namespace, name string, bridge bool) string {
	t.Helper()
	var out []string
	err := ns.Do(func() error {
		for _, p := range []string{"ipv4/conf/" + name + "/forwarding", "ipv6/conf/" + name + "/disable_ipv6"} {
			b, err := os.ReadFile("/proc/sys/net/" + p)
			if err != nil {
				return err
			}
			out = append(out, strings.TrimSpace(string(b)))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if bridge {
		return "fwd=" + out[0] + " nov6=" + out[1]
	}
	return "nov6=" + out[1]
}

func writeSysctl(ns *netdev.Namespace, path, value string) error {
	return ns.Do(func() error { return os.WriteFile("/proc/sys/net/"+path, []byte(value), 0o644) })
}

func diffStates(t *testing.T, got, want map[string]linkState) {
	t.Helper()
	for _, name := range slices.Sorted(maps.Keys(want)) {
		g, ok := got[name]
		if !ok {
			t.Errorf("link %s missing, want %v", name, want[name])
		} else if g.String() != want[name].String() {
			t.Errorf("link %s:\n got %v\nwant %v", name, g, want[name])
		}
	}
	for _, name := range slices.Sorted(maps.Keys(got)) {
		if _, ok := want[name]; !ok {
			t.Errorf("unexpected link %s: %v", name, got[name])
		}
	}
}

func indexes(t *testing.T, ns *netdev.Namespace) map[string]int {
	t.Helper()
	links, err := ns.Netlink().LinkList()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, l := range links {
		out[l.Attrs().Name] = l.Attrs().Index
	}
	return out
}

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

var (
	macA = net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 0xa}
	macB = net.HardwareAddr{0x52, 0x54, 0x00, 0, 0, 0xb}
)

// TestReconcileLifecycle creates, repeats, updates, repairs and removes a
// host's networks in one namespace, next to foreign links that must survive
// all of it.
func TestReconcileLifecycle(t *testing.T) {
	ns := newNamespace(t)
	nl := ns.Netlink()
	// Foreign links: one with an unrelated name, one with an owned prefix
	// but a kind this package does not manage.
	// (A veth pair: this kernel may lack the dummy driver.)
	if err := nl.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "eth9"}, PeerName: "kvb-veth"}); err != nil {
		t.Fatal(err)
	}
	foreign := map[string]linkState{
		"eth9":     {Kind: "veth", MTU: 1500},
		"kvb-veth": {Kind: "veth", MTU: 1500},
	}
	r, changes := newCountingReconciler(t, ns)
	ctx := context.Background()

	d1 := Desired{Networks: []Network{{
		Bridge: "kvb-red", VXLAN: "kvx-red", VNI: 100, Local: addr("192.0.2.1"),
		Remotes:   []netip.Addr{addr("192.0.2.2"), addr("192.0.2.3")},
		Neighbors: []Neighbor{{MAC: macA, Remote: addr("192.0.2.2")}},
		Taps:      []Tap{{Name: "kvt-red1", Owner: netdev.TapOwner{UID: 1000, GID: 1000}}, {Name: "kvt-red2", Owner: netdev.NoTapOwner}},
	}, {
		Bridge: "kvb-blue", VXLAN: "kvx-blue", VNI: 200, Local: addr("192.0.2.1"),
		Remotes: []netip.Addr{addr("192.0.2.2")},
	}}}
	want1 := maps.Clone(foreign)
	maps.Copy(want1, map[string]linkState{
		"kvb-red": {Kind: "bridge", MTU: 1450, Up: true, Sysctls: "fwd=0 nov6=1"},
		"kvx-red": {Kind: "vxlan", Master: "kvb-red", MTU: 1450, Up: true, Sysctls: "nov6=1", VNI: 100, Local: "192.0.2.1", Port: 4789,
			FDB: []string{"00:00:00:00:00:00>192.0.2.2", "00:00:00:00:00:00>192.0.2.3", "52:54:00:00:00:0a>192.0.2.2"}},
		"kvt-red1": {Kind: "tuntap", Master: "kvb-red", MTU: 1450, Up: true, Sysctls: "nov6=1", Owner: 1000},
		"kvt-red2": {Kind: "tuntap", Master: "kvb-red", MTU: 1450, Up: true, Sysctls: "nov6=1"},
		"kvb-blue": {Kind: "bridge", MTU: 1450, Up: true, Sysctls: "fwd=0 nov6=1"},
		"kvx-blue": {Kind: "vxlan", Master: "kvb-blue", MTU: 1450, Up: true, Sysctls: "nov6=1", VNI: 200, Local: "192.0.2.1", Port: 4789,
			FDB: []string{"00:00:00:00:00:00>192.0.2.2"}},
	})

	t.Run("create", func(t *testing.T) {
		if err := r.Reconcile(ctx, d1); err != nil {
			t.Fatal(err)
		}
		diffStates(t, snapshot(t, ns), want1)
	})
	t.Run("idempotent", func(t *testing.T) {
		before := indexes(t, ns)
		changes.n.Store(0)
		if err := r.Reconcile(ctx, d1); err != nil {
			t.Fatal(err)
		}
		if n := changes.n.Load(); n != 0 {
			t.Errorf("second Reconcile made %d changes", n)
		}
		diffStates(t, snapshot(t, ns), want1)
		if after := indexes(t, ns); !maps.Equal(before, after) {
			t.Errorf("links were recreated: %v -> %v", before, after)
		}
	})

	// d2: red loses a remote and a tap, gains one, a tap changes owner, its
	// neighbor moves host and its MTU drops; blue goes; green takes blue's
	// VNI.
	d2 := Desired{Networks: []Network{{
		Bridge: "kvb-red", VXLAN: "kvx-red", VNI: 100, Local: addr("192.0.2.1"), MTU: 1400,
		Remotes:   []netip.Addr{addr("192.0.2.2"), addr("192.0.2.4")},
		Neighbors: []Neighbor{{MAC: macA, Remote: addr("192.0.2.4")}, {MAC: macB, Remote: addr("192.0.2.2")}},
		Taps:      []Tap{{Name: "kvt-red1", Owner: netdev.TapOwner{UID: 1002, GID: 1000}}, {Name: "kvt-red3", Owner: netdev.TapOwner{UID: 1001, GID: -1}}},
	}, {
		Bridge: "kvb-green", VXLAN: "kvx-green", VNI: 200, Local: addr("192.0.2.1"),
		Remotes: []netip.Addr{addr("192.0.2.3")},
	}}}
	want2 := maps.Clone(foreign)
	maps.Copy(want2, map[string]linkState{
		"kvb-red": {Kind: "bridge", MTU: 1400, Up: true, Sysctls: "fwd=0 nov6=1"},
		"kvx-red": {Kind: "vxlan", Master: "kvb-red", MTU: 1400, Up: true, Sysctls: "nov6=1", VNI: 100, Local: "192.0.2.1", Port: 4789,
			FDB: []string{"00:00:00:00:00:00>192.0.2.2", "00:00:00:00:00:00>192.0.2.4", "52:54:00:00:00:0a>192.0.2.4", "52:54:00:00:00:0b>192.0.2.2"}},
		"kvt-red1":  {Kind: "tuntap", Master: "kvb-red", MTU: 1400, Up: true, Sysctls: "nov6=1", Owner: 1002},
		"kvt-red3":  {Kind: "tuntap", Master: "kvb-red", MTU: 1400, Up: true, Sysctls: "nov6=1", Owner: 1001},
		"kvb-green": {Kind: "bridge", MTU: 1450, Up: true, Sysctls: "fwd=0 nov6=1"},
		"kvx-green": {Kind: "vxlan", Master: "kvb-green", MTU: 1450, Up: true, Sysctls: "nov6=1", VNI: 200, Local: "192.0.2.1", Port: 4789,
			FDB: []string{"00:00:00:00:00:00>192.0.2.3"}},
	})
	t.Run("update", func(t *testing.T) {
		before := indexes(t, ns)
		changes.n.Store(0)
		if err := r.Reconcile(ctx, d2); err != nil {
			t.Fatal(err)
		}
		if changes.n.Load() == 0 {
			t.Error("update logged no change")
		}
		diffStates(t, snapshot(t, ns), want2)
		after := indexes(t, ns)
		for _, n := range []string{"kvb-red", "kvx-red", "kvt-red1", "eth9", "kvb-veth"} {
			if before[n] != after[n] {
				t.Errorf("%s was recreated (ifindex %d -> %d)", n, before[n], after[n])
			}
		}
	})

	// A crash or an operator leaves a mess: each step below is a state a
	// half-done Reconcile or a stray command could leave.
	t.Run("repair", func(t *testing.T) {
		mustLink := func(name string) netlink.Link {
			l, err := nl.LinkByName(name)
			if err != nil {
				t.Fatal(err)
			}
			return l
		}
		steps := []struct {
			what string
			do   func() error
		}{
			{"vxlan deleted", func() error { return nl.LinkDel(mustLink("kvx-red")) }},
			{"tap detached and down", func() error {
				l := mustLink("kvt-red1")
				return errors.Join(nl.LinkSetNoMaster(l), nl.LinkSetDown(l))
			}},
			{"bridge down with wrong mtu", func() error {
				l := mustLink("kvb-green")
				return errors.Join(nl.LinkSetDown(l), nl.LinkSetMTU(l, 1500))
			}},
			{"stale fdb entry", func() error {
				return nl.NeighAppend(&netlink.Neigh{LinkIndex: mustLink("kvx-green").Attrs().Index, Family: 7, /* AF_BRIDGE */
					Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, HardwareAddr: net.HardwareAddr(make([]byte, 6)), IP: net.ParseIP("192.0.2.99")})
			}},
			{"vxlan with the wrong VNI under a desired name", func() error {
				return errors.Join(nl.LinkDel(mustLink("kvx-green")),
					nl.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "kvx-green"}, VxlanId: 999, SrcAddr: net.ParseIP("192.0.2.1"), Port: 4789}))
			}},
			{"bridge under a tap's name", func() error {
				return errors.Join(nl.LinkDel(mustLink("kvt-red3")), nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "kvt-red3"}}))
			}},
			{"multicast snooping back on", func() error { return nl.BridgeSetMcastSnoop(bareBridge(mustLink("kvb-red")), true) }},
			{"forwarding turned on for every device", func() error { return writeSysctl(ns, "ipv4/conf/all/forwarding", "1") }},
			{"ipv6 back on a tap", func() error { return writeSysctl(ns, "ipv6/conf/kvt-red1/disable_ipv6", "0") }},
			{"leftover bridge, vxlan and tap of an old network", func() error {
				return errors.Join(
					nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "kvb-old"}}),
					nl.LinkAdd(&netlink.Vxlan{LinkAttrs: netlink.LinkAttrs{Name: "kvx-old"}, VxlanId: 300, SrcAddr: net.ParseIP("192.0.2.1"), Port: 4789}),
					ns.CreatePersistentTap("kvt-old", netdev.NoTapOwner),
					nl.LinkSetMaster(mustLink("kvt-old"), mustLink("kvb-old")))
			}},
		}
		for _, s := range steps {
			if err := s.do(); err != nil {
				t.Fatalf("%s: %v", s.what, err)
			}
		}
		if err := r.Reconcile(ctx, d2); err != nil {
			t.Fatal(err)
		}
		diffStates(t, snapshot(t, ns), want2)
	})

	t.Run("conflict", func(t *testing.T) {
		d := Desired{Networks: append(slices.Clone(d2.Networks), Network{
			Bridge: "kvb-veth", VXLAN: "kvx-veth", VNI: 300, Local: addr("192.0.2.1"),
		})}
		err := r.Reconcile(ctx, d)
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "kvb-veth") {
			t.Fatalf("Reconcile = %v, want ErrConflict for kvb-veth", err)
		}
		// The other networks are still converged, the foreign link kept.
		diffStates(t, snapshot(t, ns), want2)
	})

	t.Run("invalid changes nothing", func(t *testing.T) {
		bad := Desired{Networks: []Network{{Bridge: "br0", VXLAN: "kvx-x", VNI: 5, Local: addr("192.0.2.1")}}}
		if err := r.Reconcile(ctx, bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("Reconcile = %v, want ErrInvalid", err)
		}
		diffStates(t, snapshot(t, ns), want2)
	})

	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if err := r.Reconcile(cctx, Desired{}); !errors.Is(err, context.Canceled) {
			t.Fatalf("Reconcile = %v, want context.Canceled", err)
		}
	})

	t.Run("remove all", func(t *testing.T) {
		if err := r.Reconcile(ctx, Desired{}); err != nil {
			t.Fatal(err)
		}
		diffStates(t, snapshot(t, ns), foreign)
	})
}
