package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"kvmstack/orchestrator/network"
	"kvmstack/orchestrator/state"
)

func (hs *harness) network(id, project, name, cidr string) *state.Network {
	hs.t.Helper()
	return hs.must(&NetworkCreate{Header: h(0), Network: state.Network{ID: id, ProjectID: project, Name: name, CIDR: cidr}}).Value.(*state.Network)
}

// vmWithNICs creates one instance with a port on each network.
func vmWithNICs(id, project string, nets ...string) *InstanceCreate {
	c := &InstanceCreate{Header: h(time.Second), Instances: []*state.Instance{{ID: id, Name: id, ProjectID: project, FlavorID: "f-small"}}}
	for i, n := range nets {
		c.Ports = append(c.Ports, &state.Port{ID: fmt.Sprintf("%s-p%d", id, i), InstanceID: id, NetworkID: n, Index: i})
	}
	return c
}

func TestNetworkCreate(t *testing.T) {
	hs := newHarness(t)
	n := hs.network("n1", "p1", "web", "10.0.0.0/24")
	if n.Gateway != "10.0.0.1" || n.DHCPAddr != "10.0.0.2" || n.VNI != 4096 || n.CIDR != "10.0.0.0/24" || !n.CreatedAt.Equal(t0) {
		t.Fatalf("%+v", n)
	}
	if n2 := hs.network("n2", "p1", "db", "10.1.0.0/24"); n2.VNI != 4097 {
		t.Fatalf("second VNI %d", n2.VNI)
	}
	// Another project may reuse the same CIDR (separate VXLAN segments).
	if n3 := hs.network("n3", "p2", "web", "10.0.0.0/24"); n3.VNI != 4098 {
		t.Fatalf("third VNI %d", n3.VNI)
	}
	hs.must(&NetworkDelete{Header: h(0), ID: "n2"})
	if n4 := hs.network("n4", "p1", "db2", "10.2.0.0/24"); n4.VNI != 4097 {
		t.Fatalf("freed VNI not reused: %d", n4.VNI)
	}
}

