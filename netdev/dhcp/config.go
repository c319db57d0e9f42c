package dhcp

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// DefaultLeaseTime is the lease time when a Config sets none. Leases are
// static, so a long one costs nothing and keeps renewals rare.
const DefaultLeaseTime = 24 * time.Hour

// DefaultMTU is the interface MTU (option 26) offered when a Config sets
// none: a VXLAN overlay on a 1500-byte underlay.
const DefaultMTU = 1450

// ErrInvalidConfig is wrapped by every error about a Config.
var ErrInvalidConfig = errors.New("dhcp: invalid config")

// Config is what one bridge's server answers.
type Config struct {
	// Interface is the bridge (or any Ethernet link) to serve on.
	Interface string
	// ServerID is the server identifier (option 54) and the source
	// address of replies. It is never configured on the host: pick an
	// address of the subnet that no guest gets (one per host, so that
	// clients can tell the servers of different hosts apart).
	ServerID netip.Addr
	// Subnet gives the subnet mask (option 1); every lease lies in it.
	Subnet netip.Prefix
	// Router (option 3) and DNS (option 6) are optional.
	Router netip.Addr
	DNS    []netip.Addr
	// LeaseTime (option 51); 0 means DefaultLeaseTime. Renewal (T1) and
	// rebinding (T2) times are half and seven eighths of it.
	LeaseTime time.Duration
	// MTU (option 26); 0 means DefaultMTU.
	MTU int
	// Leases are the only clients answered: the NICs on this host.
	Leases []Lease
}

// Lease binds a guest NIC's MAC to its address.
type Lease struct {
	MAC net.HardwareAddr
	IP  netip.Addr
	// Hostname (option 12) is optional.
	Hostname string
}

func (c *Config) leaseTime() time.Duration {
	if c.LeaseTime == 0 {
		return DefaultLeaseTime
	}
	return c.LeaseTime
}

func (c *Config) mtu() int {
	if c.MTU == 0 {
		return DefaultMTU
	}
	return c.MTU
}

// validate reports every problem with c.
func (c *Config) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if c.Interface == "" || len(c.Interface) > 15 {
		bad("interface name %q", c.Interface)
	}
	if !c.Subnet.IsValid() || !c.Subnet.Addr().Is4() || c.Subnet.Bits() > 30 {
		bad("subnet %v: want an IPv4 prefix of at most /30", c.Subnet)
	}
	sub := c.Subnet.Masked()
	usable := func(a netip.Addr) bool {
		if !a.Is4() || !sub.Contains(a) || a == sub.Addr() {
			return false
		}
		b := a.As4()
		m := net.CIDRMask(sub.Bits(), 32)
		for i := range b {
			if b[i]|m[i] != 0xff {
				return true
			}
		}
		return false // the broadcast address
	}
	if !usable(c.ServerID) {
		bad("server id %v is not a host address of %v", c.ServerID, c.Subnet)
	}
	if c.Router.IsValid() && !usable(c.Router) {
		bad("router %v is not a host address of %v", c.Router, c.Subnet)
	}
	for _, d := range c.DNS {
		if !d.Is4() {
			bad("DNS server %v is not IPv4", d)
		}
	}
	if c.LeaseTime < 0 || (c.LeaseTime > 0 && c.LeaseTime < time.Minute) || c.LeaseTime > 365*24*time.Hour {
		bad("lease time %v out of 1m..1y", c.LeaseTime)
	}
	if c.MTU != 0 && (c.MTU < 576 || c.MTU > 65535) {
		bad("MTU %d out of 576..65535", c.MTU)
	}
	macs := map[string]bool{}
	ips := map[netip.Addr]bool{c.ServerID: true}
	for _, l := range c.Leases {
		switch {
		case len(l.MAC) != 6 || l.MAC[0]&1 != 0 || isZero(l.MAC):
			bad("lease MAC %v is not a unicast Ethernet address", l.MAC)
		case macs[l.MAC.String()]:
			bad("MAC %v leased twice", l.MAC)
		case !usable(l.IP):
			bad("lease %v for %v is not a host address of %v", l.IP, l.MAC, c.Subnet)
		case ips[l.IP] || l.IP == c.Router:
			bad("address %v of %v is already taken", l.IP, l.MAC)
		case len(l.Hostname) > 63:
			bad("hostname %q of %v longer than 63 bytes", l.Hostname, l.MAC)
		}
		macs[l.MAC.String()] = true
		ips[l.IP] = true
	}
	return errors.Join(errs...)
}

func isZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}
