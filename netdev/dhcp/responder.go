package dhcp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

var broadcastMAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}

// responder decides the answer to one frame. It is immutable: a config
// change builds a new one, so the serving loop never locks.
type responder struct {
	cfg    Config
	mac    net.HardwareAddr // the bridge's, source of replies
	leases map[[6]byte]Lease
}

func newResponder(cfg Config, mac net.HardwareAddr) (*responder, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("%w: interface %s has no Ethernet address", ErrInvalidConfig, cfg.Interface)
	}
	r := &responder{cfg: cfg, mac: mac, leases: make(map[[6]byte]Lease, len(cfg.Leases))}
	for _, l := range cfg.Leases {
		r.leases[[6]byte(l.MAC)] = l
	}
	return r, nil
}

// outcome says what was done with a frame, for logs and tests.
type outcome struct {
	reply  []byte // the frame to send; nil for none
	msg    dhcpv4.MessageType
	client net.HardwareAddr
	ip     netip.Addr // leased or requested address
	note   string     // why nothing was sent, or what was sent
}

// handle answers one frame read from the bridge. A frame that is not a
// well-formed DHCP request from a leased MAC gets no reply.
func (r *responder) handle(frame []byte) outcome {
	req, err := parseFrame(frame)
	if err != nil {
		return outcome{note: "ignored frame: " + err.Error()}
	}
	m, err := dhcpv4.FromBytes(req.payload)
	if err != nil {
		return outcome{note: "ignored malformed DHCP message: " + err.Error()}
	}
	o := outcome{msg: m.MessageType(), client: m.ClientHWAddr}
	switch {
	case m.OpCode != dhcpv4.OpcodeBootRequest:
		o.note = "ignored: not a BOOTREQUEST"
		return o
	case m.HWType != iana.HWTypeEthernet || len(m.ClientHWAddr) != 6:
		o.note = "ignored: not an Ethernet client"
		return o
	case !m.GatewayIPAddr.IsUnspecified() && m.GatewayIPAddr != nil:
		o.note = "ignored: relayed (relays are not served)"
		return o
	case !equalMAC(m.ClientHWAddr, req.srcMAC):
		// A guest asking for another NIC's lease: the frame's source
		// would have to be forged too, but this much is free to check.
		o.note = fmt.Sprintf("ignored: chaddr %v sent from %v", m.ClientHWAddr, req.srcMAC)
		return o
	}
	lease, ok := r.leases[[6]byte(m.ClientHWAddr)]
	if !ok {
		// Another host's server may own it: silence, never a NAK.
		o.note = "ignored: no lease for this MAC"
		return o
	}
	o.ip = lease.IP
	ours := r.cfg.ServerID.AsSlice()
	switch o.msg {
	case dhcpv4.MessageTypeDiscover:
		return r.answer(o, m, lease, dhcpv4.MessageTypeOffer)
	case dhcpv4.MessageTypeRequest:
		if sid := m.ServerIdentifier(); sid != nil && !sid.Equal(ours) {
			o.note = fmt.Sprintf("ignored: request for server %v", sid)
			return o
		}
		want := m.RequestedIPAddress() // SELECTING, INIT-REBOOT
		if want == nil || want.IsUnspecified() {
			want = m.ClientIPAddr // RENEWING, REBINDING
		}
		if want == nil || want.IsUnspecified() {
			o.note = "ignored: request names no address"
			return o
		}
		if a, ok := netip.AddrFromSlice(want.To4()); ok {
			o.ip = a
		}
		if !want.Equal(lease.IP.AsSlice()) {
			return r.answer(o, m, lease, dhcpv4.MessageTypeNak)
		}
		return r.answer(o, m, lease, dhcpv4.MessageTypeAck)
	case dhcpv4.MessageTypeInform:
		return r.answer(o, m, lease, dhcpv4.MessageTypeAck)
	case dhcpv4.MessageTypeRelease:
		o.note = "released (static lease kept)"
	case dhcpv4.MessageTypeDecline:
		o.note = "declined: the client found its address in use"
	default:
		o.note = "ignored: unexpected message type"
	}
	return o
}

// answer builds the reply of type t to m and addresses it as RFC 2131
// section 4.1 says.
func (r *responder) answer(o outcome, m *dhcpv4.DHCPv4, l Lease, t dhcpv4.MessageType) outcome {
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(t),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(r.cfg.ServerID.AsSlice())),
	}
	inform := o.msg == dhcpv4.MessageTypeInform
	if t != dhcpv4.MessageTypeNak {
		if !inform {
			lt := r.cfg.leaseTime()
			mods = append(mods,
				dhcpv4.WithYourIP(l.IP.AsSlice()),
				dhcpv4.WithOption(dhcpv4.OptIPAddressLeaseTime(lt)),
				dhcpv4.WithOption(dhcpv4.OptRenewTimeValue(lt/2)),
				dhcpv4.WithOption(dhcpv4.OptRebindingTimeValue(lt*7/8)))
		}
		var mtu [2]byte
		binary.BigEndian.PutUint16(mtu[:], uint16(r.cfg.mtu()))
		mods = append(mods,
			dhcpv4.WithOption(dhcpv4.OptSubnetMask(net.CIDRMask(r.cfg.Subnet.Bits(), 32))),
			dhcpv4.WithOption(dhcpv4.OptGeneric(dhcpv4.OptionInterfaceMTU, mtu[:])))
		if r.cfg.Router.IsValid() {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRouter(r.cfg.Router.AsSlice())))
		}
		if len(r.cfg.DNS) > 0 {
			dns := make([]net.IP, len(r.cfg.DNS))
			for i, d := range r.cfg.DNS {
				dns[i] = d.AsSlice()
			}
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptDNS(dns...)))
		}
		if l.Hostname != "" {
			mods = append(mods, dhcpv4.WithOption(dhcpv4.OptHostName(l.Hostname)))
		}
	}
	resp, err := dhcpv4.NewReplyFromRequest(m, mods...)
	if err != nil {
		o.note = "cannot build reply: " + err.Error()
		return o
	}
	rep := reply{srcMAC: r.mac, srcIP: r.cfg.ServerID, payload: resp.ToBytes()}
	ciaddr, _ := netip.AddrFromSlice(m.ClientIPAddr.To4())
	hasCiaddr := ciaddr.IsValid() && !ciaddr.IsUnspecified()
	switch {
	case t == dhcpv4.MessageTypeNak || (m.IsBroadcast() && !hasCiaddr):
		rep.dstMAC, rep.dstIP = broadcastMAC, netip.AddrFrom4([4]byte{255, 255, 255, 255})
	case hasCiaddr:
		rep.dstMAC, rep.dstIP = m.ClientHWAddr, ciaddr
	default:
		// Unicast to an address the client does not hold yet: no ARP,
		// the frame goes straight to its MAC.
		rep.dstMAC, rep.dstIP = m.ClientHWAddr, l.IP
	}
	o.reply = rep.frame()
	o.note = "sent " + t.String()
	return o
}

func equalMAC(a, b net.HardwareAddr) bool {
	return len(a) == len(b) && string(a) == string(b)
}
