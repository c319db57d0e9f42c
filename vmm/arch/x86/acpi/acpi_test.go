package acpi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/memory"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("%s: %d bytes, golden %d; first difference at offset %#x", name, len(got), len(want), i)
	}
}

// decoded is what a guest finds by following the RSDP.
type decoded struct {
	rsdp   []byte
	xsdt   []byte
	tables map[string][]byte // by signature, DSDT included
	addrs  map[string]uint64
}

// decode walks the tables in guest memory the way the kernel does,
// checking every signature, length and checksum on the way.
func decode(t *testing.T, m *memory.Memory, rsdpAddr memory.GuestAddr) decoded {
	t.Helper()
	d := decoded{tables: map[string][]byte{}, addrs: map[string]uint64{}}
	d.rsdp = read(t, m, uint64(rsdpAddr), rsdpSize)
	if string(d.rsdp[:8]) != "RSD PTR " || d.rsdp[15] != 2 {
		t.Fatalf("RSDP signature %q revision %d", d.rsdp[:8], d.rsdp[15])
	}
	if sum(d.rsdp[:20]) != 0 || sum(d.rsdp) != 0 {
		t.Fatalf("RSDP checksums: first 20 bytes sum %d, all %d", sum(d.rsdp[:20]), sum(d.rsdp))
	}
	if l := binary.LittleEndian.Uint32(d.rsdp[20:]); l != rsdpSize {
		t.Fatalf("RSDP length %d", l)
	}
	if rsdt := binary.LittleEndian.Uint32(d.rsdp[16:]); rsdt != 0 {
		t.Fatalf("RSDT address %#x, want none", rsdt)
	}
	xsdtAddr := binary.LittleEndian.Uint64(d.rsdp[24:])
	d.xsdt = table(t, m, xsdtAddr, "XSDT")
	for off := headerSize; off < len(d.xsdt); off += 8 {
		addr := binary.LittleEndian.Uint64(d.xsdt[off:])
		sig := string(read(t, m, addr, 4))
		if _, dup := d.tables[sig]; dup {
			t.Fatalf("XSDT lists %s twice", sig)
		}
		d.tables[sig] = table(t, m, addr, sig)
		d.addrs[sig] = addr
	}
	fadt := d.tables["FACP"]
	if fadt == nil {
		t.Fatal("no FADT in the XSDT")
	}
	dsdtAddr := binary.LittleEndian.Uint64(fadt[140:])
	d.tables["DSDT"] = table(t, m, dsdtAddr, "DSDT")
	d.addrs["DSDT"] = dsdtAddr
	if facsAddr := uint64(binary.LittleEndian.Uint32(fadt[36:])); facsAddr != 0 {
		// The FACS has no checksum and no standard header.
		f := read(t, m, facsAddr, 64)
		if string(f[:4]) != "FACS" || binary.LittleEndian.Uint32(f[4:]) != 64 || facsAddr%64 != 0 {
			t.Fatalf("FACS at %#x: signature %q length %d", facsAddr, f[:4], binary.LittleEndian.Uint32(f[4:]))
		}
		d.tables["FACS"] = f
		d.addrs["FACS"] = facsAddr
	}
	if x := binary.LittleEndian.Uint64(fadt[132:]); x != 0 {
		t.Fatalf("X_FIRMWARE_CTRL %#x set: the 32-bit field alone names the FACS", x)
	}
	for sig, addr := range d.addrs {
		end := addr + uint64(len(d.tables[sig]))
		if addr < uint64(x86.ACPITablesAddr) || end > uint64(x86.ACPITablesEnd) {
			t.Errorf("%s at [%#x, %#x) outside the ACPI area", sig, addr, end)
		}
	}
	return d
}

func read(t *testing.T, m *memory.Memory, addr uint64, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := m.ReadAt(b, memory.GuestAddr(addr)); err != nil {
		t.Fatalf("read %d bytes at %#x: %v", n, addr, err)
	}
	return b
}

func table(t *testing.T, m *memory.Memory, addr uint64, sig string) []byte {
	t.Helper()
	h := read(t, m, addr, headerSize)
	if string(h[:4]) != sig {
		t.Fatalf("table at %#x: signature %q, want %q", addr, h[:4], sig)
	}
	n := binary.LittleEndian.Uint32(h[4:])
	if n < headerSize || n > 1<<20 {
		t.Fatalf("%s: length %d", sig, n)
	}
	b := read(t, m, addr, int(n))
	if sum(b) != 0 {
		t.Fatalf("%s: checksum off by %d", sig, sum(b))
	}
	if string(b[10:16]) != oemID || string(b[16:24]) != oemTableID {
		t.Errorf("%s: OEM %q/%q", sig, b[10:16], b[16:24])
	}
	return b
}

