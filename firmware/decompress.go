package firmware

import (
	"bytes"
	"compress/bzip2"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
	"github.com/pierrec/lz4/v4"
	"github.com/ulikunitz/xz/lzma"
)

// Compressors a bzImage payload may use, named as the kernel's
// CONFIG_KERNEL_* options are.
const (
	compGzip  = "gzip"
	compBzip2 = "bzip2"
	compLZMA  = "lzma"
	compXZ    = "xz"
	compLZO   = "lzo"
	compLZ4   = "lz4"
	compZstd  = "zstd"
)

// Stream magics. LZMA "alone" has none: its first byte is the properties
// byte, 0x5d for the lc=3 lp=0 pb=2 the kernel's `lzma -9` writes, followed
// by a little-endian dictionary size whose top byte is zero in practice.
var (
	magicGzip  = []byte{0x1f, 0x8b}
	magicBzip2 = []byte("BZh")
	magicLZMA  = []byte{0x5d, 0x00}
	magicXZ    = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicLZO   = []byte{0x89, 'L', 'Z', 'O'}
	magicLZ4   = []byte{0x02, 0x21, 0x4c, 0x18} // legacy frame, 0x184c2102
	magicZstd  = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// detectCompressor names the compressor of a payload by its magic.
func detectCompressor(b []byte) (string, error) {
	for _, c := range []struct {
		name  string
		magic []byte
	}{
		{compGzip, magicGzip}, {compBzip2, magicBzip2}, {compXZ, magicXZ},
		{compLZO, magicLZO}, {compLZ4, magicLZ4}, {compZstd, magicZstd},
		{compLZMA, magicLZMA},
	} {
		if bytes.HasPrefix(b, c.magic) {
			return c.name, nil
		}
	}
	return "", fmt.Errorf("%w: unknown compression (magic %s)", ErrUnsupported, magicHex(b))
}

// decompressKernel unpacks a bzImage payload: a compressed stream followed,
// as the kernel's size_append writes it, by the uncompressed size as a le32.
// The output must be exactly that size and at most limit bytes; memory use is
// bounded by the output, never by what a header claims.
func decompressKernel(payload []byte, limit uint64) ([]byte, string, error) {
	if len(payload) < 8 {
		return nil, "", fmt.Errorf("%w: payload of %d bytes", ErrTruncated, len(payload))
	}
	stream := payload[:len(payload)-4]
	size := uint64(binary.LittleEndian.Uint32(payload[len(payload)-4:]))
	comp, err := detectCompressor(stream)
	if err != nil {
		return nil, "", err
	}
	if size == 0 {
		return nil, comp, fmt.Errorf("%s: %w: uncompressed size 0", comp, ErrCorrupt)
	}
	if size > limit {
		return nil, comp, fmt.Errorf("%s: %w: uncompressed size %d exceeds the limit of %d bytes", comp, ErrTooLarge, size, limit)
	}
	var out []byte
	switch comp {
	case compZstd:
		out, err = unzstd(stream, size)
	case compLZ4:
		out, err = unlz4(stream, size)
	case compXZ:
		out, err = unxz(stream, size)
	case compLZO:
		err = fmt.Errorf("%w: compression lzo (no Go decoder in this build)", ErrUnsupported)
	default:
		var r io.Reader
		r, err = streamReader(comp, stream, size)
		if err == nil {
			out, err = readExactly(r, size, len(stream))
		}
	}
	if err != nil {
		return nil, comp, fmt.Errorf("%s: %w", comp, err)
	}
	return out, comp, nil
}

// streamReader opens the compressors that are read as io.Readers.
func streamReader(comp string, stream []byte, size uint64) (io.Reader, error) {
	switch comp {
	case compGzip:
		zr, err := gzip.NewReader(bytes.NewReader(stream))
		if err != nil {
			return nil, corrupt(err)
		}
		// The le32 size the kernel appends is not a gzip member.
		zr.Multistream(false)
		return zr, nil
	case compBzip2:
		return bzip2.NewReader(bytes.NewReader(stream)), nil
	case compLZMA:
		if len(stream) < lzma.HeaderLen {
			return nil, fmt.Errorf("%w: header", ErrTruncated)
		}
		// The dictionary never needs to exceed the output: shrink what
		// the header asks for (the kernel's lzma -9 says 64 MiB) so a
		// hostile header cannot make the decoder allocate gigabytes.
		hdr := bytes.Clone(stream[:lzma.HeaderLen])
		dict := uint64(binary.LittleEndian.Uint32(hdr[1:]))
		if dict > size {
			binary.LittleEndian.PutUint32(hdr[1:], uint32(max(size, lzma.MinDictCap)))
		}
		r, err := lzma.NewReader(io.MultiReader(bytes.NewReader(hdr), bytes.NewReader(stream[lzma.HeaderLen:])))
		if err != nil {
			return nil, corrupt(err)
		}
		return r, nil
	}
	return nil, fmt.Errorf("%w: compression %s", ErrUnsupported, comp)
}

// corrupt marks a decoder's own error as ErrCorrupt, keeping its text.
func corrupt(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %v", ErrTruncated, err)
	}
	return fmt.Errorf("%w: %v", ErrCorrupt, err)
}

