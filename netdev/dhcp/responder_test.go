package dhcp

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

var update = flag.Bool("update", false, "rewrite golden files under testdata/")

var (
	bridgeMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	knownMAC  = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	otherMAC  = net.HardwareAddr{0x52, 0x54, 0x00, 0x65, 0x43, 0x21}
	leasedIP  = netip.MustParseAddr("198.51.100.10")
	serverID  = netip.MustParseAddr("198.51.100.2")
)

func testConfig() Config {
	return Config{
		Interface: "kvb-test",
		ServerID:  serverID,
		Subnet:    netip.MustParsePrefix("198.51.100.0/24"),
		Router:    netip.MustParseAddr("198.51.100.1"),
		DNS:       []netip.Addr{netip.MustParseAddr("198.51.100.1")},
		LeaseTime: time.Hour,
		Leases:    []Lease{{MAC: knownMAC, IP: leasedIP, Hostname: "vm-1"}},
	}
}

func testResponder(t testing.TB) *responder {
	t.Helper()
	r, err := newResponder(testConfig(), bridgeMAC)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// clientFrame wraps a DHCP message as a client sends it: from srcMAC and
// srcIP port 68 to the broadcast MAC and 255.255.255.255 port 67. Written
// apart from the server's framing so that one's bug does not hide in the
// other.
func clientFrame(srcMAC net.HardwareAddr, srcIP netip.Addr, payload []byte) []byte {
	f := make([]byte, 14+20+8+len(payload))
	copy(f, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:], srcMAC)
	f[12], f[13] = 0x08, 0x00
	ip := f[14:34]
	ip[0], ip[8], ip[9] = 0x45, 64, 17
	binary.BigEndian.PutUint16(ip[2:], uint16(20+8+len(payload)))
	s := srcIP.As4()
	copy(ip[12:], s[:])
	copy(ip[16:], []byte{255, 255, 255, 255})
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	sum = (sum >> 16) + sum&0xffff
	sum += sum >> 16
	binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
	udp := f[34:]
	binary.BigEndian.PutUint16(udp[0:], 68)
	binary.BigEndian.PutUint16(udp[2:], 67)
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload)))
	copy(udp[8:], payload)
	return f
}

// sent is a reply frame taken apart.
type sent struct {
	dstMAC net.HardwareAddr
	srcIP  netip.Addr
	dstIP  netip.Addr
	msg    *dhcpv4.DHCPv4
}

// parseReply checks a frame the server sent from srcMAC, the way a
// client's stack would, and decodes its message.
func parseReply(t testing.TB, f []byte, srcMAC net.HardwareAddr) sent {
	t.Helper()
	if len(f) < 42 || f[12] != 0x08 || f[13] != 0 {
		t.Fatalf("reply is not IPv4 over Ethernet: % x", f[:min(len(f), 42)])
	}
	ip := f[14:]
	if ip[0] != 0x45 || int(binary.BigEndian.Uint16(ip[2:])) != len(ip) || ip[9] != 17 {
		t.Fatalf("bad IPv4 header % x", ip[:20])
	}
	var sum uint32
	for i := 0; i < 20; i += 2 {
		sum += uint32(ip[i])<<8 | uint32(ip[i+1])
	}
	for sum > 0xffff {
		sum = (sum >> 16) + sum&0xffff
	}
	if sum != 0xffff {
		t.Fatalf("IPv4 header checksum does not verify: %#x", sum)
	}
	udp := ip[20:]
	if binary.BigEndian.Uint16(udp[0:]) != 67 || binary.BigEndian.Uint16(udp[2:]) != 68 || int(binary.BigEndian.Uint16(udp[4:])) != len(udp) {
		t.Fatalf("bad UDP header % x", udp[:8])
	}
	// UDP checksum over the pseudo-header.
	sum = uint32(binary.BigEndian.Uint16(ip[12:])) + uint32(binary.BigEndian.Uint16(ip[14:])) +
		uint32(binary.BigEndian.Uint16(ip[16:])) + uint32(binary.BigEndian.Uint16(ip[18:])) + 17 + uint32(len(udp))
	for i := 0; i+1 < len(udp); i += 2 {
		sum += uint32(udp[i])<<8 | uint32(udp[i+1])
	}
	if len(udp)%2 == 1 {
		sum += uint32(udp[len(udp)-1]) << 8
	}
	for sum > 0xffff {
		sum = (sum >> 16) + sum&0xffff
	}
	if sum != 0xffff {
		t.Fatalf("UDP checksum does not verify: %#x", sum)
	}
	m, err := dhcpv4.FromBytes(udp[8:])
	if err != nil {
		t.Fatalf("reply does not decode: %v", err)
	}
	if !bytes.Equal(f[6:12], srcMAC) {
		t.Errorf("reply from MAC %v, want the bridge's %v", net.HardwareAddr(f[6:12]), srcMAC)
	}
	return sent{
		dstMAC: net.HardwareAddr(f[0:6]),
		srcIP:  netip.AddrFrom4([4]byte(ip[12:16])),
		dstIP:  netip.AddrFrom4([4]byte(ip[16:20])),
		msg:    m,
	}
}

