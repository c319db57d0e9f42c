package firmware

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/memory"
)

// Errors callers and tests branch on. Every error LoadKernel, LoadInitrd,
// WriteBootParams and WritePVHStartInfo return wraps one of them (or an
// os/memory error) with the file name and the detail.
var (
	// ErrUnknownFormat: the file is neither an ELF nor a bzImage.
	ErrUnknownFormat = errors.New("not an ELF or bzImage")
	// ErrTruncated: a header or a region it describes runs past the end
	// of the file (or of the compressed stream).
	ErrTruncated = errors.New("truncated")
	// ErrCorrupt: a header field or a compressed stream is inconsistent.
	ErrCorrupt = errors.New("corrupt")
	// ErrUnsupported: a well-formed file this loader cannot boot (32-bit
	// kernel, old boot protocol, unknown compressor).
	ErrUnsupported = errors.New("unsupported")
	// ErrNoRoom: the kernel, initrd or a boot structure does not fit in
	// guest RAM where it has to go.
	ErrNoRoom = errors.New("does not fit in guest RAM")
	// ErrTooLarge: a file or a decompressed payload exceeds the loader's
	// size limits.
	ErrTooLarge = errors.New("too large")
	// ErrCmdline: the kernel command line is too long or contains a NUL.
	ErrCmdline = errors.New("bad kernel command line")
	// ErrE820: the memory map is empty or has more entries than the boot
	// structures hold.
	ErrE820 = errors.New("bad e820 map")
)

// MaxKernelFileSize bounds how much of a kernel file is read: real kernels are
// tens of MiB; the bound only keeps a wrong path (a disk image) from being
// slurped into host memory.
const MaxKernelFileSize = 512 << 20

// MaxDecompressedSize bounds a bzImage payload unpacked on the host, so a
// hostile file cannot exhaust host memory (Debian's 6.12 cloud kernel unpacks
// to 55 MiB).
const MaxDecompressedSize = 512 << 20

// EntryMode says how the vCPU enters the kernel.
type EntryMode int

const (
	// Entry64 is the Linux 64-bit boot protocol: long mode with identity
	// page tables, RIP = Kernel.Entry, RSI = boot_params (x86.ZeroPageAddr).
	Entry64 EntryMode = iota
	// EntryPVH is the PVH entry: 32-bit protected mode, paging off,
	// EIP = Kernel.Entry, EBX = hvm_start_info (x86.PVHStartInfoAddr).
	EntryPVH
)

// String names the mode for logs and errors.
func (e EntryMode) String() string {
	switch e {
	case Entry64:
		return "64-bit"
	case EntryPVH:
		return "PVH"
	}
	return fmt.Sprintf("EntryMode(%d)", int(e))
}

// Formats reported in Kernel.Format.
const (
	FormatELF                 = "elf"
	FormatBzImage             = "bzImage"
	FormatBzImageDecompressed = "bzImage-decompressed"
)

// Kernel describes a kernel loaded into guest RAM.
type Kernel struct {
	// Format is FormatELF, FormatBzImage or FormatBzImageDecompressed.
	Format string
	// Mode is the entry protocol Entry uses.
	Mode EntryMode
	// Entry is the guest physical address of the first instruction.
	Entry memory.GuestAddr
	// Start and End bound the memory the kernel occupies, including what
	// it needs at run time beyond the file (bss; for a compressed bzImage
	// the init_size its decompressor works in). Nothing else may go there.
	Start, End memory.GuestAddr
	// Setup is the bzImage setup header, from offset 0x1f1 to its end, to
	// copy into boot_params.hdr; nil for an ELF kernel.
	Setup []byte
	// InitrdAddrMax is the highest address the initrd may occupy.
	InitrdAddrMax uint64
	// CmdlineSize is the longest command line the kernel accepts, not
	// counting the NUL (the header's cmdline_size).
	CmdlineSize uint32
}

