package pci

import (
	"encoding/binary"
	"errors"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kvmstack/virtio"
	"kvmstack/virtio/rng"
	pcibus "kvmstack/vmm/devices/pci"
	"kvmstack/vmm/kvm"
	"kvmstack/vmm/memory"
)

const (
	winStart = 0xC000_0000
	winEnd   = 0xE000_0000
	ringDesc = 0x10000
	ringAvl  = 0x11000
	ringUsed = 0x12000
	bufAddr  = 0x20000
)

// fakeVM records what the transport asks of KVM.
type fakeVM struct {
	mu         sync.Mutex
	ioeventfds map[uint64]kvm.IOEventFD
	irqfds     map[uint32]int // GSI -> eventfd
	lines      []uint32       // raised INTx lines
	routes     []kvm.IRQRoutingEntry
	refuseIOEv bool
}

func newFakeVM() *fakeVM {
	return &fakeVM{ioeventfds: map[uint64]kvm.IOEventFD{}, irqfds: map[uint32]int{}}
}

func (f *fakeVM) IOEventFD(e kvm.IOEventFD) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e.Flags&kvm.IOEventFDFlagDeassign != 0 {
		if _, ok := f.ioeventfds[e.Addr]; !ok {
			return unix.ENOENT
		}
		delete(f.ioeventfds, e.Addr)
		return nil
	}
	if f.refuseIOEv {
		return unix.ENOSPC
	}
	f.ioeventfds[e.Addr] = e
	return nil
}

func (f *fakeVM) IRQFD(i kvm.IRQFD) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.irqfds[i.GSI] = int(i.FD)
	return nil
}

func (f *fakeVM) IRQLine(irq uint32, level bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if level {
		f.lines = append(f.lines, irq)
	}
	return nil
}

func (f *fakeVM) SetGSIRouting(es []kvm.IRQRoutingEntry) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes = es
	return nil
}

// harness is a machine with one virtio-pci function on bus 0, accessed the
// way a guest driver would: config space through ECAM, BAR 0 through the
// bus window.
type harness struct {
	t   *testing.T
	vm  *fakeVM
	mem *memory.Memory
	bus *pcibus.Bus
	tr  *Transport
	bar uint64
}

func newHarness(t *testing.T, dev virtio.Device, refuseIOEventFD bool) *harness {
	t.Helper()
	mem, err := memory.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mem.Close() })
	vm := newFakeVM()
	vm.refuseIOEv = refuseIOEventFD
	tr, err := New(dev, Config{Memory: mem, VM: vm, Router: pcibus.NewGSIRouter(vm)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := tr.Close(); err != nil {
			t.Error(err)
		}
	})
	bus := pcibus.NewBus(winStart, winEnd)
	if slot, err := bus.Add(tr); err != nil || slot != 1 {
		t.Fatalf("Add = %d, %v", slot, err)
	}
	h := &harness{t: t, vm: vm, mem: mem, bus: bus, tr: tr}
	h.bar = uint64(h.cfg32(pcibus.RegBAR0))
	// Enable memory decoding and bus mastering, as pci_enable_device does.
	h.cfgWrite(pcibus.RegCommand, []byte{pcibus.CommandMemory | pcibus.CommandBusMaster, 0})
	return h
}

func (h *harness) cfgRead(off uint64, n int) []byte {
	b := make([]byte, n)
	h.bus.ECAM().Read(1<<15|off, b)
	return b
}
func (h *harness) cfg32(off uint64) uint32 { return binary.LittleEndian.Uint32(h.cfgRead(off, 4)) }
func (h *harness) cfgWrite(off uint64, b []byte) {
	h.bus.ECAM().Write(1<<15|off, b)
}

func (h *harness) read(off uint64, n int) uint64 {
	b := make([]byte, 8)
	h.bus.MMIO().Read(h.bar-winStart+off, b[:n])
	return binary.LittleEndian.Uint64(b)
}

func (h *harness) write(off uint64, n int, v uint64) {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	h.bus.MMIO().Write(h.bar-winStart+off, b[:n])
}

// virtioCaps walks the capability list as Linux's virtio_pci_modern does.
func (h *harness) virtioCaps() map[uint8][]byte {
	caps := map[uint8][]byte{}
	for _, off := range h.tr.Config().Capabilities()[pcibus.CapIDVendor] {
		c := h.cfgRead(uint64(off), int(h.cfgRead(uint64(off)+2, 1)[0]))
		caps[c[3]] = c
	}
	return caps
}