func discover(mac net.HardwareAddr, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	m, err := dhcpv4.NewDiscovery(mac, mods...)
	if err != nil {
		panic(err)
	}
	return m
}

func message(mac net.HardwareAddr, t dhcpv4.MessageType, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	m, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(t)}, mods...)...)
	if err != nil {
		panic(err)
	}
	return m
}

var (
	zeroIP  = netip.IPv4Unspecified()
	bcastIP = netip.MustParseAddr("255.255.255.255")
	bcast   = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
)

func TestHandle(t *testing.T) {
	requested := func(a string) dhcpv4.Modifier {
		return dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(a)))
	}
	sid := func(a string) dhcpv4.Modifier {
		return dhcpv4.WithOption(dhcpv4.OptServerIdentifier(net.ParseIP(a)))
	}
	tests := []struct {
		name    string
		frame   []byte
		want    dhcpv4.MessageType // MessageTypeNone: no reply
		dstMAC  net.HardwareAddr
		dstIP   netip.Addr
		yiaddr  netip.Addr
		options bool // lease options expected
	}{
		{"discover", clientFrame(knownMAC, zeroIP, discover(knownMAC).ToBytes()),
			dhcpv4.MessageTypeOffer, knownMAC, leasedIP, leasedIP, true},
		{"discover broadcast flag", clientFrame(knownMAC, zeroIP, discover(knownMAC, dhcpv4.WithBroadcast(true)).ToBytes()),
			dhcpv4.MessageTypeOffer, bcast, bcastIP, leasedIP, true},
		{"discover unknown MAC", clientFrame(otherMAC, zeroIP, discover(otherMAC).ToBytes()),
			dhcpv4.MessageTypeNone, nil, netip.Addr{}, netip.Addr{}, false},
		{"discover chaddr not the sender", clientFrame(otherMAC, zeroIP, discover(knownMAC).ToBytes()),
			dhcpv4.MessageTypeNone, nil, netip.Addr{}, netip.Addr{}, false},
		{"discover relayed", clientFrame(knownMAC, zeroIP, discover(knownMAC, dhcpv4.WithGatewayIP(net.ParseIP("192.0.2.9"))).ToBytes()),
			dhcpv4.MessageTypeNone, nil, netip.Addr{}, netip.Addr{}, false},
		{"request selecting", clientFrame(knownMAC, zeroIP, message(knownMAC, dhcpv4.MessageTypeRequest, requested("198.51.100.10"), sid("198.51.100.2")).ToBytes()),
			dhcpv4.MessageTypeAck, knownMAC, leasedIP, leasedIP, true},
		{"request for another server", clientFrame(knownMAC, zeroIP, message(knownMAC, dhcpv4.MessageTypeRequest, requested("198.51.100.10"), sid("198.51.100.3")).ToBytes()),
			dhcpv4.MessageTypeNone, nil, netip.Addr{}, netip.Addr{}, false},
		{"request wrong address", clientFrame(knownMAC, zeroIP, message(knownMAC, dhcpv4.MessageTypeRequest, requested("198.51.100.11")).ToBytes()),
			dhcpv4.MessageTypeNak, bcast, bcastIP, zeroIP, false},
		{"request wrong address unknown MAC", clientFrame(otherMAC, zeroIP, message(otherMAC, dhcpv4.MessageTypeRequest, requested("198.51.100.11")).ToBytes()),
			dhcpv4.MessageTypeNone, nil, netip.Addr{}, netip.Addr{}, false},
		{"request renewing", clientFrame(knownMAC, leasedIP, message(knownMAC, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(net.ParseIP("198.51.100.10"))).ToBytes()),
			dhcpv4.MessageTypeAck, knownMAC, leasedIP, leasedIP, true},
		{"request rebinding broadcast", clientFrame(knownMAC, leasedIP, message(knownMAC, dhcpv4.MessageTypeRequest, dhcpv4.WithClientIP(net.ParseIP("198.51.100.10")), dhcpv4.WithBroadcast(true)).ToBytes()),
			dhcpv4.MessageTypeAck, knownMAC, leasedIP, leasedIP, true},
		{"request no address", clientFrame(knownMAC, zeroIP, message(knownMAC, dhcpv4.MessageTypeRequest).ToBytes()),
			dhcpv4.MessageTypeNone, nil, netip.Addr{}, netip.Addr{}, false},
		{"inform", clientFrame(knownMAC, leasedIP, message(knownMAC, dhcpv4.MessageTypeInform, dhcpv4.WithClientIP(net.ParseIP("198.51.100.10"))).ToBytes()),
			dhcpv4.MessageTypeAck, knownMAC, leasedIP, zeroIP, false},
		{"release", clientFrame(knownMAC, leasedIP, message(knownMAC, dhcpv4.MessageTypeRelease, dhcpv4.WithClientIP(net.ParseIP("198.51.100.10"))).ToBytes()),
			dhcpv4.MessageTypeNone, nil, netip.Addr{}, netip.Addr{}, false},
		{"decline", clientFrame(knownMAC, zeroIP, message(knownMAC, dhcpv4.MessageTypeDecline, requested("198.51.100.10")).ToBytes()),
			dhcpv4.MessageTypeNone, nil, netip.Addr{}, netip.Addr{}, false},
		{"bootreply", clientFrame(knownMAC, zeroIP, message(knownMAC, dhcpv4.MessageTypeOffer, func(d *dhcpv4.DHCPv4) { d.OpCode = dhcpv4.OpcodeBootReply }).ToBytes()),
			dhcpv4.MessageTypeNone, nil, netip.Addr{}, netip.Addr{}, false},
		{"no message type", clientFrame(knownMAC, zeroIP, message(knownMAC, dhcpv4.MessageTypeNone, dhcpv4.WithoutOption(dhcpv4.OptionDHCPMessageType)).ToBytes()),
			dhcpv4.MessageTypeNone, nil, netip.Addr{}, netip.Addr{}, false},
	}
	r := testResponder(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := r.handle(tt.frame)
			if tt.want == dhcpv4.MessageTypeNone {
				if o.reply != nil {
					t.Fatalf("replied (%s) to what deserves silence", o.note)
				}
				return
			}
			if o.reply == nil {
				t.Fatalf("no reply: %s", o.note)
			}
			s := parseReply(t, o.reply, bridgeMAC)
			m := s.msg
			if m.MessageType() != tt.want || m.OpCode != dhcpv4.OpcodeBootReply {
				t.Fatalf("reply %v op %v, want %v", m.MessageType(), m.OpCode, tt.want)
			}
			if !bytes.Equal(s.dstMAC, tt.dstMAC) || s.dstIP != tt.dstIP || s.srcIP != serverID {
				t.Errorf("sent %v -> %v at %v, want -> %v at %v", s.srcIP, s.dstIP, s.dstMAC, tt.dstIP, tt.dstMAC)
			}
			if !m.YourIPAddr.Equal(tt.yiaddr.AsSlice()) {
				t.Errorf("yiaddr %v, want %v", m.YourIPAddr, tt.yiaddr)
			}
			if !m.ServerIdentifier().Equal(serverID.AsSlice()) {
				t.Errorf("server id %v", m.ServerIdentifier())
			}
			req, _ := dhcpv4.FromBytes(tt.frame[42:])
			if m.TransactionID != req.TransactionID || !bytes.Equal(m.ClientHWAddr, req.ClientHWAddr) {
				t.Errorf("xid %v chaddr %v, want %v %v", m.TransactionID, m.ClientHWAddr, req.TransactionID, req.ClientHWAddr)
			}
			lt := m.IPAddressLeaseTime(0)
			if !tt.options {
				if tt.want == dhcpv4.MessageTypeNak && (m.SubnetMask() != nil || len(m.Router()) != 0) {
					t.Error("NAK carries configuration")
				}
				if lt != 0 {
					t.Errorf("lease time %v in a %v", lt, tt.want)
				}
				return
			}
			mtu := m.GetOneOption(dhcpv4.OptionInterfaceMTU)
			if lt != time.Hour || m.IPAddressRenewalTime(0) != 30*time.Minute || m.IPAddressRebindingTime(0) != 52*time.Minute+30*time.Second ||
				net.IP(m.SubnetMask()).String() != "255.255.255.0" || len(m.Router()) != 1 || m.Router()[0].String() != "198.51.100.1" ||
				len(m.DNS()) != 1 || !bytes.Equal(mtu, []byte{0x05, 0xaa}) || m.HostName() != "vm-1" {
				t.Errorf("options: %s", m.Summary())
			}
		})
	}
}

