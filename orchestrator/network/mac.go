package network

import (
	"crypto/sha256"
	"encoding/binary"
	"net"
)

// MAC derives a guest MAC address from a port id. attempt selects another
// candidate when an earlier one is already taken, so the FSM resolves a
// (rare) collision deterministically instead of asking the proposer to retry.
// The address is unicast and locally administered (first octet xxxxxx10), so
// it can never clash with a vendor-assigned NIC on the underlay.
func MAC(portID string, attempt uint32) net.HardwareAddr {
	h := sha256.New()
	h.Write([]byte("kvmstack-port-mac\x00"))
	h.Write([]byte(portID))
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], attempt)
	h.Write(a[:])
	sum := h.Sum(nil)
	mac := net.HardwareAddr(sum[:6])
	mac[0] = mac[0]&^0x01 | 0x02
	return mac
}
