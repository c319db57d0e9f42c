package pci

import (
	"encoding/binary"
	"errors"
	"testing"

	"golang.org/x/sys/unix"

	"kvmstack/vmm/kvm"
)

const (
	testWinStart = 0xC000_0000
	testWinEnd   = 0xE000_0000
)

// testDev is a device with two BARs that records BAR accesses.
type testDev struct {
	cfg  *ConfigSpace
	last struct {
		bar int
		off uint64
	}
	line uint8
}

func newTestDev(t *testing.T, sizes ...uint64) *testDev {
	t.Helper()
	d := &testDev{cfg: NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1044, Revision: 1, Class: 0xFF0000, InterruptPin: 1})}
	for i, s := range sizes {
		if err := d.cfg.AddBAR(i, s); err != nil {
			t.Fatal(err)
		}
	}
	return d
}

func (d *testDev) Config() *ConfigSpace { return d.cfg }
func (d *testDev) BARRead(bar int, off uint64, data []byte) {
	d.last.bar, d.last.off = bar, off
	for i := range data {
		data[i] = byte(bar*16 + i)
	}
}
func (d *testDev) BARWrite(bar int, off uint64, data []byte) { d.last.bar, d.last.off = bar, off }
func (d *testDev) SetINTx(p *INTxPin)                        { d.line = uint8(p.GSI()) }

// cf8 accesses configuration space through the type-1 ports.
type cf8 struct{ io *ConfigIO }

func (c cf8) read32(slot, reg uint32) uint32 {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], configEnableBit|slot<<11|reg)
	c.io.Write(0, b[:])
	c.io.Read(4, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (c cf8) write32(slot, reg, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], configEnableBit|slot<<11|reg)
	c.io.Write(0, b[:])
	binary.LittleEndian.PutUint32(b[:], v)
	c.io.Write(4, b[:])
}

func TestBARSizingProtocol(t *testing.T) {
	bus := NewBus(testWinStart, testWinEnd)
	dev := newTestDev(t, 0x4000, 0x1000)
	slot, err := bus.Add(dev)
	if err != nil || slot != 1 {
		t.Fatalf("Add = %d, %v", slot, err)
	}
	c := cf8{bus.ConfigIO()}
	tests := []struct {
		reg      uint32
		size     uint32
		wantAddr uint32
	}{
		{RegBAR0, 0x4000, testWinStart},
		{RegBAR0 + 4, 0x1000, testWinStart + 0x4000},
	}
	for _, tt := range tests {
		orig := c.read32(1, tt.reg)
		if orig != tt.wantAddr {
			t.Fatalf("BAR %#x = %#x, want %#x", tt.reg, orig, tt.wantAddr)
		}
		c.write32(1, tt.reg, 0xFFFF_FFFF)
		if got := c.read32(1, tt.reg); got != ^(tt.size - 1) {
			t.Fatalf("sizing BAR %#x read %#x, want %#x", tt.reg, got, ^(tt.size - 1))
		}
		c.write32(1, tt.reg, orig)
		if got := c.read32(1, tt.reg); got != orig {
			t.Fatalf("restored BAR %#x = %#x", tt.reg, got)
		}
	}
	// Unimplemented BARs and the ROM BAR size to zero.
	for _, reg := range []uint32{RegBAR0 + 8, RegBAR0 + 20, 0x30} {
		c.write32(1, reg, 0xFFFF_FFFF)
		if got := c.read32(1, reg); got != 0 {
			t.Fatalf("unimplemented BAR %#x reads %#x after sizing", reg, got)
		}
	}
	if dev.line != 17 || c.read32(1, RegInterruptLine)&0xFF != 17 {
		t.Fatalf("INTx line %d", dev.line)
	}
}

