package hostnet

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

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
	// Idempotent: the same view again changes nothing and does not fail
	// (the DHCP servers are updated in place, not rebound).
	if err := h.Reconcile(ctx, hn); err != nil {
		t.Fatalf("second Reconcile: %v", err)
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

func TestNewUnknownNamespace(t *testing.T) {
	if _, err := New("kvmstack-no-such-namespace", nil); err == nil {
		t.Fatal("New with a namespace that does not exist succeeded")
	}
}
