package agent

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/network"
	"kvmstack/orchestrator/state"
)

// recordingNetwork is a Network that remembers the views it was given and
// can be made to fail.
type recordingNetwork struct {
	mu    sync.Mutex
	views []*state.HostNetworking
	fail  error
}

func (n *recordingNetwork) Reconcile(_ context.Context, hn *state.HostNetworking) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.fail != nil {
		return n.fail
	}
	n.views = append(n.views, hn)
	return nil
}

func (n *recordingNetwork) plumbed(portID string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, v := range n.views {
		for _, hn := range v.Networks {
			for _, p := range hn.Ports {
				if p.ID == portID {
					return true
				}
			}
		}
	}
	return false
}

// TestNetworkPlumbedBeforeStart checks that an instance with NICs starts
// only after Network has plumbed a view containing its ports, and that
// its vmm gets one --net per NIC, in order, with the TAP and MAC of the
// cluster's ports, in the namespace the agent plumbs.
func TestNetworkPlumbedBeforeStart(t *testing.T) {
	c := newCluster(t, 1)
	ctx := context.Background()
	for _, n := range []struct{ name, cidr string }{{"front", "10.1.0.0/24"}, {"back", "10.2.0.0/24"}} {
		if _, err := c.admin.CreateNetwork(ctx, n.name, n.cidr); err != nil {
			t.Fatal(err)
		}
	}
	netw := &recordingNetwork{}
	data := t.TempDir()
	c.startAgent(data, func(cfg *Config) { cfg.Network, cfg.Netns = netw, "/var/run/netns/agent-test" })
	id := c.create("two-nics", api.InstanceRequest{Image: c.disk.ID, Networks: []string{"back", "front"}})
	c.waitState(id, state.InstanceRunning, nil)
	ports, err := c.admin.InstancePorts(ctx, id)
	if err != nil || len(ports) != 2 {
		t.Fatalf("ports %v %v", ports, err)
	}
	var want []string
	for _, p := range ports {
		if !netw.plumbed(p.ID) {
			t.Errorf("port %s not plumbed before the start", p.ID)
		}
		want = append(want, "--net\x00tap="+network.TapName(p.ID)+",mac="+p.MAC+",netns=/var/run/netns/agent-test")
	}
	pid := readPID(t, filepath.Join(data, "instances", id))
	cmdline, _ := os.ReadFile("/proc/" + itoa(pid) + "/cmdline")
	if !bytes.Contains(cmdline, []byte(strings.Join(want, "\x00"))) {
		t.Errorf("command line %q lacks %q in NIC order", cmdline, want)
	}
}

// TestNetworkFailure checks that an instance whose network cannot be
// plumbed fails with the plumbing's error.
func TestNetworkFailure(t *testing.T) {
	c := newCluster(t, 1)
	if _, err := c.admin.CreateNetwork(context.Background(), "front", "10.1.0.0/24"); err != nil {
		t.Fatal(err)
	}
	netw := &recordingNetwork{fail: errors.New("bridge kbr-x: operation not permitted")}
	c.startAgent(t.TempDir(), func(cfg *Config) { cfg.Network = netw; cfg.NetworkTimeout = time.Second })
	id := c.create("nic", api.InstanceRequest{Image: c.disk.ID, Networks: []string{"front"}})
	// An instance without NICs does not wait for the plumbing.
	plain := c.create("plain", api.InstanceRequest{Image: c.disk.ID})
	c.waitState(plain, state.InstanceRunning, nil)
	in := c.waitState(id, state.InstanceError, nil)
	if r := lastReason(in); !strings.Contains(r, "network not ready") || !strings.Contains(r, "operation not permitted") {
		t.Errorf("reason %q", r)
	}
}
