package firmware

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math/bits"
	"runtime/debug"
	"slices"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/memory"
)

// Offsets into a bzImage file (= offsets into boot_params, since the setup
// header sits at the same place in both), from Documentation/arch/x86/boot.rst.
const (
	hdrSetupSects     = 0x1f1
	hdrSyssize        = 0x1f4
	hdrVidMode        = 0x1fa
	hdrBootFlag       = 0x1fe
	hdrJump           = 0x200
	hdrHeader         = 0x202
	hdrVersion        = 0x206
	hdrTypeOfLoader   = 0x210
	hdrLoadflags      = 0x211
	hdrRamdiskImage   = 0x218
	hdrRamdiskSize    = 0x21c
	hdrHeapEndPtr     = 0x224
	hdrCmdLinePtr     = 0x228
	hdrInitrdAddrMax  = 0x22c
	hdrKernelAlign    = 0x230
	hdrRelocatable    = 0x234
	hdrXloadflags     = 0x236
	hdrCmdlineSize    = 0x238
	hdrPayloadOffset  = 0x248
	hdrPayloadLength  = 0x24c
	hdrPrefAddress    = 0x258
	hdrInitSize       = 0x260
	hdrEnd212         = 0x268 // first byte past the 2.12 header
	hdrRoomEnd        = 0x290 // boot_params.edd_mbr_sig_buffer: the header must end before it
	bootFlagMagic     = 0xAA55
	minVersion64      = 0x020c // 2.12: xloadflags, XLF_KERNEL_64
	loadedHigh        = 0x01
	canUseHeap        = 0x80
	xlfKernel64       = 0x01
	startup64Offset   = 0x200 // 64-bit entry into the protected-mode code
	defaultSetupSects = 4
)

var hdrMagic = []byte("HdrS")

func isBzImage(data []byte) bool {
	return len(data) >= hdrHeader+4 && bytes.Equal(data[hdrHeader:hdrHeader+4], hdrMagic)
}

// bzImage is a bzImage whose setup header has been validated.
type bzImage struct {
	setup         []byte // header bytes [0x1f1, end of header)
	pm            []byte // protected-mode code, syssize*16 bytes
	relocatable   bool
	align         uint64
	prefAddress   uint64
	initSize      uint64
	initrdAddrMax uint64
	cmdlineSize   uint32
	payloadOffset uint64
	payloadLength uint64
}

func versionString(v uint16) string { return fmt.Sprintf("%d.%02d", v>>8, v&0xff) }

// parseBzImage checks the setup header as a 64-bit boot loader must: boot
// flag, protocol version, LOADED_HIGH, XLF_KERNEL_64, and the sizes it gives
// against the file.
func parseBzImage(data []byte) (*bzImage, error) {
	le := binary.LittleEndian
	if len(data) < hdrEnd212 {
		return nil, fmt.Errorf("bzImage setup header: %w: file has %d bytes", ErrTruncated, len(data))
	}
	if f := le.Uint16(data[hdrBootFlag:]); f != bootFlagMagic {
		return nil, fmt.Errorf("bzImage setup header: %w: boot_flag %#04x, want 0xaa55", ErrCorrupt, f)
	}
	v := le.Uint16(data[hdrVersion:])
	if v < minVersion64 {
		return nil, fmt.Errorf("bzImage setup header: %w: version %s too old for 64-bit boot (need 2.12)", ErrUnsupported, versionString(v))
	}
	sects := uint64(data[hdrSetupSects])
	if sects == 0 {
		sects = defaultSetupSects
	}
	setupSize := (sects + 1) * 512
	if setupSize > uint64(len(data)) {
		return nil, fmt.Errorf("bzImage setup: %w: %d setup sectors, file has %d bytes", ErrTruncated, sects, len(data))
	}
	hdrEnd := uint64(hdrHeader) + uint64(data[hdrJump+1])
	if hdrEnd < hdrEnd212 || hdrEnd > hdrRoomEnd || hdrEnd > setupSize {
		return nil, fmt.Errorf("bzImage setup header: %w: header ends at %#x", ErrCorrupt, hdrEnd)
	}
	if data[hdrLoadflags]&loadedHigh == 0 {
		return nil, fmt.Errorf("bzImage setup header: %w: loadflags %#x lack LOADED_HIGH (a zImage)", ErrUnsupported, data[hdrLoadflags])
	}
	if x := le.Uint16(data[hdrXloadflags:]); x&xlfKernel64 == 0 {
		return nil, fmt.Errorf("bzImage setup header: %w: xloadflags %#x lack XLF_KERNEL_64 (a 32-bit kernel)", ErrUnsupported, x)
	}
	pmSize := uint64(le.Uint32(data[hdrSyssize:])) * 16
	if pmSize == 0 {
		return nil, fmt.Errorf("bzImage setup header: %w: syssize 0", ErrCorrupt)
	}
	if pmSize > uint64(len(data))-setupSize {
		return nil, fmt.Errorf("bzImage: %w: protected-mode code of %#x bytes (syssize) at %#x, file has %#x bytes", ErrTruncated, pmSize, setupSize, len(data))
	}
	b := &bzImage{
		setup:         slices.Clone(data[hdrSetupSects:hdrEnd]),
		pm:            data[setupSize : setupSize+pmSize],
		relocatable:   data[hdrRelocatable] != 0,
		align:         uint64(le.Uint32(data[hdrKernelAlign:])),
		prefAddress:   le.Uint64(data[hdrPrefAddress:]),
		initSize:      uint64(le.Uint32(data[hdrInitSize:])),
		initrdAddrMax: uint64(le.Uint32(data[hdrInitrdAddrMax:])),
		cmdlineSize:   le.Uint32(data[hdrCmdlineSize:]),
		payloadOffset: uint64(le.Uint32(data[hdrPayloadOffset:])),
		payloadLength: uint64(le.Uint32(data[hdrPayloadLength:])),
	}
	if b.initSize == 0 {
		return nil, fmt.Errorf("bzImage setup header: %w: init_size 0", ErrCorrupt)
	}
	if b.relocatable && (b.align == 0 || bits.OnesCount64(b.align) != 1) {
		return nil, fmt.Errorf("bzImage setup header: %w: kernel_alignment %#x not a power of two", ErrCorrupt, b.align)
	}
	if b.cmdlineSize == 0 {
		return nil, fmt.Errorf("bzImage setup header: %w: cmdline_size 0", ErrCorrupt)
	}
	return b, nil
}