func writeTables(t *testing.T, c Config) (*memory.Memory, memory.GuestAddr) {
	t.Helper()
	m, err := memory.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	rsdp, err := Write(m, c)
	if err != nil {
		t.Fatal(err)
	}
	if rsdp != x86.ACPITablesAddr {
		t.Fatalf("RSDP at %#x, want %#x", rsdp, x86.ACPITablesAddr)
	}
	return m, rsdp
}

func TestGolden(t *testing.T) {
	c := DefaultConfig(2)
	m, rsdp := writeTables(t, c)
	d := decode(t, m, rsdp)
	checkGolden(t, "rsdp.bin", d.rsdp)
	checkGolden(t, "xsdt.bin", d.xsdt)
	checkGolden(t, "fadt.bin", d.tables["FACP"])
	checkGolden(t, "madt-2cpus.bin", d.tables["APIC"])
	checkGolden(t, "mcfg.bin", d.tables["MCFG"])
	checkGolden(t, "dsdt.aml", d.tables["DSDT"])
	checkGolden(t, "facs.bin", d.tables["FACS"])
	if len(d.tables) != 5 {
		t.Errorf("tables %v, want FACP, APIC, MCFG, DSDT, FACS", keys(d.tables))
	}
	c.PowerButton, c.Overrides = false, nil
	m, rsdp = writeTables(t, c)
	d = decode(t, m, rsdp)
	checkGolden(t, "fadt-hw-reduced.bin", d.tables["FACP"])
	if len(d.tables) != 4 {
		t.Errorf("hardware-reduced tables %v, want FACP, APIC, MCFG, DSDT", keys(d.tables))
	}
}

func keys(m map[string][]byte) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

func TestFADT(t *testing.T) {
	const (
		hwReduced   = 1 << 20
		resetRegSup = 1 << 10
		pwrButton   = 1 << 4 // set: no fixed-feature power button
		slpButton   = 1 << 5
	)
	for _, tc := range []struct {
		name        string
		powerButton bool
		flagsSet    uint32
		flagsClear  uint32
	}{
		{"hardware-reduced", false, hwReduced | resetRegSup | pwrButton | slpButton, 0},
		{"full ACPI with power button", true, resetRegSup | slpButton, hwReduced | pwrButton},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultConfig(1)
			c.PowerButton = tc.powerButton
			m, rsdp := writeTables(t, c)
			d := decode(t, m, rsdp)
			f := d.tables["FACP"]
			if len(f) != 276 || f[8] != 6 {
				t.Fatalf("FADT length %d revision %d, want 276, 6", len(f), f[8])
			}
			le := binary.LittleEndian
			flags := le.Uint32(f[112:])
			if flags&tc.flagsSet != tc.flagsSet || flags&tc.flagsClear != 0 {
				t.Errorf("FADT flags %#x: want %#x set and %#x clear", flags, tc.flagsSet, tc.flagsClear)
			}
			gasCheck := func(name string, off int, port uint16) {
				g := f[off : off+12]
				if g[0] != 1 || g[1] != 8 || g[2] != 0 || g[3] != 1 || le.Uint64(g[4:]) != uint64(port) {
					t.Errorf("%s = % x, want SystemIO byte register at %#x", name, g, port)
				}
			}
			gasCheck("RESET_REG", 116, x86.ResetPort)
			if f[128] != x86.ResetValue {
				t.Errorf("RESET_VALUE %#x", f[128])
			}
			if sci := le.Uint16(f[46:]); sci != uint16(x86.SCIIRQ) {
				t.Errorf("SCI_INT %d", sci)
			}
			// Legacy fixed-hardware blocks: only PM1a event and control, and
			// only with the power button. SMI_CMD (48) stays zero: always in
			// ACPI mode.
			want := make([]byte, 276)
			if tc.powerButton {
				le.PutUint32(want[36:], uint32(d.addrs["FACS"]))
				le.PutUint32(want[56:], uint32(x86.PM1EventPort))
				le.PutUint32(want[64:], uint32(x86.PM1ControlPort))
				want[88], want[89] = 4, 2
			}
			for off := 36; off < 92; off++ {
				if off == 46 || off == 47 || off == 40 { // SCI_INT; DSDT checked below
					continue
				}
				if f[off] != want[off] {
					t.Errorf("FADT byte %d = %#x, want %#x", off, f[off], want[off])
				}
			}
			// X_ blocks unused (the 32-bit fields suffice below 4 GiB).
			for off := 148; off < 244; off++ {
				if f[off] != 0 {
					t.Errorf("X_ PM block byte %d = %#x", off, f[off])
				}
			}
			if tc.powerButton {
				if d.tables["FACS"] == nil {
					t.Fatal("full ACPI without a FACS")
				}
				for off := 244; off < 268; off++ {
					if f[off] != 0 {
						t.Errorf("sleep register byte %d = %#x in a full-ACPI FADT", off, f[off])
					}
				}
			} else {
				if d.tables["FACS"] != nil {
					t.Error("hardware-reduced FADT names a FACS")
				}
				gasCheck("SLEEP_CONTROL_REG", 244, x86.SleepControlPort)
				gasCheck("SLEEP_STATUS_REG", 256, x86.SleepStatusPort)
			}
			if dsdt32 := le.Uint32(f[40:]); dsdt32 != 0 {
				t.Errorf("32-bit DSDT %#x set alongside X_DSDT", dsdt32)
			}
			if ba := le.Uint16(f[109:]); ba&(1<<3) != 0 {
				t.Errorf("IAPC_BOOT_ARCH %#x says MSI is not supported", ba)
			}
		})
	}
}

