package firmware

import (
	"fmt"
	"io"
	"os"

	"kvmstack/vmm/memory"
)

const pageSize = 4096

// LoadInitrd copies the initrd at path into guest RAM, page-aligned and as
// high as possible below both the end of low RAM and the kernel's
// initrd_addr_max, above the kernel. High placement keeps it clear of where
// the kernel (or its decompressor's KASLR choice) puts itself.
func LoadInitrd(m *memory.Memory, path string, k *Kernel) (memory.GuestAddr, uint64, error) {
	addr, size, err := loadInitrd(m, path, k)
	if err != nil {
		return 0, 0, fmt.Errorf("initrd %s: %w", path, err)
	}
	return addr, size, nil
}

func loadInitrd(m *memory.Memory, path string, k *Kernel) (memory.GuestAddr, uint64, error) {
	if k == nil {
		return 0, 0, fmt.Errorf("no kernel loaded")
	}
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	if !st.Mode().IsRegular() {
		return 0, 0, fmt.Errorf("%w: not a regular file", ErrUnknownFormat)
	}
	size := uint64(st.Size())
	if size == 0 {
		return 0, 0, fmt.Errorf("%w: empty file", ErrTruncated)
	}
	addr, err := placeInitrd(m, size, k)
	if err != nil {
		return 0, 0, err
	}
	dst, err := m.Slice(addr, size)
	if err != nil {
		return 0, 0, err
	}
	if _, err := io.ReadFull(f, dst); err != nil {
		return 0, 0, fmt.Errorf("reading %d bytes: %w", size, err)
	}
	return addr, size, nil
}

// placeInitrd picks the initrd's guest address.
func placeInitrd(m *memory.Memory, size uint64, k *Kernel) (memory.GuestAddr, error) {
	top := uint64(lowRAMEnd(m))
	if k.InitrdAddrMax != 0 && k.InitrdAddrMax < top-1 {
		top = k.InitrdAddrMax + 1
	}
	floor := (uint64(k.End) + pageSize - 1) &^ (pageSize - 1)
	if floor > top || size > top-floor {
		return 0, noRoom("%d bytes do not fit between the kernel's end %#x and %#x", size, floor, top)
	}
	return memory.GuestAddr((top - size) &^ (pageSize - 1)), nil
}
