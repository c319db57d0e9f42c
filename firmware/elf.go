package firmware

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"slices"

	"kvmstack/vmm/memory"
)

// ELF constants, from the System V ABI and its x86-64 supplement.
const (
	elfHeaderSize   = 64
	elfPhdrSize     = 56
	elfClass64      = 2
	elfDataLSB      = 1
	elfVersion      = 1
	elfTypeExec     = 2
	elfMachineX8664 = 62
	ptLoad          = 1
	ptNote          = 4

	// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY: the 32-bit
	// physical PVH entry point Linux publishes when built with CONFIG_PVH.
	xenElfnotePhys32Entry = 18

	// maxLoadSegments bounds the PT_LOAD count: Linux has five, and with
	// overlap forbidden the bound keeps the work linear in guest RAM.
	maxLoadSegments = 32
)

var elfMagic = []byte{0x7f, 'E', 'L', 'F'}

func isELF(data []byte) bool { return bytes.HasPrefix(data, elfMagic) }

// elfSegment is one validated PT_LOAD.
type elfSegment struct {
	index  int // program header index, for errors
	offset uint64
	paddr  uint64
	filesz uint64
	memsz  uint64
}

// elfImage is an ELF kernel whose headers have been checked against the file
// and against guest RAM, ready to be copied in.
type elfImage struct {
	entry    uint64
	pvhEntry uint64
	hasPVH   bool
	segs     []elfSegment
	start    uint64
	end      uint64
}

// parseELF validates an ELF64 x86-64 executable: the header, every program
// header against the file, every PT_LOAD against guest RAM, and the entry
// points against the loaded segments. It writes nothing.
func parseELF(data []byte, m *memory.Memory) (*elfImage, error) {
	if len(data) < elfHeaderSize {
		return nil, fmt.Errorf("ELF header: %w: file has %d bytes, need %d", ErrTruncated, len(data), elfHeaderSize)
	}
	le := binary.LittleEndian
	switch {
	case data[4] != elfClass64:
		return nil, fmt.Errorf("ELF header: %w: class %d, want ELF64 (a 32-bit kernel?)", ErrUnsupported, data[4])
	case data[5] != elfDataLSB:
		return nil, fmt.Errorf("ELF header: %w: data encoding %d, want little-endian", ErrUnsupported, data[5])
	case data[6] != elfVersion:
		return nil, fmt.Errorf("ELF header: %w: ident version %d", ErrCorrupt, data[6])
	}
	if t := le.Uint16(data[16:]); t != elfTypeExec {
		return nil, fmt.Errorf("ELF header: %w: type %d, want ET_EXEC (a module or object file?)", ErrUnsupported, t)
	}
	if mach := le.Uint16(data[18:]); mach != elfMachineX8664 {
		return nil, fmt.Errorf("ELF header: %w: machine %d, want x86-64 (62)", ErrUnsupported, mach)
	}
	img := &elfImage{entry: le.Uint64(data[24:])}
	phoff := le.Uint64(data[32:])
	phentsize := uint64(le.Uint16(data[54:]))
	phnum := uint64(le.Uint16(data[56:]))
	if phentsize != elfPhdrSize {
		return nil, fmt.Errorf("ELF header: %w: program header size %d, want %d", ErrCorrupt, phentsize, elfPhdrSize)
	}
	if phnum == 0 {
		return nil, fmt.Errorf("ELF header: %w: no program headers", ErrCorrupt)
	}
	if phoff > uint64(len(data)) || phnum*phentsize > uint64(len(data))-phoff {
		return nil, fmt.Errorf("ELF program headers: %w: %d headers at %#x past end of file (%#x bytes)", ErrTruncated, phnum, phoff, len(data))
	}
	for i := range int(phnum) {
		ph := data[phoff+uint64(i)*elfPhdrSize:][:elfPhdrSize]
		typ := le.Uint32(ph[0:])
		off, paddr := le.Uint64(ph[8:]), le.Uint64(ph[24:])
		filesz, memsz := le.Uint64(ph[32:]), le.Uint64(ph[40:])
		if typ != ptLoad && typ != ptNote {
			continue
		}
		if off > uint64(len(data)) || filesz > uint64(len(data))-off {
			return nil, fmt.Errorf("ELF segment %d: %w: file bytes [%#x,+%#x) past end of file (%#x bytes)", i, ErrTruncated, off, filesz, len(data))
		}
		if typ == ptNote {
			if err := img.parseNotes(data[off:off+filesz], i); err != nil {
				return nil, err
			}
			continue
		}
		if memsz == 0 {
			continue
		}
		if filesz > memsz {
			return nil, fmt.Errorf("ELF segment %d: %w: file size %#x larger than memory size %#x", i, ErrCorrupt, filesz, memsz)
		}
		if len(img.segs) == maxLoadSegments {
			return nil, fmt.Errorf("ELF: %w: more than %d loadable segments", ErrUnsupported, maxLoadSegments)
		}
		if err := checkSpan(m, paddr, memsz); err != nil {
			return nil, fmt.Errorf("ELF segment %d %w", i, err)
		}
		img.segs = append(img.segs, elfSegment{index: i, offset: off, paddr: paddr, filesz: filesz, memsz: memsz})
	}
	if len(img.segs) == 0 {
		return nil, fmt.Errorf("ELF: %w: no loadable segment", ErrCorrupt)
	}
	sorted := slices.Clone(img.segs)
	slices.SortFunc(sorted, func(a, b elfSegment) int {
		switch {
		case a.paddr < b.paddr:
			return -1
		case a.paddr > b.paddr:
			return 1
		}
		return 0
	})
	for i := 1; i < len(sorted); i++ {
		p, s := sorted[i-1], sorted[i]
		if s.paddr < p.paddr+p.memsz {
			return nil, fmt.Errorf("ELF segments %d and %d: %w: physical ranges [%#x,+%#x) and [%#x,+%#x) overlap",
				p.index, s.index, ErrCorrupt, p.paddr, p.memsz, s.paddr, s.memsz)
		}
	}
	img.start = sorted[0].paddr
	last := sorted[len(sorted)-1]
	img.end = last.paddr + last.memsz
	if img.hasPVH && !img.inSegment(img.pvhEntry) {
		return nil, fmt.Errorf("ELF PVH note: %w: entry %#x is not inside a loaded segment", ErrCorrupt, img.pvhEntry)
	}
	return img, nil
}

