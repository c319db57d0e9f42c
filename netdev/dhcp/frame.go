package dhcp

import (
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
)

// Ports, protocol numbers and header sizes of the frames served.
const (
	serverPort   = 67
	clientPort   = 68
	etherTypeIP  = 0x0800
	protoUDP     = 17
	ethHdrLen    = 14
	ipv4HdrLen   = 20 // what we send: no options
	udpHdrLen    = 8
	maxFrameRead = 4096
)

var (
	errShort    = errors.New("frame too short")
	errNotIPv4  = errors.New("not IPv4")
	errNotUDP   = errors.New("not UDP")
	errFragment = errors.New("IPv4 fragment")
	errIPLength = errors.New("bad IPv4 length")
	errIPSum    = errors.New("bad IPv4 header checksum")
	errUDPLen   = errors.New("bad UDP length")
	errNotPort  = errors.New("not to the DHCP server port")
)

// request is a UDP datagram to port 67 taken out of an Ethernet frame.
type request struct {
	srcMAC  net.HardwareAddr
	srcIP   netip.Addr
	payload []byte
}

// parseFrame checks an Ethernet frame from a guest down to its UDP payload.
// Every length is checked against what was read, never trusted.
func parseFrame(f []byte) (request, error) {
	if len(f) < ethHdrLen+ipv4HdrLen+udpHdrLen {
		return request{}, errShort
	}
	if binary.BigEndian.Uint16(f[12:14]) != etherTypeIP {
		return request{}, errNotIPv4
	}
	ip := f[ethHdrLen:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < ipv4HdrLen {
		return request{}, errNotIPv4
	}
	total := int(binary.BigEndian.Uint16(ip[2:4]))
	// Ethernet pads short frames, so the IP length may be less than what
	// was read, never more.
	if total < ihl+udpHdrLen || total > len(ip) {
		return request{}, errIPLength
	}
	ip = ip[:total]
	if fold(sum16(ip[:ihl], 0)) != 0 {
		return request{}, errIPSum
	}
	if binary.BigEndian.Uint16(ip[6:8])&0x3fff != 0 {
		return request{}, errFragment
	}
	if ip[9] != protoUDP {
		return request{}, errNotUDP
	}
	udp := ip[ihl:]
	if binary.BigEndian.Uint16(udp[2:4]) != serverPort {
		return request{}, errNotPort
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < udpHdrLen || ulen > len(udp) {
		return request{}, errUDPLen
	}
	// The UDP checksum is not checked: frames come from local ports of
	// the bridge, and a guest can compute a right one for any payload.
	return request{
		srcMAC:  net.HardwareAddr(f[6:12]),
		srcIP:   netip.AddrFrom4([4]byte(ip[12:16])),
		payload: udp[udpHdrLen:ulen],
	}, nil
}

// reply is a UDP datagram from the server port to the client port.
type reply struct {
	dstMAC, srcMAC net.HardwareAddr
	dstIP, srcIP   netip.Addr
	payload        []byte
}

// frame lays out r as an Ethernet frame with IPv4 and UDP headers, both
// checksums filled in.
func (r reply) frame() []byte {
	n := ethHdrLen + ipv4HdrLen + udpHdrLen + len(r.payload)
	f := make([]byte, n)
	copy(f[0:6], r.dstMAC)
	copy(f[6:12], r.srcMAC)
	binary.BigEndian.PutUint16(f[12:14], etherTypeIP)
	ip := f[ethHdrLen:]
	ip[0] = 0x45
	ip[1] = 0x10 // low delay, as DHCP servers traditionally send
	binary.BigEndian.PutUint16(ip[2:4], uint16(n-ethHdrLen))
	ip[8] = 64
	ip[9] = protoUDP
	src, dst := r.srcIP.As4(), r.dstIP.As4()
	copy(ip[12:16], src[:])
	copy(ip[16:20], dst[:])
	binary.BigEndian.PutUint16(ip[10:12], fold(sum16(ip[:ipv4HdrLen], 0)))
	udp := ip[ipv4HdrLen:]
	ulen := udpHdrLen + len(r.payload)
	binary.BigEndian.PutUint16(udp[0:2], serverPort)
	binary.BigEndian.PutUint16(udp[2:4], clientPort)
	binary.BigEndian.PutUint16(udp[4:6], uint16(ulen))
	copy(udp[udpHdrLen:], r.payload)
	// Pseudo-header: addresses, protocol, UDP length.
	var pseudo [12]byte
	copy(pseudo[0:4], src[:])
	copy(pseudo[4:8], dst[:])
	pseudo[9] = protoUDP
	binary.BigEndian.PutUint16(pseudo[10:12], uint16(ulen))
	sum := fold(sum16(udp, sum16(pseudo[:], 0)))
	if sum == 0 {
		sum = 0xffff // zero means "no checksum" in UDP over IPv4
	}
	binary.BigEndian.PutUint16(udp[6:8], sum)
	return f
}

// sum16 adds b as big-endian 16-bit words to acc (the Internet checksum's
// running sum; frames are far too short for it to overflow).
func sum16(b []byte, acc uint32) uint32 {
	for len(b) >= 2 {
		acc += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		acc += uint32(b[0]) << 8
	}
	return acc
}

// fold turns a running sum into the checksum field's value: the folded
// one's-complement sum, inverted. Over data that includes a right checksum
// it is zero.
func fold(acc uint32) uint16 {
	for acc > 0xffff {
		acc = acc>>16 + acc&0xffff
	}
	return ^uint16(acc)
}
