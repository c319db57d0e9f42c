package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
)

// Device is one single-function PCI device on bus 0.
type Device interface {
	// Config is the function's configuration space.
	Config() *ConfigSpace
	// BARRead and BARWrite handle an access at offset into BAR bar; the
	// bus guarantees the access lies inside the BAR.
	BARRead(bar int, offset uint64, data []byte)
	BARWrite(bar int, offset uint64, data []byte)
}

// INTxUser is implemented by devices that raise legacy INTx interrupts:
// Add hands them the pin (INTA#) of the slot they were given.
type INTxUser interface {
	SetINTx(pin *INTxPin)
}

// Host bridge identity: Red Hat's generic PCIe host bridge ID, for which
// Linux has no quirks.
const (
	hostBridgeVendor = 0x1b36
	hostBridgeDevice = 0x0008
	classHostBridge  = 0x060000
)

// Type-1 configuration mechanism (ports 0xCF8-0xCFF).
const (
	// ConfigAddressPort is CONFIG_ADDRESS; CONFIG_DATA follows at +4.
	ConfigAddressPort = 0xCF8
	// ConfigPorts is the size of the port range.
	ConfigPorts     = 8
	configEnableBit = 1 << 31
	numSlots        = 32
)

// ErrBusFull is returned by Add when no slot or no window space is left.
var ErrBusFull = errors.New("pci: bus full")

// Bus is PCI bus 0 behind the host bridge in slot 0.
type Bus struct {
	mu       sync.RWMutex
	slots    [numSlots]Device
	routes   []route
	winStart uint64
	winEnd   uint64
	next     uint64 // BAR allocator

	cf8  atomic.Uint32
	intx intxLines
}

// route maps a decoded BAR to its device.
type route struct {
	base, size uint64
	dev        Device
	bar        int
}

// NewBus returns bus 0 with its host bridge; BARs are placed in the 32-bit
// memory window [winStart, winEnd).
func NewBus(winStart, winEnd uint64) *Bus {
	b := &Bus{winStart: winStart, winEnd: winEnd, next: winStart, intx: intxLines{asserted: map[uint32]int{}}}
	b.slots[0] = &hostBridge{cfg: NewConfigSpace(Header{VendorID: hostBridgeVendor, DeviceID: hostBridgeDevice, Class: classHostBridge})}
	return b
}

// Add puts d in the next free slot, places its BARs in the window (each
// naturally aligned, as the sizing protocol requires) and assigns its INTx
// line. It returns the slot.
func (b *Bus) Add(d Device) (int, error) {
	b.mu.Lock()
	slot := -1
	for i, s := range b.slots {
		if s == nil {
			slot = i
			break
		}
	}
	if slot < 0 {
		b.mu.Unlock()
		return 0, fmt.Errorf("%w: all %d slots taken", ErrBusFull, numSlots)
	}
	cfg := d.Config()
	next := b.next
	type placement struct {
		bar  int
		addr uint64
	}
	var places []placement
	for i := range NumBARs {
		size := cfg.BARSize(i)
		if size == 0 {
			continue
		}
		addr := (next + size - 1) &^ (size - 1)
		if addr+size > b.winEnd {
			b.mu.Unlock()
			return 0, fmt.Errorf("%w: no room for a %#x-byte BAR in [%#x, %#x)", ErrBusFull, size, b.winStart, b.winEnd)
		}
		places = append(places, placement{i, addr})
		next = addr + size
	}
	for _, p := range places {
		if err := cfg.SetBAR(p.bar, p.addr); err != nil {
			b.mu.Unlock()
			return 0, err
		}
	}
	b.next = next
	b.slots[slot] = d
	b.mu.Unlock()

	cfg.setWindow(b.winStart, b.winEnd)
	// The interrupt line register holds the GSI, as firmware leaves it;
	// Linux takes the routing from the _PRT.
	gsi := INTxGSI(slot, 0)
	cfg.SetInterruptLine(uint8(gsi))
	if u, ok := d.(INTxUser); ok {
		u.SetINTx(&INTxPin{lines: &b.intx, gsi: gsi})
	}
	cfg.OnBARChange(b.remap)
	b.remap()
	return slot, nil
}

// remap rebuilds the BAR routes from every device's current decoding.
func (b *Bus) remap() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.routes = b.routes[:0]
	for _, d := range b.slots {
		if d == nil {
			continue
		}
		cfg := d.Config()
		for i := range NumBARs {
			if addr, ok := cfg.BARMapping(i); ok {
				b.routes = append(b.routes, route{base: addr, size: cfg.BARSize(i), dev: d, bar: i})
			}
		}
	}
	sort.Slice(b.routes, func(i, j int) bool { return b.routes[i].base < b.routes[j].base })
}

