package hostnet

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/vishvananda/netlink"

	"kvmstack/netdev"
	"kvmstack/netdev/plumb"
	"kvmstack/orchestrator/state"
)

// testNetIDs are the ids whose device names the tests create; TestMain
// fails the run if any of them ever shows up in the test process's own
// namespace.
var testNetIDs = []string{"cccccccccccccccccccccccccccccccc", "dddddddddddddddddddddddddddddddd"}

func TestMain(m *testing.M) {
	code := m.Run()
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			for _, id := range append(testNetIDs, "6666666666666666", "7777777777777777") {
				if strings.HasSuffix(l.Attrs().Name, id[:11]) {
					fmt.Fprintf(os.Stderr, "FAIL: link %s left in the test process's namespace\n", l.Attrs().Name)
					code = 1
				}
			}
		}
	}
	os.Exit(code)
}

// namedNamespace creates a named network namespace (what `kvmstack agent
// --netns NAME` plumbs in) and deletes it, with every link in it, when the
// test ends.
func namedNamespace(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN driver: %v", err)
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skipf("no ip(8): %v", err)
	}
	name := fmt.Sprintf("kvmstack-hostnet-%d", os.Getpid())
	if out, err := exec.Command(ip, "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command(ip, "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del: %v: %s", err, out)
		}
	})
	return name
}

func TestReconcileInNamespace(t *testing.T) {
	name := namedNamespace(t)
	h, err := New(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// A second handle on the same namespace, to look at what HostNet did.
	look, err := netdev.OpenNamespace(filepath.Join(NetnsDir, name))
	if err != nil {
		t.Fatal(err)
	}
	defer look.Close()
	nl := look.Netlink()

	pA := port("6666666666666666", "vm-a", "02:00:00:00:00:66", "10.7.0.3")
	pB := port("7777777777777777", "vm-b", "02:00:00:00:00:77", "10.8.0.3")
	hn := &state.HostNetworking{HostID: "h1", UnderlayIP: "198.51.100.1", Networks: []state.HostNetwork{
		view(testNetIDs[0], "a", "10.7.0.0/24", 6000, []state.Peer{{HostID: "h2", UnderlayIP: "198.51.100.2"}, {HostID: "h3", UnderlayIP: "198.51.100.3"}}, pA),
		view(testNetIDs[1], "b", "10.8.0.0/24", 6001, []state.Peer{}, pB),
	}}
	ctx := context.Background()
	if err := h.Reconcile(ctx, hn); err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	for _, n := range hn.Networks {
		br, err := nl.LinkByName(n.Bridge)
		if err != nil {
			t.Fatalf("bridge %s: %v", n.Bridge, err)
		}
		if br.Type() != "bridge" || br.Attrs().MTU != plumb.DefaultMTU {
			t.Errorf("bridge %s: type %s mtu %d", n.Bridge, br.Type(), br.Attrs().MTU)
		}
		vx, err := nl.LinkByName(n.VXLAN)
		if err != nil {
			t.Fatalf("vxlan %s: %v", n.VXLAN, err)
		}
		v, ok := vx.(*netlink.Vxlan)
		if !ok || v.VxlanId != int(n.Network.VNI) || !v.SrcAddr.Equal(net.ParseIP("198.51.100.1")) || v.MasterIndex != br.Attrs().Index {
			t.Errorf("vxlan %s = %+v, want VNI %d, local 198.51.100.1, on %s", n.VXLAN, vx, n.Network.VNI, n.Bridge)
		}
		for _, p := range n.Ports {
			tp, err := nl.LinkByName(p.Tap)
			if err != nil {
				t.Fatalf("tap %s: %v", p.Tap, err)
			}
			if tp.Attrs().MasterIndex != br.Attrs().Index {
				t.Errorf("tap %s not on bridge %s", p.Tap, n.Bridge)
			}
		}
		fdb, err := plumb.FDB(nl, vx.Attrs().Index)
		if err != nil {
			t.Fatal(err)
		}
		var dsts []string
		for _, e := range fdb {
			if e.HardwareAddr.String() == "00:00:00:00:00:00" {
				dsts = append(dsts, e.IP.String())
			}
		}
		slices.Sort(dsts)
		var want []string
		for _, p := range n.Peers {
			want = append(want, p.UnderlayIP)
		}
		if !slices.Equal(dsts, want) {
			t.Errorf("%s flood entries %v, want %v", n.VXLAN, dsts, want)
		}
	}
	// The guest's first packet: a DISCOVER through its TAP, opened as vmm
	// opens it, is answered from this host's lease with the subnet's
	// reserved addresses.
	offer := discoverThroughTap(t, look, pA.Tap, mac(pA.MAC))
	if offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.Equal(net.ParseIP("10.7.0.3")) ||
		!offer.ServerIdentifier().Equal(net.ParseIP("10.7.0.2")) || len(offer.Router()) != 1 || !offer.Router()[0].Equal(net.ParseIP("10.7.0.1")) {
		t.Errorf("reply to the DISCOVER: %s", offer.Summary())
	}

	// Idempotent: the same view again changes nothing and does not fail
	// (the DHCP servers are updated in place, not rebound).
	if err := h.Reconcile(ctx, hn); err != nil {
		t.Fatalf("second Reconcile: %v", err)
	}

	// A host that registered no underlay address (a one-host cloud) still
	// plumbs its guests: the VXLAN is recreated with a loopback source and
	// no remotes, and the bridge and TAPs stay.
	tapBefore, err := nl.LinkByName(pB.Tap)
	if err != nil {
		t.Fatal(err)
	}
	alone := &state.HostNetworking{HostID: "h1", Networks: []state.HostNetwork{hn.Networks[1]}}
	if err := h.Reconcile(ctx, alone); err != nil {
		t.Fatalf("Reconcile without an underlay address: %v", err)
	}
	if vx, err := nl.LinkByName(hn.Networks[1].VXLAN); err != nil || !vx.(*netlink.Vxlan).SrcAddr.Equal(net.IPv4(127, 0, 0, 1)) {
		t.Errorf("vxlan without an underlay address: %+v %v", vx, err)
	}
	if tp, err := nl.LinkByName(pB.Tap); err != nil || tp.Attrs().Index != tapBefore.Attrs().Index {
		t.Errorf("tap %s recreated or gone: %v", pB.Tap, err)
	}
	if _, err := nl.LinkByName(hn.Networks[0].Bridge); err == nil {
		t.Errorf("bridge %s of a network that left the view is still there", hn.Networks[0].Bridge)
	}

	// The last port gone: nothing of ours is left.
	if err := h.Reconcile(ctx, &state.HostNetworking{HostID: "h1", UnderlayIP: "198.51.100.1", Networks: []state.HostNetwork{}}); err != nil {
		t.Fatalf("Reconcile empty: %v", err)
	}
	links, err := nl.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if l.Attrs().Name != "lo" {
			t.Errorf("link %s (%s) left after the view emptied", l.Attrs().Name, l.Type())
		}
	}
}

