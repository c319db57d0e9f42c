package state

import (
	"fmt"
	"net/netip"
	"sort"
	"time"

	memdb "github.com/hashicorp/go-memdb"

	"kvmstack/orchestrator/network"
)

const (
	tableNetworks = "networks"
	tablePorts    = "ports"
)

// MaxPortsPerInstance bounds the NICs of one instance (the vmm's PCI slots
// are finite, and a bounded command keeps FSM work bounded).
const MaxPortsPerInstance = 8

// macAttempts bounds the search for a free MAC; with 46 random bits a second
// attempt is already a once-in-a-lifetime event.
const macAttempts = 64

// Network is a tenant L2 network with one IPv4 subnet, carried between hosts
// in a VXLAN segment. Gateway and DHCP addresses are reserved in the subnet.
type Network struct {
	ID        string `json:"id"`
	ProjectID string `json:"project_id"`
	Name      string `json:"name"`
	CIDR      string `json:"cidr"`
	Gateway   string `json:"gateway"`
	DHCPAddr  string `json:"dhcp_address"`
	VNI       uint32 `json:"vni"`
	// NextIP is where the next address search starts, so freed addresses
	// are reused last rather than first.
	NextIP    string    `json:"next_ip"`
	CreatedAt time.Time `json:"created_at"`
}

// Port is one guest NIC on a network: its MAC and IPv4 address are allocated
// by the FSM when the instance is created and freed when it is deleted.
type Port struct {
	ID         string `json:"id"`
	ProjectID  string `json:"project_id"`
	NetworkID  string `json:"network_id"`
	InstanceID string `json:"instance_id"`
	// Index is the NIC's position in the instance (0 = first NIC).
	Index     int       `json:"index"`
	MAC       string    `json:"mac"`
	IP        string    `json:"ip"`
	CreatedAt time.Time `json:"created_at"`
}

func init() {
	register(&memdb.TableSchema{Name: tableNetworks, Indexes: map[string]*memdb.IndexSchema{
		"id":      idIndex("ID"),
		"project": strIndex("project", "ProjectID", false),
		"name": {Name: "name", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
			&memdb.StringFieldIndex{Field: "ProjectID"}, &memdb.StringFieldIndex{Field: "Name"}}}},
		"vni": {Name: "vni", Unique: true, Indexer: &memdb.UintFieldIndex{Field: "VNI"}},
	}}, func() any { return &Network{} })
	register(&memdb.TableSchema{Name: tablePorts, Indexes: map[string]*memdb.IndexSchema{
		"id":       idIndex("ID"),
		"network":  strIndex("network", "NetworkID", false),
		"instance": strIndex("instance", "InstanceID", false),
		"mac":      strIndex("mac", "MAC", true),
		"addr": {Name: "addr", Unique: true, Indexer: &memdb.CompoundIndex{Indexes: []memdb.Indexer{
			&memdb.StringFieldIndex{Field: "NetworkID"}, &memdb.StringFieldIndex{Field: "IP"}}}},
	}}, func() any { return &Port{} })
}

// CreateNetwork validates the CIDR (see network.ParseSubnet), refuses one
// that overlaps another network of the same project, reserves the gateway
// and DHCP addresses and allocates the lowest free VNI. Everything is derived
// from the command and the state, so every replica computes the same network.
func (w *WriteTxn) CreateNetwork(n *Network, at time.Time) (*Network, error) {
	if err := checkID("network", n.ID); err != nil {
		return nil, err
	}
	if err := checkName("network", n.Name); err != nil {
		return nil, err
	}
	sub, err := network.ParseSubnet(n.CIDR)
	if err != nil {
		return nil, fmt.Errorf("network %q: %w: %w", n.Name, ErrInvalid, err)
	}
	if p, err := first[Project](w.tx, nil, tableProjects, "id", n.ProjectID); err != nil || p == nil {
		return nil, firstErr(err, fmt.Errorf("project %s: %w", n.ProjectID, ErrNotFound))
	}
	if x, err := first[Network](w.tx, nil, tableNetworks, "id", n.ID); err != nil || x != nil {
		return nil, firstErr(err, fmt.Errorf("network %s exists: %w", n.ID, ErrConflict))
	}
	if x, err := first[Network](w.tx, nil, tableNetworks, "name", n.ProjectID, n.Name); err != nil || x != nil {
		return nil, firstErr(err, fmt.Errorf("network name %q is taken in project %s: %w", n.Name, n.ProjectID, ErrConflict))
	}
	siblings, err := all[Network](w.tx, nil, tableNetworks, "project", n.ProjectID)
	if err != nil {
		return nil, err
	}
	for _, o := range siblings {
		other, err := network.ParseSubnet(o.CIDR)
		if err == nil && other.Overlaps(sub) {
			return nil, fmt.Errorf("network %q (%s) overlaps network %q (%s): %w", n.Name, n.CIDR, o.Name, o.CIDR, ErrConflict)
		}
	}
	vni, err := w.freeVNI()
	if err != nil {
		return nil, err
	}
	c := &Network{ID: n.ID, ProjectID: n.ProjectID, Name: n.Name, CIDR: sub.Prefix.String(), Gateway: sub.Gateway.String(),
		DHCPAddr: sub.DHCP.String(), VNI: vni, NextIP: sub.First.String(), CreatedAt: fixedTime(at)}
	return c, w.insert(tableNetworks, c)
}

