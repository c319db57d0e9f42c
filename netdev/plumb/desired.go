package plumb

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"

	"kvmstack/netdev"
)

// VXLANPort is the IANA VXLAN UDP port. It is set explicitly because Linux
// defaults to the pre-standard 8472.
const VXLANPort = 4789

// DefaultMTU is the MTU of bridges, VXLANs and TAPs when a network sets
// none: a 1500-byte underlay less VXLAN's 50 bytes of outer Ethernet, IPv4,
// UDP and VXLAN headers. Guests learn it through DHCP option 26.
const DefaultMTU = 1450

// maxVNI is the largest 24-bit VXLAN network identifier.
const maxVNI = 1<<24 - 1

// ErrInvalid is wrapped by every error about the Desired value itself
// (names, VNIs, addresses); nothing is changed on the host for it.
var ErrInvalid = errors.New("plumb: invalid desired state")

// ErrConflict is wrapped when a desired name is held by a link this package
// does not manage (a veth, say): it is left alone and the network fails.
var ErrConflict = errors.New("plumb: name held by a foreign link")

// Desired is the whole wanted data plane of one host. Links with an owned
// prefix that it does not name are deleted.
type Desired struct {
	Networks []Network
}

// Network is one overlay network on this host.
type Network struct {
	// Bridge and VXLAN are interface names (at most 15 bytes, each with
	// an owned prefix); the caller derives them from the network's ID.
	Bridge string
	VXLAN  string
	// VNI is the VXLAN network identifier, 1..2^24-1, unique per host.
	VNI uint32
	// Local is this host's underlay address, the VXLAN source address.
	Local netip.Addr
	// UnderlayDevice optionally pins the VXLAN's traffic to one link of
	// the namespace (the underlay NIC); empty leaves it to routing.
	UnderlayDevice string
	// MTU of the bridge, the VXLAN and the TAPs; 0 means DefaultMTU.
	MTU int
	// Remotes are the underlay addresses of the other hosts with this
	// network: broadcast, unknown-unicast and multicast frames are copied
	// to each (an all-zero MAC forwarding entry per remote).
	Remotes []netip.Addr
	// Neighbors optionally pins known guest MACs to their host, so that
	// unicast to them is not flooded to every remote first.
	Neighbors []Neighbor
	// Taps are the instance NICs on this host.
	Taps []Tap
}

// Neighbor is a guest MAC living behind a remote host.
type Neighbor struct {
	MAC    net.HardwareAddr
	Remote netip.Addr
}

// Tap is a persistent TAP device attached to the network's bridge.
type Tap struct {
	Name string
	// Owner may open the TAP without CAP_NET_ADMIN (vmm running as an
	// unprivileged user). A negative UID or GID is "don't care": an
	// existing TAP keeps whatever it has.
	Owner netdev.TapOwner
}

func (n *Network) mtu() int {
	if n.MTU == 0 {
		return DefaultMTU
	}
	return n.MTU
}

// validate checks d against the owned prefixes. Every problem is reported,
// not just the first.
func (d *Desired) validate(owned func(string) bool) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...))
	}
	names := map[string]string{}
	vnis := map[uint32]string{}
	name := func(what, n string) {
		switch {
		case len(n) == 0 || len(n) > 15:
			bad("%s name %q: want 1..15 bytes", what, n)
		case strings.ContainsAny(n, "/: \t\n") || n == "." || n == "..":
			bad("%s name %q: not a valid interface name", what, n)
		case !owned(n):
			bad("%s name %q has none of the owned prefixes", what, n)
		}
		if prev, dup := names[n]; dup {
			bad("%s name %q already used for %s", what, n, prev)
		}
		names[n] = what
	}
	for i := range d.Networks {
		n := &d.Networks[i]
		name("bridge", n.Bridge)
		name("vxlan", n.VXLAN)
		if n.VNI == 0 || n.VNI > maxVNI {
			bad("network %s: VNI %d out of 1..%d", n.Bridge, n.VNI, maxVNI)
		} else if prev, dup := vnis[n.VNI]; dup {
			bad("network %s: VNI %d already used by %s", n.Bridge, n.VNI, prev)
		}
		vnis[n.VNI] = n.Bridge
		if !n.Local.IsValid() || n.Local.IsUnspecified() || n.Local.IsMulticast() {
			bad("network %s: local underlay address %v", n.Bridge, n.Local)
		}
		if n.MTU != 0 && (n.MTU < 68 || n.MTU > 65535) {
			bad("network %s: MTU %d out of 68..65535", n.Bridge, n.MTU)
		}
		seen := map[netip.Addr]bool{}
		for _, r := range n.Remotes {
			switch {
			case !r.IsValid() || r.IsUnspecified() || r.IsMulticast():
				bad("network %s: remote %v", n.Bridge, r)
			case r.Is4() != n.Local.Is4():
				bad("network %s: remote %v and local %v differ in family", n.Bridge, r, n.Local)
			case r == n.Local:
				bad("network %s: remote %v is the local address", n.Bridge, r)
			case seen[r]:
				bad("network %s: remote %v listed twice", n.Bridge, r)
			}
			seen[r] = true
		}
		macs := map[string]bool{}
		for _, nb := range n.Neighbors {
			switch {
			case len(nb.MAC) != 6 || isZeroMAC(nb.MAC) || nb.MAC[0]&1 != 0:
				bad("network %s: neighbor MAC %v is not a unicast Ethernet address", n.Bridge, nb.MAC)
			case !seen[nb.Remote]:
				bad("network %s: neighbor %v behind %v, which is not among the remotes", n.Bridge, nb.MAC, nb.Remote)
			case macs[nb.MAC.String()]:
				bad("network %s: neighbor %v listed twice", n.Bridge, nb.MAC)
			}
			macs[nb.MAC.String()] = true
		}
		for _, t := range n.Taps {
			name("tap", t.Name)
		}
	}
	return errors.Join(errs...)
}

func isZeroMAC(m net.HardwareAddr) bool {
	for _, b := range m {
		if b != 0 {
			return false
		}
	}
	return true
}