func TestNetworkCommandsRevalidated(t *testing.T) {
	net := func(id, project, name, cidr string) Command {
		return &NetworkCreate{Header: h(0), Network: state.Network{ID: id, ProjectID: project, Name: name, CIDR: cidr}}
	}
	tests := []struct {
		name string
		prep func(hs *harness)
		cmd  Command
		want error
	}{
		{"not a CIDR", nil, net("n9", "p1", "x", "10.0.0.0"), state.ErrInvalid},
		{"IPv6", nil, net("n9", "p1", "x", "fd00::/64"), state.ErrInvalid},
		{"prefix too long", nil, net("n9", "p1", "x", "10.0.0.0/30"), state.ErrInvalid},
		{"prefix too short", nil, net("n9", "p1", "x", "10.0.0.0/8"), state.ErrInvalid},
		{"host bits set", nil, net("n9", "p1", "x", "10.0.0.5/24"), state.ErrInvalid},
		{"bad name", nil, net("n9", "p1", "a b", "10.0.0.0/24"), state.ErrInvalid},
		{"bad id", nil, net("N/9", "p1", "x", "10.0.0.0/24"), state.ErrInvalid},
		{"unknown project", nil, net("n9", "nope", "x", "10.0.0.0/24"), state.ErrNotFound},
		{"overlap in project", func(hs *harness) { hs.network("n1", "p1", "a", "10.0.0.0/16") }, net("n9", "p1", "x", "10.0.5.0/24"), state.ErrConflict},
		{"name taken in project", func(hs *harness) { hs.network("n1", "p1", "a", "10.0.0.0/24") }, net("n9", "p1", "a", "10.9.0.0/24"), state.ErrConflict},
		{"id taken", func(hs *harness) { hs.network("n1", "p1", "a", "10.0.0.0/24") }, net("n1", "p2", "b", "10.9.0.0/24"), state.ErrConflict},
		{"delete missing", nil, &NetworkDelete{Header: h(0), ID: "nope"}, state.ErrNotFound},
		{"delete with ports", func(hs *harness) {
			hs.network("n1", "p1", "a", "10.0.0.0/24")
			hs.must(vmWithNICs("i1", "p1", "n1"))
		}, &NetworkDelete{Header: h(0), ID: "n1"}, state.ErrConflict},
		{"delete project with networks", func(hs *harness) { hs.network("n1", "p1", "a", "10.0.0.0/24") }, &ProjectDelete{Header: h(0), ID: "p1"}, state.ErrConflict},
		{"port on other project's network", func(hs *harness) { hs.network("n2", "p2", "b", "10.0.0.0/24") }, vmWithNICs("i1", "p1", "n2"), state.ErrNotFound},
		{"port on missing network", nil, vmWithNICs("i1", "p1", "nope"), state.ErrNotFound},
		{"port for an instance outside the command", func(hs *harness) {
			hs.network("n1", "p1", "a", "10.0.0.0/24")
			hs.must(vmWithNICs("i0", "p1"))
		}, &InstanceCreate{Header: h(0), Instances: []*state.Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "f-small"}},
			Ports: []*state.Port{{ID: "px", InstanceID: "i0", NetworkID: "n1"}}}, state.ErrInvalid},
		{"duplicate NIC index", func(hs *harness) { hs.network("n1", "p1", "a", "10.0.0.0/24") },
			&InstanceCreate{Header: h(0), Instances: []*state.Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "f-small"}},
				Ports: []*state.Port{{ID: "pa", InstanceID: "i1", NetworkID: "n1"}, {ID: "pb", InstanceID: "i1", NetworkID: "n1"}}}, state.ErrConflict},
		{"NIC index out of range", func(hs *harness) { hs.network("n1", "p1", "a", "10.0.0.0/24") },
			&InstanceCreate{Header: h(0), Instances: []*state.Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "f-small"}},
				Ports: []*state.Port{{ID: "pa", InstanceID: "i1", NetworkID: "n1", Index: state.MaxPortsPerInstance}}}, state.ErrInvalid},
		{"duplicate port id", func(hs *harness) {
			hs.network("n1", "p1", "a", "10.0.0.0/24")
			hs.must(vmWithNICs("i0", "p1", "n1"))
		}, &InstanceCreate{Header: h(0), Instances: []*state.Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "f-small"}},
			Ports: []*state.Port{{ID: "i0-p0", InstanceID: "i1", NetworkID: "n1"}}}, state.ErrConflict},
		{"null port", nil, &InstanceCreate{Header: h(0), Instances: []*state.Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "f-small"}},
			Ports: []*state.Port{nil}}, state.ErrInvalid},
		{"null instance", nil, &InstanceCreate{Header: h(0), Instances: []*state.Instance{nil}}, state.ErrInvalid},
		{"pool exhausted", func(hs *harness) {
			hs.network("n1", "p1", "a", "10.0.0.0/29")
			for i := range 4 {
				hs.must(vmWithNICs(fmt.Sprintf("i%d", i), "p1", "n1"))
			}
		}, vmWithNICs("i9", "p1", "n1"), state.ErrExhausted},
		{"underlay ip not an address", nil, &HostRegister{Header: h(0), Host: state.Host{ID: "h", Name: "h", VCPUs: 1, MemoryMB: 64,
			CPURatio: 1, RAMRatio: 1, DiskRatio: 1, UnderlayIP: "10.0.0.1/24"}}, state.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := newHarness(t)
			if tc.prep != nil {
				tc.prep(hs)
			}
			before := snapshotBytes(t, hs.f)
			r := hs.apply(tc.cmd)
			if !errors.Is(r.Err, tc.want) {
				t.Fatalf("got %v, want %v", r.Err, tc.want)
			}
			if after := snapshotBytes(t, hs.f); !bytes.Equal(before, after) {
				t.Fatalf("rejected command changed the state")
			}
		})
	}
}

