package firmware

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/memory"
)

// fieldCheck is one little-endian field of a boot structure.
type fieldCheck struct {
	name      string
	off, size int
	want      uint64
}

func checkFields(t *testing.T, b []byte, checks []fieldCheck) {
	t.Helper()
	le := binary.LittleEndian
	for _, c := range checks {
		var got uint64
		switch c.size {
		case 1:
			got = uint64(b[c.off])
		case 2:
			got = uint64(le.Uint16(b[c.off:]))
		case 4:
			got = uint64(le.Uint32(b[c.off:]))
		case 8:
			got = le.Uint64(b[c.off:])
		}
		if got != c.want {
			t.Errorf("%s at %#x = %#x, want %#x", c.name, c.off, got, c.want)
		}
	}
}

// golden compares got with testdata/name, rewriting it under -update.
func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		for i := range min(len(got), len(want)) {
			if got[i] != want[i] {
				t.Fatalf("%s: first difference at %#x: got %#02x, want %#02x", name, i, got[i], want[i])
			}
		}
		t.Fatalf("%s: %d bytes, want %d", name, len(got), len(want))
	}
}

// testE820 is the map of a 128 MiB guest, from the arch package's layout.
func testE820(t *testing.T, size uint64) []x86.E820Entry {
	t.Helper()
	ranges, err := memory.Plan(size)
	if err != nil {
		t.Fatal(err)
	}
	return x86.E820(ranges)
}

