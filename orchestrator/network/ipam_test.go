package network

import (
	"errors"
	"net/netip"
	"testing"
)

func TestParseSubnet(t *testing.T) {
	tests := []struct {
		cidr                  string
		gw, dhcp, first, last string
		size                  int
		bad                   bool
	}{
		{cidr: "10.0.0.0/24", gw: "10.0.0.1", dhcp: "10.0.0.2", first: "10.0.0.3", last: "10.0.0.254", size: 252},
		{cidr: "192.168.8.0/29", gw: "192.168.8.1", dhcp: "192.168.8.2", first: "192.168.8.3", last: "192.168.8.6", size: 4},
		{cidr: "172.16.0.0/16", gw: "172.16.0.1", dhcp: "172.16.0.2", first: "172.16.0.3", last: "172.16.255.254", size: 65532},
		{cidr: "10.0.0.0/30", bad: true},
		{cidr: "10.0.0.0/15", bad: true},
		{cidr: "10.0.0.7/24", bad: true},
		{cidr: "fd00::/64", bad: true},
		{cidr: "::ffff:10.0.0.0/120", bad: true},
		{cidr: "10.0.0.0", bad: true},
		{cidr: "", bad: true},
	}
	for _, tc := range tests {
		t.Run(tc.cidr, func(t *testing.T) {
			s, err := ParseSubnet(tc.cidr)
			if tc.bad {
				if !errors.Is(err, ErrBadCIDR) {
					t.Fatalf("accepted or wrong error: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Gateway.String() != tc.gw || s.DHCP.String() != tc.dhcp || s.First.String() != tc.first || s.Last.String() != tc.last || s.Size() != tc.size {
				t.Fatalf("got %+v size %d", s, s.Size())
			}
			if s.Contains(s.Gateway) || s.Contains(s.DHCP) || s.Contains(s.Prefix.Addr()) || s.Contains(s.Last.Next()) {
				t.Fatal("a reserved address is in the guest pool")
			}
		})
	}
}

func TestAllocate(t *testing.T) {
	s, err := ParseSubnet("10.1.0.0/29")
	if err != nil {
		t.Fatal(err)
	}
	taken := map[netip.Addr]bool{}
	isTaken := func(a netip.Addr) bool { return taken[a] }
	var order []string
	cursor := netip.Addr{}
	for range s.Size() {
		a, ok := s.Allocate(cursor, isTaken)
		if !ok {
			t.Fatal("exhausted early")
		}
		taken[a] = true
		order = append(order, a.String())
		cursor = s.Next(a)
	}
	if want := "[10.1.0.3 10.1.0.4 10.1.0.5 10.1.0.6]"; fmtList(order) != want {
		t.Fatalf("order %v, want %s", order, want)
	}
	if _, ok := s.Allocate(cursor, isTaken); ok {
		t.Fatal("allocated from a full pool")
	}
	// A freed address is found again by wrapping around from the cursor.
	delete(taken, netip.MustParseAddr("10.1.0.4"))
	if a, ok := s.Allocate(netip.MustParseAddr("10.1.0.6"), isTaken); !ok || a.String() != "10.1.0.4" {
		t.Fatalf("got %v %v", a, ok)
	}
	if s.Next(s.Last) != s.First || s.Next(netip.MustParseAddr("8.8.8.8")) != s.First {
		t.Fatal("Next does not wrap")
	}
	o, _ := ParseSubnet("10.1.0.0/16")
	if !s.Overlaps(o) {
		t.Fatal("overlap missed")
	}
}

func fmtList(l []string) string {
	out := "["
	for i, s := range l {
		if i > 0 {
			out += " "
		}
		out += s
	}
	return out + "]"
}

func TestMAC(t *testing.T) {
	seen := map[string]bool{}
	for i := range 2000 {
		id := string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + string(rune('0'+i/676))
		m := MAC(id, 0)
		if len(m) != 6 || m[0]&0x02 == 0 || m[0]&0x01 != 0 {
			t.Fatalf("%s: %s is not locally administered unicast", id, m)
		}
		if seen[m.String()] {
			t.Fatalf("duplicate %s", m)
		}
		seen[m.String()] = true
		if MAC(id, 0).String() != m.String() {
			t.Fatal("not deterministic")
		}
		if MAC(id, 1).String() == m.String() {
			t.Fatal("attempt does not change the address")
		}
	}
}

func FuzzParseSubnet(f *testing.F) {
	for _, s := range []string{"10.0.0.0/24", "10.0.0.0/29", "1.2.3.4/16", "::/0", "10.0.0.0/33", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cidr string) {
		s, err := ParseSubnet(cidr)
		if err != nil {
			return
		}
		if !s.Prefix.Contains(s.Gateway) || !s.Prefix.Contains(s.Last) || s.Size() < 4 || s.Size() > 65532 {
			t.Fatalf("%q: %+v", cidr, s)
		}
		if a, ok := s.Allocate(netip.Addr{}, func(netip.Addr) bool { return false }); !ok || a != s.First {
			t.Fatalf("%q: first allocation %v", cidr, a)
		}
	})
}