func TestPortAllocation(t *testing.T) {
	hs := newHarness(t)
	hs.network("n1", "p1", "a", "10.0.0.0/29")
	hs.network("n2", "p1", "b", "10.0.1.0/24")
	// Two instances in one command, one with two NICs: all or nothing.
	c := vmWithNICs("i1", "p1", "n1", "n2")
	c.Instances = append(c.Instances, &state.Instance{ID: "i2", Name: "i2", ProjectID: "p1", FlavorID: "f-small"})
	c.Ports = append(c.Ports, &state.Port{ID: "i2-p0", InstanceID: "i2", NetworkID: "n1"})
	hs.must(c)
	ports := func() map[string]*state.Port {
		t.Helper()
		list, err := hs.f.Store().Read(nil).Ports(state.PortFilter{})
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]*state.Port{}
		for _, p := range list {
			m[p.ID] = p
		}
		return m
	}
	got := ports()
	want := map[string]string{"i1-p0": "10.0.0.3", "i1-p1": "10.0.1.3", "i2-p0": "10.0.0.4"}
	for id, ip := range want {
		if got[id] == nil || got[id].IP != ip || got[id].ProjectID != "p1" {
			t.Fatalf("port %s = %+v, want ip %s", id, got[id], ip)
		}
		if hw, err := net.ParseMAC(got[id].MAC); err != nil || hw[0]&3 != 2 {
			t.Fatalf("port %s mac %q", id, got[id].MAC)
		}
	}
	// A batch that does not fit leaves nothing behind, not even its instances.
	batch := &InstanceCreate{Header: h(0)}
	for i := range 3 {
		id := fmt.Sprintf("b%d", i)
		batch.Instances = append(batch.Instances, &state.Instance{ID: id, Name: id, ProjectID: "p1", FlavorID: "f-small"})
		batch.Ports = append(batch.Ports, &state.Port{ID: id + "-p0", InstanceID: id, NetworkID: "n1"})
	}
	if r := hs.apply(batch); !errors.Is(r.Err, state.ErrExhausted) {
		t.Fatalf("3 ports in a pool of 2 left: %v", r.Err)
	}
	if in, _ := hs.f.Store().Read(nil).Instance("b0"); in != nil {
		t.Fatal("instance of a rejected batch was created")
	}
	hs.must(vmWithNICs("i3", "p1", "n1"))
	hs.must(vmWithNICs("i4", "p1", "n1"))
	if r := hs.apply(vmWithNICs("i5", "p1", "n1")); !errors.Is(r.Err, state.ErrExhausted) {
		t.Fatalf("full pool: %v", r.Err)
	}
	// Deleting an instance frees its ports; the freed address is found again.
	hs.must(&InstanceState{Header: h(0), ID: "i2", State: state.InstanceDeleted, Reason: "test"})
	if _, ok := ports()["i2-p0"]; ok {
		t.Fatal("port of a deleted instance survives")
	}
	hs.must(vmWithNICs("i5", "p1", "n1"))
	if p := ports()["i5-p0"]; p.IP != "10.0.0.4" {
		t.Fatalf("freed address not reused: %+v", p)
	}
	// No two ports share an address on a network or a MAC anywhere.
	ips, macs := map[string]bool{}, map[string]bool{}
	for _, p := range ports() {
		k := p.NetworkID + "/" + p.IP
		if ips[k] || macs[p.MAC] {
			t.Fatalf("duplicate address or MAC: %+v", p)
		}
		ips[k], macs[p.MAC] = true, true
	}
	for _, id := range []string{"i1", "i3", "i4", "i5"} {
		hs.must(&InstanceState{Header: h(0), ID: id, State: state.InstanceDeleted, Reason: "test"})
	}
	hs.must(&NetworkDelete{Header: h(0), ID: "n1"})
}

// TestReplicasAgree applies the same commands to two FSMs: network and port
// allocation must not depend on anything but the log.
func TestReplicasAgree(t *testing.T) {
	run := func() []byte {
		hs := newHarness(t)
		hs.network("n1", "p1", "a", "10.0.0.0/28")
		hs.network("n2", "p2", "a", "10.0.0.0/28")
		for i := range 6 {
			hs.must(vmWithNICs(fmt.Sprintf("i%d", i), "p1", "n1"))
			hs.must(vmWithNICs(fmt.Sprintf("j%d", i), "p2", "n2"))
		}
		hs.must(&InstanceState{Header: h(0), ID: "i2", State: state.InstanceDeleted})
		hs.must(vmWithNICs("i9", "p1", "n1"))
		return snapshotBytes(t, hs.f)
	}
	if a, b := run(), run(); !bytes.Equal(a, b) {
		t.Fatal("two replicas of the same log differ")
	}
}

