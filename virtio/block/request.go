package block

import (
	"encoding/binary"
	"errors"
	"fmt"

	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

// Request types (virtio 1.2 5.2.6).
const (
	TypeIn          uint32 = 0
	TypeOut         uint32 = 1
	TypeFlush       uint32 = 4
	TypeGetID       uint32 = 8
	TypeDiscard     uint32 = 11
	TypeWriteZeroes uint32 = 13
)

// Request status values, the last byte of every request.
const (
	StatusOK     uint8 = 0
	StatusIOErr  uint8 = 1
	StatusUnsupp uint8 = 2
)

const (
	// SectorSize is the unit of capacity and of request sectors, whatever
	// the block size.
	SectorSize  = 512
	sectorShift = 9
	// headerSize is struct virtio_blk_req's fixed part: type, reserved,
	// sector.
	headerSize = 16
	// segmentSize is struct virtio_blk_discard_write_zeroes.
	segmentSize = 16
	// IDSize is the length of the GET_ID answer.
	IDSize = 20
	// segmentFlagUnmap is the only defined discard/write-zeroes flag.
	segmentFlagUnmap = 1
)

// Errors a parsed request carries. ErrNoStatus means the chain has no byte
// the device could write a status into: the guest broke the protocol and the
// device must be marked broken. The others become a status for the guest.
var (
	ErrNoStatus    = errors.New("virtio-blk: request has no writable status byte")
	ErrBadRequest  = errors.New("virtio-blk: malformed request")
	ErrUnsupported = errors.New("virtio-blk: unsupported request")
	ErrOutOfRange  = errors.New("virtio-blk: request beyond the disk's capacity")
	ErrReadOnly    = errors.New("virtio-blk: write to a read-only disk")
)

// Segment is one range of a discard or write-zeroes request, in bytes.
type Segment struct {
	Offset int64
	Length int64
	Unmap  bool
}

// Request is one parsed, checked request. Data aliases guest RAM: for reads
// the buffers to fill, for writes the bytes to store (without header and
// status byte), in chain order.
type Request struct {
	Type     uint32
	Offset   int64 // byte offset on the disk (sector << 9)
	Data     [][]byte
	Segments []Segment
	// Status is the guest byte that receives the request's status.
	Status []byte
}

// DataLen is the total length of Data.
func (r *Request) DataLen() int { return total(r.Data) }

// limits are what the device offers and the parser enforces.
type limits struct {
	capacity       uint64 // sectors
	readOnly       bool
	features       uint64 // negotiated device feature bits
	maxDiscardSecs uint32
	maxDiscardSegs uint32
	maxZeroesSecs  uint32
	maxZeroesSegs  uint32
}

// parseRequest splits a chain into a Request. The returned Request has a
// Status byte whenever the error is not ErrNoStatus, so the caller can
// always answer: with StatusUnsupp for ErrUnsupported, else StatusIOErr.
func parseRequest(mem *memory.Memory, c *virtio.Chain, l *limits) (*Request, error) {
	readable, err := c.Buffers(mem, false)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoStatus, err)
	}
	writable, err := c.Buffers(mem, true)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoStatus, err)
	}
	// The status is the chain's last writable byte (5.2.6: "u8 status"
	// follows the data); Buffers drops empty buffers, so the last one
	// has at least that byte.
	if len(writable) == 0 {
		return nil, ErrNoStatus
	}
	last := writable[len(writable)-1]
	r := &Request{Status: last[len(last)-1:]}
	writable[len(writable)-1] = last[:len(last)-1]
	if len(writable[len(writable)-1]) == 0 {
		writable = writable[:len(writable)-1]
	}

	var hdr [headerSize]byte
	rest, ok := take(readable, hdr[:])
	if !ok {
		return r, fmt.Errorf("%w: header of %d bytes, want %d", ErrBadRequest, total(readable), headerSize)
	}
	r.Type = binary.LittleEndian.Uint32(hdr[0:])
	sector := binary.LittleEndian.Uint64(hdr[8:])

	mutating := r.Type == TypeOut || r.Type == TypeDiscard || r.Type == TypeWriteZeroes
	if mutating && l.readOnly {
		return r, ErrReadOnly
	}
	switch r.Type {
	case TypeIn, TypeOut:
		in := r.Type == TypeIn
		if in {
			r.Data = writable
			if total(rest) != 0 {
				return r, fmt.Errorf("%w: read request with %d device-readable data bytes", ErrBadRequest, total(rest))
			}
		} else {
			r.Data = rest
			if total(writable) != 0 {
				return r, fmt.Errorf("%w: write request with %d device-writable data bytes", ErrBadRequest, total(writable))
			}
		}
		n := uint64(total(r.Data))
		if n%SectorSize != 0 {
			return r, fmt.Errorf("%w: data length %d is not a multiple of %d", ErrBadRequest, n, SectorSize)
		}
		if err := inRange(sector, n>>sectorShift, l.capacity); err != nil {
			return r, err
		}
		r.Offset = int64(sector << sectorShift)
	case TypeFlush:
		if l.features&FeatureFlush == 0 {
			return r, fmt.Errorf("%w: flush not negotiated", ErrUnsupported)
		}
	case TypeGetID:
		if total(rest) != 0 {
			return r, fmt.Errorf("%w: GET_ID with %d device-readable data bytes", ErrBadRequest, total(rest))
		}
		r.Data = writable
	case TypeDiscard, TypeWriteZeroes:
		feature, maxSecs, maxSegs := FeatureDiscard, l.maxDiscardSecs, l.maxDiscardSegs
		if r.Type == TypeWriteZeroes {
			feature, maxSecs, maxSegs = FeatureWriteZeroes, l.maxZeroesSecs, l.maxZeroesSegs
		}
		if l.features&feature == 0 {
			return r, fmt.Errorf("%w: request type %d not negotiated", ErrUnsupported, r.Type)
		}
		if total(writable) != 0 {
			return r, fmt.Errorf("%w: %d device-writable data bytes", ErrBadRequest, total(writable))
		}
		n := total(rest)
		if n == 0 || n%segmentSize != 0 {
			return r, fmt.Errorf("%w: %d bytes of segments", ErrBadRequest, n)
		}
		if uint64(n/segmentSize) > uint64(maxSegs) {
			return r, fmt.Errorf("%w: %d segments, at most %d", ErrUnsupported, n/segmentSize, maxSegs)
		}
		segs, err := parseSegments(rest, r.Type, maxSecs, l)
		r.Segments = segs
		if err != nil {
			return r, err
		}
	default:
		return r, fmt.Errorf("%w: request type %d", ErrUnsupported, r.Type)
	}
	return r, nil
}