// readExactly reads the whole stream, which must decode to exactly size
// bytes. Reading on to EOF makes gzip and bzip2 verify their checksums.
func readExactly(r io.Reader, size uint64, inLen int) ([]byte, error) {
	// Grow with what actually decodes: a header cannot make us allocate
	// up front more than a generous ratio of the input.
	buf := bytes.NewBuffer(make([]byte, 0, min(size, 32*uint64(inLen)+4096)))
	n, err := io.Copy(buf, io.LimitReader(r, int64(size)+1))
	if err != nil {
		return nil, corrupt(err)
	}
	if uint64(n) != size {
		return nil, sizeMismatch(uint64(n), size)
	}
	return buf.Bytes(), nil
}

func sizeMismatch(got, want uint64) error {
	if got > want {
		return fmt.Errorf("%w: decompresses to more than the %d bytes the trailer declares", ErrCorrupt, want)
	}
	return fmt.Errorf("%w: decompresses to %d bytes, the trailer declares %d", ErrCorrupt, got, want)
}

// unzstd decodes a zstd payload into a buffer of the declared size. The
// kernel's `zstd -22 --ultra` frames declare a 128 MiB window and no content
// size; DecodeAll keeps its history in the output buffer, so a window larger
// than the output costs nothing and is accepted, while the cap limit stops
// the decoder from writing one byte past the declared size.
func unzstd(stream []byte, size uint64) ([]byte, error) {
	d, err := zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(1),
		zstd.WithDecodeAllCapLimit(true),
		zstd.WithDecoderMaxMemory(zstdMaxWindow),
		zstd.WithDecoderMaxWindow(zstdMaxWindow),
	)
	if err != nil {
		return nil, fmt.Errorf("zstd decoder: %w", err)
	}
	defer d.Close()
	out, err := d.DecodeAll(stream, make([]byte, 0, size))
	if err != nil {
		if errors.Is(err, zstd.ErrDecoderSizeExceeded) {
			return nil, sizeMismatch(size+1, size)
		}
		return nil, corrupt(err)
	}
	if uint64(len(out)) != size {
		return nil, sizeMismatch(uint64(len(out)), size)
	}
	return out, nil
}

// zstdMaxWindow is zstd's largest window (--long=31).
const zstdMaxWindow = 1 << 31

// LZ4 legacy frames, as the kernel's lz4 -l writes them: the magic, then
// blocks of a le32 compressed length and data that decodes to at most 8 MiB.
// A repeated magic starts another frame (lib/decompress_unlz4.c).
const lz4LegacyBlockMax = 8 << 20

func unlz4(stream []byte, size uint64) ([]byte, error) {
	out := make([]byte, 0, min(size, 32*uint64(len(stream))+lz4LegacyBlockMax))
	in := stream[len(magicLZ4):]
	block := make([]byte, lz4LegacyBlockMax)
	for len(in) > 0 {
		if len(in) < 4 {
			return nil, fmt.Errorf("%w: block header at end of stream", ErrTruncated)
		}
		n := uint64(binary.LittleEndian.Uint32(in))
		in = in[4:]
		if n == uint64(binary.LittleEndian.Uint32(magicLZ4)) {
			continue
		}
		if n > uint64(lz4.CompressBlockBound(lz4LegacyBlockMax)) {
			return nil, fmt.Errorf("%w: block of %d bytes", ErrCorrupt, n)
		}
		if n > uint64(len(in)) {
			return nil, fmt.Errorf("%w: block of %d bytes, %d left", ErrTruncated, n, len(in))
		}
		got, err := lz4.UncompressBlock(in[:n], block)
		if err != nil {
			return nil, corrupt(err)
		}
		in = in[n:]
		if uint64(len(out))+uint64(got) > size {
			return nil, sizeMismatch(uint64(len(out))+uint64(got), size)
		}
		out = append(out, block[:got]...)
	}
	if uint64(len(out)) != size {
		return nil, sizeMismatch(uint64(len(out)), size)
	}
	return out, nil
}
