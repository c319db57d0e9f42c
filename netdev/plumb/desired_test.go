package plumb

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

func TestValidate(t *testing.T) {
	owned := func(n string) bool { return strings.HasPrefix(n, "kv") }
	ok := func() Network {
		return Network{
			Bridge: "kvb-1", VXLAN: "kvx-1", VNI: 7,
			Local:     netip.MustParseAddr("192.0.2.1"),
			Remotes:   []netip.Addr{netip.MustParseAddr("192.0.2.2")},
			Neighbors: []Neighbor{{MAC: net.HardwareAddr{2, 0, 0, 0, 0, 1}, Remote: netip.MustParseAddr("192.0.2.2")}},
			Taps:      []Tap{{Name: "kvt-1"}},
		}
	}
	tests := []struct {
		name   string
		change func(d *Desired)
		want   string // substring of the error; "" means valid
	}{
		{"valid", func(*Desired) {}, ""},
		{"empty", func(d *Desired) { d.Networks = nil }, ""},
		{"foreign bridge name", func(d *Desired) { d.Networks[0].Bridge = "br0" }, "owned prefixes"},
		{"long name", func(d *Desired) { d.Networks[0].VXLAN = "kvx-0123456789abc" }, "1..15 bytes"},
		{"slash", func(d *Desired) { d.Networks[0].Taps[0].Name = "kv/t" }, "not a valid"},
		{"duplicate name", func(d *Desired) { d.Networks[0].Taps[0].Name = "kvb-1" }, "already used"},
		{"vni zero", func(d *Desired) { d.Networks[0].VNI = 0 }, "VNI 0"},
		{"vni too big", func(d *Desired) { d.Networks[0].VNI = 1 << 24 }, "out of"},
		{"duplicate vni", func(d *Desired) {
			n := ok()
			n.Bridge, n.VXLAN, n.Taps = "kvb-2", "kvx-2", nil
			d.Networks = append(d.Networks, n)
		}, "VNI 7 already used"},
		{"no local", func(d *Desired) { d.Networks[0].Local = netip.Addr{} }, "local underlay"},
		{"remote is local", func(d *Desired) { d.Networks[0].Remotes = append(d.Networks[0].Remotes, d.Networks[0].Local) }, "is the local"},
		{"remote twice", func(d *Desired) { d.Networks[0].Remotes = append(d.Networks[0].Remotes, d.Networks[0].Remotes[0]) }, "twice"},
		{"remote v6", func(d *Desired) { d.Networks[0].Remotes[0] = netip.MustParseAddr("2001:db8::1") }, "family"},
		{"multicast neighbor", func(d *Desired) { d.Networks[0].Neighbors[0].MAC[0] = 1 }, "unicast"},
		{"neighbor off remotes", func(d *Desired) { d.Networks[0].Neighbors[0].Remote = netip.MustParseAddr("192.0.2.9") }, "not among"},
		{"mtu", func(d *Desired) { d.Networks[0].MTU = 20 }, "MTU"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Desired{Networks: []Network{ok()}}
			tt.change(&d)
			err := d.validate(owned)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("valid state rejected: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want ErrInvalid mentioning %q", err, tt.want)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	if _, err := New(Options{Prefixes: []string{"kv"}}); err == nil {
		t.Error("New accepted no namespace")
	}
}
