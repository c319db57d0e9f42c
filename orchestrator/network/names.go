package network

import (
	"crypto/sha256"
	"encoding/hex"
)

// IFNameMax is the longest Linux interface name (IFNAMSIZ minus the NUL).
const IFNameMax = 15

// Interface name prefixes. Every device the agent creates starts with "k" so
// that a cleanup can recognise (and only touch) its own devices.
const (
	BridgePrefix = "kbr-"
	VXLANPrefix  = "kvx-"
	TapPrefix    = "ktp-"
)

// idChars is how many characters of an id fit after a 4-byte prefix.
const idChars = IFNameMax - 4

// BridgeName is the Linux bridge of a network on every host.
func BridgeName(networkID string) string { return BridgePrefix + shortID(networkID) }

// VXLANName is the VXLAN device of a network on every host.
func VXLANName(networkID string) string { return VXLANPrefix + shortID(networkID) }

// TapName is the TAP device of one port (one guest NIC).
func TapName(portID string) string { return TapPrefix + shortID(portID) }

// shortID keeps the leading characters of an id when it is lower-case hex
// throughout (what the API generates), so an operator can match a device to its object
// at a glance; any other id is hashed, because interface names must not
// contain '/', whitespace or arbitrary bytes, and a plain truncation of ids
// such as "net-a"/"net-ab" could be ambiguous in length.
func shortID(id string) string {
	if len(id) >= idChars && isLowerHex(id) {
		return id[:idChars]
	}
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])[:idChars]
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
