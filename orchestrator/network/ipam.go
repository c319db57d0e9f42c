package network

import (
	"errors"
	"fmt"
	"net/netip"
)

// Subnet size limits: a /16 keeps address scans and DHCP leases bounded; a /29
// is the smallest subnet that still leaves guest addresses after the
// reservations.
const (
	MinPrefixLen = 16
	MaxPrefixLen = 29
)

// VNI range handed out to networks. VNIs below 4096 are left to operators
// (they often mirror VLAN ids); 2^24-1 is the largest VXLAN VNI.
const (
	VNIMin uint32 = 4096
	VNIMax uint32 = 1<<24 - 1
)

// ErrBadCIDR means a network CIDR is not acceptable.
var ErrBadCIDR = errors.New("bad network CIDR")

// Subnet is a validated IPv4 network and its reserved addresses.
type Subnet struct {
	// Prefix is the masked network prefix.
	Prefix netip.Prefix
	// Gateway is the first host address, reserved for the router.
	Gateway netip.Addr
	// DHCP is the second host address, reserved for the agent's DHCP server.
	DHCP netip.Addr
	// First and Last bound the addresses handed to guests (inclusive).
	First, Last netip.Addr
}

// ParseSubnet validates cidr: IPv4, prefix length MinPrefixLen..MaxPrefixLen,
// written as its network address (10.0.0.0/24, not 10.0.0.7/24, so that what
// the user typed is what is stored).
func ParseSubnet(cidr string) (Subnet, error) {
	p, err := netip.ParsePrefix(cidr)
	if err != nil {
		return Subnet{}, fmt.Errorf("%w: %q: %v", ErrBadCIDR, cidr, err)
	}
	if !p.Addr().Is4() {
		return Subnet{}, fmt.Errorf("%w: %q is not IPv4", ErrBadCIDR, cidr)
	}
	if p.Bits() < MinPrefixLen || p.Bits() > MaxPrefixLen {
		return Subnet{}, fmt.Errorf("%w: %q: prefix length must be %d to %d", ErrBadCIDR, cidr, MinPrefixLen, MaxPrefixLen)
	}
	if p.Masked() != p {
		return Subnet{}, fmt.Errorf("%w: %q has host bits set (did you mean %s?)", ErrBadCIDR, cidr, p.Masked())
	}
	base := p.Addr()
	gw := base.Next()
	dhcp := gw.Next()
	return Subnet{Prefix: p, Gateway: gw, DHCP: dhcp, First: dhcp.Next(), Last: broadcast(p).Prev()}, nil
}

// Size is the number of guest addresses.
func (s Subnet) Size() int { return int(toUint(s.Last)-toUint(s.First)) + 1 }

// Contains reports whether a is a guest address of the subnet.
func (s Subnet) Contains(a netip.Addr) bool {
	return a.Is4() && toUint(a) >= toUint(s.First) && toUint(a) <= toUint(s.Last)
}

// Overlaps reports whether two subnets share any address.
func (s Subnet) Overlaps(o Subnet) bool { return s.Prefix.Overlaps(o.Prefix) }

// Next returns the guest address after a, wrapping from Last to First, so a
// cursor can walk the whole pool once.
func (s Subnet) Next(a netip.Addr) netip.Addr {
	if !s.Contains(a) || a == s.Last {
		return s.First
	}
	return a.Next()
}

// Allocate returns the first guest address at or after start (wrapping) for
// which taken reports false, or false when the pool is exhausted. Starting at
// the address after the last allocation spreads reuse of freed addresses, so
// a deleted guest's address is not handed out again at once.
func (s Subnet) Allocate(start netip.Addr, taken func(netip.Addr) bool) (netip.Addr, bool) {
	a := start
	if !s.Contains(a) {
		a = s.First
	}
	for range s.Size() {
		if !taken(a) {
			return a, true
		}
		a = s.Next(a)
	}
	return netip.Addr{}, false
}

func broadcast(p netip.Prefix) netip.Addr {
	v := toUint(p.Addr()) | (1<<(32-p.Bits()) - 1)
	return fromUint(v)
}

func toUint(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func fromUint(v uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}