// LoadOptions tunes LoadKernel.
type LoadOptions struct {
	// DecompressBzImage unpacks a bzImage's payload on the host and loads
	// the ELF inside, entering it at its 64-bit startup_64 (or its PVH
	// entry), so the guest never runs the decompressor.
	DecompressBzImage bool
	// PreferPVH enters through the PVH note when the kernel ELF has one;
	// without one (or for a compressed bzImage) the 64-bit entry is used,
	// and Kernel.Mode says which.
	PreferPVH bool
}

// Defaults for kernels without a setup header (ELF vmlinux), matching what
// x86-64 Linux itself declares in its header.
const (
	defaultInitrdAddrMax = 0x7fff_ffff
	defaultCmdlineSize   = 2047
)

// LoadKernel reads the kernel at path, validates it and loads it into m. It
// writes guest RAM only after every header has been checked.
func LoadKernel(m *memory.Memory, path string, opt LoadOptions) (*Kernel, error) {
	data, err := readBounded(path, MaxKernelFileSize)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", path, err)
	}
	k, err := loadKernelBytes(m, data, opt)
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", path, err)
	}
	return k, nil
}

// readBounded reads a whole file of at most limit bytes.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file", ErrUnknownFormat)
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, st.Size(), limit)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	return data, nil
}

// loadKernelBytes dispatches on the file's magic.
func loadKernelBytes(m *memory.Memory, data []byte, opt LoadOptions) (*Kernel, error) {
	switch {
	case len(data) == 0:
		return nil, fmt.Errorf("%w: empty file", ErrTruncated)
	case isELF(data):
		img, err := parseELF(data, m)
		if err != nil {
			return nil, err
		}
		k := &Kernel{
			Format:        FormatELF,
			InitrdAddrMax: defaultInitrdAddrMax,
			CmdlineSize:   defaultCmdlineSize,
		}
		if err := img.apply(k, opt.PreferPVH); err != nil {
			return nil, err
		}
		if err := img.load(m, data); err != nil {
			return nil, err
		}
		return k, nil
	case isBzImage(data):
		return loadBzImage(m, data, opt)
	}
	return nil, fmt.Errorf("%w (magic %s)", ErrUnknownFormat, magicHex(data))
}

// magicHex shows the first bytes of a foreign file, which usually say what
// it is (a gzip'd kernel, an initrd, a disk image).
func magicHex(data []byte) string {
	n := min(len(data), 8)
	s := hex.EncodeToString(data[:n])
	if len(data) > n {
		s += "..."
	}
	return s
}

// lowRAMEnd is the end of the RAM region that starts at 0: the kernel, the
// initrd and the boot structures must all be reachable below 4 GiB.
func lowRAMEnd(m *memory.Memory) memory.GuestAddr {
	for _, r := range m.Ranges() {
		if r.Start == 0 {
			return r.End()
		}
	}
	return 0
}

// noRoomError is an ErrNoRoom whose message says where, without repeating
// the sentinel's text.
type noRoomError struct{ msg string }

func (e *noRoomError) Error() string        { return e.msg }
func (e *noRoomError) Is(target error) bool { return target == ErrNoRoom }

func noRoom(format string, args ...any) error {
	return &noRoomError{msg: fmt.Sprintf(format, args...)}
}

// checkSpan checks that [addr, addr+size) lies in one RAM region above the
// legacy megabyte, without wrapping. The result matches ErrNoRoom.
func checkSpan(m *memory.Memory, addr, size uint64) error {
	end := addr + size
	if end < addr {
		return noRoom("[%#x,+%#x) wraps around", addr, size)
	}
	if addr < uint64(x86.HighMemStart) {
		return noRoom("[%#x,+%#x) overlaps the boot structures below %#x", addr, size, uint64(x86.HighMemStart))
	}
	for _, r := range m.Ranges() {
		if addr >= uint64(r.Start) && end <= uint64(r.End()) {
			return nil
		}
	}
	return noRoom("[%#x,+%#x) outside guest RAM", addr, size)
}