func TestHostNetworking(t *testing.T) {
	hs := newHarness(t)
	reg := func(name, underlay string) string {
		r := hs.must(&HostRegister{Header: h(0), Host: state.Host{ID: "h-" + name, Name: name, VCPUs: 8, MemoryMB: 8192, DiskGB: 100,
			CPURatio: 1, RAMRatio: 1, DiskRatio: 1, UnderlayIP: underlay}})
		return r.Value.(*state.Host).ID
	}
	a, b, c := reg("a", "192.0.2.1"), reg("b", "192.0.2.2"), reg("c", "")
	hs.network("0123456789abcdef0123456789abcdef", "p1", "web", "10.0.0.0/24")
	hs.network("n2", "p1", "db", "10.1.0.0/24")
	const web = "0123456789abcdef0123456789abcdef"
	place := func(id, host string, nets ...string) {
		hs.must(vmWithNICs(id, "p1", nets...))
		if err := hs.place(id, host, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	place("va", a, web, "n2")
	place("vb", b, web)
	place("vc", c, web)
	hs.must(vmWithNICs("pending", "p1", web)) // not placed: no host plumbs it yet

	got, err := hs.f.Store().Read(nil).HostNetworking(a)
	if err != nil {
		t.Fatal(err)
	}
	if got.UnderlayIP != "192.0.2.1" || len(got.Networks) != 2 {
		t.Fatalf("%+v", got)
	}
	w := got.Networks[0]
	if w.Network.ID != web || w.Bridge != "kbr-0123456789a" || w.VXLAN != "kvx-0123456789a" || w.Network.VNI != 4096 {
		t.Fatalf("web network %+v", w)
	}
	// c has no underlay address, so only b is a VXLAN peer.
	if len(w.Peers) != 1 || w.Peers[0].HostID != b || w.Peers[0].UnderlayIP != "192.0.2.2" {
		t.Fatalf("peers %+v", w.Peers)
	}
	if len(w.Ports) != 1 || w.Ports[0].InstanceID != "va" || w.Ports[0].Tap != network.TapName("va-p0") || w.Ports[0].IP == "" {
		t.Fatalf("ports %+v", w.Ports)
	}
	if db := got.Networks[1]; db.Network.ID != "n2" || len(db.Peers) != 0 || len(db.Ports) != 1 || db.Ports[0].Index != 1 {
		t.Fatalf("db network %+v", db)
	}
	hs.must(&InstanceState{Header: h(0), ID: "vb", State: state.InstanceDeleted})
	got, _ = hs.f.Store().Read(nil).HostNetworking(a)
	if len(got.Networks[0].Peers) != 0 {
		t.Fatalf("deleted instance's host still a peer: %+v", got.Networks[0].Peers)
	}
	got, _ = hs.f.Store().Read(nil).HostNetworking(b)
	if len(got.Networks) != 0 {
		t.Fatalf("host b keeps networks after its only instance went: %+v", got)
	}
	if _, err := hs.f.Store().Read(nil).HostNetworking("nope"); !errors.Is(err, state.ErrNotFound) {
		t.Fatal(err)
	}

	// Agents long-poll on these indexes: a heartbeat or an unchanged
	// re-registration must not wake them, a moved underlay address must.
	watched := func() uint64 { return hs.f.Store().Read(nil).Index(state.HostNetworkingTables...) }
	before := watched()
	hs.must(&HostHeartbeat{Header: h(time.Minute), ID: c})
	reg("c", "")
	if watched() != before {
		t.Fatal("heartbeat or identical re-registration woke the agents")
	}
	reg("c", "192.0.2.3")
	if watched() <= before {
		t.Fatal("new underlay address did not advance the index")
	}
	got, _ = hs.f.Store().Read(nil).HostNetworking(a)
	if p := got.Networks[0].Peers; len(p) != 1 || p[0].UnderlayIP != "192.0.2.3" {
		t.Fatalf("peers after c got an underlay address: %+v", p)
	}
}

func TestSnapshotRestoreNetworks(t *testing.T) {
	hs := newHarness(t)
	hs.network("n1", "p1", "a", "10.0.0.0/24")
	hs.must(vmWithNICs("i1", "p1", "n1"))
	var sink memSink
	snap, _ := hs.f.Snapshot()
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := New(state.New(), nil)
	if err := g.Restore(ioNopCloser{bytes.NewReader(sink.Bytes())}); err != nil {
		t.Fatal(err)
	}
	r := g.Store().Read(nil)
	n, _ := r.NetworkByName("p1", "a")
	ports, _ := r.Ports(state.PortFilter{NetworkID: "n1"})
	if n == nil || n.VNI != 4096 || len(ports) != 1 || ports[0].IP != "10.0.0.3" {
		t.Fatalf("restored network %+v ports %+v", n, ports)
	}
	// The restored replica continues allocating exactly as the original.
	g2 := &harness{t: t, f: g, idx: hs.idx}
	g2.must(vmWithNICs("i2", "p1", "n1"))
	hs.must(vmWithNICs("i2", "p1", "n1"))
	if !bytes.Equal(snapshotBytes(t, g), snapshotBytes(t, hs.f)) {
		t.Fatal("restored replica diverged")
	}
}

func FuzzNetworkCommands(f *testing.F) {
	seeds := []Command{
		&NetworkCreate{Header: h(0), Network: state.Network{ID: "n2", ProjectID: "p1", Name: "b", CIDR: "10.9.0.0/29"}},
		&NetworkCreate{Header: h(0), Network: state.Network{ID: "n2", ProjectID: "p1", Name: "b", CIDR: "10.0.0.0/16"}},
		&NetworkDelete{Header: h(0), ID: "n1"},
		vmWithNICs("i1", "p1", "n1"),
		vmWithNICs("i1", "p1", "n1", "n1", "n1"),
		&HostRegister{Header: h(0), Host: state.Host{ID: "h", Name: "h", VCPUs: 1, MemoryMB: 64, CPURatio: 1, RAMRatio: 1, DiskRatio: 1, UnderlayIP: "::ffff:1.2.3.4"}},
	}
	for _, c := range seeds {
		b, err := Encode(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Decode(b)
		if err != nil {
			return
		}
		hs := newHarness(t)
		hs.network("n1", "p1", "a", "10.0.0.0/29")
		hs.must(vmWithNICs("i0", "p1", "n1"))
		hs.f.ApplyCommand(100, c)
		// Whatever was applied, the address and MAC invariants hold.
		ports, err := hs.f.Store().Read(nil).Ports(state.PortFilter{})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, p := range ports {
			for _, k := range []string{p.NetworkID + "/" + p.IP, p.MAC} {
				if seen[k] {
					t.Fatalf("duplicate %s", k)
				}
				seen[k] = true
			}
		}
	})
}

// BenchmarkInstanceCreate measures one FSM apply of an instance with and
// without a NIC on a /16 that fills up as the benchmark runs; the difference
// is the cost of the port (MAC probe, address search from the cursor, two
// inserts).
func BenchmarkInstanceCreate(b *testing.B) {
	for _, nics := range []int{0, 1} {
		b.Run(fmt.Sprintf("nics=%d", nics), func(b *testing.B) {
			hs := newHarness(b)
			hs.network("n1", "p1", "a", "10.0.0.0/16")
			nets := []string{"n1"}[:nics]
			b.ResetTimer()
			for i := range b.N {
				if r := hs.f.ApplyCommand(uint64(1000+i), vmWithNICs(fmt.Sprintf("i%d", i), "p1", nets...)); r.Err != nil {
					b.Fatal(r.Err)
				}
			}
		})
	}
}