func TestDefaultConfigSCIOverride(t *testing.T) {
	c := DefaultConfig(2)
	m, rsdp := writeTables(t, c)
	madt := decode(t, m, rsdp).tables["APIC"]
	checkMADT(t, madt, c)
	if len(c.Overrides) != 1 || c.Overrides[0] != (InterruptOverride{Source: 9, GSI: 9, Flags: 0xD}) {
		t.Fatalf("default overrides %+v, want the SCI's (9 → 9, level, active high)", c.Overrides)
	}
}

func TestMADTEveryCPUCount(t *testing.T) {
	m, err := memory.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for cpus := 1; cpus <= MaxCPUs; cpus++ {
		c := DefaultConfig(cpus)
		rsdp, err := Write(m, c)
		if err != nil {
			t.Fatalf("%d CPUs: %v", cpus, err)
		}
		d := decode(t, m, rsdp)
		checkMADT(t, d.tables["APIC"], c)
	}
}

func checkMADT(t *testing.T, b []byte, c Config) {
	t.Helper()
	if got := binary.LittleEndian.Uint32(b[36:]); got != uint32(x86.LAPICAddr) {
		t.Fatalf("local APIC address %#x", got)
	}
	if got := binary.LittleEndian.Uint32(b[40:]); got != 1 {
		t.Fatalf("MADT flags %#x, want PCAT_COMPAT", got)
	}
	var lapics, ioapics, nmis, overrides int
	seen := map[byte]bool{}
	for off := 44; off < len(b); {
		typ, n := b[off], int(b[off+1])
		if n < 2 || off+n > len(b) {
			t.Fatalf("%d CPUs: entry at %d: length %d runs past the table", c.CPUs, off, n)
		}
		e := b[off : off+n]
		switch typ {
		case madtLocalAPIC:
			if n != 8 {
				t.Fatalf("local APIC entry length %d", n)
			}
			uid, id, flags := e[2], e[3], binary.LittleEndian.Uint32(e[4:])
			if uid != id || seen[id] || int(id) >= c.CPUs || flags != 1 {
				t.Fatalf("%d CPUs: local APIC uid %d id %d flags %#x (seen %v)", c.CPUs, uid, id, flags, seen[id])
			}
			seen[id] = true
			lapics++
		case madtIOAPIC:
			if n != 12 || e[2] != 0 || binary.LittleEndian.Uint32(e[4:]) != uint32(x86.IOAPICAddr) || binary.LittleEndian.Uint32(e[8:]) != 0 {
				t.Fatalf("IOAPIC entry % x", e)
			}
			ioapics++
		case madtSourceOverride:
			o := c.Overrides[overrides]
			if n != 10 || e[2] != 0 || e[3] != o.Source || binary.LittleEndian.Uint32(e[4:]) != o.GSI || binary.LittleEndian.Uint16(e[8:]) != o.Flags {
				t.Fatalf("override entry % x, want %+v", e, o)
			}
			overrides++
		case madtLocalAPICNMI:
			if n != 6 || e[2] != 0xFF || e[5] != 1 {
				t.Fatalf("local APIC NMI entry % x", e)
			}
			nmis++
		default:
			t.Fatalf("unexpected MADT entry type %d", typ)
		}
		off += n
	}
	if lapics != c.CPUs || ioapics != 1 || nmis != 1 || overrides != len(c.Overrides) {
		t.Fatalf("%d CPUs: %d local APICs, %d IOAPICs, %d NMI entries, %d overrides", c.CPUs, lapics, ioapics, nmis, overrides)
	}
}

