package dhcp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"kvmstack/netdev"
	"kvmstack/netdev/plumb"
)

func newNamespace(t *testing.T) *netdev.Namespace {
	t.Helper()
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

// udhcpcScript prints what udhcpc learnt when it binds a lease.
const udhcpcScript = `#!/bin/sh
if [ "$1" = bound ]; then
	echo "LEASE ip=$ip subnet=$subnet router=$router mtu=$mtu serverid=$serverid lease=$lease dns=$dns hostname=$hostname"
fi
exit 0
`

// dhcpClient is a guest: a namespace whose eth0 (with a given MAC) is a
// port of the host's bridge, and busybox's udhcpc to ask for a lease, an
// implementation independent of this package.
type dhcpClient struct {
	t       *testing.T
	ns      *netdev.Namespace
	busybox string
	script  string
}

func newClient(t *testing.T, host *netdev.Namespace, bridge, port string, mac net.HardwareAddr, busybox, script string) *dhcpClient {
	t.Helper()
	g := newNamespace(t)
	if err := host.AddVeth(port, "eth0", g); err != nil {
		t.Fatal(err)
	}
	gl, err := g.Netlink().LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Netlink().LinkSetHardwareAddr(gl, mac); err != nil {
		t.Fatal(err)
	}
	c := &dhcpClient{t: t, ns: g, busybox: busybox, script: script}
	c.attach(host, bridge, port)
	if err := g.SetUp("eth0"); err != nil {
		t.Fatal(err)
	}
	return c
}

// attach (again) puts the host end of the client's veth on the bridge.
func (c *dhcpClient) attach(host *netdev.Namespace, bridge, port string) {
	c.t.Helper()
	nl := host.Netlink()
	p, err := nl.LinkByName(port)
	if err != nil {
		c.t.Fatal(err)
	}
	br, err := nl.LinkByName(bridge)
	if err != nil {
		c.t.Fatal(err)
	}
	if err := nl.LinkSetMaster(p, br); err != nil {
		c.t.Fatal(err)
	}
	if err := nl.LinkSetUp(p); err != nil {
		c.t.Fatal(err)
	}
}

// lease runs udhcpc once: it returns the LEASE line, or "" if udhcpc
// gave up without one.
func (c *dhcpClient) lease(extra ...string) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{"udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "3", "-T", "1", "-A", "1", "-s", c.script}, extra...)
	cmd := exec.CommandContext(ctx, c.busybox, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := c.ns.Start(cmd); err != nil {
		c.t.Fatal(err)
	}
	err := cmd.Wait()
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "LEASE ") {
			if err != nil {
				c.t.Fatalf("udhcpc printed a lease but failed: %v\n%s", err, out.String())
			}
			return line
		}
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) {
		c.t.Fatalf("udhcpc: %v\n%s", err, out.String())
	}
	c.t.Logf("udhcpc without a lease (%v):\n%s", err, out.String())
	return ""
}