// parseNotes looks for the PVH entry note in one PT_NOTE segment.
func (img *elfImage) parseNotes(notes []byte, seg int) error {
	le := binary.LittleEndian
	for off := uint64(0); off < uint64(len(notes)); {
		rest := notes[off:]
		if len(rest) < 12 {
			return fmt.Errorf("ELF note segment %d: %w: note header at %#x", seg, ErrTruncated, off)
		}
		namesz, descsz, typ := uint64(le.Uint32(rest[0:])), uint64(le.Uint32(rest[4:])), le.Uint32(rest[8:])
		nameEnd := 12 + align4(namesz)
		descEnd := nameEnd + align4(descsz)
		if descEnd > uint64(len(rest)) {
			return fmt.Errorf("ELF note segment %d: %w: note at %#x (name %d, desc %d bytes)", seg, ErrTruncated, off, namesz, descsz)
		}
		name := rest[12 : 12+namesz]
		desc := rest[nameEnd : nameEnd+descsz]
		if typ == xenElfnotePhys32Entry && bytes.Equal(bytes.TrimRight(name, "\x00"), []byte("Xen")) {
			// Linux emits the entry with _ASM_PTR, eight bytes on
			// x86-64; other kernels use four. Either way it is a
			// 32-bit physical address.
			var entry uint64
			switch descsz {
			case 4:
				entry = uint64(le.Uint32(desc))
			case 8:
				entry = le.Uint64(desc)
			default:
				return fmt.Errorf("ELF PVH note: %w: descriptor of %d bytes", ErrCorrupt, descsz)
			}
			if entry > 0xffff_ffff {
				return fmt.Errorf("ELF PVH note: %w: entry %#x above 4 GiB", ErrCorrupt, entry)
			}
			img.pvhEntry, img.hasPVH = entry, true
		}
		off += descEnd
	}
	return nil
}

// align4 rounds a note field length up to the 4-byte note alignment. The
// inputs are 32-bit, so this cannot overflow.
func align4(n uint64) uint64 { return (n + 3) &^ 3 }

func (img *elfImage) inSegment(addr uint64) bool {
	for _, s := range img.segs {
		if addr >= s.paddr && addr-s.paddr < s.memsz {
			return true
		}
	}
	return false
}

// apply fills the entry and span of k, choosing the PVH entry when preferred
// and present. The chosen entry must lie in a loaded segment: Linux's e_entry
// is the physical address of startup_64, so an entry outside every segment
// means a foreign (or virtually linked) ELF.
func (img *elfImage) apply(k *Kernel, preferPVH bool) error {
	k.Start, k.End = memory.GuestAddr(img.start), memory.GuestAddr(img.end)
	k.Mode, k.Entry = Entry64, memory.GuestAddr(img.entry)
	if preferPVH && img.hasPVH {
		k.Mode, k.Entry = EntryPVH, memory.GuestAddr(img.pvhEntry)
	}
	if !img.inSegment(uint64(k.Entry)) {
		return fmt.Errorf("ELF %s entry %#x: %w: not inside a loaded segment (not a Linux vmlinux?)", k.Mode, uint64(k.Entry), ErrUnsupported)
	}
	return nil
}

// load copies the segments into guest RAM and zeroes their bss. parseELF has
// checked every span, so a failure here is an internal inconsistency.
func (img *elfImage) load(m *memory.Memory, data []byte) error {
	for _, s := range img.segs {
		dst, err := m.Slice(memory.GuestAddr(s.paddr), s.memsz)
		if err != nil {
			return fmt.Errorf("ELF segment %d: %w", s.index, err)
		}
		n := copy(dst, data[s.offset:s.offset+s.filesz])
		clear(dst[n:])
	}
	return nil
}