func TestCapabilities(t *testing.T) {
	h := newHarness(t, rng.New(), false)
	if id := h.cfg32(0); id != 0x1044_1af4 {
		t.Fatalf("vendor/device %#x", id)
	}
	if rev := h.cfgRead(pcibus.RegRevision, 1)[0]; rev != 1 {
		t.Fatalf("revision %d: modern-only devices have revision 1", rev)
	}
	caps := h.virtioCaps()
	tests := []struct {
		typ       uint8
		off, size uint32
	}{
		{capCommonCfg, commonOffset, commonSize},
		{capNotifyCfg, notifyOffset, notifyMult},
		{capISRCfg, isrOffset, isrSize},
		{capDeviceCfg, deviceOffset, deviceSize},
	}
	for _, tt := range tests {
		c, ok := caps[tt.typ]
		if !ok {
			t.Fatalf("no virtio capability of type %d", tt.typ)
		}
		if c[4] != bar || binary.LittleEndian.Uint32(c[8:]) != tt.off || binary.LittleEndian.Uint32(c[12:]) != tt.size {
			t.Errorf("capability %d: % x", tt.typ, c)
		}
		if uint64(tt.off)+uint64(tt.size) > barSize {
			t.Errorf("capability %d outside BAR 0", tt.typ)
		}
	}
	if n := caps[capNotifyCfg]; len(n) != 20 || binary.LittleEndian.Uint32(n[16:]) != notifyMult {
		t.Errorf("notify capability % x", n)
	}
	if len(h.tr.Config().Capabilities()[pcibus.CapIDMSIX]) != 1 {
		t.Error("no MSI-X capability")
	}
}

// initDriver runs the virtio 1.2 3.1.1 initialisation up to FEATURES_OK and
// returns whether the device accepted the features.
func (h *harness) negotiate(features uint64) bool {
	h.write(commonOffset+ccDeviceStatus, 1, 0)
	h.write(commonOffset+ccDeviceStatus, 1, uint64(virtio.StatusAcknowledge))
	h.write(commonOffset+ccDeviceStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver))
	for sel := uint64(0); sel < 2; sel++ {
		h.write(commonOffset+ccDriverFeatureSelect, 4, sel)
		h.write(commonOffset+ccDriverFeature, 4, features>>(32*sel)&0xFFFF_FFFF)
	}
	h.write(commonOffset+ccDeviceStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK))
	return uint8(h.read(commonOffset+ccDeviceStatus, 1))&virtio.StatusFeaturesOK != 0
}

func (h *harness) offeredFeatures() uint64 {
	var f uint64
	for sel := uint64(0); sel < 2; sel++ {
		h.write(commonOffset+ccDeviceFeatureSelect, 4, sel)
		f |= h.read(commonOffset+ccDeviceFeature, 4) << (32 * sel)
	}
	return f
}

// setupQueue programs queue 0 with size 16 at the fixed ring addresses.
func (h *harness) setupQueue(vector uint16) {
	h.write(commonOffset+ccQueueSelect, 2, 0)
	h.write(commonOffset+ccQueueSize, 2, 16)
	h.write(commonOffset+ccQueueDesc, 4, ringDesc)
	h.write(commonOffset+ccQueueDesc+4, 4, 0)
	h.write(commonOffset+ccQueueDriver, 8, ringAvl)
	h.write(commonOffset+ccQueueDevice, 8, ringUsed)
	h.write(commonOffset+ccQueueMSIXVector, 2, uint64(vector))
	h.write(commonOffset+ccQueueEnable, 2, 1)
}

func (h *harness) driverOK() {
	h.write(commonOffset+ccDeviceStatus, 1, uint64(virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusDriverOK))
}

// postBuffer makes a 32-byte writable buffer available as chain 0.
func (h *harness) postBuffer(availIdx uint16) {
	d := make([]byte, 16)
	binary.LittleEndian.PutUint64(d, bufAddr)
	binary.LittleEndian.PutUint32(d[8:], 32)
	binary.LittleEndian.PutUint16(d[12:], 2) // VIRTQ_DESC_F_WRITE
	if err := h.mem.WriteAt(d, ringDesc); err != nil {
		h.t.Fatal(err)
	}
	if err := h.mem.PutUint16(memory.GuestAddr(ringAvl+4+2*uint64((availIdx-1)%16)), 0); err != nil {
		h.t.Fatal(err)
	}
	if err := h.mem.PutUint16(ringAvl+2, availIdx); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) waitUsed(idx uint16) uint32 {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if got, _ := h.mem.Uint16(ringUsed + 2); got == idx {
			n, _ := h.mem.Uint32(memory.GuestAddr(ringUsed + 4 + 8*uint64((idx-1)%16) + 4))
			return n
		}
		time.Sleep(time.Millisecond)
	}
	h.t.Fatalf("used.idx never reached %d", idx)
	return 0
}

func (h *harness) waitStatus(bit uint8) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if uint8(h.read(commonOffset+ccDeviceStatus, 1))&bit != 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
	h.t.Fatalf("status bit %#x never set", bit)
}