func TestHandleRejectsBadFrames(t *testing.T) {
	good := clientFrame(knownMAC, zeroIP, discover(knownMAC).ToBytes())
	r := testResponder(t)
	if r.handle(good).reply == nil {
		t.Fatal("the unbroken frame gets no reply")
	}
	tests := []struct {
		name   string
		damage func(f []byte) []byte
		want   string
	}{
		{"truncated", func(f []byte) []byte { return f[:40] }, errShort.Error()},
		{"arp", func(f []byte) []byte { f[13] = 0x06; return f }, errNotIPv4.Error()},
		{"ipv6 version", func(f []byte) []byte { f[14] = 0x65; return f }, errNotIPv4.Error()},
		{"ip header checksum", func(f []byte) []byte { f[24] ^= 1; return f }, errIPSum.Error()},
		{"ip length past the frame", func(f []byte) []byte { f[16], f[17] = 0xff, 0xff; return f }, errIPLength.Error()},
		{"fragment", func(f []byte) []byte {
			f[20] |= 0x20
			return clientFrameFix(f)
		}, errFragment.Error()},
		{"tcp", func(f []byte) []byte { f[23] = 6; return clientFrameFix(f) }, errNotUDP.Error()},
		{"other port", func(f []byte) []byte { f[37] = 68; return f }, errNotPort.Error()},
		{"udp length past the datagram", func(f []byte) []byte { f[38], f[39] = 0xff, 0xff; return f }, errUDPLen.Error()},
		{"bad cookie", func(f []byte) []byte { f[42+236] = 0; return f }, "magic cookie"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := r.handle(tt.damage(bytes.Clone(good)))
			if o.reply != nil || !strings.Contains(o.note, tt.want) {
				t.Fatalf("reply %v note %q, want none and %q", o.reply != nil, o.note, tt.want)
			}
		})
	}
}