func TestBARDecodeFollowsGuest(t *testing.T) {
	bus := NewBus(testWinStart, testWinEnd)
	dev := newTestDev(t, 0x4000)
	if _, err := bus.Add(dev); err != nil {
		t.Fatal(err)
	}
	c := cf8{bus.ConfigIO()}
	w := bus.MMIO()
	var b [4]byte
	w.Read(0x10, b[:])
	if b != [4]byte{0xFF, 0xFF, 0xFF, 0xFF} {
		t.Fatalf("BAR decodes before memory enable: % x", b)
	}
	c.write32(1, RegCommand, CommandMemory)
	w.Read(0x10, b[:])
	if dev.last.bar != 0 || dev.last.off != 0x10 {
		t.Fatalf("access routed to BAR %d offset %#x", dev.last.bar, dev.last.off)
	}
	// The guest moves the BAR.
	c.write32(1, RegBAR0, testWinStart+0x10_0000)
	w.Read(0x10, b[:])
	if b != [4]byte{0xFF, 0xFF, 0xFF, 0xFF} {
		t.Fatal("old BAR address still decodes")
	}
	w.Read(0x10_0000+0x3FFC, b[:])
	if dev.last.off != 0x3FFC {
		t.Fatalf("moved BAR: offset %#x", dev.last.off)
	}
	// An access straddling the BAR's end goes nowhere.
	dev.last.off = 0
	w.Read(0x10_0000+0x3FFE, b[:])
	if dev.last.off != 0 {
		t.Fatal("straddling access reached the device")
	}
	// A BAR moved outside the window stops decoding.
	c.write32(1, RegBAR0, 0x1000_0000)
	if _, ok := dev.cfg.BARMapping(0); ok {
		t.Fatal("BAR outside the window decodes")
	}
}

func TestConfigAccessPaths(t *testing.T) {
	bus := NewBus(testWinStart, testWinEnd)
	if _, err := bus.Add(newTestDev(t, 0x1000)); err != nil {
		t.Fatal(err)
	}
	c := cf8{bus.ConfigIO()}
	e := bus.ECAM()
	tests := []struct {
		name string
		slot uint32
		want uint32
	}{
		{"hostBridge", 0, hostBridgeDevice<<16 | hostBridgeVendor},
		{"device", 1, 0x1044<<16 | 0x1af4},
		{"empty", 2, 0xFFFF_FFFF},
		{"lastSlot", 31, 0xFFFF_FFFF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := c.read32(tt.slot, 0); got != tt.want {
				t.Fatalf("type-1 ID = %#x, want %#x", got, tt.want)
			}
			var b [4]byte
			e.Read(uint64(tt.slot)<<15, b[:])
			if got := binary.LittleEndian.Uint32(b[:]); got != tt.want {
				t.Fatalf("ECAM ID = %#x, want %#x", got, tt.want)
			}
		})
	}
	// Function 1 and bus 1 are absent; the disable bit hides everything.
	var b [4]byte
	e.Read(1<<15|1<<12, b[:])
	if binary.LittleEndian.Uint32(b[:]) != 0xFFFF_FFFF {
		t.Fatal("function 1 answers")
	}
	binary.LittleEndian.PutUint32(b[:], configEnableBit|1<<16|1<<11)
	c.io.Write(0, b[:])
	c.io.Read(4, b[:])
	if binary.LittleEndian.Uint32(b[:]) != 0xFFFF_FFFF {
		t.Fatal("bus 1 answers")
	}
	// Linux's type-1 probe: a byte write to 0xCFB must not latch.
	binary.LittleEndian.PutUint32(b[:], 0x8000_0000)
	c.io.Write(0, b[:])
	c.io.Write(3, []byte{1})
	c.io.Read(0, b[:])
	if got := binary.LittleEndian.Uint32(b[:]); got != 0x8000_0000 {
		t.Fatalf("CONFIG_ADDRESS = %#x after a byte write", got)
	}
	// Extended space reads as zero: no extended capabilities.
	e.Read(1<<15|0x100, b[:])
	if binary.LittleEndian.Uint32(b[:]) != 0 {
		t.Fatal("extended config space not zero")
	}
	// Read-only registers stay put.
	c.write32(1, 0, 0x1234_5678)
	if got := c.read32(1, 0); got != 0x1044<<16|0x1af4 {
		t.Fatalf("vendor/device writable: %#x", got)
	}
}