// kickViaIOEventFD does what KVM does on a notify write with an ioeventfd.
func (h *harness) kickViaIOEventFD() {
	h.vm.mu.Lock()
	e, ok := h.vm.ioeventfds[h.bar+notifyOffset]
	h.vm.mu.Unlock()
	if !ok || e.Len != notifyWidth {
		h.t.Fatalf("no ioeventfd at the notify address: %+v", h.vm.ioeventfds)
	}
	var one [8]byte
	one[0] = 1
	if _, err := unix.Write(int(e.FD), one[:]); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) waitEventfd(fd int) {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var b [8]byte
	for time.Now().Before(deadline) {
		if _, err := unix.Read(fd, b[:]); err == nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
	h.t.Fatal("interrupt eventfd never signalled")
}

func TestRngOverMSIX(t *testing.T) {
	h := newHarness(t, rng.New(), false)
	if !h.tr.NotifyViaIOEventFD() {
		t.Fatal("notify ioeventfds not registered after memory decode was enabled")
	}
	off := h.offeredFeatures()
	if want := virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc; off != want {
		t.Fatalf("offered %#x, want %#x", off, want)
	}
	if !h.negotiate(virtio.FeatureVersion1 | virtio.FeatureEventIdx) {
		t.Fatal("FEATURES_OK refused")
	}
	// Enable MSI-X and unmask both vectors, as Linux does.
	msix := uint64(h.tr.Config().Capabilities()[pcibus.CapIDMSIX][0])
	h.cfgWrite(msix+3, []byte{0x80})
	for v := uint64(0); v < 2; v++ {
		h.write(msixTableOffset+16*v, 4, 0xFEE0_0000)
		h.write(msixTableOffset+16*v+8, 4, 0x30+v)
		h.write(msixTableOffset+16*v+12, 4, 0)
	}
	h.write(commonOffset+ccConfigMSIXVector, 2, 0)
	if got := h.read(commonOffset+ccConfigMSIXVector, 2); got != 0 {
		t.Fatalf("config vector reads %#x", got)
	}
	h.write(commonOffset+ccQueueMSIXVector, 2, 9) // no such vector
	if got := h.read(commonOffset+ccQueueMSIXVector, 2); got != noVector {
		t.Fatalf("out-of-range vector reads back %#x, want NO_VECTOR", got)
	}
	h.setupQueue(1)
	h.driverOK()
	h.postBuffer(1)
	h.kickViaIOEventFD()
	if n := h.waitUsed(1); n != 32 {
		t.Fatalf("device wrote %d bytes, want 32", n)
	}
	buf := make([]byte, 32)
	if err := h.mem.ReadAt(buf, bufAddr); err != nil {
		t.Fatal(err)
	}
	if string(buf) == string(make([]byte, 32)) {
		t.Fatal("buffer still zero")
	}
	h.waitEventfd(h.vm.irqfds[pcibus.FirstMSIGSI+1])
	h.vm.mu.Lock()
	last := h.vm.routes[len(h.vm.routes)-1]
	h.vm.mu.Unlock()
	if m, ok := last.MSI(); !ok || m.Data != 0x31 {
		t.Fatalf("route for vector 1: %+v", last)
	}
	// Moving the BAR moves the ioeventfds.
	h.cfgWrite(pcibus.RegBAR0, []byte{0, 0, 0x10, 0xC0})
	h.vm.mu.Lock()
	_, old := h.vm.ioeventfds[h.bar+notifyOffset]
	_, moved := h.vm.ioeventfds[0xC010_0000+notifyOffset]
	h.vm.mu.Unlock()
	if old || !moved {
		t.Fatalf("ioeventfds after BAR move: %v", h.vm.ioeventfds)
	}
}

func TestRngOverINTxWithoutIOEventFD(t *testing.T) {
	h := newHarness(t, rng.New(), true)
	if h.tr.NotifyViaIOEventFD() {
		t.Fatal("ioeventfd reported although KVM refused it")
	}
	if !h.negotiate(virtio.FeatureVersion1) {
		t.Fatal("FEATURES_OK refused")
	}
	h.setupQueue(noVector)
	h.driverOK()
	h.postBuffer(1)
	// The notify write arrives as an MMIO exit.
	h.write(notifyOffset, 2, 0)
	if n := h.waitUsed(1); n != 32 {
		t.Fatalf("device wrote %d bytes", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		h.vm.mu.Lock()
		n := len(h.vm.lines)
		h.vm.mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no INTx pulse")
		}
		time.Sleep(time.Millisecond)
	}
	if h.vm.lines[0] != 17 {
		t.Fatalf("INTx on GSI %d, want 17 (slot 1, INTA#)", h.vm.lines[0])
	}
	if isr := h.read(isrOffset, 1); isr != isrQueue {
		t.Fatalf("ISR %#x, want queue bit", isr)
	}
	if isr := h.read(isrOffset, 1); isr != 0 {
		t.Fatalf("ISR %#x after read, want cleared", isr)
	}
}

func TestFeatureNegotiation(t *testing.T) {
	tests := []struct {
		name     string
		features uint64
		ok       bool
	}{
		{"version1", virtio.FeatureVersion1, true},
		{"all", virtio.FeatureVersion1 | virtio.FeatureEventIdx | virtio.FeatureIndirectDesc, true},
		{"legacyDriver", 0, false},
		{"unofferedBit", virtio.FeatureVersion1 | 1, false},
		{"highUnoffered", virtio.FeatureVersion1 | 1<<40, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, rng.New(), false)
			if got := h.negotiate(tt.features); got != tt.ok {
				t.Fatalf("FEATURES_OK = %v, want %v", got, tt.ok)
			}
		})
	}
}

