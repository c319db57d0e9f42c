package memory

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// GuestAddr is a guest physical address.
type GuestAddr uint64

// The 32-bit hole: guest physical addresses in [HoleStart, HoleEnd) are never
// RAM. PCI BARs, ECAM, the IOAPIC and the LAPIC live there; RAM that would
// overlap it continues at HoleEnd instead.
const (
	HoleStart GuestAddr = 0xC000_0000
	HoleEnd   GuestAddr = 0x1_0000_0000
)

// Size limits for guest RAM. The minimum keeps the boot structures, the kernel
// and a small initrd in low memory; the maximum guards against a typo asking
// for terabytes of address space.
const (
	MinSize = 16 << 20
	MaxSize = 1 << 40
)

// ErrOutOfRange is returned (wrapped) when an access falls outside guest RAM,
// including into the 32-bit hole or across the gap between two regions.
var ErrOutOfRange = errors.New("guest address out of range")

// Region is one contiguous run of guest RAM backed by one host mapping.
type Region struct {
	// Start is the first guest physical address of the region.
	Start GuestAddr
	host  []byte
}

// Size is the region's length in bytes.
func (r Region) Size() uint64 { return uint64(len(r.host)) }

// End is the first guest physical address past the region.
func (r Region) End() GuestAddr { return r.Start + GuestAddr(len(r.host)) }

// HostAddr is the host virtual address backing Start, as KVM memory slots
// need it.
func (r Region) HostAddr() uintptr { return uintptr(unsafe.Pointer(&r.host[0])) }

// Memory is the whole of a guest's RAM.
type Memory struct {
	regions []Region
	size    uint64
}

// Plan splits size bytes of RAM into the guest physical ranges they occupy:
// below the hole first, the rest from HoleEnd. It allocates nothing, so the
// e820 map and ACPI tables can be derived from it in tests.
func Plan(size uint64) ([]Range, error) {
	if size < MinSize || size > MaxSize {
		return nil, fmt.Errorf("memory size %d bytes: must be between %d MiB and %d GiB", size, MinSize>>20, MaxSize>>30)
	}
	if size%uint64(unix.Getpagesize()) != 0 {
		return nil, fmt.Errorf("memory size %d bytes: not a multiple of the page size", size)
	}
	low := min(size, uint64(HoleStart))
	ranges := []Range{{Start: 0, Size: low}}
	if size > low {
		ranges = append(ranges, Range{Start: HoleEnd, Size: size - low})
	}
	return ranges, nil
}

// Range is a span of guest physical addresses.
type Range struct {
	Start GuestAddr
	Size  uint64
}

// End is the first address past the range.
func (r Range) End() GuestAddr { return r.Start + GuestAddr(r.Size) }

// New maps size bytes of guest RAM, split around the 32-bit hole. The pages
// are reserved lazily (MAP_NORESERVE), so RSS grows only with what the guest
// touches.
func New(size uint64) (*Memory, error) {
	ranges, err := Plan(size)
	if err != nil {
		return nil, err
	}
	m := &Memory{size: size}
	for _, r := range ranges {
		b, err := unix.Mmap(-1, 0, int(r.Size), unix.PROT_READ|unix.PROT_WRITE,
			unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
		if err != nil {
			_ = m.Close()
			return nil, fmt.Errorf("mmap %d MiB of guest RAM at %#x: %w", r.Size>>20, uint64(r.Start), err)
		}
		m.regions = append(m.regions, Region{Start: r.Start, host: b})
	}
	return m, nil
}

// Close unmaps all regions. The Memory must not be used afterwards.
func (m *Memory) Close() error {
	var errs []error
	for _, r := range m.regions {
		if err := unix.Munmap(r.host); err != nil {
			errs = append(errs, fmt.Errorf("munmap guest RAM at %#x: %w", uint64(r.Start), err))
		}
	}
	m.regions = nil
	return errors.Join(errs...)
}

// Size is the total RAM in bytes.
func (m *Memory) Size() uint64 { return m.size }

// Regions lists the RAM regions in ascending address order.
func (m *Memory) Regions() []Region { return m.regions }

// Ranges lists the guest physical ranges of RAM, as Plan computed them.
func (m *Memory) Ranges() []Range {
	rs := make([]Range, len(m.regions))
	for i, r := range m.regions {
		rs[i] = Range{Start: r.Start, Size: r.Size()}
	}
	return rs
}

// Slice returns the host bytes backing [addr, addr+n). The span must lie in
// one region. The slice aliases guest memory: the guest can change it at any
// time, so callers copy what they validate before they trust it.
func (m *Memory) Slice(addr GuestAddr, n uint64) ([]byte, error) {
	for _, r := range m.regions {
		if addr >= r.Start && addr < r.End() {
			off := uint64(addr - r.Start)
			if n > r.Size()-off {
				break
			}
			return r.host[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("%w: [%#x, +%#x)", ErrOutOfRange, uint64(addr), n)
}

// ReadAt copies len(p) bytes from guest address addr into p.
func (m *Memory) ReadAt(p []byte, addr GuestAddr) error {
	s, err := m.Slice(addr, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// WriteAt copies p to guest address addr.
func (m *Memory) WriteAt(p []byte, addr GuestAddr) error {
	s, err := m.Slice(addr, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}

// Uint16 reads a little-endian value at addr.
func (m *Memory) Uint16(addr GuestAddr) (uint16, error) {
	s, err := m.Slice(addr, 2)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint16(s), nil
}

// Uint32 reads a little-endian value at addr.
func (m *Memory) Uint32(addr GuestAddr) (uint32, error) {
	s, err := m.Slice(addr, 4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(s), nil
}

// Uint64 reads a little-endian value at addr.
func (m *Memory) Uint64(addr GuestAddr) (uint64, error) {
	s, err := m.Slice(addr, 8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(s), nil
}

// PutUint16 writes a little-endian value at addr.
func (m *Memory) PutUint16(addr GuestAddr, v uint16) error {
	s, err := m.Slice(addr, 2)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint16(s, v)
	return nil
}

// PutUint32 writes a little-endian value at addr.
func (m *Memory) PutUint32(addr GuestAddr, v uint32) error {
	s, err := m.Slice(addr, 4)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint32(s, v)
	return nil
}

// PutUint64 writes a little-endian value at addr.
func (m *Memory) PutUint64(addr GuestAddr, v uint64) error {
	s, err := m.Slice(addr, 8)
	if err != nil {
		return err
	}
	binary.LittleEndian.PutUint64(s, v)
	return nil
}

// HostAddr is the host virtual address of b's first byte, for handing a
// mapping the caller made itself to KVM.
func HostAddr(b []byte) uintptr {
	if len(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&b[0]))
}
