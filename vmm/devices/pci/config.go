package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Configuration space registers (PCI Local Bus 3.0, type-0 header).
const (
	RegVendorID      = 0x00
	RegDeviceID      = 0x02
	RegCommand       = 0x04
	RegStatus        = 0x06
	RegRevision      = 0x08
	RegClass         = 0x09
	RegHeaderType    = 0x0E
	RegBAR0          = 0x10
	RegSubsysVendor  = 0x2C
	RegSubsysID      = 0x2E
	RegCapPtr        = 0x34
	RegInterruptLine = 0x3C
	RegInterruptPin  = 0x3D

	// ConfigSize is the conventional configuration space; ECAM's
	// extended space above it reads as zero (no extended capabilities).
	ConfigSize = 256
	// NumBARs is the number of BARs of a type-0 header.
	NumBARs = 6
)

// Command register bits.
const (
	CommandIO          = 1 << 0
	CommandMemory      = 1 << 1
	CommandBusMaster   = 1 << 2
	CommandINTxDisable = 1 << 10
)

// statusCapList says the capability list at RegCapPtr is valid.
const statusCapList = 1 << 4

// Capability IDs used here.
const (
	CapIDVendor = 0x09
	CapIDMSIX   = 0x11
)

// firstCap is where capabilities start: right after the type-0 header.
const firstCap = 0x40

// ErrConfigSpace is wrapped by errors building a configuration space (a vmm
// bug: BAR sizes, capability room).
var ErrConfigSpace = errors.New("pci: configuration space")

// Header is the identity of a function.
type Header struct {
	VendorID, DeviceID uint16
	Revision           uint8
	// Class is base class << 16 | subclass << 8 | programming interface.
	Class                        uint32
	SubsystemVendor, SubsystemID uint16
	// InterruptPin is 0 (none) or 1 (INTA#).
	InterruptPin uint8
}

// bar is one 32-bit memory BAR.
type bar struct {
	size uint64 // 0: not implemented
	addr uint32 // as programmed, low size bits always clear
}

// capHook is called after a guest write touching [off, off+n).
type capHook struct {
	off, n int
	fn     func()
}

// ConfigSpace is one function's type-0 configuration space. It is safe for
// concurrent use; hooks run after the lock is released, so they may call back
// into it.
type ConfigSpace struct {
	mu      sync.Mutex
	regs    [ConfigSize]byte
	wmask   [ConfigSize]byte // bits the guest may change, outside the BARs
	bars    [NumBARs]bar
	lastCap int // offset of the last capability, 0 if none
	nextCap int // first free byte for the next capability
	hooks   []capHook
	onBARs  []func()
	// onWrites run after every guest write (OnWrite).
	onWrites []func()
	// window is the range where BARs decode (set by the bus).
	winStart, winEnd uint64
}

// NewConfigSpace returns a configuration space with h and no BARs or
// capabilities.
func NewConfigSpace(h Header) *ConfigSpace {
	c := &ConfigSpace{nextCap: firstCap, winEnd: 1 << 32}
	le := binary.LittleEndian
	le.PutUint16(c.regs[RegVendorID:], h.VendorID)
	le.PutUint16(c.regs[RegDeviceID:], h.DeviceID)
	c.regs[RegRevision] = h.Revision
	c.regs[RegClass] = byte(h.Class)
	c.regs[RegClass+1] = byte(h.Class >> 8)
	c.regs[RegClass+2] = byte(h.Class >> 16)
	le.PutUint16(c.regs[RegSubsysVendor:], h.SubsystemVendor)
	le.PutUint16(c.regs[RegSubsysID:], h.SubsystemID)
	c.regs[RegInterruptPin] = h.InterruptPin
	le.PutUint16(c.wmask[RegCommand:], CommandIO|CommandMemory|CommandBusMaster|CommandINTxDisable)
	c.wmask[0x0C] = 0xFF // cache line size: scratch for the guest
	c.wmask[RegInterruptLine] = 0xFF
	return c
}

