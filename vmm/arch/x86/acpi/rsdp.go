package acpi

import "encoding/binary"

const rsdpSize = 36

// rsdp is the ACPI 2.0+ root pointer: no RSDT (a 64-bit kernel takes the
// XSDT), the first-20-bytes checksum and the extended one over all 36.
func rsdp(xsdtAddr uint64) []byte {
	b := make([]byte, rsdpSize)
	copy(b[0:8], "RSD PTR ")
	copy(b[9:15], oemID)
	b[15] = 2 // revision: ACPI 2.0 or later
	binary.LittleEndian.PutUint32(b[20:], rsdpSize)
	binary.LittleEndian.PutUint64(b[24:], xsdtAddr)
	b[8] = -sum(b[:20])
	b[32] = -sum(b)
	return b
}

// xsdt points at every table except the DSDT, which the FADT names.
func xsdt(tables []uint64) []byte {
	b := sdt("XSDT", 1)
	for _, t := range tables {
		b = binary.LittleEndian.AppendUint64(b, t)
	}
	return finish(b)
}