// TestServeUdhcpc serves a bridge made by plumb and has busybox udhcpc
// ask for leases: known MACs get their address and options (unicast or
// broadcast replies), unknown ones get nothing, lease changes apply at
// once, a recreated bridge gets a fresh server, and a removed config
// stops answering.
func TestServeUdhcpc(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not installed (make deps installs busybox-static): it provides the independent DHCP client")
	}
	host := newNamespace(t)
	rec, err := plumb.New(plumb.Options{Namespace: host, Prefixes: []string{"kvb-", "kvx-"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	desired := plumb.Desired{Networks: []plumb.Network{{
		Bridge: "kvb-dhcp", VXLAN: "kvx-dhcp", VNI: 42, Local: netip.MustParseAddr("192.0.2.1"),
	}}}
	if err := rec.Reconcile(ctx, desired); err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "udhcpc.sh")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	known := newClient(t, host, "kvb-dhcp", "vg-known", knownMAC, busybox, script)
	other := newClient(t, host, "kvb-dhcp", "vg-other", otherMAC, busybox, script)

	servers := NewServers(host, nil)
	t.Cleanup(func() { servers.Close() })
	cfg := testConfig()
	cfg.Interface = "kvb-dhcp"
	if err := servers.Reconcile(ctx, []Config{cfg}); err != nil {
		t.Fatal(err)
	}
	wantKnown := fmt.Sprintf("LEASE ip=%v subnet=255.255.255.0 router=198.51.100.1 mtu=1450 serverid=%v lease=3600 dns=198.51.100.1 hostname=vm-1", leasedIP, serverID)
	t.Run("known MAC", func(t *testing.T) {
		start := time.Now()
		if got := known.lease(); got != wantKnown {
			t.Fatalf("got %q\nwant %q", got, wantKnown)
		}
		t.Logf("lease in %v", time.Since(start))
	})
	t.Run("known MAC broadcast replies", func(t *testing.T) {
		if got := known.lease("-B"); got != wantKnown {
			t.Fatalf("got %q\nwant %q", got, wantKnown)
		}
	})
	t.Run("unknown MAC", func(t *testing.T) {
		if got := other.lease(); got != "" {
			t.Fatalf("unknown MAC got %q", got)
		}
	})
	t.Run("lease added", func(t *testing.T) {
		cfg.Leases = append(cfg.Leases, Lease{MAC: otherMAC, IP: netip.MustParseAddr("198.51.100.11")})
		if err := servers.Reconcile(ctx, []Config{cfg}); err != nil {
			t.Fatal(err)
		}
		if got := other.lease(); !strings.HasPrefix(got, "LEASE ip=198.51.100.11 ") {
			t.Fatalf("got %q", got)
		}
	})
	t.Run("bridge recreated", func(t *testing.T) {
		if err := rec.Reconcile(ctx, plumb.Desired{}); err != nil {
			t.Fatal(err)
		}
		if err := rec.Reconcile(ctx, desired); err != nil {
			t.Fatal(err)
		}
		known.attach(host, "kvb-dhcp", "vg-known")
		if err := servers.Reconcile(ctx, []Config{cfg}); err != nil {
			t.Fatal(err)
		}
		if got := known.lease(); got != wantKnown {
			t.Fatalf("got %q\nwant %q", got, wantKnown)
		}
	})
	t.Run("removed", func(t *testing.T) {
		if err := servers.Reconcile(ctx, nil); err != nil {
			t.Fatal(err)
		}
		if got := known.lease(); got != "" {
			t.Fatalf("got %q from a stopped server", got)
		}
	})
}

// TestServeAcrossHosts runs one server per host on a network that spans two
// hosts over VXLAN: every DISCOVER floods to both, and each guest is
// answered by its own host's server only, the other staying silent.
func TestServeAcrossHosts(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox not installed (make deps installs busybox-static): it provides the independent DHCP client")
	}
	script := filepath.Join(t.TempDir(), "udhcpc.sh")
	if err := os.WriteFile(script, []byte(udhcpcScript), 0o755); err != nil {
		t.Fatal(err)
	}
	a, b := newNamespace(t), newNamespace(t)
	if err := a.AddVeth("ul0", "ul0", b); err != nil {
		t.Fatal(err)
	}
	underlay := map[*netdev.Namespace]netip.Addr{a: netip.MustParseAddr("192.0.2.1"), b: netip.MustParseAddr("192.0.2.2")}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type side struct {
		ns     *netdev.Namespace
		srv    *Server
		client *dhcpClient
		lease  Lease
		sid    netip.Addr
	}
	sides := []*side{
		{ns: a, lease: Lease{MAC: knownMAC, IP: leasedIP}, sid: serverID},
		{ns: b, lease: Lease{MAC: otherMAC, IP: netip.MustParseAddr("198.51.100.11")}, sid: netip.MustParseAddr("198.51.100.3")},
	}
	for i, s := range sides {
		other := sides[1-i].ns
		if err := s.ns.AddAddress("ul0", underlay[s.ns].String()+"/24"); err != nil {
			t.Fatal(err)
		}
		if err := s.ns.SetUp("ul0"); err != nil {
			t.Fatal(err)
		}
		rec, err := plumb.New(plumb.Options{Namespace: s.ns, Prefixes: []string{"kvb-", "kvx-"}})
		if err != nil {
			t.Fatal(err)
		}
		if err := rec.Reconcile(ctx, plumb.Desired{Networks: []plumb.Network{{
			Bridge: "kvb-net", VXLAN: "kvx-net", VNI: 42, Local: underlay[s.ns], UnderlayDevice: "ul0",
			Remotes: []netip.Addr{underlay[other]},
		}}}); err != nil {
			t.Fatal(err)
		}
		cfg := testConfig()
		cfg.Interface, cfg.ServerID, cfg.Leases = "kvb-net", s.sid, []Lease{s.lease}
		if s.srv, err = Listen(s.ns, cfg, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.srv.Close() })
		done := make(chan error, 1)
		go func() { done <- s.srv.Serve(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
		s.client = newClient(t, s.ns, "kvb-net", "vg-guest", s.lease.MAC, busybox, script)
	}
	for i, s := range sides {
		heard := sides[1-i].srv.Requests()
		got := s.client.lease()
		want := fmt.Sprintf("LEASE ip=%v subnet=255.255.255.0 router=198.51.100.1 mtu=1450 serverid=%v ", s.lease.IP, s.sid)
		if !strings.HasPrefix(got, want) {
			t.Fatalf("guest on host %d got %q, want %q...", i, got, want)
		}
		// The counters move after the frames do: wait for them. The other
		// server must hear the flooded DISCOVER and REQUEST (so its silence
		// is a decision, not a lost frame), and send nothing.
		peer := sides[1-i].srv
		if !eventually(func() bool { return s.srv.Replies() == 2 }) {
			t.Errorf("host %d's server sent %d replies, want OFFER and ACK", i, s.srv.Replies())
		}
		if !eventually(func() bool { return peer.Requests() >= heard+2 }) {
			t.Errorf("host %d's server heard %d of host %d's guest's requests across VXLAN, want 2", 1-i, peer.Requests()-heard, i)
		}
		if n := peer.Replies(); n != int64(2*i) { // its own guest's, if served already
			t.Errorf("host %d's server answered a guest of host %d (%d replies)", 1-i, i, n)
		}
	}
}

// eventually polls cond for up to five seconds.
func eventually(cond func() bool) bool {
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestServeThroughTap takes the path a guest's packets take: a TAP that
// plumb created and attached to the bridge, opened as vmm opens it; a
// DISCOVER written into it comes back as an OFFER read from it.
func TestServeThroughTap(t *testing.T) {
	host := newNamespace(t)
	rec, err := plumb.New(plumb.Options{Namespace: host, Prefixes: []string{"kvb-", "kvx-", "kvt-"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := rec.Reconcile(ctx, plumb.Desired{Networks: []plumb.Network{{
		Bridge: "kvb-tap", VXLAN: "kvx-tap", VNI: 43, Local: netip.MustParseAddr("192.0.2.1"),
		Taps: []plumb.Tap{{Name: "kvt-guest", Owner: netdev.NoTapOwner}},
	}}}); err != nil {
		t.Fatal(err)
	}
	tap, err := host.OpenTap("kvt-guest", true)
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	cfg := testConfig()
	cfg.Interface = "kvb-tap"
	srv, err := Listen(host, cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	go srv.Serve(ctx)

	xid := dhcpv4.TransactionID{9, 8, 7, 6}
	hdr := make([]byte, netdev.VnetHdrLen)
	discoverFrame := clientFrame(knownMAC, zeroIP, discover(knownMAC, dhcpv4.WithTransactionID(xid)).ToBytes())
	buf := make([]byte, 2048)
	// The bridge forwards from the TAP only once it has seen the carrier
	// that opening the TAP raised, which the kernel reports a moment
	// later: retry as a client would.
	deadline := time.Now().Add(10 * time.Second)
	var f []byte
	for f == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no OFFER on the TAP (server read %d requests)", srv.Requests())
		}
		// One deadline covers reads and writes: renew it first.
		if err := tap.SetDeadline(time.Now().Add(250 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if _, err := tap.WritePacket([][]byte{hdr, discoverFrame}); err != nil {
			t.Fatal(err)
		}
		for {
			n, err := tap.ReadPacket([][]byte{hdr, buf}, nil)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			// Skip anything else the bridge floods (nothing is expected).
			if g := buf[:n-len(hdr)]; len(g) >= 42 && g[12] == 0x08 && g[13] == 0 && g[14+9] == 17 && g[36] == 0 && g[37] == 68 {
				f = g
				break
			}
		}
	}
	br, err := host.Netlink().LinkByName("kvb-tap")
	if err != nil {
		t.Fatal(err)
	}
	got := parseReply(t, f, br.Attrs().HardwareAddr)
	if got.msg.MessageType() != dhcpv4.MessageTypeOffer || got.msg.TransactionID != xid || !got.msg.YourIPAddr.Equal(leasedIP.AsSlice()) {
		t.Fatalf("got %s", got.msg.Summary())
	}
	if !bytes.Equal(got.dstMAC, knownMAC) {
		t.Errorf("OFFER to %v, want the guest's MAC", got.dstMAC)
	}
}
