package firmware

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"hash/crc64"
	"io"

	"github.com/ulikunitz/xz/lzma"
)

// The kernel's xz payloads (scripts/xz_wrap.sh) chain the x86 BCJ filter in
// front of LZMA2, which github.com/ulikunitz/xz's own container reader does
// not support. So this file reads the .xz container itself (format spec 1.1),
// decodes LZMA2 with ulikunitz/xz/lzma, and undoes the BCJ filter here.

const (
	xzFilterX86   = 0x04
	xzFilterLZMA2 = 0x21
	xzCheckNone   = 0x00
	xzCheckCRC32  = 0x01
	xzCheckCRC64  = 0x04
	xzCheckSHA256 = 0x0a
)

var crc64Table = crc64.MakeTable(crc64.ECMA)

// xzCheckSize is the size of the check field for each check ID (spec 2.1.1.2).
func xzCheckSize(id byte) int {
	if id == 0 {
		return 0
	}
	return 4 << ((id - 1) / 3)
}

// unxz decodes every block of the first stream in an .xz file; the output
// must total exactly size bytes.
func unxz(stream []byte, size uint64) ([]byte, error) {
	if len(stream) < 12 {
		return nil, fmt.Errorf("%w: stream header", ErrTruncated)
	}
	flags := stream[6:8]
	if flags[0] != 0 || flags[1] > 0x0f {
		return nil, fmt.Errorf("%w: stream flags %x", ErrCorrupt, flags)
	}
	if crc32.ChecksumIEEE(flags) != binary.LittleEndian.Uint32(stream[8:12]) {
		return nil, fmt.Errorf("%w: stream header CRC32", ErrCorrupt)
	}
	check := flags[1]
	out := make([]byte, 0, min(size, 32*uint64(len(stream))+4096))
	pos := 12
	for {
		if pos >= len(stream) {
			return nil, fmt.Errorf("%w: no index after block at %#x", ErrTruncated, pos)
		}
		if stream[pos] == 0 { // index indicator: no more blocks
			break
		}
		var err error
		out, pos, err = xzBlock(stream, pos, check, out, size)
		if err != nil {
			return nil, err
		}
	}
	if uint64(len(out)) != size {
		return nil, sizeMismatch(uint64(len(out)), size)
	}
	return out, nil
}

// xzBlock decodes the block at pos, appending to out, and returns the
// position of what follows it.
func xzBlock(stream []byte, pos int, check byte, out []byte, size uint64) ([]byte, int, error) {
	start := pos
	hsize := (int(stream[pos]) + 1) * 4
	if hsize > len(stream)-pos {
		return nil, 0, fmt.Errorf("%w: block header at %#x", ErrTruncated, pos)
	}
	hdr := stream[pos : pos+hsize]
	if crc32.ChecksumIEEE(hdr[:hsize-4]) != binary.LittleEndian.Uint32(hdr[hsize-4:]) {
		return nil, 0, fmt.Errorf("%w: block header CRC32 at %#x", ErrCorrupt, pos)
	}
	r := bytes.NewReader(hdr[2 : hsize-4])
	bflags := hdr[1]
	if bflags&0x3c != 0 {
		return nil, 0, fmt.Errorf("%w: block flags %#x", ErrCorrupt, bflags)
	}
	if bflags&0x40 != 0 { // compressed size: only skipped, the LZMA2 end marker ends the data
		if _, err := binary.ReadUvarint(r); err != nil {
			return nil, 0, fmt.Errorf("%w: block compressed size", ErrCorrupt)
		}
	}
	if bflags&0x80 != 0 {
		if _, err := binary.ReadUvarint(r); err != nil {
			return nil, 0, fmt.Errorf("%w: block uncompressed size", ErrCorrupt)
		}
	}
	var (
		bcj      bool
		bcjStart uint32
		dictProp = -1
	)
	nfilters := int(bflags&3) + 1
	for i := range nfilters {
		id, err1 := binary.ReadUvarint(r)
		psize, err2 := binary.ReadUvarint(r)
		if err1 != nil || err2 != nil || psize > uint64(r.Len()) {
			return nil, 0, fmt.Errorf("%w: filter flags in block at %#x", ErrCorrupt, start)
		}
		props := make([]byte, psize)
		_, _ = r.Read(props) // length checked above
		last := i == nfilters-1
		switch {
		case id == xzFilterLZMA2 && last && psize == 1:
			dictProp = int(props[0])
		case id == xzFilterX86 && !last && !bcj && (psize == 0 || psize == 4):
			bcj = true
			if psize == 4 {
				bcjStart = binary.LittleEndian.Uint32(props)
			}
		default:
			return nil, 0, fmt.Errorf("%w: xz filter %#x (only x86 BCJ + LZMA2)", ErrUnsupported, id)
		}
	}
	if dictProp < 0 {
		return nil, 0, fmt.Errorf("%w: block at %#x has no LZMA2 filter", ErrUnsupported, start)
	}
	dict, err := lzma.DecodeDictCap(byte(dictProp))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: LZMA2 dictionary property %#x", ErrCorrupt, dictProp)
	}
	// A dictionary larger than the whole output is never needed; capping
	// it keeps a hostile header from allocating gigabytes.
	dict = max(min(dict, int64(size)), lzma.MinDictCap)
	pos += hsize

	data := bytes.NewReader(stream[pos:])
	lr, err := lzma.Reader2Config{DictCap: int(dict)}.NewReader2(data)
	if err != nil {
		return nil, 0, corrupt(err)
	}
	blockStart := len(out)
	room := size - uint64(len(out))
	buf := bytes.NewBuffer(out)
	n, err := buf.ReadFrom(io.LimitReader(lr, int64(room)+1))
	if err != nil {
		return nil, 0, corrupt(err)
	}
	out = buf.Bytes()
	if uint64(n) > room {
		return nil, 0, sizeMismatch(uint64(len(out)), size)
	}
	// bytes.Reader is an io.ByteReader, so the LZMA2 decoder consumed
	// exactly the compressed data and stopped at its end marker.
	pos += len(stream) - pos - data.Len()
	block := out[blockStart:]
	if bcj {
		unBCJx86(block, bcjStart)
	}
	// Block padding to a multiple of four, then the check.
	for (pos-start)%4 != 0 {
		if pos >= len(stream) || stream[pos] != 0 {
			return nil, 0, fmt.Errorf("%w: block padding at %#x", ErrCorrupt, pos)
		}
		pos++
	}
	cs := xzCheckSize(check)
	if cs > len(stream)-pos {
		return nil, 0, fmt.Errorf("%w: block check at %#x", ErrTruncated, pos)
	}
	if err := xzVerify(check, block, stream[pos:pos+cs]); err != nil {
		return nil, 0, err
	}
	return out, pos + cs, nil
}