func TestCapabilityList(t *testing.T) {
	cfg := NewConfigSpace(Header{VendorID: 1})
	bodies := [][]byte{make([]byte, 14), make([]byte, 18), make([]byte, 10)}
	ids := []uint8{CapIDVendor, CapIDVendor, CapIDMSIX}
	var offs []int
	for i, body := range bodies {
		off, err := cfg.AddCapability(ids[i], body, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		offs = append(offs, off)
	}
	var st [2]byte
	cfg.Read(RegStatus, st[:])
	if binary.LittleEndian.Uint16(st[:])&statusCapList == 0 {
		t.Fatal("status lacks the capability-list bit")
	}
	caps := cfg.Capabilities()
	if len(caps[CapIDVendor]) != 2 || caps[CapIDVendor][0] != offs[0] || caps[CapIDVendor][1] != offs[1] || caps[CapIDMSIX][0] != offs[2] {
		t.Fatalf("walked %v, added at %v", caps, offs)
	}
	for _, o := range offs {
		if o%4 != 0 || o < firstCap {
			t.Fatalf("capability at %#x", o)
		}
	}
	if _, err := cfg.AddCapability(CapIDVendor, make([]byte, 250), nil, nil); !errors.Is(err, ErrConfigSpace) {
		t.Fatalf("overflowing capability: %v", err)
	}
}

// fakeKVM records routing tables and irqfd bindings.
type fakeKVM struct {
	tables [][]kvm.IRQRoutingEntry
	irqfds []kvm.IRQFD
}

func (f *fakeKVM) SetGSIRouting(es []kvm.IRQRoutingEntry) error {
	f.tables = append(f.tables, es)
	return nil
}
func (f *fakeKVM) IRQFD(i kvm.IRQFD) error { f.irqfds = append(f.irqfds, i); return nil }

func TestDefaultRoutes(t *testing.T) {
	es := DefaultRoutes()
	pins := map[uint32][]kvm.IRQRoutingIRQChip{}
	for _, e := range es {
		r, ok := e.IRQChip()
		if !ok {
			t.Fatalf("non-irqchip default route %+v", e)
		}
		pins[e.GSI] = append(pins[e.GSI], r)
	}
	for gsi := uint32(0); gsi < 24; gsi++ {
		var ioapic, pic bool
		for _, r := range pins[gsi] {
			switch {
			case r.IRQChip == irqchipIOAPIC && r.Pin == gsi:
				ioapic = true
			case gsi < 8 && r.IRQChip == irqchipPICMaster && r.Pin == gsi, gsi >= 8 && r.IRQChip == irqchipPICSlave && r.Pin == gsi-8:
				pic = true
			}
		}
		if !ioapic || pic != (gsi < 16) || len(pins[gsi]) != map[bool]int{true: 2, false: 1}[gsi < 16] {
			t.Fatalf("GSI %d routes %+v", gsi, pins[gsi])
		}
	}
}

func readEventfd(t *testing.T, fd int) uint64 {
	t.Helper()
	var b [8]byte
	if _, err := unix.Read(fd, b[:]); err != nil {
		if errors.Is(err, unix.EAGAIN) {
			return 0
		}
		t.Fatal(err)
	}
	return binary.LittleEndian.Uint64(b[:])
}

func TestMSIX(t *testing.T) {
	k := &fakeKVM{}
	router := NewGSIRouter(k)
	cfg := NewConfigSpace(Header{VendorID: 1})
	m, err := NewMSIX(cfg, 3, 0, 0x4000, 0x5000, router, k)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if len(k.irqfds) != 3 || k.irqfds[0].GSI != FirstMSIGSI || k.irqfds[2].GSI != FirstMSIGSI+2 {
		t.Fatalf("irqfds %+v", k.irqfds)
	}
	capOff := cfg.Capabilities()[CapIDMSIX][0]
	var b [12]byte
	cfg.Read(uint64(capOff), b[:])
	if ctl := binary.LittleEndian.Uint16(b[2:]); ctl != 2 {
		t.Fatalf("message control %#x, want table size 3", ctl)
	}
	if binary.LittleEndian.Uint32(b[4:]) != 0x4000 || binary.LittleEndian.Uint32(b[8:]) != 0x5000 {
		t.Fatalf("table/PBA %x", b[4:])
	}
	if err := m.Trigger(0); !errors.Is(err, ErrMSIXDisabled) {
		t.Fatalf("Trigger while disabled: %v", err)
	}
	// Enable with all vectors masked (reset state): a trigger goes pending.
	cfg.Write(uint64(capOff+2), []byte{0xFF, 0xFF}) // only enable+mask stick
	cfg.Read(uint64(capOff+2), b[:2])
	if binary.LittleEndian.Uint16(b[:]) != 2|msixControlEnable|msixControlMask {
		t.Fatalf("control after write %#x", binary.LittleEndian.Uint16(b[:]))
	}
	cfg.Write(uint64(capOff+3), []byte{0x80}) // enable, function mask off
	if err := m.Trigger(1); err != nil {
		t.Fatal(err)
	}
	var pba [8]byte
	m.PBARead(0, pba[:])
	if pba[0] != 2 {
		t.Fatalf("PBA %x, want vector 1 pending", pba)
	}
	if readEventfd(t, m.efd[1]) != 0 {
		t.Fatal("masked vector fired")
	}
	// Program vector 1 and unmask it: the pending interrupt fires on a
	// committed route.
	entry := make([]byte, 16)
	binary.LittleEndian.PutUint32(entry, 0xFEE0_1000)
	binary.LittleEndian.PutUint32(entry[8:], 0x41)
	m.TableWrite(16, entry[:12])
	if len(k.tables) != 0 {
		t.Fatal("route committed for a masked vector")
	}
	m.TableWrite(28, []byte{0, 0, 0, 0})
	if got := readEventfd(t, m.efd[1]); got != 1 {
		t.Fatalf("unmask delivered %d interrupts, want the pending one", got)
	}
	m.PBARead(0, pba[:])
	if pba[0] != 0 {
		t.Fatalf("PBA %x after delivery", pba)
	}
	last := k.tables[len(k.tables)-1]
	msi, ok := last[len(last)-1].MSI()
	if !ok || last[len(last)-1].GSI != FirstMSIGSI+1 || msi.AddressLo != 0xFEE0_1000 || msi.Data != 0x41 {
		t.Fatalf("last route %+v", last[len(last)-1])
	}
	if len(last) != len(DefaultRoutes())+1 {
		t.Fatalf("table of %d entries lost the defaults", len(last))
	}
	if err := m.Trigger(1); err != nil || readEventfd(t, m.efd[1]) != 1 {
		t.Fatalf("live trigger: %v", err)
	}
	// Reserved vector-control bits do not stick; the table reads back.
	m.TableWrite(28, []byte{0xFE, 0xFF, 0xFF, 0xFF})
	var ctl [4]byte
	m.TableRead(28, ctl[:])
	if ctl != [4]byte{} {
		t.Fatalf("vector control %x", ctl)
	}
	// Function mask holds interrupts back.
	cfg.Write(uint64(capOff+3), []byte{0xC0})
	if err := m.Trigger(1); err != nil || readEventfd(t, m.efd[1]) != 0 {
		t.Fatalf("function-masked trigger: %v", err)
	}
	cfg.Write(uint64(capOff+3), []byte{0x80})
	if readEventfd(t, m.efd[1]) != 1 {
		t.Fatal("pending vector not delivered on function unmask")
	}
	if err := m.Trigger(7); err == nil {
		t.Fatal("Trigger of a vector past the table succeeded")
	}
	// Accesses past the table are harmless.
	m.TableWrite(1<<20, entry)
	m.TableRead(1<<20, entry)
}