// freeVNI returns the lowest VNI no network uses.
func (w *WriteTxn) freeVNI() (uint32, error) { return w.freeVNIIn(network.VNIMin, network.VNIMax) }

// freeVNIIn scans the sorted VNI index from lo; networks are few compared
// with the 16M VNIs, so the scan is short.
func (w *WriteTxn) freeVNIIn(lo, hi uint32) (uint32, error) {
	it, err := w.tx.LowerBound(tableNetworks, "vni", uint64(lo))
	if err != nil {
		return 0, fmt.Errorf("state: scan vnis: %w", err)
	}
	want := uint64(lo)
	for raw := it.Next(); raw != nil; raw = it.Next() {
		v := uint64(raw.(*Network).VNI)
		if v > want {
			break
		}
		if v == want {
			want++
		}
	}
	if want > uint64(hi) {
		return 0, fmt.Errorf("every VNI from %d to %d is in use: %w", lo, hi, ErrExhausted)
	}
	return uint32(want), nil
}

// DeleteNetwork removes a network that has no ports left.
func (w *WriteTxn) DeleteNetwork(id string) error {
	n, err := first[Network](w.tx, nil, tableNetworks, "id", id)
	if err != nil {
		return err
	}
	if n == nil {
		return fmt.Errorf("network %s: %w", id, ErrNotFound)
	}
	ports, err := all[Port](w.tx, nil, tablePorts, "network", id)
	if err != nil {
		return err
	}
	if len(ports) > 0 {
		return fmt.Errorf("network %s still has %d ports (delete their instances first): %w", n.Name, len(ports), ErrConflict)
	}
	return w.delete(tableNetworks, n)
}

