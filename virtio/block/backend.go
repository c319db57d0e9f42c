package block

import (
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// Backend stores the disk's bytes. Offsets and lengths passed to it are
// already checked against the capacity the device was created with.
type Backend interface {
	// ReadAt fills bufs, in order, from the disk starting at off. Bytes past
	// the end of the backing store read as zeros.
	ReadAt(bufs [][]byte, off int64) error
	// WriteAt writes bufs, in order, to the disk starting at off.
	WriteAt(bufs [][]byte, off int64) error
	// Flush makes every completed write durable.
	Flush() error
	// Discard tells the store that a range is no longer needed. Its
	// contents afterwards are unspecified (zeros or the old data).
	Discard(off, n int64) error
	// WriteZeroes makes a range read as zeros; with unmap it may also
	// deallocate it.
	WriteZeroes(off, n int64, unmap bool) error
	// Close releases the store.
	Close() error
}

// maxIovecs is the kernel's IOV_MAX: preadv/pwritev reject more buffers.
const maxIovecs = 1024

// zeroChunk bounds the buffer used when the filesystem cannot zero a range
// with fallocate and zeros are written instead.
const zeroChunk = 1 << 20

// File is a Backend over a raw image file or a host block device, using
// positional vectored I/O straight into the caller's (guest) buffers and
// fallocate for discard and write-zeroes.
type File struct {
	f  *os.File
	fd int
	// zeroRange is false once the filesystem said it cannot zero ranges
	// with fallocate, so later requests go straight to the fallback.
	zeroRange bool
	punch     bool
}

// OpenFile opens path as a Backend, read-only or read-write, and returns it
// with its size in bytes.
func OpenFile(path string, readOnly bool) (*File, int64, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, 0, fmt.Errorf("virtio-blk: open disk: %w", err)
	}
	// Seek rather than Stat: it also gives a block device's size.
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		f.Close()
		return nil, 0, fmt.Errorf("virtio-blk: size of %s: %w", path, err)
	}
	// Fd puts the file in blocking mode, which is what positional I/O on a
	// regular file or block device is anyway; the worker goroutine owns
	// its thread for the duration of each call.
	return &File{f: f, fd: int(f.Fd()), zeroRange: true, punch: true}, size, nil
}

// ReadAt implements Backend with preadv(2).
func (b *File) ReadAt(bufs [][]byte, off int64) error {
	return vectored(bufs, off, func(iov [][]byte, off int64) (int, error) {
		n, err := unix.Preadv(b.fd, iov, off)
		if err == nil && n == 0 {
			// End of file: a file shorter than the capacity the guest was
			// given (truncated behind our back) reads as zeros.
			for _, v := range iov {
				clear(v)
			}
			return total(iov), nil
		}
		return n, err
	})
}

// WriteAt implements Backend with pwritev(2).
func (b *File) WriteAt(bufs [][]byte, off int64) error {
	return vectored(bufs, off, func(iov [][]byte, off int64) (int, error) {
		n, err := unix.Pwritev(b.fd, iov, off)
		if err == nil && n == 0 {
			return 0, io.ErrShortWrite
		}
		return n, err
	})
}

// Flush implements Backend with fdatasync(2).
func (b *File) Flush() error {
	if err := ignoreEINTR(func() error { return unix.Fdatasync(b.fd) }); err != nil {
		return fmt.Errorf("virtio-blk: fdatasync: %w", err)
	}
	return nil
}

// Discard implements Backend by punching a hole. A filesystem without hole
// punching keeps the data, which a discard allows.
func (b *File) Discard(off, n int64) error {
	if !b.punch {
		return nil
	}
	err := ignoreEINTR(func() error {
		return unix.Fallocate(b.fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	})
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		b.punch = false
		return nil
	}
	if err != nil {
		return fmt.Errorf("virtio-blk: punch hole at %d+%d: %w", off, n, err)
	}
	return nil
}

// WriteZeroes implements Backend: a punched hole (unmap) or a zeroed range
// through fallocate, else written zeros.
func (b *File) WriteZeroes(off, n int64, unmap bool) error {
	mode := uint32(unix.FALLOC_FL_ZERO_RANGE | unix.FALLOC_FL_KEEP_SIZE)
	ok := b.zeroRange
	if unmap && b.punch {
		mode, ok = unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, true
	}
	if ok {
		err := ignoreEINTR(func() error { return unix.Fallocate(b.fd, mode, off, n) })
		if err == nil {
			return nil
		}
		if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("virtio-blk: zero range at %d+%d: %w", off, n, err)
		}
		if mode&unix.FALLOC_FL_PUNCH_HOLE != 0 {
			b.punch = false
		} else {
			b.zeroRange = false
		}
	}
	zeros := make([]byte, min(n, zeroChunk))
	for n > 0 {
		c := min(n, int64(len(zeros)))
		if err := b.WriteAt([][]byte{zeros[:c]}, off); err != nil {
			return err
		}
		off, n = off+c, n-c
	}
	return nil
}

// Close implements Backend.
func (b *File) Close() error { return b.f.Close() }

// vectored runs op until bufs are done, in batches of at most maxIovecs
// buffers, resuming after short transfers and EINTR.
func vectored(bufs [][]byte, off int64, op func([][]byte, int64) (int, error)) error {
	// Copy the slice headers: a short transfer trims them in place.
	iov := append([][]byte(nil), bufs...)
	for len(iov) > 0 {
		if len(iov[0]) == 0 {
			iov = iov[1:]
			continue
		}
		batch := iov[:min(len(iov), maxIovecs)]
		n, err := op(batch, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("virtio-blk: I/O at offset %d: %w", off, err)
		}
		off += int64(n)
		for n > 0 {
			c := min(n, len(iov[0]))
			iov[0] = iov[0][c:]
			n -= c
			if len(iov[0]) == 0 {
				iov = iov[1:]
			}
		}
	}
	return nil
}

func total(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

func ignoreEINTR(f func() error) error {
	for {
		if err := f(); !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}