// discoverThroughTap writes DISCOVERs from guestMAC into the TAP until a
// DHCP reply comes back on it (the bridge forwards from a TAP only once it
// noticed the carrier that opening it raised, a moment later) and returns it.
func discoverThroughTap(t *testing.T, ns *netdev.Namespace, tapName string, guestMAC net.HardwareAddr) *dhcpv4.DHCPv4 {
	t.Helper()
	tp, err := ns.OpenTap(tapName, true)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	d, err := dhcpv4.NewDiscovery(guestMAC)
	if err != nil {
		t.Fatal(err)
	}
	frame := udpBroadcastFrame(guestMAC, d.ToBytes())
	hdr := make([]byte, netdev.VnetHdrLen)
	buf := make([]byte, 2048)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if err := tp.SetDeadline(time.Now().Add(250 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if _, err := tp.WritePacket([][]byte{hdr, frame}); err != nil {
			t.Fatal(err)
		}
		for {
			n, err := tp.ReadPacket([][]byte{hdr, buf}, nil)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			// An IPv4 UDP frame to port 68 with no IP options.
			g := buf[:n-len(hdr)]
			if len(g) < 42 || g[12] != 0x08 || g[13] != 0 || g[14] != 0x45 || g[23] != 17 || binary.BigEndian.Uint16(g[36:]) != 68 {
				continue
			}
			m, err := dhcpv4.FromBytes(g[42:])
			if err != nil {
				t.Fatalf("reply: %v", err)
			}
			if m.TransactionID == d.TransactionID {
				return m
			}
		}
	}
	t.Fatal("no DHCP reply on the TAP")
	return nil
}

// udpBroadcastFrame is what a guest without an address sends: payload in
// UDP 68 → 67, from 0.0.0.0 to 255.255.255.255, broadcast from src.
func udpBroadcastFrame(src net.HardwareAddr, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:], src)
	binary.BigEndian.PutUint16(f[12:], 0x0800)
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	copy(ip[16:], []byte{255, 255, 255, 255})
	var sum uint32
	for i := 0; i < len(ip); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(ip[i:]))
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := f[34:]
	binary.BigEndian.PutUint16(udp[0:], 68)
	binary.BigEndian.PutUint16(udp[2:], 67)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload) // UDP checksum 0: none, allowed over IPv4
	return f
}

func TestNewUnknownNamespace(t *testing.T) {
	if _, err := New("kvmstack-no-such-namespace", nil); err == nil {
		t.Fatal("New with a namespace that does not exist succeeded")
	}
}