func TestMADTOverrides(t *testing.T) {
	c := DefaultConfig(3)
	c.Overrides = []InterruptOverride{{Source: 0, GSI: 2, Flags: 0}, {Source: 9, GSI: 9, Flags: 0xD}}
	m, rsdp := writeTables(t, c)
	checkMADT(t, decode(t, m, rsdp).tables["APIC"], c)
}

func TestMCFG(t *testing.T) {
	m, rsdp := writeTables(t, DefaultConfig(1))
	b := decode(t, m, rsdp).tables["MCFG"]
	if len(b) != 60 {
		t.Fatalf("MCFG length %d, want 60", len(b))
	}
	if base := binary.LittleEndian.Uint64(b[44:]); base != uint64(x86.ECAMAddr) {
		t.Errorf("ECAM base %#x", base)
	}
	if seg, start, end := binary.LittleEndian.Uint16(b[52:]), b[54], b[55]; seg != 0 || start != 0 || end != 0 {
		t.Errorf("segment %d buses %d-%d, want 0, 0-0", seg, start, end)
	}
}

func TestDSDTContents(t *testing.T) {
	c := DefaultConfig(1)
	c.PCI.MMIO64 = Window{Base: 1 << 40, Size: 1 << 36}
	m, rsdp := writeTables(t, c)
	d := decode(t, m, rsdp).tables["DSDT"]
	if d[8] != 2 {
		t.Errorf("DSDT revision %d, want 2", d[8])
	}
	wants := map[string][]byte{
		"_S5 package {5,0,0,0}":    {0x08, '\\', '_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0A, 0x05, 0, 0, 0},
		"COM1 _HID PNP0501":        {0x0C, 0x41, 0xD0, 0x05, 0x01},
		"COM1 IO 0x3F8 len 8":      {0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x00, 0x08},
		"IRQ 4":                    {0x22, 0x10, 0x00},
		"PNP0A08":                  {0x0C, 0x41, 0xD0, 0x0A, 0x08},
		"PNP0A03":                  {0x0C, 0x41, 0xD0, 0x0A, 0x03},
		"bus 0-0":                  {0x88, 0x0D, 0x00, 0x02, 0x0C, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0},
		"MMIO32 C0000000-DFFFFFFF": {0x87, 0x17, 0x00, 0x00, 0x0C, 0x01, 0, 0, 0, 0, 0, 0, 0, 0xC0, 0xFF, 0xFF, 0xFF, 0xDF},
		"MMIO64 base":              {0x8A, 0x2B, 0x00, 0x00, 0x0C, 0x03},
		"ECAM reservation":         {0x86, 0x09, 0x00, 0x00, 0x00, 0x00, 0x00, 0xE0, 0x00, 0x00, 0x10, 0x00},
		"IO 0-0xCF7":               {0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03, 0, 0, 0, 0, 0xF7, 0x0C, 0, 0, 0xF8, 0x0C},
		"IO 0xD00-0xFFFF":          {0x88, 0x0D, 0x00, 0x01, 0x0C, 0x03, 0, 0, 0x00, 0x0D, 0xFF, 0xFF, 0, 0, 0x00, 0xF3},
	}
	for name, w := range wants {
		if !bytes.Contains(d, w) {
			t.Errorf("DSDT lacks %s (% x)", name, w)
		}
	}
}

func TestDSDTPVPanic(t *testing.T) {
	hid := append([]byte{0x08, '_', 'H', 'I', 'D', 0x0D}, "QEMU0001\x00"...)
	io := []byte{0x47, 0x01, 0x05, 0x05, 0x05, 0x05, 0x01, 0x01}
	for _, on := range []bool{true, false} {
		c := DefaultConfig(1)
		c.PVPanic = on
		m, rsdp := writeTables(t, c)
		d := decode(t, m, rsdp).tables["DSDT"]
		if bytes.Contains(d, hid) != on || bytes.Contains(d, io) != on {
			t.Errorf("PVPanic=%v: _HID QEMU0001 present %v, IO 0x505 present %v", on, bytes.Contains(d, hid), bytes.Contains(d, io))
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*Config)
		cpuErr bool
	}{
		{"zeroCPUs", func(c *Config) { c.CPUs = 0 }, true},
		{"255CPUs", func(c *Config) { c.CPUs = 255 }, true},
		{"negativeCPUs", func(c *Config) { c.CPUs = -1 }, true},
		{"emptyMMIO32", func(c *Config) { c.PCI.MMIO32 = Window{} }, false},
		{"MMIO32Above4G", func(c *Config) { c.PCI.MMIO32 = Window{Base: 0xF000_0000, Size: 0x2000_0000} }, false},
		{"MMIO64Wraps", func(c *Config) { c.PCI.MMIO64 = Window{Base: ^uint64(0) - 10, Size: 100} }, false},
		{"IOPast64K", func(c *Config) { c.PCI.IO = []Window{{Base: 0xF000, Size: 0x2000}} }, false},
		{"emptyIO", func(c *Config) { c.PCI.IO = []Window{{Base: 0x1000}} }, false},
		{"unalignedECAM", func(c *Config) { c.PCI.ECAM = 0xE000_1000 }, false},
	}
	m, err := memory.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig(2)
			tt.modify(&c)
			_, err := Write(m, c)
			if err == nil {
				t.Fatal("Write accepted the config")
			}
			if errors.Is(err, ErrCPUs) != tt.cpuErr {
				t.Fatalf("error %v: ErrCPUs = %v, want %v", err, errors.Is(err, ErrCPUs), tt.cpuErr)
			}
		})
	}
}