// CreatePorts adds ports to instances created earlier in the same
// transaction (or before). The proposer supplies only ids, instance, network
// and NIC index; the project, MAC and address are decided here, against the
// state at this log position, so concurrent creations can never be given the
// same address: they are serialised by the log.
func (w *WriteTxn) CreatePorts(ports []*Port, at time.Time) error {
	for _, p := range ports {
		if p == nil {
			return fmt.Errorf("null port: %w", ErrInvalid)
		}
		if err := checkID("port", p.ID); err != nil {
			return err
		}
		in, err := first[Instance](w.tx, nil, tableInstances, "id", p.InstanceID)
		if err != nil {
			return err
		}
		if in == nil || in.State == InstanceDeleted {
			return fmt.Errorf("instance %s: %w", p.InstanceID, ErrNotFound)
		}
		n, err := first[Network](w.tx, nil, tableNetworks, "id", p.NetworkID)
		if err != nil {
			return err
		}
		if n == nil || n.ProjectID != in.ProjectID {
			return fmt.Errorf("network %s: %w", p.NetworkID, ErrNotFound)
		}
		if x, err := first[Port](w.tx, nil, tablePorts, "id", p.ID); err != nil || x != nil {
			return firstErr(err, fmt.Errorf("port %s exists: %w", p.ID, ErrConflict))
		}
		existing, err := all[Port](w.tx, nil, tablePorts, "instance", in.ID)
		if err != nil {
			return err
		}
		if len(existing) >= MaxPortsPerInstance {
			return fmt.Errorf("instance %s: at most %d ports: %w", in.ID, MaxPortsPerInstance, ErrInvalid)
		}
		for _, e := range existing {
			if e.Index == p.Index {
				return fmt.Errorf("instance %s already has a NIC %d: %w", in.ID, p.Index, ErrConflict)
			}
		}
		if p.Index < 0 || p.Index >= MaxPortsPerInstance {
			return fmt.Errorf("port %s: NIC index %d out of range 0-%d: %w", p.ID, p.Index, MaxPortsPerInstance-1, ErrInvalid)
		}
		mac, err := w.freeMAC(p.ID)
		if err != nil {
			return err
		}
		sub, err := network.ParseSubnet(n.CIDR)
		if err != nil {
			return fmt.Errorf("network %s has an unusable CIDR %q: %w", n.ID, n.CIDR, ErrInvalid)
		}
		start, _ := netip.ParseAddr(n.NextIP)
		var lookupErr error
		ip, ok := sub.Allocate(start, func(a netip.Addr) bool {
			x, err := first[Port](w.tx, nil, tablePorts, "addr", n.ID, a.String())
			if err != nil {
				lookupErr = err
				return true
			}
			return x != nil
		})
		if lookupErr != nil {
			return lookupErr
		}
		if !ok {
			return fmt.Errorf("network %s (%s): all %d addresses are in use: %w", n.Name, n.CIDR, sub.Size(), ErrExhausted)
		}
		nc := *n
		nc.NextIP = sub.Next(ip).String()
		if err := w.insert(tableNetworks, &nc); err != nil {
			return err
		}
		c := &Port{ID: p.ID, ProjectID: in.ProjectID, NetworkID: n.ID, InstanceID: in.ID, Index: p.Index,
			MAC: mac, IP: ip.String(), CreatedAt: fixedTime(at)}
		if err := w.insert(tablePorts, c); err != nil {
			return err
		}
	}
	return nil
}

func (w *WriteTxn) freeMAC(portID string) (string, error) {
	for attempt := range uint32(macAttempts) {
		m := network.MAC(portID, attempt).String()
		x, err := first[Port](w.tx, nil, tablePorts, "mac", m)
		if err != nil {
			return "", err
		}
		if x == nil {
			return m, nil
		}
	}
	return "", fmt.Errorf("port %s: no free MAC after %d attempts: %w", portID, macAttempts, ErrExhausted)
}

// deleteInstancePorts frees an instance's ports (and so their addresses).
func (w *WriteTxn) deleteInstancePorts(instanceID string) error {
	ports, err := all[Port](w.tx, nil, tablePorts, "instance", instanceID)
	if err != nil {
		return err
	}
	for _, p := range ports {
		if err := w.delete(tablePorts, p); err != nil {
			return err
		}
	}
	return nil
}

// Network returns a network by id.
func (r *ReadTxn) Network(id string) (*Network, error) {
	return first[Network](r.tx, r.ws, tableNetworks, "id", id)
}

// NetworkByName returns a project's network by name.
func (r *ReadTxn) NetworkByName(projectID, name string) (*Network, error) {
	return first[Network](r.tx, r.ws, tableNetworks, "name", projectID, name)
}

// Networks lists a project's networks, or every network if projectID is empty.
func (r *ReadTxn) Networks(projectID string) ([]*Network, error) {
	if projectID == "" {
		return all[Network](r.tx, r.ws, tableNetworks, "id")
	}
	return all[Network](r.tx, r.ws, tableNetworks, "project", projectID)
}

// PortFilter narrows Ports; at least one field must be set.
type PortFilter struct {
	NetworkID  string
	InstanceID string
}

// Ports lists ports of a network or of an instance, sorted by instance and NIC index.
func (r *ReadTxn) Ports(f PortFilter) ([]*Port, error) {
	var (
		list []*Port
		err  error
	)
	switch {
	case f.InstanceID != "":
		list, err = all[Port](r.tx, r.ws, tablePorts, "instance", f.InstanceID)
	case f.NetworkID != "":
		list, err = all[Port](r.tx, r.ws, tablePorts, "network", f.NetworkID)
	default:
		list, err = all[Port](r.tx, r.ws, tablePorts, "id")
	}
	if err != nil {
		return nil, err
	}
	out := list[:0:0]
	for _, p := range list {
		if f.NetworkID != "" && p.NetworkID != f.NetworkID {
			continue
		}
		out = append(out, p)
	}
	sortBy(out, func(a, b *Port) bool {
		if a.InstanceID != b.InstanceID {
			return a.InstanceID < b.InstanceID
		}
		return a.Index < b.Index
	})
	return out, nil
}