// parseSegments decodes and checks discard/write-zeroes ranges.
func parseSegments(bufs [][]byte, typ uint32, maxSecs uint32, l *limits) ([]Segment, error) {
	segs := make([]Segment, 0, total(bufs)/segmentSize)
	var raw [segmentSize]byte
	for {
		var ok bool
		if bufs, ok = take(bufs, raw[:]); !ok {
			return segs, nil
		}
		sector := binary.LittleEndian.Uint64(raw[0:])
		num := binary.LittleEndian.Uint32(raw[8:])
		flags := binary.LittleEndian.Uint32(raw[12:])
		switch {
		case flags&^segmentFlagUnmap != 0:
			return segs, fmt.Errorf("%w: segment flags %#x", ErrUnsupported, flags)
		case typ == TypeDiscard && flags&segmentFlagUnmap != 0:
			// 5.2.6.2: the unmap flag is reserved for discard.
			return segs, fmt.Errorf("%w: unmap flag on a discard", ErrUnsupported)
		case num > maxSecs:
			return segs, fmt.Errorf("%w: segment of %d sectors, at most %d", ErrBadRequest, num, maxSecs)
		}
		if err := inRange(sector, uint64(num), l.capacity); err != nil {
			return segs, err
		}
		segs = append(segs, Segment{Offset: int64(sector << sectorShift), Length: int64(num) << sectorShift, Unmap: flags&segmentFlagUnmap != 0})
	}
}

// inRange checks sectors [sector, sector+n) against the capacity without
// overflowing.
func inRange(sector, n, capacity uint64) error {
	if sector > capacity || n > capacity-sector {
		return fmt.Errorf("%w: sectors %d+%d, capacity %d", ErrOutOfRange, sector, n, capacity)
	}
	return nil
}

// take copies len(dst) bytes from the front of bufs into dst and returns the
// remaining buffers (sharing bufs' memory), or false when bufs is shorter.
func take(bufs [][]byte, dst []byte) ([][]byte, bool) {
	n := 0
	for n < len(dst) {
		if len(bufs) == 0 {
			return nil, false
		}
		c := copy(dst[n:], bufs[0])
		n += c
		if c == len(bufs[0]) {
			bufs = bufs[1:]
		} else {
			rest := append([][]byte{bufs[0][c:]}, bufs[1:]...)
			bufs = rest
		}
	}
	return bufs, true
}
