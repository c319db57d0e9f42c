package cloud

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/network"
	"kvmstack/orchestrator/state"
)

const (
	guestBoot = 3 * time.Minute
	// intruderAddr is an address of net-a's subnet that no port has.
	intruderAddr = "10.60.0.250"
)

// newNetwork creates a network and removes it when the test ends (if the
// test did not).
func (c *cloud) newNetwork(t *testing.T, name, cidr string) *api.NetworkView {
	t.Helper()
	n, err := c.api.CreateNetwork(context.Background(), name, cidr)
	if err != nil {
		t.Fatalf("network %s: %v", name, err)
	}
	return n
}

// antiAffinity creates a server group whose members land on different
// hosts.
func (c *cloud) antiAffinity(t *testing.T, name string) string {
	t.Helper()
	var g state.ServerGroup
	if _, err := c.api.Do(context.Background(), http.MethodPost, "/v1/server-groups", nil,
		api.GroupRequest{Name: name, Policy: state.PolicyAntiAffinity}, &g); err != nil {
		t.Fatalf("server group: %v", err)
	}
	return g.ID
}

// TestMultiHostNetworks boots guests of two networks on different hosts: each gets its port's address from its host's DHCP
// server, guests of one network ping each other across VXLAN, and a guest of
// the other network does not reach them even with an address of their subnet. Deleting the instances and networks then
// leaves no bridge, VXLAN, TAP, vmm process or instance directory on any
// host.
func TestMultiHostNetworks(t *testing.T) {
	c := getCloud(t)
	start := time.Now()
	netA := c.newNetwork(t, "net-a", "10.60.0.0/24")
	netB := c.newNetwork(t, "net-b", "10.61.0.0/24")
	group := c.antiAffinity(t, "spread-a")
	a1 := c.createGuest(t, "a1", group, netA.ID)
	a2 := c.createGuest(t, "a2", group, netA.ID)
	b1 := c.createGuest(t, "b1", "", netB.ID)
	guests := []*guest{a1, a2, b1}
	for _, g := range guests {
		in := g.waitState(t, state.InstanceRunning, guestBoot, nil)
		h, err := c.hostOf(in)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s running on %s with %s after %v", g.name, h.name, g.ip, time.Since(start).Round(100*time.Millisecond))
	}
	_, h1 := a1.dir(t)
	_, h2 := a2.dir(t)
	if h1 == h2 {
		t.Fatalf("a1 and a2 are both on %s despite their anti-affinity group", h1.name)
	}
	for _, g := range guests {
		g.waitAddress(t, guestBoot)
	}
	t.Logf("all guests leased their addresses after %v", time.Since(start).Round(100*time.Millisecond))

	if !a1.pingUntil(t, a2.ip, 3) {
		t.Fatalf("a1 cannot ping a2 (%s) across hosts\na1 console:\n%s", a2.ip, tail(a1.console(t), 20))
	}
	if !a2.pingUntil(t, a1.ip, 3) {
		t.Fatalf("a2 cannot ping a1 (%s) across hosts", a1.ip)
	}
	t.Logf("a1 and a2 ping each other across VXLAN after %v", time.Since(start).Round(100*time.Millisecond))
	// Networks of a project cannot overlap, so b1 takes an address of
	// net-a's subnet as well: then only the VNI keeps it from net-a's
	// guests (no route is missing).
	b1.send(t, "ip addr add "+intruderAddr+"/24 dev eth0")
	for _, target := range []string{a1.ip, a2.ip} {
		if b1.ping(t, target) {
			t.Errorf("b1 (net-b) reached %s on net-a", target)
		}
	}
	t.Logf("isolation checked after %v", time.Since(start).Round(100*time.Millisecond))

	// The cleanliness check sees the guests while they are there.
	if err := c.checkClean(); err == nil || !strings.Contains(err.Error(), "vmm pid") ||
		!strings.Contains(err.Error(), "link "+network.TapPrefix) || !strings.Contains(err.Error(), "instance directory") {
		t.Fatalf("with three guests running the cleanliness check says %v", err)
	}
	for _, g := range guests {
		g.delete(t)
	}
	for _, n := range []*api.NetworkView{netA, netB} {
		if err := waitUntil(time.Minute, "network "+n.Name+" deleted", func() error {
			return c.api.DeleteNetwork(context.Background(), n.ID)
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := waitUntil(time.Minute, "every host clean", c.checkClean); err != nil {
		t.Fatal(err)
	}
	t.Logf("everything gone after %v", time.Since(start).Round(100*time.Millisecond))
}

// checkClean reports what is left on the hosts (leftOn) and in the test's
// own namespace.
func (c *cloud) checkClean() error {
	var left []string
	for _, h := range c.hosts {
		l, err := leftOn(h)
		if err != nil {
			return err
		}
		left = append(left, l...)
	}
	// No vmm of ours (its socket in one of our data directories) may run
	// anywhere, whatever namespace it would be in.
	procs, _ := os.ReadDir("/proc")
	for _, e := range procs {
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if bytes.Contains(cmdline, []byte("--api-socket\x00"+c.dir)) && alive(atoi(e.Name())) {
			left = append(left, "vmm pid "+e.Name())
		}
	}
	// Nothing of the hosts' networks may show up in the test's own
	// namespace.
	own, err := netlink.LinkList()
	if err != nil {
		return err
	}
	for _, l := range own {
		name := l.Attrs().Name
		for _, p := range []string{network.BridgePrefix, network.VXLANPrefix, network.TapPrefix, underlayBridge, "u-host"} {
			if strings.HasPrefix(name, p) {
				left = append(left, "the test's namespace: link "+name)
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind: %s", strings.Join(left, ", "))
	}
	return nil
}

// cleared is nil once nothing of its instances is left on h (leftOn), for
// waitUntil.
func cleared(h *host) error {
	left, err := leftOn(h)
	if err == nil && len(left) > 0 {
		err = fmt.Errorf("left behind: %s", strings.Join(left, ", "))
	}
	return err
}

// leftOn lists what of its instances is left on a host: links its agent
// owns, vmm processes, instance directories.
func leftOn(h *host) ([]string, error) {
	var left []string
	links, err := h.ns.Netlink().LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		name := l.Attrs().Name
		for _, p := range []string{network.BridgePrefix, network.VXLANPrefix, network.TapPrefix} {
			if strings.HasPrefix(name, p) {
				left = append(left, h.name+": link "+name)
			}
		}
	}
	pids, err := namespacePIDs(h)
	if err != nil {
		return nil, err
	}
	for _, pid := range pids {
		if exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid)); filepath.Base(exe) == "vmm" {
			left = append(left, fmt.Sprintf("%s: vmm pid %d", h.name, pid))
		}
	}
	dirs, _ := os.ReadDir(filepath.Join(h.dataDir, "instances"))
	for _, d := range dirs {
		left = append(left, h.name+": instance directory "+d.Name())
	}
	return left, nil
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}
