package devices

import (
	"fmt"
	"sort"
	"sync"
)

// Device handles accesses to the addresses it was registered for. offset is
// relative to the registered base; len(data) is the access size (1, 2, 4 or
// 8 bytes, or more for string I/O split by the caller). Read fills data.
type Device interface {
	Read(offset uint64, data []byte)
	Write(offset uint64, data []byte)
}

// Bus routes accesses to the device registered for a range of addresses.
// Port I/O and MMIO each get one; lookups are read-mostly and lock-free
// against each other.
type Bus struct {
	name    string
	mu      sync.RWMutex
	entries []busEntry
}

type busEntry struct {
	base, size uint64
	dev        Device
}

// NewBus returns an empty bus; name appears in errors ("pio", "mmio").
func NewBus(name string) *Bus { return &Bus{name: name} }

// Register maps [base, base+size) to dev. Overlapping another range is an
// error: two devices answering one address is always a layout bug.
func (b *Bus) Register(base, size uint64, dev Device) error {
	if size == 0 || base+size < base {
		return fmt.Errorf("%s bus: bad range [%#x, +%#x)", b.name, base, size)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.entries {
		if base < e.base+e.size && e.base < base+size {
			return fmt.Errorf("%s bus: [%#x, +%#x) overlaps [%#x, +%#x)", b.name, base, size, e.base, e.size)
		}
	}
	b.entries = append(b.entries, busEntry{base, size, dev})
	sort.Slice(b.entries, func(i, j int) bool { return b.entries[i].base < b.entries[j].base })
	return nil
}

// find returns the device whose range holds the whole access.
func (b *Bus) find(addr uint64, n int) (Device, uint64, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.entries), func(i int) bool { return b.entries[i].base+b.entries[i].size > addr })
	if i == len(b.entries) {
		return nil, 0, false
	}
	e := b.entries[i]
	if addr < e.base || addr-e.base+uint64(n) > e.size {
		return nil, 0, false
	}
	return e.dev, addr - e.base, true
}

// Read dispatches a read. With no device there it fills data with 0xff, as
// an open bus does, and reports false.
func (b *Bus) Read(addr uint64, data []byte) bool {
	dev, off, ok := b.find(addr, len(data))
	if !ok {
		for i := range data {
			data[i] = 0xff
		}
		return false
	}
	dev.Read(off, data)
	return true
}

// Write dispatches a write; with no device there it is dropped and Write
// reports false.
func (b *Bus) Write(addr uint64, data []byte) bool {
	dev, off, ok := b.find(addr, len(data))
	if !ok {
		return false
	}
	dev.Write(off, data)
	return true
}
