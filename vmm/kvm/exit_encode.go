package kvm

import (
	"encoding/binary"
	"fmt"
)

// PIODataOffset is where KVM places port I/O data in the vCPU mapping
// (KVM_PIO_PAGE_OFFSET pages after kvm_run).
const PIODataOffset = 1 * 4096

// RunPageSize is a run mapping size large enough for EncodeExit to place
// any single-page I/O exit: the kvm_run page plus the PIO page.
const RunPageSize = 2 * 4096

// EncodeExit writes e into run the way KVM would, so exit handling can be
// tested against real page bytes without /dev/kvm; DecodeExit(run) then
// returns e again, with Data slices aliasing run. An IOExit's data goes to
// PIODataOffset.
func EncodeExit(run []byte, e Exit) error {
	if len(run) < runMinSize {
		return fmt.Errorf("%w: %d bytes, need at least %d", ErrBadRun, len(run), runMinSize)
	}
	le := binary.LittleEndian
	clear(run[runOffExit : runOffExit+runExitUnionSize])
	le.PutUint32(run[runOffExitReason:], uint32(e.Kind()))
	switch x := e.(type) {
	case IOExit:
		n := int(x.Size) * int(x.Count)
		if len(x.Data) != n {
			return fmt.Errorf("IOExit: %d data bytes for size %d × count %d", len(x.Data), x.Size, x.Count)
		}
		if PIODataOffset+n > len(run) {
			return fmt.Errorf("%w: I/O data of %d bytes does not fit a %d-byte run mapping", ErrBadRun, n, len(run))
		}
		run[runOffIODirection] = ExitIOOut
		if x.In {
			run[runOffIODirection] = ExitIOIn
		}
		run[runOffIOSize] = x.Size
		le.PutUint16(run[runOffIOPort:], x.Port)
		le.PutUint32(run[runOffIOCount:], x.Count)
		le.PutUint64(run[runOffIODataOffset:], PIODataOffset)
		copy(run[PIODataOffset:], x.Data)
	case MMIOExit:
		if x.Len > 8 || int(x.Len) != len(x.Data) {
			return fmt.Errorf("MMIOExit: Len %d with %d data bytes", x.Len, len(x.Data))
		}
		le.PutUint64(run[runOffMMIOPhysAddr:], x.Addr)
		copy(run[runOffMMIOData:runOffMMIOData+8], x.Data)
		le.PutUint32(run[runOffMMIOLen:], x.Len)
		if x.Write {
			run[runOffMMIOIsWrite] = 1
		}
	case InternalErrorExit:
		if len(x.Data) > maxInternalData {
			return fmt.Errorf("InternalErrorExit: %d data words, at most %d", len(x.Data), maxInternalData)
		}
		le.PutUint32(run[runOffInternalSuberror:], uint32(x.Suberror))
		le.PutUint32(run[runOffInternalNData:], uint32(len(x.Data)))
		for i, d := range x.Data {
			le.PutUint64(run[runOffInternalData+8*i:], d)
		}
	case SystemEventExit:
		if len(x.Data) > maxInternalData {
			return fmt.Errorf("SystemEventExit: %d data words, at most %d", len(x.Data), maxInternalData)
		}
		if len(x.Data) > 0 && x.Data[0] != x.Flags {
			return fmt.Errorf("SystemEventExit: Flags %#x differs from Data[0] %#x, but they share storage", x.Flags, x.Data[0])
		}
		le.PutUint32(run[runOffSystemEventType:], uint32(x.Type))
		le.PutUint32(run[runOffSystemEventNData:], uint32(len(x.Data)))
		le.PutUint64(run[runOffSystemEventData:], x.Flags)
		for i, d := range x.Data {
			le.PutUint64(run[runOffSystemEventData+8*i:], d)
		}
	case FailEntryExit:
		le.PutUint64(run[runOffFailEntryReason:], x.Reason)
		le.PutUint32(run[runOffFailEntryCPU:], x.CPU)
	case ExceptionExit:
		le.PutUint32(run[runOffExException:], x.Exception)
		le.PutUint32(run[runOffExErrorCode:], x.ErrorCode)
	case UnknownExit:
		if x.Reason == ExitUnknown {
			le.PutUint64(run[runOffHWExitReason:], x.HardwareReason)
		} else if x.HardwareReason != 0 {
			return fmt.Errorf("UnknownExit: HardwareReason is only carried by exit reason UNKNOWN, not %v", x.Reason)
		}
	case HLTExit, ShutdownExit, IRQWindowOpenExit, IntrExit:
	default:
		return fmt.Errorf("EncodeExit: unsupported exit type %T", e)
	}
	return nil
}

// EmulationFailureData builds the internal.data words KVM reports for an
// emulation failure carrying instruction bytes (flags, then insn_size and
// up to 15 bytes), for InternalErrorExit values in tests and tools.
func EmulationFailureData(insn []byte) ([]uint64, error) {
	if len(insn) == 0 || len(insn) > maxInsnBytes {
		return nil, fmt.Errorf("instruction of %d bytes, want 1 to %d", len(insn), maxInsnBytes)
	}
	var b [16]byte
	b[0] = byte(len(insn))
	copy(b[1:], insn)
	return []uint64{
		EmulationFlagInstructionBytes,
		binary.LittleEndian.Uint64(b[0:]),
		binary.LittleEndian.Uint64(b[8:]),
	}, nil
}