// runStart is where the kernel's own decompressor will put the kernel when
// entered at startup_64 from KernelLoadAddr: the load address aligned up to
// kernel_alignment, but never below pref_address (LOAD_PHYSICAL_ADDR), as
// arch/x86/boot/compressed/head_64.S computes it; a non-relocatable kernel
// always goes to pref_address.
func (b *bzImage) runStart() uint64 {
	if !b.relocatable {
		return b.prefAddress
	}
	start := (uint64(x86.KernelLoadAddr) + b.align - 1) &^ (b.align - 1)
	return max(start, b.prefAddress)
}

func loadBzImage(m *memory.Memory, data []byte, opt LoadOptions) (*Kernel, error) {
	b, err := parseBzImage(data)
	if err != nil {
		return nil, err
	}
	k := &Kernel{
		Setup:         b.setup,
		InitrdAddrMax: b.initrdAddrMax,
		CmdlineSize:   b.cmdlineSize,
	}
	if opt.DecompressBzImage {
		return loadBzImagePayload(m, b, k, opt)
	}
	// The guest decompresses: load the protected-mode code at 1 MiB and
	// keep the whole init_size window its decompressor works in free.
	load := uint64(x86.KernelLoadAddr)
	if err := checkSpan(m, load, uint64(len(b.pm))); err != nil {
		return nil, fmt.Errorf("bzImage protected-mode code %w", err)
	}
	run := b.runStart()
	if err := checkSpan(m, run, b.initSize); err != nil {
		return nil, fmt.Errorf("bzImage decompression window (pref_address, init_size) %w", err)
	}
	if err := m.WriteAt(b.pm, memory.GuestAddr(load)); err != nil {
		return nil, fmt.Errorf("bzImage protected-mode code: %w", err)
	}
	k.Format = FormatBzImage
	k.Mode = Entry64
	k.Entry = memory.GuestAddr(load + startup64Offset)
	k.Start = memory.GuestAddr(min(load, run))
	k.End = memory.GuestAddr(max(load+uint64(len(b.pm)), run+b.initSize))
	return k, nil
}

// loadBzImagePayload unpacks the compressed vmlinux on the host and loads it
// as an ELF; boot_params still gets the bzImage's setup header.
func loadBzImagePayload(m *memory.Memory, b *bzImage, k *Kernel, opt LoadOptions) (*Kernel, error) {
	if b.payloadLength == 0 || b.payloadOffset > uint64(len(b.pm)) || b.payloadLength > uint64(len(b.pm))-b.payloadOffset {
		return nil, fmt.Errorf("bzImage payload: %w: [%#x,+%#x) outside the protected-mode code (%#x bytes)", ErrTruncated, b.payloadOffset, b.payloadLength, len(b.pm))
	}
	payload := b.pm[b.payloadOffset : b.payloadOffset+b.payloadLength]
	elfData, comp, err := decompressKernel(payload, min(MaxDecompressedSize, m.Size()))
	if err != nil {
		return nil, fmt.Errorf("bzImage payload: %w", err)
	}
	if !isELF(elfData) {
		return nil, fmt.Errorf("bzImage payload (%s): %w: decompressed data is not an ELF (magic %s)", comp, ErrCorrupt, magicHex(elfData))
	}
	img, err := parseELF(elfData, m)
	if err != nil {
		return nil, fmt.Errorf("bzImage payload (%s): %w", comp, err)
	}
	if err := img.apply(k, opt.PreferPVH); err != nil {
		return nil, fmt.Errorf("bzImage payload (%s): %w", comp, err)
	}
	if err := img.load(m, elfData); err != nil {
		return nil, fmt.Errorf("bzImage payload (%s): %w", comp, err)
	}
	k.Format = FormatBzImageDecompressed
	// The unpacked kernel (tens of MiB) is garbage now. Hand it back to
	// the OS at once rather than when the scavenger gets to it, so the
	// VMM's RSS reflects guest memory, not a buffer used once at boot.
	elfData = nil
	debug.FreeOSMemory()
	return k, nil
}