// clientFrameFix recomputes the IPv4 header checksum after a test edit.
func clientFrameFix(f []byte) []byte {
	ip := f[14:34]
	ip[10], ip[11] = 0, 0
	binary.BigEndian.PutUint16(ip[10:], fold(sum16(ip, 0)))
	return f
}

// TestOfferGolden pins the exact bytes of an OFFER frame.
func TestOfferGolden(t *testing.T) {
	req := discover(knownMAC, dhcpv4.WithTransactionID(dhcpv4.TransactionID{1, 2, 3, 4}))
	o := testResponder(t).handle(clientFrame(knownMAC, zeroIP, req.ToBytes()))
	if o.reply == nil {
		t.Fatal(o.note)
	}
	got := []byte(hex.Dump(o.reply))
	path := filepath.Join("testdata", "offer.golden")
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("OFFER frame differs from %s:\n%s", path, got)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"valid", func(*Config) {}, ""},
		{"no interface", func(c *Config) { c.Interface = "" }, "interface"},
		{"ipv6 subnet", func(c *Config) { c.Subnet = netip.MustParsePrefix("2001:db8::/64") }, "subnet"},
		{"server outside", func(c *Config) { c.ServerID = netip.MustParseAddr("192.0.2.1") }, "server id"},
		{"server is broadcast", func(c *Config) { c.ServerID = netip.MustParseAddr("198.51.100.255") }, "server id"},
		{"lease outside", func(c *Config) { c.Leases[0].IP = netip.MustParseAddr("192.0.2.1") }, "not a host address"},
		{"lease is network", func(c *Config) { c.Leases[0].IP = netip.MustParseAddr("198.51.100.0") }, "not a host address"},
		{"lease is server", func(c *Config) { c.Leases[0].IP = serverID }, "taken"},
		{"lease is router", func(c *Config) { c.Leases[0].IP = c.Router }, "taken"},
		{"duplicate ip", func(c *Config) { c.Leases = append(c.Leases, Lease{MAC: otherMAC, IP: leasedIP}) }, "taken"},
		{"duplicate mac", func(c *Config) {
			c.Leases = append(c.Leases, Lease{MAC: knownMAC, IP: netip.MustParseAddr("198.51.100.20")})
		}, "twice"},
		{"multicast mac", func(c *Config) { c.Leases[0].MAC = net.HardwareAddr{1, 0, 0x5e, 0, 0, 1} }, "unicast"},
		{"short lease", func(c *Config) { c.LeaseTime = time.Second }, "lease time"},
		{"mtu", func(c *Config) { c.MTU = 100 }, "MTU"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig()
			c.Leases = append([]Lease(nil), c.Leases...)
			tt.change(&c)
			err := c.validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("validate = %v, want an error about %q", err, tt.want)
			}
		})
	}
}
