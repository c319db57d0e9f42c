package acpi

import "encoding/binary"

// mcfg describes the ECAM window of PCI segment 0.
func mcfg(p PCIHostBridge) []byte {
	b := sdt("MCFG", 1)
	b = append(b, make([]byte, 8)...) // reserved
	b = binary.LittleEndian.AppendUint64(b, uint64(p.ECAM))
	b = binary.LittleEndian.AppendUint16(b, 0) // segment
	b = append(b, 0, p.EndBus)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return finish(b)
}
