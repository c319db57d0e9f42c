package pci

import (
	"encoding/binary"
	"testing"
)

// FuzzConfigAccess replays arbitrary guest accesses (type 1, ECAM, the
// window, an MSI-X table) against a bus with one device. Nothing may panic,
// and the invariants the rest of vmm relies on must hold after every access:
// BARs stay aligned to their size, read-only identity registers keep their
// values, and the window never routes an access outside a BAR.
func FuzzConfigAccess(f *testing.F) {
	f.Add([]byte{0, 0x10, 4, 0xFF, 0xFF, 0xFF, 0xFF, 1, 0x10, 4, 0, 0, 0, 0xC0})
	f.Add([]byte{1, 0x04, 2, 0x02, 0x00, 2, 0x10, 4, 1, 2, 3, 4})
	f.Add([]byte{3, 0x00, 4, 0, 0, 0xE0, 0xFE, 3, 0x0C, 4, 0, 0, 0, 0, 1, 0x52, 2, 0x00, 0xC0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		k := &fakeKVM{}
		bus := NewBus(testWinStart, testWinEnd)
		dev := &msixDev{testDev: newTestDev(t, 0x4000, 0x1000)}
		m, err := NewMSIX(dev.cfg, 4, 0, 0x2000, 0x3000, NewGSIRouter(k), k)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		dev.msix = m
		if _, err := bus.Add(dev); err != nil {
			t.Fatal(err)
		}
		cio, ecam, win := bus.ConfigIO(), bus.ECAM(), bus.MMIO()
		for len(ops) >= 3 {
			kind, off, n := ops[0]%4, uint64(ops[1]), int(ops[2]%8)+1
			ops = ops[3:]
			if n > len(ops) {
				n = len(ops)
			}
			data := append([]byte(nil), ops[:n]...)
			ops = ops[n:]
			switch kind {
			case 0: // type 1: latch an address for slot 1, then access data
				var a [4]byte
				binary.LittleEndian.PutUint32(a[:], configEnableBit|1<<11|uint32(off)&0xFC)
				cio.Write(0, a[:])
				cio.Write(4+off%4, data)
			case 1:
				ecam.Write(1<<15|off, data)
			case 2:
				ecam.Read(1<<15|off, data)
			case 3:
				win.Write(off<<8, data)
				win.Read(off<<4, data)
			}
			for i := range NumBARs {
				size := dev.cfg.BARSize(i)
				var b [4]byte
				dev.cfg.Read(uint64(RegBAR0+4*i), b[:])
				if v := binary.LittleEndian.Uint32(b[:]); size != 0 && uint64(v)%size != 0 {
					t.Fatalf("BAR %d = %#x, not aligned to %#x", i, v, size)
				}
			}
			var id [4]byte
			dev.cfg.Read(0, id[:])
			if binary.LittleEndian.Uint32(id[:]) != 0x1044_1af4 {
				t.Fatalf("identity changed to % x", id)
			}
			if dev.lastOff >= 0x4000 {
				t.Fatalf("BAR access at offset %#x past the BAR", dev.lastOff)
			}
		}
	})
}

// msixDev routes BAR 0 pages 2 and 3 to an MSI-X table and PBA.
type msixDev struct {
	*testDev
	msix    *MSIX
	lastOff uint64
}

func (d *msixDev) BARRead(bar int, off uint64, data []byte) {
	d.lastOff = off
	switch {
	case bar == 0 && off >= 0x2000 && off < 0x3000:
		d.msix.TableRead(off-0x2000, data)
	case bar == 0 && off >= 0x3000:
		d.msix.PBARead(off-0x3000, data)
	}
}

func (d *msixDev) BARWrite(bar int, off uint64, data []byte) {
	d.lastOff = off
	if bar == 0 && off >= 0x2000 && off < 0x3000 {
		d.msix.TableWrite(off-0x2000, data)
	}
}