func xzVerify(check byte, data, sum []byte) error {
	var ok bool
	switch check {
	case xzCheckNone:
		ok = true
	case xzCheckCRC32:
		ok = crc32.ChecksumIEEE(data) == binary.LittleEndian.Uint32(sum)
	case xzCheckCRC64:
		ok = crc64.Checksum(data, crc64Table) == binary.LittleEndian.Uint64(sum)
	case xzCheckSHA256:
		h := sha256.Sum256(data)
		ok = bytes.Equal(h[:], sum)
	default:
		// Reserved check IDs: the spec lets a decoder skip what it
		// cannot verify; the exact output size still has to match.
		ok = true
	}
	if !ok {
		return fmt.Errorf("%w: block check (type %#x) mismatch", ErrCorrupt, check)
	}
	return nil
}

// unBCJx86 undoes the x86 branch converter on a whole block in place. The
// encoder turned the rel32 of E8 (call) and E9 (jmp) into absolute targets
// where the rel32's top byte is 00 or FF; decoding subtracts the position
// again. prevMask remembers which of the three bytes before the current one
// were E8/E9 opcodes, because an opcode byte inside a converted operand must
// not be taken for another instruction — the encoder skipped those the same
// way. The last four bytes are never converted.
func unBCJx86(buf []byte, start uint32) {
	if len(buf) <= 4 {
		return
	}
	// Whether an operand may be converted given the E8/E9 bytes in the
	// three before it, and which operand byte then has to be checked.
	allowed := [8]bool{true, true, true, false, true, false, false, false}
	bitNum := [8]uint32{0, 1, 2, 2, 3, 3, 3, 3}
	msByte := func(b byte) bool { return b == 0x00 || b == 0xff }

	var prevMask uint32
	prevPos := -1
	end := len(buf) - 4
	for i := 0; i < end; i++ {
		if buf[i]&0xfe != 0xe8 {
			continue
		}
		dist := i - prevPos
		if dist > 3 {
			prevMask = 0
		} else {
			prevMask = (prevMask << (dist - 1)) & 7
			if prevMask != 0 {
				b := buf[i+4-int(bitNum[prevMask])]
				if !allowed[prevMask] || msByte(b) {
					prevPos = i
					prevMask = prevMask<<1 | 1
					continue
				}
			}
		}
		prevPos = i
		if !msByte(buf[i+4]) {
			prevMask = prevMask<<1 | 1
			continue
		}
		src := binary.LittleEndian.Uint32(buf[i+1:])
		var dest uint32
		for {
			dest = src - (start + uint32(i) + 5)
			if prevMask == 0 {
				break
			}
			j := bitNum[prevMask] * 8
			if !msByte(byte(dest >> (24 - j))) {
				break
			}
			src = dest ^ (1<<(32-j) - 1)
		}
		// Sign-extend bit 24 into the top byte.
		dest &= 0x01ff_ffff
		dest |= -(dest & 0x0100_0000)
		binary.LittleEndian.PutUint32(buf[i+1:], dest)
		i += 4
	}
}
