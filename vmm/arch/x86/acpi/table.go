package acpi

import "encoding/binary"

// Identification written into every table header.
const (
	oemID           = "KVMSTK"
	oemTableID      = "KVMSTACK"
	oemRevision     = 1
	creatorID       = "KVMS"
	creatorRevision = 1
	headerSize      = 36
)

// sdt starts a system description table: the 36-byte header with length
// and checksum left for finish.
func sdt(signature string, revision uint8) []byte {
	b := make([]byte, headerSize)
	copy(b[0:4], signature)
	b[8] = revision
	copy(b[10:16], oemID)
	copy(b[16:24], oemTableID)
	binary.LittleEndian.PutUint32(b[24:], oemRevision)
	copy(b[28:32], creatorID)
	binary.LittleEndian.PutUint32(b[32:], creatorRevision)
	return b
}

// finish fills in the length and the checksum of a table sdt started.
func finish(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	b[9] = 0
	b[9] = -sum(b)
	return b
}

// sum adds the bytes; a valid table sums to zero.
func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// gas is a Generic Address Structure for a byte-wide I/O port.
func gas(port uint16) []byte {
	const (
		spaceSystemIO = 1
		bitWidth      = 8
		accessByte    = 1
	)
	b := []byte{spaceSystemIO, bitWidth, 0, accessByte}
	return binary.LittleEndian.AppendUint64(b, uint64(port))
}