// HostNetworking is everything the agent of one host must plumb: for each
// network with a port of an instance placed there, the network, its device
// names, the other hosts' underlay addresses (VXLAN FDB entries) and the
// local ports with their TAP names.
type HostNetworking struct {
	HostID     string        `json:"host_id"`
	UnderlayIP string        `json:"underlay_ip,omitempty"`
	Networks   []HostNetwork `json:"networks"`
}

// HostNetwork is one network as seen from one host.
type HostNetwork struct {
	Network Network    `json:"network"`
	Bridge  string     `json:"bridge"`
	VXLAN   string     `json:"vxlan"`
	Peers   []Peer     `json:"peers"`
	Ports   []HostPort `json:"ports"`
}

// Peer is another host with ports on the same network.
type Peer struct {
	HostID     string `json:"host_id"`
	Name       string `json:"name"`
	UnderlayIP string `json:"underlay_ip"`
}

// HostPort is a local port and the TAP device that carries it.
type HostPort struct {
	Port
	InstanceName string `json:"instance_name"`
	Tap          string `json:"tap"`
}

// HostNetworkingTables are the tables whose index a blocking query on
// HostNetworking must watch. The hosts table is left out on purpose: every
// heartbeat changes it, and the only host field the answer uses, the
// underlay address, bumps the ports index when it changes.
var HostNetworkingTables = []string{tableInstances, tablePorts, tableNetworks}

// HostNetworking computes what host hostID must plumb. Instances count once
// they are placed and until they are deleted; peers without an underlay
// address cannot be reached and are left out.
func (r *ReadTxn) HostNetworking(hostID string) (*HostNetworking, error) {
	h, err := first[Host](r.tx, r.ws, tableHosts, "id", hostID)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("host %s: %w", hostID, ErrNotFound)
	}
	out := &HostNetworking{HostID: h.ID, UnderlayIP: h.UnderlayIP, Networks: []HostNetwork{}}
	insts, err := r.Instances(InstanceFilter{HostID: h.ID})
	if err != nil {
		return nil, err
	}
	byNet := map[string]*HostNetwork{}
	for _, in := range insts {
		ports, err := r.Ports(PortFilter{InstanceID: in.ID})
		if err != nil {
			return nil, err
		}
		for _, p := range ports {
			hn := byNet[p.NetworkID]
			if hn == nil {
				n, err := r.Network(p.NetworkID)
				if err != nil {
					return nil, err
				}
				if n == nil {
					continue
				}
				hn = &HostNetwork{Network: *n, Bridge: network.BridgeName(n.ID), VXLAN: network.VXLANName(n.ID), Peers: []Peer{}}
				byNet[p.NetworkID] = hn
			}
			hn.Ports = append(hn.Ports, HostPort{Port: *p, InstanceName: in.Name, Tap: network.TapName(p.ID)})
		}
	}
	for _, hn := range byNet {
		peers, err := r.networkPeers(hn.Network.ID, h.ID)
		if err != nil {
			return nil, err
		}
		hn.Peers = peers
		out.Networks = append(out.Networks, *hn)
	}
	sort.Slice(out.Networks, func(i, j int) bool { return out.Networks[i].Network.ID < out.Networks[j].Network.ID })
	return out, nil
}

func (r *ReadTxn) networkPeers(networkID, self string) ([]Peer, error) {
	ports, err := r.Ports(PortFilter{NetworkID: networkID})
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{self: true}
	peers := []Peer{}
	for _, p := range ports {
		in, err := r.Instance(p.InstanceID)
		if err != nil {
			return nil, err
		}
		if in == nil || in.HostID == "" || in.State == InstanceDeleted || seen[in.HostID] {
			continue
		}
		seen[in.HostID] = true
		h, err := first[Host](r.tx, r.ws, tableHosts, "id", in.HostID)
		if err != nil {
			return nil, err
		}
		if h == nil || h.UnderlayIP == "" {
			continue
		}
		peers = append(peers, Peer{HostID: h.ID, Name: h.Name, UnderlayIP: h.UnderlayIP})
	}
	sort.Slice(peers, func(i, j int) bool { return peers[i].HostID < peers[j].HostID })
	return peers, nil
}
