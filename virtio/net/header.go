package net

import (
	"encoding/binary"
	"errors"
	"fmt"

	"kvmstack/netdev"
)

// Device feature bits (virtio 1.2 section 5.1.3).
const (
	FeatureCsum      uint64 = 1 << 0  // device takes packets with partial checksums
	FeatureGuestCsum uint64 = 1 << 1  // driver takes packets with partial checksums
	FeatureMAC       uint64 = 1 << 5  // configuration space has the MAC address
	FeatureGuestTSO4 uint64 = 1 << 7  // driver takes TCPv4 super-packets
	FeatureGuestTSO6 uint64 = 1 << 8  // driver takes TCPv6 super-packets
	FeatureGuestECN  uint64 = 1 << 9  // ... with the ECN bit
	FeatureHostTSO4  uint64 = 1 << 11 // device takes TCPv4 super-packets
	FeatureHostTSO6  uint64 = 1 << 12 // device takes TCPv6 super-packets
	FeatureHostECN   uint64 = 1 << 13 // ... with the ECN bit
	FeatureMrgRxBuf  uint64 = 1 << 15 // a received packet may span several buffers
	FeatureStatus    uint64 = 1 << 16 // configuration space has the link status
)

// virtio_net_hdr fields (virtio 1.2 5.1.6). HdrLen is the header of a
// VIRTIO_F_VERSION_1 device, which always has num_buffers.
const (
	HdrLen = netdev.VnetHdrLen

	hdrFlagsOff      = 0
	hdrGSOTypeOff    = 1
	hdrHdrLenOff     = 2
	hdrGSOSizeOff    = 4
	hdrCsumStartOff  = 6
	hdrCsumOffOff    = 8
	hdrNumBuffersOff = 10

	hdrFlagNeedsCsum = 1
	hdrFlagDataValid = 2

	gsoNone  = 0
	gsoTCPv4 = 1
	gsoUDP   = 3
	gsoTCPv6 = 4
	gsoECN   = 0x80
)

// Frame limits. A frame is the Ethernet frame after the header.
const (
	// minFrame is an Ethernet header: the TAP rejects anything shorter.
	minFrame = 14
	// maxFrame is the largest frame either side may move: a 64 KiB GSO
	// super-packet plus its Ethernet and VLAN headers.
	maxFrame = 65536 + 14 + 4
)

// errMalformed marks a chain that breaks the virtio-net rules for its queue
// (buffer directions, a missing header, an impossible length): a driver bug
// or a hostile guest, so the device stops.
var errMalformed = errors.New("virtio-net: malformed chain")

// errBadHeader marks a well-formed transmit chain whose header asks for
// something not negotiated or impossible. The packet is dropped; the device
// goes on.
var errBadHeader = errors.New("virtio-net: bad transmit header")

// checkTxHeader validates a transmit header against the negotiated features
// and the frame length, as the TAP would, so that a bad packet is counted
// here rather than failing deep in the host kernel.
func checkTxHeader(hdr []byte, frameLen int, features uint64) error {
	flags := hdr[hdrFlagsOff]
	gso := hdr[hdrGSOTypeOff]
	if flags&^hdrFlagNeedsCsum != 0 {
		return fmt.Errorf("%w: flags %#x", errBadHeader, flags)
	}
	if flags&hdrFlagNeedsCsum != 0 {
		if features&FeatureCsum == 0 {
			return fmt.Errorf("%w: partial checksum without VIRTIO_NET_F_CSUM", errBadHeader)
		}
		start := int(binary.LittleEndian.Uint16(hdr[hdrCsumStartOff:]))
		off := int(binary.LittleEndian.Uint16(hdr[hdrCsumOffOff:]))
		if start+off+2 > frameLen {
			return fmt.Errorf("%w: checksum at %d+%d beyond a %d-byte frame", errBadHeader, start, off, frameLen)
		}
	}
	if gso == gsoNone {
		return nil
	}
	var need uint64
	switch gso &^ gsoECN {
	case gsoTCPv4:
		need = FeatureHostTSO4
	case gsoTCPv6:
		need = FeatureHostTSO6
	default:
		return fmt.Errorf("%w: GSO type %#x", errBadHeader, gso)
	}
	if gso&gsoECN != 0 {
		need |= FeatureHostECN
	}
	if features&need != need {
		return fmt.Errorf("%w: GSO type %#x not negotiated", errBadHeader, gso)
	}
	if flags&hdrFlagNeedsCsum == 0 {
		return fmt.Errorf("%w: GSO without a partial checksum", errBadHeader)
	}
	if binary.LittleEndian.Uint16(hdr[hdrGSOSizeOff:]) == 0 {
		return fmt.Errorf("%w: GSO with segment size 0", errBadHeader)
	}
	return nil
}
