package hostnet

import (
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"

	"kvmstack/netdev"
	"kvmstack/netdev/dhcp"
	"kvmstack/netdev/plumb"
	"kvmstack/orchestrator/network"
	"kvmstack/orchestrator/state"
)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func mac(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// view builds a HostNetwork the way state.HostNetworking does.
func view(id, name, cidr string, vni uint32, peers []state.Peer, ports ...state.HostPort) state.HostNetwork {
	return state.HostNetwork{Network: state.Network{ID: id, Name: name, CIDR: cidr, VNI: vni},
		Bridge: network.BridgeName(id), VXLAN: network.VXLANName(id), Peers: peers, Ports: ports}
}

func port(id, inst, m, ip string) state.HostPort {
	return state.HostPort{Port: state.Port{ID: id, MAC: m, IP: ip}, InstanceName: inst, Tap: network.TapName(id)}
}

func tap(portID string) plumb.Tap {
	return plumb.Tap{Name: network.TapName(portID), Owner: netdev.NoTapOwner}
}

func TestPlan(t *testing.T) {
	netA, netB := "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	peers := []state.Peer{{HostID: "h2", Name: "node2", UnderlayIP: "192.0.2.2"}, {HostID: "h3", Name: "node3", UnderlayIP: "192.0.2.3"}}
	p1 := port("1111111111111111", "web-1", "02:00:00:00:00:01", "10.1.0.3")
	p2 := port("2222222222222222", "db", "02:00:00:00:00:02", "10.1.0.4")
	p3 := port("3333333333333333", "web_1", "02:00:00:00:00:03", "10.2.0.3")
	netCfg := func(id, cidr, server, router string, leases ...dhcp.Lease) dhcp.Config {
		return dhcp.Config{Interface: network.BridgeName(id), Subnet: netip.MustParsePrefix(cidr), ServerID: addr(server),
			Router: addr(router), MTU: plumb.DefaultMTU, Leases: leases}
	}
	links := func(id string, vni uint32, local string, remotes []netip.Addr, taps ...plumb.Tap) plumb.Network {
		return plumb.Network{Bridge: network.BridgeName(id), VXLAN: network.VXLANName(id), VNI: vni, Local: addr(local),
			MTU: plumb.DefaultMTU, Remotes: remotes, Taps: taps}
	}
	withAddrs := view(netA, "a", "10.1.0.0/24", 5000, nil, p1)
	withAddrs.Network.Gateway, withAddrs.Network.DHCPAddr = "10.1.0.254", "10.1.0.253"

	tests := []struct {
		name    string
		hn      *state.HostNetworking
		want    plumb.Desired
		cfgs    []dhcp.Config
		wantErr error
	}{
		{name: "nil view plans nothing", hn: nil},
		{name: "no networks removes everything", hn: &state.HostNetworking{HostID: "h1", UnderlayIP: "192.0.2.1", Networks: []state.HostNetwork{}}},
		{
			name: "two networks, peers on one",
			hn: &state.HostNetworking{HostID: "h1", UnderlayIP: "192.0.2.1", Networks: []state.HostNetwork{
				view(netA, "a", "10.1.0.0/24", 5000, peers, p1, p2),
				view(netB, "b", "10.2.0.0/16", 5001, []state.Peer{}, p3),
			}},
			want: plumb.Desired{Networks: []plumb.Network{
				links(netA, 5000, "192.0.2.1", []netip.Addr{addr("192.0.2.2"), addr("192.0.2.3")}, tap(p1.ID), tap(p2.ID)),
				links(netB, 5001, "192.0.2.1", nil, tap(p3.ID)),
			}},
			cfgs: []dhcp.Config{
				netCfg(netA, "10.1.0.0/24", "10.1.0.2", "10.1.0.1",
					dhcp.Lease{MAC: mac(p1.MAC), IP: addr(p1.IP), Hostname: "web-1"},
					dhcp.Lease{MAC: mac(p2.MAC), IP: addr(p2.IP), Hostname: "db"}),
				// "web_1" is no valid DHCP host name: the lease goes without one.
				netCfg(netB, "10.2.0.0/16", "10.2.0.2", "10.2.0.1", dhcp.Lease{MAC: mac(p3.MAC), IP: addr(p3.IP)}),
			},
		},
		{
			name: "the network's own gateway and DHCP addresses win",
			hn:   &state.HostNetworking{HostID: "h1", UnderlayIP: "192.0.2.1", Networks: []state.HostNetwork{withAddrs}},
			want: plumb.Desired{Networks: []plumb.Network{links(netA, 5000, "192.0.2.1", nil, tap(p1.ID))}},
			cfgs: []dhcp.Config{netCfg(netA, "10.1.0.0/24", "10.1.0.253", "10.1.0.254", dhcp.Lease{MAC: mac(p1.MAC), IP: addr(p1.IP), Hostname: "web-1"})},
		},
		{
			name: "no underlay and no peers: loopback source, nothing sent",
			hn:   &state.HostNetworking{HostID: "h1", Networks: []state.HostNetwork{view(netA, "a", "10.1.0.0/24", 5000, []state.Peer{}, p1)}},
			want: plumb.Desired{Networks: []plumb.Network{links(netA, 5000, "127.0.0.1", nil, tap(p1.ID))}},
			cfgs: []dhcp.Config{netCfg(netA, "10.1.0.0/24", "10.1.0.2", "10.1.0.1", dhcp.Lease{MAC: mac(p1.MAC), IP: addr(p1.IP), Hostname: "web-1"})},
		},
		{
			name:    "no underlay with peers: local guests still plumbed, peers reported",
			hn:      &state.HostNetworking{HostID: "h1", Networks: []state.HostNetwork{view(netA, "a", "10.1.0.0/24", 5000, peers, p1)}},
			want:    plumb.Desired{Networks: []plumb.Network{links(netA, 5000, "127.0.0.1", nil, tap(p1.ID))}},
			cfgs:    []dhcp.Config{netCfg(netA, "10.1.0.0/24", "10.1.0.2", "10.1.0.1", dhcp.Lease{MAC: mac(p1.MAC), IP: addr(p1.IP), Hostname: "web-1"})},
			wantErr: ErrNoUnderlay,
		},
		{
			name: "bad, duplicate and self peer addresses are left out",
			hn: &state.HostNetworking{HostID: "h1", UnderlayIP: "192.0.2.1", Networks: []state.HostNetwork{view(netA, "a", "10.1.0.0/24", 5000, []state.Peer{
				{HostID: "h2", UnderlayIP: "192.0.2.2"}, {HostID: "h3", UnderlayIP: "192.0.2.2"}, {HostID: "h4", UnderlayIP: "bogus"},
				{HostID: "h5", UnderlayIP: "192.0.2.1"}, {HostID: "h6", UnderlayIP: "2001:db8::6"},
			}, p1)}},
			want:    plumb.Desired{Networks: []plumb.Network{links(netA, 5000, "192.0.2.1", []netip.Addr{addr("192.0.2.2")}, tap(p1.ID))}},
			cfgs:    []dhcp.Config{netCfg(netA, "10.1.0.0/24", "10.1.0.2", "10.1.0.1", dhcp.Lease{MAC: mac(p1.MAC), IP: addr(p1.IP), Hostname: "web-1"})},
			wantErr: ErrBadView,
		},
		{
			name: "a port with a bad MAC or address keeps its TAP but gets no lease",
			hn: &state.HostNetworking{HostID: "h1", UnderlayIP: "192.0.2.1", Networks: []state.HostNetwork{view(netA, "a", "10.1.0.0/24", 5000, nil,
				p1, port("4444444444444444", "x", "zz", "10.1.0.5"), port("5555555555555555", "y", "02:00:00:00:00:05", "10.9.0.5"))}},
			want:    plumb.Desired{Networks: []plumb.Network{links(netA, 5000, "192.0.2.1", nil, tap(p1.ID), tap("4444444444444444"), tap("5555555555555555"))}},
			cfgs:    []dhcp.Config{netCfg(netA, "10.1.0.0/24", "10.1.0.2", "10.1.0.1", dhcp.Lease{MAC: mac(p1.MAC), IP: addr(p1.IP), Hostname: "web-1"})},
			wantErr: ErrBadView,
		},
		{
			name:    "a bad CIDR keeps the links but serves no DHCP",
			hn:      &state.HostNetworking{HostID: "h1", UnderlayIP: "192.0.2.1", Networks: []state.HostNetwork{view(netA, "a", "10.1.0.7/24", 5000, nil, p1)}},
			want:    plumb.Desired{Networks: []plumb.Network{links(netA, 5000, "192.0.2.1", nil, tap(p1.ID))}},
			wantErr: ErrBadView,
		},
		{
			name:    "a bad host underlay address falls back to loopback",
			hn:      &state.HostNetworking{HostID: "h1", UnderlayIP: "224.0.0.1", Networks: []state.HostNetwork{view(netA, "a", "10.1.0.0/24", 5000, nil, p1)}},
			want:    plumb.Desired{Networks: []plumb.Network{links(netA, 5000, "127.0.0.1", nil, tap(p1.ID))}},
			cfgs:    []dhcp.Config{netCfg(netA, "10.1.0.0/24", "10.1.0.2", "10.1.0.1", dhcp.Lease{MAC: mac(p1.MAC), IP: addr(p1.IP), Hostname: "web-1"})},
			wantErr: ErrBadView,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, cfgs, err := plan(tt.hn)
			if tt.wantErr == nil && err != nil {
				t.Fatalf("plan: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Fatalf("plan error = %v, want %v", err, tt.wantErr)
			}
			if !reflect.DeepEqual(d, tt.want) {
				t.Errorf("desired =\n%+v\nwant\n%+v", d, tt.want)
			}
			if !reflect.DeepEqual(cfgs, tt.cfgs) {
				t.Errorf("dhcp configs =\n%+v\nwant\n%+v", cfgs, tt.cfgs)
			}
		})
	}
}
