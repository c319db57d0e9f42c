package pci

import (
	"encoding/binary"
	"errors"
	"testing"
)

// configImage reads a function's whole configuration space through the
// type-1 ports, as the guest sees it.
func configImage(c cf8, slot uint32) []byte {
	img := make([]byte, 0, ConfigSize)
	for reg := uint32(0); reg < ConfigSize; reg += 4 {
		img = binary.LittleEndian.AppendUint32(img, c.read32(slot, reg))
	}
	return img
}

func TestBusStateRoundTrip(t *testing.T) {
	build := func() (*Bus, *testDev) {
		b := NewBus(testWinStart, testWinEnd)
		d := newTestDev(t, 0x4000, 0x1000)
		if _, err := b.Add(d); err != nil {
			t.Fatal(err)
		}
		return b, d
	}
	src, _ := build()
	io := cf8{src.ConfigIO()}
	const moved = testWinStart + 0x10_0000
	io.write32(1, RegBAR0, moved)
	io.write32(1, RegCommand, CommandMemory|CommandBusMaster)
	io.write32(1, RegInterruptLine, 0x0b)
	io.write32(0, RegCommand, CommandMemory) // the host bridge keeps its own
	st := src.State()

	dst, dd := build()
	if _, ok := dst.find(moved, 4); ok {
		t.Fatal("fresh bus decodes the moved BAR before restore")
	}
	if err := dst.SetState(st); err != nil {
		t.Fatal(err)
	}
	for slot := uint32(0); slot < 3; slot++ {
		a, b := configImage(io, slot), configImage(cf8{dst.ConfigIO()}, slot)
		if string(a) != string(b) {
			t.Fatalf("slot %d: restored configuration space differs:\n%x\n%x", slot, a, b)
		}
	}
	r, ok := dst.find(moved+8, 4)
	if !ok || r.dev != Device(dd) || r.bar != 0 {
		t.Fatalf("restored bus does not route the moved BAR: %+v, %v", r, ok)
	}
	if dst.cf8.Load() != src.cf8.Load() {
		t.Fatalf("CONFIG_ADDRESS %#x, want %#x", dst.cf8.Load(), src.cf8.Load())
	}
}

func TestConfigSetStateRefusesOtherDevice(t *testing.T) {
	a := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1042})
	b := NewConfigSpace(Header{VendorID: 0x1af4, DeviceID: 0x1041})
	tests := []struct {
		name string
		st   ConfigState
	}{
		{"other device id", b.State()},
		{"short image", ConfigState{Regs: make([]byte, 64)}},
		{"address for a missing BAR", func() ConfigState { s := a.State(); s.BARs[2] = 0x1000; return s }()},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := a.State()
			if err := a.SetState(tc.st); !errors.Is(err, ErrStateMismatch) {
				t.Fatalf("SetState = %v, want ErrStateMismatch", err)
			}
			if string(a.State().Regs) != string(before.Regs) {
				t.Fatal("a refused SetState changed the registers")
			}
		})
	}
	var bs BusState
	if err := NewBus(testWinStart, testWinEnd).SetState(bs); !errors.Is(err, ErrStateMismatch) {
		t.Fatalf("Bus.SetState with no slots = %v", err)
	}
}

func TestMSIXStateRoundTrip(t *testing.T) {
	build := func() (*fakeKVM, *ConfigSpace, *MSIX, int) {
		k := &fakeKVM{}
		cfg := NewConfigSpace(Header{VendorID: 1})
		m, err := NewMSIX(cfg, 3, 0, 0x4000, 0x5000, NewGSIRouter(k), k)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return k, cfg, m, cfg.Capabilities()[CapIDMSIX][0]
	}
	_, scfg, src, capOff := build()
	entry := make([]byte, 16)
	binary.LittleEndian.PutUint32(entry, 0xFEE0_2000)
	binary.LittleEndian.PutUint32(entry[8:], 0x51)
	src.TableWrite(32, entry) // vector 2, unmasked
	scfg.Write(uint64(capOff+3), []byte{0x80})
	if err := src.Trigger(2); err != nil {
		t.Fatal(err)
	}
	msixState, cfgState := src.State(), scfg.State()

	k, dcfg, dst, _ := build()
	if err := dst.SetState(msixState); err != nil {
		t.Fatal(err)
	}
	if err := dcfg.SetState(cfgState); err != nil {
		t.Fatal(err)
	}
	if !dst.Enabled() {
		t.Fatal("MSI-X not enabled after restore")
	}
	var a, b [48]byte
	src.TableRead(0, a[:])
	dst.TableRead(0, b[:])
	if a != b {
		t.Fatalf("table %x, want %x", b, a)
	}
	if len(k.tables) == 0 {
		t.Fatal("no route committed for the live vector")
	}
	last := k.tables[len(k.tables)-1]
	msi, ok := last[len(last)-1].MSI()
	if !ok || last[len(last)-1].GSI != FirstMSIGSI+2 || msi.AddressLo != 0xFEE0_2000 || msi.Data != 0x51 {
		t.Fatalf("route %+v", last[len(last)-1])
	}
	if err := dst.Trigger(2); err != nil || readEventfd(t, dst.efd[2]) != 1 {
		t.Fatalf("trigger after restore: %v", err)
	}
	if err := dst.SetState(MSIXState{Table: make([]byte, 16), PBA: []uint64{0}}); !errors.Is(err, ErrStateMismatch) {
		t.Fatalf("SetState with a 1-vector table = %v", err)
	}
}
