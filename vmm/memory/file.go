package memory

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// NewFromFile maps guest RAM of size bytes from f, a snapshot's memory
// file holding the regions of Plan(size) back to back. The mapping is
// private: pages are read from the file when the guest first touches them
// and copied on its first write, so restoring costs a few mmap calls
// rather than a copy of all RAM, and the file never changes. The file must
// stay unmodified while the guest runs (pages not yet touched are read
// from it then).
func NewFromFile(f *os.File, size uint64) (*Memory, error) {
	ranges, err := Plan(size)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("guest RAM file: %w", err)
	}
	if uint64(fi.Size()) != size {
		return nil, fmt.Errorf("guest RAM file %s is %d bytes, want %d", f.Name(), fi.Size(), size)
	}
	m := &Memory{size: size}
	var off int64
	for _, r := range ranges {
		b, err := unix.Mmap(int(f.Fd()), off, int(r.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_NORESERVE)
		if err != nil {
			_ = m.Close()
			return nil, fmt.Errorf("mmap %d MiB of guest RAM from %s at offset %d: %w", r.Size>>20, f.Name(), off, err)
		}
		m.regions = append(m.regions, Region{Start: r.Start, host: b})
		off += int64(r.Size)
	}
	return m, nil
}
