package agent

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// ErrDiskTooSmall means an image does not fit the flavor's disk.
var ErrDiskTooSmall = errors.New("image larger than the flavor's disk")

// copyChunk is the unit in which data ranges are copied and zero blocks
// skipped.
const copyChunk = 1 << 20

// prepareDisk makes dst a private copy of the image src, grown to size
// bytes (0 keeps the image's size). It tries a reflink (FICLONE) first,
// which shares blocks copy-on-write and costs nothing; otherwise it copies
// only the image's data ranges (SEEK_DATA/SEEK_HOLE) and skips zero blocks
// within them, so the copy is as sparse as the image or sparser. It writes
// dst.tmp and renames it, so dst is either absent or complete; on any error
// (a full disk included) dst.tmp is removed. It reports whether it cloned.
func prepareDisk(ctx context.Context, src, dst string, size int64) (cloned bool, err error) {
	in, err := os.Open(src)
	if err != nil {
		return false, fmt.Errorf("disk: %w", err)
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return false, fmt.Errorf("disk: %w", err)
	}
	if size == 0 {
		size = st.Size()
	}
	if st.Size() > size {
		return false, fmt.Errorf("disk: image is %d bytes, the flavor's disk %d: %w", st.Size(), size, ErrDiskTooSmall)
	}
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return false, fmt.Errorf("disk: %w", err)
	}
	defer func() {
		if err != nil {
			out.Close()
			os.Remove(tmp)
		}
	}()
	if unix.IoctlFileClone(int(out.Fd()), int(in.Fd())) == nil {
		cloned = true
	} else if err := copySparse(ctx, out, in, st.Size()); err != nil {
		return false, fmt.Errorf("disk: copy %s: %w", src, err)
	}
	if err := out.Truncate(size); err != nil {
		return false, fmt.Errorf("disk: resize to %d bytes: %w", size, err)
	}
	if err := out.Sync(); err != nil {
		return false, fmt.Errorf("disk: %w", err)
	}
	if err := out.Close(); err != nil {
		return false, fmt.Errorf("disk: %w", err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		return false, fmt.Errorf("disk: %w", err)
	}
	return cloned, nil
}

// copySparse copies the first n bytes of in to the same offsets of out,
// leaving holes where in has holes or all-zero blocks.
func copySparse(ctx context.Context, out, in *os.File, n int64) error {
	fd := int(in.Fd())
	buf := make([]byte, copyChunk)
	for off := int64(0); off < n; {
		data, err := unix.Seek(fd, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			return nil // only a hole remains
		}
		if err != nil {
			// No SEEK_DATA on this filesystem: treat the rest as data
			// (zero blocks are still skipped).
			data = off
		}
		end := n
		if err == nil {
			if hole, err := unix.Seek(fd, data, unix.SEEK_HOLE); err == nil && hole < n {
				end = hole
			}
		}
		if err := copyRange(ctx, out, in, buf, data, end); err != nil {
			return err
		}
		off = end
	}
	return nil
}

func copyRange(ctx context.Context, out, in *os.File, buf []byte, from, to int64) error {
	for off := from; off < to; {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:min(int64(len(buf)), to-off)]
		if n, err := in.ReadAt(b, off); n < len(b) {
			// The image shrank under us.
			return fmt.Errorf("read at %d: %w", off, cmp.Or(err, io.ErrUnexpectedEOF))
		}
		if !allZero(b) {
			if _, err := out.WriteAt(b, off); err != nil {
				return err
			}
		}
		off += int64(len(b))
	}
	return nil
}

var zeroChunk = make([]byte, copyChunk)

func allZero(b []byte) bool { return bytes.Equal(b, zeroChunk[:len(b)]) }