// TestBrokenGuest: bad queue configuration or a corrupt ring marks the
// device DEVICE_NEEDS_RESET; a reset makes it usable again.
func TestBrokenGuest(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(h *harness)
	}{
		{"ringOutsideRAM", func(h *harness) {
			h.write(commonOffset+ccQueueSelect, 2, 0)
			h.write(commonOffset+ccQueueDesc, 8, 0xD000_0000)
		}},
		{"queueTooBig", func(h *harness) {
			h.write(commonOffset+ccQueueSelect, 2, 0)
			h.write(commonOffset+ccQueueSize, 2, 128)
		}},
		{"availIndexJump", func(h *harness) {
			if err := h.mem.PutUint16(ringAvl+2, 1000); err != nil {
				h.t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, rng.New(), false)
			if !h.negotiate(virtio.FeatureVersion1) {
				t.Fatal("FEATURES_OK refused")
			}
			h.write(commonOffset+ccQueueSelect, 2, 0)
			h.write(commonOffset+ccQueueSize, 2, 16)
			h.write(commonOffset+ccQueueDesc, 8, ringDesc)
			h.write(commonOffset+ccQueueDriver, 8, ringAvl)
			h.write(commonOffset+ccQueueDevice, 8, ringUsed)
			tt.corrupt(h)
			h.write(commonOffset+ccQueueEnable, 2, 1)
			h.driverOK()
			h.write(notifyOffset, 2, 0)
			h.kickViaIOEventFD()
			h.waitStatus(virtio.StatusDeviceNeedsReset)
			if isr := h.read(isrOffset, 1); isr&isrConfig == 0 {
				t.Fatalf("ISR %#x: no configuration interrupt", isr)
			}
			// Reset and start over with a good ring.
			if err := h.mem.PutUint16(ringAvl+2, 0); err != nil {
				t.Fatal(err)
			}
			if !h.negotiate(virtio.FeatureVersion1) {
				t.Fatal("FEATURES_OK refused after reset")
			}
			if s := uint8(h.read(commonOffset+ccDeviceStatus, 1)); s&virtio.StatusDeviceNeedsReset != 0 {
				t.Fatalf("status %#x after reset", s)
			}
			h.setupQueue(noVector)
			h.driverOK()
			h.postBuffer(1)
			h.kickViaIOEventFD()
			if n := h.waitUsed(1); n != 32 {
				t.Fatalf("after reset: %d bytes", n)
			}
		})
	}
}

func TestNewRejectsBadDevices(t *testing.T) {
	tests := []struct {
		name  string
		sizes []uint16
	}{
		{"noQueues", nil},
		{"oddSize", []uint16{3}},
		{"zeroSize", []uint16{0}},
		{"tooManyQueues", make([]uint16, MaxQueues+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := newFakeVM()
			_, err := New(sizedDevice{tt.sizes}, Config{VM: vm, Router: pcibus.NewGSIRouter(vm)})
			if !errors.Is(err, ErrConfig) {
				t.Fatalf("New = %v, want ErrConfig", err)
			}
		})
	}
}

// sizedDevice is a device with given queue sizes and no behaviour.
type sizedDevice struct{ sizes []uint16 }

func (d sizedDevice) Type() virtio.DeviceType          { return virtio.DeviceRNG }
func (d sizedDevice) Features() uint64                 { return 0 }
func (d sizedDevice) QueueSizes() []uint16             { return d.sizes }
func (d sizedDevice) ReadConfig(uint64, []byte)        {}
func (d sizedDevice) WriteConfig(uint64, []byte)       {}
func (d sizedDevice) Activate(virtio.Activation) error { return nil }
func (d sizedDevice) Reset()                           {}
