package hostnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"

	"kvmstack/netdev"
	"kvmstack/netdev/dhcp"
	"kvmstack/netdev/plumb"
	"kvmstack/orchestrator/network"
	"kvmstack/orchestrator/state"
)

// ErrNoUnderlay is wrapped when a network has ports on other hosts but this
// host registered no underlay address: its guests are plumbed and served
// locally, but cannot reach the peers until the host has one.
var ErrNoUnderlay = errors.New("hostnet: this host has no underlay address")

// ErrBadView is wrapped for a value in the view this package cannot use (a
// malformed address, MAC or CIDR). The rest of the view is still plumbed.
var ErrBadView = errors.New("hostnet: unusable host networking view")

// loopbackLocal is the VXLAN source address of a host that registered no
// underlay address. Such a host has no remotes, so nothing is ever sent from
// it; plumb just needs some valid local address to create the device.
var loopbackLocal = netip.MustParseAddr("127.0.0.1")

// plan maps one host's view to the links plumb must build and the DHCP
// servers to run. Problems with single values are joined into the error and
// leave out only what they affect (a lease, a remote, a network's DHCP), so
// that one bad record never tears down the links of running guests; a nil
// or empty view plans nothing, which removes everything.
func plan(hn *state.HostNetworking) (plumb.Desired, []dhcp.Config, error) {
	d := plumb.Desired{}
	var cfgs []dhcp.Config
	if hn == nil {
		return d, cfgs, nil
	}
	var errs []error
	bad := func(err error, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{err}, args...)...))
	}
	local := loopbackLocal
	haveUnderlay := false
	if hn.UnderlayIP != "" {
		a, err := netip.ParseAddr(hn.UnderlayIP)
		if err != nil || a.IsUnspecified() || a.IsMulticast() {
			bad(ErrBadView, "host underlay address %q", hn.UnderlayIP)
		} else {
			local, haveUnderlay = a.Unmap(), true
		}
	}
	for _, v := range hn.Networks {
		n := plumb.Network{Bridge: v.Bridge, VXLAN: v.VXLAN, VNI: v.Network.VNI, Local: local, MTU: plumb.DefaultMTU}
		seen := map[netip.Addr]bool{}
		for _, p := range v.Peers {
			if !haveUnderlay {
				bad(ErrNoUnderlay, "network %s: peer %s (%s) left out", v.Network.Name, p.Name, p.UnderlayIP)
				continue
			}
			r, err := netip.ParseAddr(p.UnderlayIP)
			switch {
			case err != nil || r.IsUnspecified() || r.IsMulticast():
				bad(ErrBadView, "network %s: peer %s underlay address %q", v.Network.Name, p.Name, p.UnderlayIP)
				continue
			case r.Unmap() == local:
				bad(ErrBadView, "network %s: peer %s has this host's underlay address %s", v.Network.Name, p.Name, r)
				continue
			case r.Unmap().Is4() != local.Is4():
				bad(ErrBadView, "network %s: peer %s underlay %s and local %s differ in family", v.Network.Name, p.Name, r, local)
				continue
			case seen[r.Unmap()]:
				continue // two hosts sharing an address need one entry
			}
			seen[r.Unmap()] = true
			n.Remotes = append(n.Remotes, r.Unmap())
		}
		cfg, cfgErr := dhcpConfig(v)
		if cfgErr != nil {
			errs = append(errs, cfgErr)
		}
		for _, p := range v.Ports {
			n.Taps = append(n.Taps, plumb.Tap{Name: p.Tap, Owner: netdev.NoTapOwner})
			if cfg == nil {
				continue
			}
			mac, err := net.ParseMAC(p.MAC)
			if err != nil || len(mac) != 6 {
				bad(ErrBadView, "network %s: port %s MAC %q", v.Network.Name, p.ID, p.MAC)
				continue
			}
			ip, err := netip.ParseAddr(p.IP)
			if err != nil || !cfg.Subnet.Contains(ip) {
				bad(ErrBadView, "network %s: port %s address %q is not in %s", v.Network.Name, p.ID, p.IP, cfg.Subnet)
				continue
			}
			cfg.Leases = append(cfg.Leases, dhcp.Lease{MAC: mac, IP: ip, Hostname: hostname(p.InstanceName)})
		}
		d.Networks = append(d.Networks, n)
		if cfg != nil {
			cfgs = append(cfgs, *cfg)
		}
	}
	return d, cfgs, errors.Join(errs...)
}

// dhcpConfig is the server of v's bridge with no leases yet: the server
// identifier is the address the orchestrator reserved for DHCP, the router
// the subnet's gateway. Prefixes come from orchestrator/network so that the
// agent agrees with the FSM on which addresses are reserved.
func dhcpConfig(v state.HostNetwork) (*dhcp.Config, error) {
	sub, err := network.ParseSubnet(v.Network.CIDR)
	if err != nil {
		return nil, fmt.Errorf("%w: network %s: no DHCP: %w", ErrBadView, v.Network.Name, err)
	}
	cfg := &dhcp.Config{Interface: v.Bridge, Subnet: sub.Prefix, ServerID: sub.DHCP, Router: sub.Gateway, MTU: plumb.DefaultMTU}
	// The network record carries the addresses it was created with; they
	// win over the derived ones if an older rule reserved others.
	for _, f := range []struct {
		s   string
		dst *netip.Addr
	}{{v.Network.DHCPAddr, &cfg.ServerID}, {v.Network.Gateway, &cfg.Router}} {
		if f.s == "" {
			continue
		}
		a, err := netip.ParseAddr(f.s)
		if err != nil || !sub.Prefix.Contains(a) {
			return nil, fmt.Errorf("%w: network %s: no DHCP: address %q is not in %s", ErrBadView, v.Network.Name, f.s, sub.Prefix)
		}
		*f.dst = a
	}
	return cfg, nil
}

// hostname is the instance name if it is a usable DHCP host name (option
// 12), else nothing: a guest gets its address either way.
func hostname(name string) string {
	if name == "" || len(name) > 63 {
		return ""
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return ""
		}
	}
	return name
}