// AddBAR declares BAR i as a 32-bit, non-prefetchable memory BAR of size
// bytes (a power of two, at least 4 KiB so a BAR never shares a page).
func (c *ConfigSpace) AddBAR(i int, size uint64) error {
	if i < 0 || i >= NumBARs || size < 4096 || size > 1<<31 || size&(size-1) != 0 {
		return fmt.Errorf("%w: BAR %d of %#x bytes", ErrConfigSpace, i, size)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.bars[i] = bar{size: size}
	return nil
}

// AddCapability appends a capability with the given ID. body is everything
// after the ID and next-pointer bytes; wmask (nil or as long as body) marks
// the bits the guest may write; onWrite, if set, runs after each guest write
// that touches the capability. It returns the capability's offset.
func (c *ConfigSpace) AddCapability(id uint8, body, wmask []byte, onWrite func()) (int, error) {
	if wmask != nil && len(wmask) != len(body) {
		return 0, fmt.Errorf("%w: capability %#x: mask of %d bytes for a body of %d", ErrConfigSpace, id, len(wmask), len(body))
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := (2 + len(body) + 3) &^ 3
	off := c.nextCap
	if off+n > ConfigSize {
		return 0, fmt.Errorf("%w: no room for capability %#x (%d bytes)", ErrConfigSpace, id, n)
	}
	c.regs[off] = id
	copy(c.regs[off+2:], body)
	copy(c.wmask[off+2:], wmask)
	if c.lastCap == 0 {
		c.regs[RegCapPtr] = byte(off)
		binary.LittleEndian.PutUint16(c.regs[RegStatus:], statusCapList)
	} else {
		c.regs[c.lastCap+1] = byte(off)
	}
	c.lastCap, c.nextCap = off, off+n
	if onWrite != nil {
		c.hooks = append(c.hooks, capHook{off: off, n: 2 + len(body), fn: onWrite})
	}
	return off, nil
}

// OnWrite registers f to run after every guest write, after the
// capability hooks: for state derived from several registers at once, such
// as whether a function's INTx pin may be asserted (command register's
// INTx disable, MSI-X enable).
func (c *ConfigSpace) OnWrite(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onWrites = append(c.onWrites, f)
}

// OnBARChange registers f to run after a guest write changed a BAR address
// or the memory-decode bit.
func (c *ConfigSpace) OnBARChange(f func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onBARs = append(c.onBARs, f)
}

// BARSize is BAR i's size, 0 if it is not implemented.
func (c *ConfigSpace) BARSize(i int) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bars[i].size
}

// SetBAR programs BAR i's address, as firmware would before the guest runs.
func (c *ConfigSpace) SetBAR(i int, addr uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := &c.bars[i]
	if b.size == 0 || addr%b.size != 0 || addr+b.size > 1<<32 {
		return fmt.Errorf("%w: BAR %d of %#x bytes cannot sit at %#x", ErrConfigSpace, i, b.size, addr)
	}
	b.addr = uint32(addr)
	return nil
}

// setWindow tells the space where BARs decode.
func (c *ConfigSpace) setWindow(start, end uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.winStart, c.winEnd = start, end
}

// BARMapping is where BAR i currently decodes: ok is false while memory
// decoding is off, the BAR is unimplemented, or the guest left it (wholly or
// partly) outside the bus's window, e.g. in the middle of sizing it.
func (c *ConfigSpace) BARMapping(i int) (addr uint64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.mappingLocked(i)
}

func (c *ConfigSpace) mappingLocked(i int) (uint64, bool) {
	b := c.bars[i]
	if b.size == 0 || binary.LittleEndian.Uint16(c.regs[RegCommand:])&CommandMemory == 0 {
		return 0, false
	}
	a := uint64(b.addr)
	if a < c.winStart || a+b.size > c.winEnd {
		return 0, false
	}
	return a, true
}

// Command is the command register.
func (c *ConfigSpace) Command() uint16 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return binary.LittleEndian.Uint16(c.regs[RegCommand:])
}

// InterruptLine is the interrupt line register.
func (c *ConfigSpace) InterruptLine() uint8 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.regs[RegInterruptLine]
}

// SetInterruptLine sets the interrupt line as firmware would.
func (c *ConfigSpace) SetInterruptLine(v uint8) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.regs[RegInterruptLine] = v
}

// barReg is BAR i's register value as the guest reads it.
func (c *ConfigSpace) barReg(i int) uint32 {
	// Memory space, 32-bit, non-prefetchable: type bits are all zero.
	return c.bars[i].addr
}

// Read fills data from offset. Accesses beyond ConfigSize (ECAM's extended
// space) read as zero.
func (c *ConfigSpace) Read(offset uint64, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range data {
		o := offset + uint64(i)
		switch {
		case o >= ConfigSize:
			data[i] = 0
		case o >= RegBAR0 && o < RegBAR0+4*NumBARs:
			b := int(o-RegBAR0) / 4
			data[i] = byte(c.barReg(b) >> (8 * ((o - RegBAR0) % 4)))
		default:
			data[i] = c.regs[o]
		}
	}
}

// Write applies a guest write: only writable bits change; a BAR keeps the
// bits below its size clear, which is what makes the sizing protocol work.
func (c *ConfigSpace) Write(offset uint64, data []byte) {
	c.mu.Lock()
	var hooks []func()
	barsChanged := false
	oldCmd := binary.LittleEndian.Uint16(c.regs[RegCommand:])
	for i := range data {
		o := offset + uint64(i)
		if o >= ConfigSize {
			break
		}
		if o >= RegBAR0 && o < RegBAR0+4*NumBARs {
			b := int(o-RegBAR0) / 4
			shift := 8 * ((o - RegBAR0) % 4)
			bb := &c.bars[b]
			if bb.size == 0 {
				continue
			}
			v := bb.addr&^(0xFF<<shift) | uint32(data[i])<<shift
			v &^= uint32(bb.size - 1)
			if v != bb.addr {
				bb.addr = v
				barsChanged = true
			}
			continue
		}
		m := c.wmask[o]
		c.regs[o] = c.regs[o]&^m | data[i]&m
	}
	if (oldCmd^binary.LittleEndian.Uint16(c.regs[RegCommand:]))&CommandMemory != 0 {
		barsChanged = true
	}
	end := offset + uint64(len(data))
	for _, h := range c.hooks {
		if offset < uint64(h.off+h.n) && uint64(h.off) < end {
			hooks = append(hooks, h.fn)
		}
	}
	if barsChanged {
		hooks = append(hooks, c.onBARs...)
	}
	hooks = append(hooks, c.onWrites...)
	c.mu.Unlock()
	for _, f := range hooks {
		f()
	}
}

// Capabilities walks the capability list as a guest would, returning each
// capability's offset by ID. It stops on a loop or a pointer outside the
// space.
func (c *ConfigSpace) Capabilities() map[uint8][]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	caps := map[uint8][]int{}
	if binary.LittleEndian.Uint16(c.regs[RegStatus:])&statusCapList == 0 {
		return caps
	}
	seen := map[int]bool{}
	for off := int(c.regs[RegCapPtr]) &^ 3; off >= firstCap && off+2 <= ConfigSize && !seen[off]; off = int(c.regs[off+1]) &^ 3 {
		seen[off] = true
		caps[c.regs[off]] = append(caps[c.regs[off]], off)
	}
	return caps
}
