package x86

import (
	"bytes"
	"slices"
	"testing"

	"kvmstack/vmm/memory"
)

func TestE820(t *testing.T) {
	legacy := []E820Entry{
		{0, 0x9FC00, E820RAM},
		{0x9FC00, 0x100000 - 0x9FC00, E820Reserved},
	}
	ecam := E820Entry{0xE000_0000, 1 << 20, E820Reserved}
	tests := []struct {
		name string
		size uint64
		want []E820Entry
	}{
		{"64MiB", 64 << 20, append(slices.Clone(legacy),
			E820Entry{0x100000, 63 << 20, E820RAM}, ecam)},
		{"3GiB", 3 << 30, append(slices.Clone(legacy),
			E820Entry{0x100000, 3<<30 - 1<<20, E820RAM}, ecam)},
		{"3GiB+256MiB", 3<<30 + 256<<20, append(slices.Clone(legacy),
			E820Entry{0x100000, 3<<30 - 1<<20, E820RAM}, ecam,
			E820Entry{1 << 32, 256 << 20, E820RAM})},
		{"8GiB", 8 << 30, append(slices.Clone(legacy),
			E820Entry{0x100000, 3<<30 - 1<<20, E820RAM}, ecam,
			E820Entry{1 << 32, 5 << 30, E820RAM})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ram, err := memory.Plan(tt.size)
			if err != nil {
				t.Fatal(err)
			}
			got := E820(ram)
			if !slices.Equal(got, tt.want) {
				t.Fatalf("E820(%v) =\n%#v\nwant\n%#v", ram, got, tt.want)
			}
			var total uint64
			for i, e := range got {
				if e.Type == E820RAM {
					total += e.Size
				}
				if i > 0 && got[i-1].Addr+got[i-1].Size > e.Addr {
					t.Errorf("entries %d and %d overlap", i-1, i)
				}
			}
			// The reserved legacy area is carved out of RAM, never added.
			if want := tt.size - (0x100000 - 0x9FC00); total != want {
				t.Errorf("usable RAM = %#x, want %#x", total, want)
			}
		})
	}
}

func TestE820EntryMarshal(t *testing.T) {
	b, err := E820Entry{Addr: 0x0102030405060708, Size: 0x1112131415161718, Type: E820ACPI}.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{8, 7, 6, 5, 4, 3, 2, 1, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, 3, 0, 0, 0}
	if !bytes.Equal(b, want) {
		t.Fatalf("MarshalBinary = % x, want % x", b, want)
	}
}

func TestLayoutConsistent(t *testing.T) {
	// The page tables must fit between the PML4 and the command line, and
	// everything in the first megabyte below EBDAStart.
	if PDAddr+PDCount*0x1000 > CmdlineAddr {
		t.Errorf("page directories end at %#x, past CmdlineAddr %#x", PDAddr+PDCount*0x1000, CmdlineAddr)
	}
	if PDPTAddr != PML4Addr+0x1000 || PDAddr != PDPTAddr+0x1000 {
		t.Errorf("page tables not contiguous: PML4 %#x PDPT %#x PD %#x", PML4Addr, PDPTAddr, PDAddr)
	}
	if CmdlineAddr+CmdlineMax > EBDAStart {
		t.Errorf("command line runs into the EBDA")
	}
	if ZeroPageAddr+0x1000 > BootStackTop || BootStackTop > PML4Addr {
		t.Errorf("boot stack %#x not between the zero page and the PML4", BootStackTop)
	}
	if ECAMAddr < PCIMMIOEnd || ECAMAddr+ECAMSize > IOAPICAddr {
		t.Errorf("ECAM window overlaps the PCI window or the IOAPIC")
	}
}