// loadSyntheticBzImage loads the synthetic bzImage, decompressed.
func loadSyntheticBzImage(t *testing.T, m *memory.Memory) *Kernel {
	t.Helper()
	data := defaultBzImage(compressPayload(t, compGzip, linuxLikeELF().bytes())).bytes()
	k, err := LoadKernel(m, writeTemp(t, "bzImage", data), LoadOptions{DecompressBzImage: true})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func loadSyntheticELF(t *testing.T, m *memory.Memory) *Kernel {
	t.Helper()
	k, err := LoadKernel(m, writeTemp(t, "vmlinux", linuxLikeELF().bytes()), LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const testCmdline = "console=ttyS0 reboot=k panic=-1 clearcpuid=popcnt noxsave"

func TestWriteBootParams(t *testing.T) {
	for _, tt := range []struct {
		name   string
		load   func(*testing.T, *memory.Memory) *Kernel
		golden string
	}{
		{"bzImage", loadSyntheticBzImage, "bootparams-bzimage.golden"},
		{"elf", loadSyntheticELF, "bootparams-elf.golden"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := newMemory(t, 128<<20)
			k := tt.load(t, m)
			bp := BootParams{
				Kernel:     k,
				Cmdline:    testCmdline,
				InitrdAddr: 0x7f00000,
				InitrdSize: 0x5432,
				E820:       testE820(t, 128<<20),
				RSDP:       x86.ACPITablesAddr,
			}
			if err := WriteBootParams(m, bp); err != nil {
				t.Fatal(err)
			}
			zp, _ := m.Slice(x86.ZeroPageAddr, zeroPageSize)
			golden(t, tt.golden, zp)

			// The fields the kernel reads, by their documented offsets,
			// so the golden file is not its own only witness.
			checks := []fieldCheck{
				{"acpi_rsdp_addr", 0x070, 8, 0xe0000},
				{"ext_ramdisk_image", 0x0c0, 4, 0},
				{"ext_ramdisk_size", 0x0c4, 4, 0},
				{"ext_cmd_line_ptr", 0x0c8, 4, 0},
				{"e820_entries", 0x1e8, 1, 4},
				{"sentinel", 0x1ef, 1, 0},
				{"vid_mode", 0x1fa, 2, 0xffff},
				{"boot_flag", 0x1fe, 2, 0xaa55},
				{"header", 0x202, 4, 0x53726448},
				{"type_of_loader", 0x210, 1, 0xff},
				{"ramdisk_image", 0x218, 4, 0x7f00000},
				{"ramdisk_size", 0x21c, 4, 0x5432},
				{"heap_end_ptr", 0x224, 2, 0xde00},
				{"cmd_line_ptr", 0x228, 4, 0x20000},
				{"initrd_addr_max", 0x22c, 4, 0x7fffffff},
				{"cmdline_size", 0x238, 4, 2047},
				{"e820[0].addr", 0x2d0, 8, 0},
				{"e820[0].size", 0x2d8, 8, 0x9fc00},
				{"e820[0].type", 0x2e0, 4, 1},
				{"e820[1].addr", 0x2e4, 8, 0x9fc00},
				{"e820[1].type", 0x2f4, 4, 2},
				{"e820[2].addr", 0x2f8, 8, 0x100000},
				{"e820[2].size", 0x300, 8, 128<<20 - 0x100000},
				{"e820[4]", 0x320, 8, 0},
			}
			if tt.name == "bzImage" {
				checks = append(checks,
					fieldCheck{"version", 0x206, 2, 0x020f},
					fieldCheck{"loadflags kept (LOADED_HIGH) + CAN_USE_HEAP", 0x211, 1, 0x81},
					fieldCheck{"kernel_alignment", 0x230, 4, 0x200000},
					fieldCheck{"header tail copied", 0x268, 4, 0xabcd})
			} else {
				checks = append(checks,
					fieldCheck{"version", 0x206, 2, 0x020f},
					fieldCheck{"kernel_alignment", 0x230, 4, 0x1000000})
			}
			checkFields(t, zp, checks)
			cl, _ := m.Slice(x86.CmdlineAddr, uint64(len(testCmdline))+1)
			if string(cl) != testCmdline+"\x00" {
				t.Fatalf("cmdline at 0x20000 = %q", cl)
			}
		})
	}
}

func TestWriteBootParamsInitrdAbove4G(t *testing.T) {
	m := newMemory(t, 3<<30+256<<20)
	k := loadSyntheticELF(t, m)
	k.InitrdAddrMax = 1<<40 - 1
	bp := BootParams{Kernel: k, InitrdAddr: 0x1_0000_2000, InitrdSize: 0x1000, E820: testE820(t, 3<<30+256<<20)}
	if err := WriteBootParams(m, bp); err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	zp, _ := m.Slice(x86.ZeroPageAddr, zeroPageSize)
	if le.Uint32(zp[hdrRamdiskImage:]) != 0x2000 || le.Uint32(zp[bpExtRamdiskImage:]) != 1 || le.Uint32(zp[hdrRamdiskSize:]) != 0x1000 {
		t.Fatalf("ramdisk_image %#x ext %#x size %#x", le.Uint32(zp[hdrRamdiskImage:]), le.Uint32(zp[bpExtRamdiskImage:]), le.Uint32(zp[hdrRamdiskSize:]))
	}
}

// bootWriter is WriteBootParams or WritePVHStartInfo: both validate the same
// way.
type bootWriter struct {
	name  string
	write func(*memory.Memory, BootParams) error
	max   int
}

var bootWriters = []bootWriter{{"bootparams", WriteBootParams, 128}, {"pvh", WritePVHStartInfo, 128}}

func TestBootStructureErrors(t *testing.T) {
	for _, w := range bootWriters {
		m := newMemory(t, 64<<20)
		k := loadSyntheticELF(t, m)
		e820 := testE820(t, 64<<20)
		tooMany := make([]x86.E820Entry, w.max+1)
		for i := range tooMany {
			tooMany[i] = x86.E820Entry{Addr: uint64(i) << 20, Size: 1 << 20, Type: x86.E820RAM}
		}
		tests := []struct {
			name string
			bp   BootParams
			want error
			msg  string
		}{
			{"noKernel", BootParams{E820: e820}, nil, "no kernel"},
			{"cmdlineTooLong", BootParams{Kernel: k, E820: e820, Cmdline: strings.Repeat("x", 2048)}, ErrCmdline, "2048 bytes, the kernel accepts at most 2047"},
			{"cmdlineNUL", BootParams{Kernel: k, E820: e820, Cmdline: "a\x00b"}, ErrCmdline, "NUL"},
			{"cmdlinePastCmdlineMax", BootParams{Kernel: &Kernel{CmdlineSize: 1 << 20}, E820: e820, Cmdline: strings.Repeat("x", 4096)}, ErrCmdline, "at most 4095"},
			{"noE820", BootParams{Kernel: k}, ErrE820, "0 entries"},
			{"tooManyE820", BootParams{Kernel: k, E820: tooMany}, ErrE820, "129 entries, want 1 to 128"},
			{"initrdOutsideRAM", BootParams{Kernel: k, E820: e820, InitrdAddr: 0x3fff000, InitrdSize: 0x2000}, memory.ErrOutOfRange, "initrd"},
			{"initrdAboveMax", BootParams{Kernel: &Kernel{InitrdAddrMax: 0x1ffffff, CmdlineSize: 100}, E820: e820, InitrdAddr: 0x1fff000, InitrdSize: 0x2000}, ErrNoRoom, "initrd_addr_max 0x1ffffff"},
		}
		for _, tt := range tests {
			t.Run(w.name+"/"+tt.name, func(t *testing.T) {
				err := w.write(m, tt.bp)
				if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("error = %v, want %v with %q", err, tt.want, tt.msg)
				}
			})
		}
	}
	// The longest line the kernel takes is fine.
	m := newMemory(t, 64<<20)
	k := loadSyntheticELF(t, m)
	if err := WriteBootParams(m, BootParams{Kernel: k, E820: testE820(t, 64<<20), Cmdline: strings.Repeat("x", 2047)}); err != nil {
		t.Fatal(err)
	}
}

func TestWritePVHStartInfo(t *testing.T) {
	le := binary.LittleEndian
	m := newMemory(t, 128<<20)
	k := loadSyntheticELF(t, m)
	e820 := testE820(t, 128<<20)
	bp := BootParams{Kernel: k, Cmdline: testCmdline, InitrdAddr: 0x7f00000, InitrdSize: 0x5432, E820: e820, RSDP: x86.ACPITablesAddr}
	if err := WritePVHStartInfo(m, bp); err != nil {
		t.Fatal(err)
	}
	page, _ := m.Slice(x86.PVHStartInfoAddr, 0x1000)
	golden(t, "pvh-start-info.golden", page)
	checkFields(t, page, []fieldCheck{
		{"magic", 0x00, 4, 0x336ec578},
		{"version", 0x04, 4, 1},
		{"flags", 0x08, 4, 0},
		{"nr_modules", 0x0c, 4, 1},
		{"modlist_paddr", 0x10, 8, 0x6040},
		{"cmdline_paddr", 0x18, 8, 0x20000},
		{"rsdp_paddr", 0x20, 8, 0xe0000},
		{"memmap_paddr", 0x28, 8, 0x6080},
		{"memmap_entries", 0x30, 4, uint64(len(e820))},
		{"mod[0].paddr", 0x40, 8, 0x7f00000},
		{"mod[0].size", 0x48, 8, 0x5432},
		{"mod[0].cmdline_paddr", 0x50, 8, 0},
		{"memmap[2].addr", 0x80 + 2*24, 8, 0x100000},
		{"memmap[2].size", 0x88 + 2*24, 8, 128<<20 - 0x100000},
		{"memmap[2].type", 0x90 + 2*24, 4, 1},
		{"memmap[3].type", 0x90 + 3*24, 4, 2},
		{"memmap[3].reserved", 0x94 + 3*24, 4, 0},
	})
	// Nothing past the memory map: the zero page that follows is not
	// touched by the PVH path.
	if end := 0x80 + len(e820)*24; bytes.IndexFunc(page[end:], func(r rune) bool { return r != 0 }) >= 0 {
		t.Fatal("bytes written past the memory map")
	}
	// Without an initrd there is no module.
	m2 := newMemory(t, 128<<20)
	bp.InitrdSize, bp.InitrdAddr = 0, 0
	if err := WritePVHStartInfo(m2, bp); err != nil {
		t.Fatal(err)
	}
	page2, _ := m2.Slice(x86.PVHStartInfoAddr, 0x100)
	if le.Uint32(page2[0x0c:]) != 0 || le.Uint64(page2[0x10:]) != 0 {
		t.Fatal("a module without an initrd")
	}
}