func TestWriteBounds(t *testing.T) {
	// The largest configuration still fits, 16-byte aligned.
	c := DefaultConfig(MaxCPUs)
	c.PCI.MMIO64 = Window{Base: 1 << 40, Size: 1 << 40}
	for i := range 16 {
		c.Overrides = append(c.Overrides, InterruptOverride{Source: uint8(i), GSI: uint32(i)})
	}
	img, err := Build(c, x86.ACPITablesAddr)
	if err != nil {
		t.Fatal(err)
	}
	if room := int(x86.ACPITablesEnd - x86.ACPITablesAddr); len(img) > room {
		t.Fatalf("%d bytes of tables, room for %d", len(img), room)
	}
	m, rsdp := writeTables(t, c)
	d := decode(t, m, rsdp)
	for sig, a := range d.addrs {
		if a%16 != 0 {
			t.Errorf("%s at %#x not 16-byte aligned", sig, a)
		}
	}
	// Memory without the BIOS area is refused, not written past.
	if _, err := Write(&memory.Memory{}, DefaultConfig(1)); err == nil {
		t.Error("Write to empty memory succeeded")
	}
}

func FuzzBuild(f *testing.F) {
	f.Add(1, uint64(0), uint64(0), uint16(0), uint16(0xCF8), uint8(0))
	f.Add(254, uint64(1<<40), uint64(1<<36), uint16(0xD00), uint16(0xF300), uint8(3))
	m, err := memory.New(16 << 20)
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { m.Close() })
	f.Fuzz(func(t *testing.T, cpus int, b64, s64 uint64, ioBase, ioSize uint16, endBus uint8) {
		c := DefaultConfig(cpus)
		c.PCI.MMIO64 = Window{Base: b64, Size: s64}
		c.PCI.IO = []Window{{Base: uint64(ioBase), Size: uint64(ioSize)}}
		c.PCI.EndBus = endBus
		img, err := Build(c, x86.ACPITablesAddr)
		if err != nil {
			return
		}
		if len(img) > int(x86.ACPITablesEnd-x86.ACPITablesAddr) {
			t.Fatalf("%d bytes", len(img))
		}
		// Whatever Build accepts must decode as valid tables.
		if err := m.WriteAt(img, x86.ACPITablesAddr); err != nil {
			t.Fatal(err)
		}
		checkMADT(t, decode(t, m, x86.ACPITablesAddr).tables["APIC"], c)
	})
}
