package aml

import (
	"encoding/binary"
	"fmt"
)

// Resource is one descriptor in a ResourceTemplate.
type Resource interface {
	resource() ([]byte, error)
}

type template []Resource

// ResourceTemplate is a buffer of resource descriptors closed by an end
// tag, the value of a _CRS object.
func ResourceTemplate(rs ...Resource) Object { return template(rs) }

// endTag closes a template; a zero checksum means "not checksummed", as
// ASL compilers write it.
var endTag = []byte{0x79, 0x00}

func (t template) encode(e *encoder) {
	var b []byte
	for _, r := range t {
		d, err := r.resource()
		if err != nil {
			e.fail("resource template: %v", err)
			return
		}
		b = append(b, d...)
	}
	Buffer(append(b, endTag...)).encode(e)
}

type ioPort struct {
	min, max uint16
	align, n uint8
}

// IO is a 16-bit-decoded I/O port range: ports n long, based anywhere
// from min to max in steps of align (min == max for a fixed range).
func IO(min, max uint16, align, n uint8) Resource { return ioPort{min, max, align, n} }

func (p ioPort) resource() ([]byte, error) {
	if p.max < p.min {
		return nil, fmt.Errorf("%w: IO range max %#x below min %#x", ErrInvalid, p.max, p.min)
	}
	b := []byte{0x47, 0x01} // small item, type 8, length 7; decodes 16 bits
	b = binary.LittleEndian.AppendUint16(b, p.min)
	b = binary.LittleEndian.AppendUint16(b, p.max)
	return append(b, p.align, p.n), nil
}

type irqNoFlags []uint8

// IRQNoFlags is an edge-triggered, active-high ISA IRQ descriptor.
func IRQNoFlags(irqs ...uint8) Resource { return irqNoFlags(irqs) }

func (r irqNoFlags) resource() ([]byte, error) {
	var mask uint16
	for _, irq := range r {
		if irq > 15 {
			return nil, fmt.Errorf("%w: ISA IRQ %d above 15", ErrInvalid, irq)
		}
		mask |= 1 << irq
	}
	return binary.LittleEndian.AppendUint16([]byte{0x22}, mask), nil
}

type memory32Fixed struct {
	base, n  uint32
	writable bool
}

// Memory32Fixed is a fixed 32-bit memory range.
func Memory32Fixed(base, n uint32, writable bool) Resource { return memory32Fixed{base, n, writable} }

func (m memory32Fixed) resource() ([]byte, error) {
	b := []byte{0x86, 0x09, 0x00, 0}
	if m.writable {
		b[3] = 1
	}
	b = binary.LittleEndian.AppendUint32(b, m.base)
	return binary.LittleEndian.AppendUint32(b, m.n), nil
}

// Address-space resource types and flags.
const (
	spaceMemory = 0
	spaceIO     = 1
	spaceBus    = 2
	// General flags of a producer window: positive decode, fixed
	// minimum and maximum (bits 2 and 3), producer (bit 0 clear).
	producerFixed = 0x0C
	ioEntireRange = 0x03
	memReadWrite  = 0x01
	memCacheable  = 0x02
)

// addressSpace is a Word/DWord/QWord address-space descriptor; size picks
// the width (2, 4 or 8 bytes per field).
type addressSpace struct {
	size          int
	kind          byte
	typeFlags     byte
	min, max, len uint64
}

// WordBusNumber is a bus-number window [min, max] a host bridge produces.
func WordBusNumber(min, max uint16) Resource {
	return addressSpace{2, spaceBus, 0, uint64(min), uint64(max), uint64(max) - uint64(min) + 1}
}

// WordIO is an I/O port window [min, max] a host bridge produces.
func WordIO(min, max uint16) Resource {
	return addressSpace{2, spaceIO, ioEntireRange, uint64(min), uint64(max), uint64(max) - uint64(min) + 1}
}

// DWordMemory is a 32-bit memory window [min, max] a host bridge produces.
func DWordMemory(min, max uint32, cacheable bool) Resource {
	return addressSpace{4, spaceMemory, memFlags(cacheable), uint64(min), uint64(max), uint64(max) - uint64(min) + 1}
}

// QWordMemory is a 64-bit memory window [min, max] a host bridge produces.
func QWordMemory(min, max uint64, cacheable bool) Resource {
	return addressSpace{8, spaceMemory, memFlags(cacheable), min, max, max - min + 1}
}

func memFlags(cacheable bool) byte {
	if cacheable {
		return memReadWrite | memCacheable
	}
	return memReadWrite
}

func (a addressSpace) resource() ([]byte, error) {
	if a.max < a.min {
		return nil, fmt.Errorf("%w: window max %#x below min %#x", ErrInvalid, a.max, a.min)
	}
	if a.len == 0 || a.size < 8 && a.len >= 1<<(8*a.size) {
		return nil, fmt.Errorf("%w: window [%#x, %#x] is longer than a %d-byte length field", ErrInvalid, a.min, a.max, a.size)
	}
	tag := map[int]byte{2: 0x88, 4: 0x87, 8: 0x8A}[a.size]
	n := 3 + 5*a.size // type, flags, type flags, then five fields
	b := binary.LittleEndian.AppendUint16([]byte{tag}, uint16(n))
	b = append(b, a.kind, producerFixed, a.typeFlags)
	for _, v := range []uint64{0, a.min, a.max, 0, a.len} { // granularity, min, max, translation, length
		switch a.size {
		case 2:
			b = binary.LittleEndian.AppendUint16(b, uint16(v))
		case 4:
			b = binary.LittleEndian.AppendUint32(b, uint32(v))
		default:
			b = binary.LittleEndian.AppendUint64(b, v)
		}
	}
	return b, nil
}