// find returns the BAR holding the whole access [addr, addr+n).
func (b *Bus) find(addr uint64, n int) (route, bool) {
	b.mu.RLock()
	defer b.mu.RUnlock()
	i := sort.Search(len(b.routes), func(i int) bool { return b.routes[i].base+b.routes[i].size > addr })
	if i == len(b.routes) {
		return route{}, false
	}
	r := b.routes[i]
	if addr < r.base || addr-r.base+uint64(n) > r.size {
		return route{}, false
	}
	return r, true
}

func (b *Bus) device(slot uint64) Device {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if slot >= numSlots {
		return nil
	}
	return b.slots[slot]
}

// configRead reads function fn of slot; absent functions read all-ones,
// which is how the guest learns they are absent.
func (b *Bus) configRead(slot, fn, reg uint64, data []byte) {
	d := b.device(slot)
	if d == nil || fn != 0 {
		for i := range data {
			data[i] = 0xFF
		}
		return
	}
	d.Config().Read(reg, data)
}

func (b *Bus) configWrite(slot, fn, reg uint64, data []byte) {
	d := b.device(slot)
	if d == nil || fn != 0 {
		return
	}
	d.Config().Write(reg, data)
}

// ConfigIO is the type-1 mechanism, to register on the port bus at
// ConfigAddressPort for ConfigPorts ports.
func (b *Bus) ConfigIO() *ConfigIO { return &ConfigIO{b: b} }

// ConfigIO is CONFIG_ADDRESS and CONFIG_DATA.
type ConfigIO struct{ b *Bus }

// Read implements devices.Device.
func (c *ConfigIO) Read(offset uint64, data []byte) {
	if offset < 4 {
		if offset == 0 && len(data) == 4 {
			binary.LittleEndian.PutUint32(data, c.b.cf8.Load())
			return
		}
		for i := range data {
			data[i] = 0xFF
		}
		return
	}
	a := c.b.cf8.Load()
	if a&configEnableBit == 0 || (a>>16)&0xFF != 0 {
		for i := range data {
			data[i] = 0xFF
		}
		return
	}
	c.b.configRead(uint64(a>>11)&0x1F, uint64(a>>8)&7, uint64(a&0xFC)+offset-4, data)
}

// Write implements devices.Device. Only whole-dword writes latch
// CONFIG_ADDRESS (Linux's type-1 probe pokes a byte at 0xCFB and expects
// nothing to happen).
func (c *ConfigIO) Write(offset uint64, data []byte) {
	if offset < 4 {
		if offset == 0 && len(data) == 4 {
			c.b.cf8.Store(binary.LittleEndian.Uint32(data) &^ 3)
		}
		return
	}
	a := c.b.cf8.Load()
	if a&configEnableBit == 0 || (a>>16)&0xFF != 0 {
		return
	}
	c.b.configWrite(uint64(a>>11)&0x1F, uint64(a>>8)&7, uint64(a&0xFC)+offset-4, data)
}

// ECAM is enhanced configuration space for bus 0, to register on the MMIO
// bus at the MCFG base for 1 MiB.
func (b *Bus) ECAM() *ECAM { return &ECAM{b: b} }

// ECAM decodes bus 0's memory-mapped configuration space.
type ECAM struct{ b *Bus }

// Read implements devices.Device.
func (e *ECAM) Read(offset uint64, data []byte) {
	if offset>>20 != 0 || (offset&0xFFF)+uint64(len(data)) > 0x1000 {
		for i := range data {
			data[i] = 0xFF
		}
		return
	}
	e.b.configRead(offset>>15&0x1F, offset>>12&7, offset&0xFFF, data)
}

// Write implements devices.Device.
func (e *ECAM) Write(offset uint64, data []byte) {
	if offset>>20 != 0 || (offset&0xFFF)+uint64(len(data)) > 0x1000 {
		return
	}
	e.b.configWrite(offset>>15&0x1F, offset>>12&7, offset&0xFFF, data)
}

// MMIO dispatches the 32-bit window to the BARs decoding there; register it
// on the MMIO bus at the window's start for its whole size. Addresses no BAR
// decodes read as all-ones and ignore writes.
func (b *Bus) MMIO() *Window { return &Window{b: b} }

// Window is the memory window of bus 0.
type Window struct{ b *Bus }

// Read implements devices.Device.
func (w *Window) Read(offset uint64, data []byte) {
	r, ok := w.b.find(w.b.winStart+offset, len(data))
	if !ok {
		for i := range data {
			data[i] = 0xFF
		}
		return
	}
	r.dev.BARRead(r.bar, w.b.winStart+offset-r.base, data)
}

// Write implements devices.Device.
func (w *Window) Write(offset uint64, data []byte) {
	if r, ok := w.b.find(w.b.winStart+offset, len(data)); ok {
		r.dev.BARWrite(r.bar, w.b.winStart+offset-r.base, data)
	}
}

// hostBridge is slot 0: configuration space only.
type hostBridge struct{ cfg *ConfigSpace }

func (h *hostBridge) Config() *ConfigSpace         { return h.cfg }
func (h *hostBridge) BARRead(int, uint64, []byte)  {}
func (h *hostBridge) BARWrite(int, uint64, []byte) {}
