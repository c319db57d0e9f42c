package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Byte offsets inside struct kvm_run (x86-64). The layout test checks each
// against offsetof() from the installed headers.
const (
	runOffRequestInterruptWindow = 0
	runOffImmediateExit          = 1
	runOffExitReason             = 8
	runOffReadyForInjection      = 12
	runOffIFFlag                 = 13
	runOffFlags                  = 14
	runOffCR8                    = 16
	runOffAPICBase               = 24
	runOffExit                   = 32 // start of the exit union

	runOffHWExitReason = runOffExit // hw.hardware_exit_reason

	runOffFailEntryReason = runOffExit     // fail_entry.hardware_entry_failure_reason
	runOffFailEntryCPU    = runOffExit + 8 // fail_entry.cpu

	runOffExException = runOffExit     // ex.exception
	runOffExErrorCode = runOffExit + 4 // ex.error_code

	runOffIODirection  = runOffExit     // io.direction
	runOffIOSize       = runOffExit + 1 // io.size
	runOffIOPort       = runOffExit + 2 // io.port
	runOffIOCount      = runOffExit + 4 // io.count
	runOffIODataOffset = runOffExit + 8 // io.data_offset

	runOffMMIOPhysAddr = runOffExit      // mmio.phys_addr
	runOffMMIOData     = runOffExit + 8  // mmio.data
	runOffMMIOLen      = runOffExit + 16 // mmio.len
	runOffMMIOIsWrite  = runOffExit + 20 // mmio.is_write

	runOffInternalSuberror = runOffExit     // internal.suberror
	runOffInternalNData    = runOffExit + 4 // internal.ndata
	runOffInternalData     = runOffExit + 8 // internal.data

	runOffEmulationFlags    = runOffExit + 8  // emulation_failure.flags
	runOffEmulationInsnSize = runOffExit + 16 // emulation_failure.insn_size

	runOffSystemEventType  = runOffExit     // system_event.type
	runOffSystemEventNData = runOffExit + 4 // system_event.ndata
	runOffSystemEventData  = runOffExit + 8 // system_event.data / flags

	runExitUnionSize = 256
	// runMinSize is the prefix of kvm_run that DecodeExit needs: the
	// header plus the whole exit union.
	runMinSize = runOffExit + runExitUnionSize

	// runSize is sizeof(struct kvm_run) on x86-64.
	runSize = 2352

	// maxInternalData is the length of internal.data[] and system_event.data[].
	maxInternalData = 16
	// maxInsnBytes is the length of emulation_failure.insn_bytes.
	maxInsnBytes = 15
)

// ErrBadRun reports a kvm_run page whose contents are inconsistent (an I/O
// buffer outside the mapping, an MMIO length above 8, a page too short).
// KVM never produces these; seeing one means a corrupt or fake page.
var ErrBadRun = errors.New("malformed kvm_run")

// Exit is one decoded KVM_RUN exit. The concrete types are IOExit,
// MMIOExit, HLTExit, ShutdownExit, InternalErrorExit, SystemEventExit,
// FailEntryExit, ExceptionExit, IRQWindowOpenExit, IntrExit and
// UnknownExit.
type Exit interface {
	// Kind is the kvm_run exit_reason the value was decoded from.
	Kind() ExitReason
}

// IOExit is KVM_EXIT_IO: a port I/O instruction (possibly rep ins/outs,
// then Count > 1). Data aliases the vCPU's run mapping: for an OUT it holds
// the bytes written; for an IN the handler fills it before the next
// KVM_RUN. len(Data) == Size*Count.
type IOExit struct {
	Port  uint16
	Size  uint8
	In    bool
	Count uint32
	Data  []byte
}

// MMIOExit is KVM_EXIT_MMIO: an access to guest-physical memory with no
// memory slot. Data aliases the run mapping (len(Data) == Len); for a read
// the handler fills it before the next KVM_RUN.
type MMIOExit struct {
	Addr  uint64
	Data  []byte
	Len   uint32
	Write bool
}

// HLTExit is KVM_EXIT_HLT: the vCPU halted with no in-kernel LAPIC to wait on.
type HLTExit struct{}

// ShutdownExit is KVM_EXIT_SHUTDOWN: on x86 a triple fault.
type ShutdownExit struct{}

// IRQWindowOpenExit is KVM_EXIT_IRQ_WINDOW_OPEN: the guest can take an
// interrupt (only when RequestInterruptWindow was set).
type IRQWindowOpenExit struct{}

// IntrExit is KVM_EXIT_INTR: KVM_RUN left because a signal was pending or
// immediate_exit was set.
type IntrExit struct{}

// InternalErrorExit is KVM_EXIT_INTERNAL_ERROR. Data is internal.data[]
// limited to ndata entries (at most 16).
type InternalErrorExit struct {
	Suberror InternalErrorSuberror
	Data     []uint64
}

// InstructionBytes returns the bytes of the instruction KVM failed to
// emulate, when the suberror is InternalErrorEmulation and KVM supplied
// them (flags bit 0 in data[0]; insn_size and up to 15 bytes in data[1:3]).
func (e InternalErrorExit) InstructionBytes() ([]byte, bool) {
	if e.Suberror != InternalErrorEmulation || len(e.Data) < 3 || e.Data[0]&EmulationFlagInstructionBytes == 0 {
		return nil, false
	}
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], e.Data[1])
	binary.LittleEndian.PutUint64(b[8:], e.Data[2])
	n := int(b[0])
	if n == 0 || n > maxInsnBytes {
		return nil, false
	}
	out := make([]byte, n)
	copy(out, b[1:1+n])
	return out, true
}

// SystemEventExit is KVM_EXIT_SYSTEM_EVENT (PSCI/ACPI-style shutdown,
// reset, crash). Flags is the legacy flags word (data[0]); Data is
// data[:ndata] when KVM_CAP_SYSTEM_EVENT_DATA is in effect.
type SystemEventExit struct {
	Type  SystemEventType
	Flags uint64
	Data  []uint64
}

// FailEntryExit is KVM_EXIT_FAIL_ENTRY: hardware refused VM entry (invalid
// guest state). Reason is the VMX/SVM failure code.
type FailEntryExit struct {
	Reason uint64
	CPU    uint32
}

// ExceptionExit is KVM_EXIT_EXCEPTION.
type ExceptionExit struct {
	Exception uint32
	ErrorCode uint32
}

// UnknownExit is any exit this package does not decode further, and
// KVM_EXIT_UNKNOWN itself, whose hardware exit reason is HardwareReason.
type UnknownExit struct {
	Reason         ExitReason
	HardwareReason uint64
}

// Kind implements Exit.
func (IOExit) Kind() ExitReason { return ExitIO }

// Kind implements Exit.
func (MMIOExit) Kind() ExitReason { return ExitMMIO }

// Kind implements Exit.
func (HLTExit) Kind() ExitReason { return ExitHLT }

// Kind implements Exit.
func (ShutdownExit) Kind() ExitReason { return ExitShutdown }

// Kind implements Exit.
func (IRQWindowOpenExit) Kind() ExitReason { return ExitIRQWindowOpen }

// Kind implements Exit.
func (IntrExit) Kind() ExitReason { return ExitIntr }

// Kind implements Exit.
func (InternalErrorExit) Kind() ExitReason { return ExitInternalError }

// Kind implements Exit.
func (SystemEventExit) Kind() ExitReason { return ExitSystemEvent }

// Kind implements Exit.
func (FailEntryExit) Kind() ExitReason { return ExitFailEntry }

// Kind implements Exit.
func (ExceptionExit) Kind() ExitReason { return ExitException }

// Kind implements Exit.
func (u UnknownExit) Kind() ExitReason { return u.Reason }

// DecodeExit decodes the exit recorded in a kvm_run mapping. It never
// panics: every offset and length taken from the page is checked against
// len(run), and slices it returns alias run.
func DecodeExit(run []byte) (Exit, error) {
	if len(run) < runMinSize {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrBadRun, len(run), runMinSize)
	}
	le := binary.LittleEndian
	reason := ExitReason(le.Uint32(run[runOffExitReason:]))
	switch reason {
	case ExitIO:
		return decodeIO(run)
	case ExitMMIO:
		n := le.Uint32(run[runOffMMIOLen:])
		if n > 8 {
			return nil, fmt.Errorf("%w: MMIO length %d above 8", ErrBadRun, n)
		}
		return MMIOExit{
			Addr:  le.Uint64(run[runOffMMIOPhysAddr:]),
			Data:  run[runOffMMIOData : runOffMMIOData+int(n) : runOffMMIOData+int(n)],
			Len:   n,
			Write: run[runOffMMIOIsWrite] != 0,
		}, nil
	case ExitHLT:
		return HLTExit{}, nil
	case ExitShutdown:
		return ShutdownExit{}, nil
	case ExitIRQWindowOpen:
		return IRQWindowOpenExit{}, nil
	case ExitIntr:
		return IntrExit{}, nil
	case ExitInternalError:
		return InternalErrorExit{
			Suberror: InternalErrorSuberror(le.Uint32(run[runOffInternalSuberror:])),
			Data:     readU64s(run, runOffInternalData, le.Uint32(run[runOffInternalNData:])),
		}, nil
	case ExitSystemEvent:
		return SystemEventExit{
			Type:  SystemEventType(le.Uint32(run[runOffSystemEventType:])),
			Flags: le.Uint64(run[runOffSystemEventData:]),
			Data:  readU64s(run, runOffSystemEventData, le.Uint32(run[runOffSystemEventNData:])),
		}, nil
	case ExitFailEntry:
		return FailEntryExit{
			Reason: le.Uint64(run[runOffFailEntryReason:]),
			CPU:    le.Uint32(run[runOffFailEntryCPU:]),
		}, nil
	case ExitException:
		return ExceptionExit{
			Exception: le.Uint32(run[runOffExException:]),
			ErrorCode: le.Uint32(run[runOffExErrorCode:]),
		}, nil
	case ExitUnknown:
		return UnknownExit{Reason: reason, HardwareReason: le.Uint64(run[runOffHWExitReason:])}, nil
	}
	return UnknownExit{Reason: reason}, nil
}

func decodeIO(run []byte) (IOExit, error) {
	le := binary.LittleEndian
	dir := run[runOffIODirection]
	size := run[runOffIOSize]
	count := le.Uint32(run[runOffIOCount:])
	off := le.Uint64(run[runOffIODataOffset:])
	if dir != ExitIOIn && dir != ExitIOOut {
		return IOExit{}, fmt.Errorf("%w: I/O direction %d", ErrBadRun, dir)
	}
	if size != 1 && size != 2 && size != 4 {
		return IOExit{}, fmt.Errorf("%w: I/O size %d", ErrBadRun, size)
	}
	if count == 0 {
		return IOExit{}, fmt.Errorf("%w: I/O count 0", ErrBadRun)
	}
	// size ≤ 4 and count < 2^32, so n fits in uint64 without overflow;
	// off is compared before adding to keep the sum from wrapping.
	n := uint64(size) * uint64(count)
	if off > uint64(len(run)) || n > uint64(len(run))-off {
		return IOExit{}, fmt.Errorf("%w: I/O data [%#x, +%d) outside the %d-byte run mapping", ErrBadRun, off, n, len(run))
	}
	return IOExit{
		Port:  le.Uint16(run[runOffIOPort:]),
		Size:  size,
		In:    dir == ExitIOIn,
		Count: count,
		Data:  run[off : off+n : off+n],
	}, nil
}

// readU64s copies min(ndata, 16) little-endian words starting at off.
// ndata comes from the page, so it is clamped to the array KVM declares;
// runMinSize guarantees the 16 words are inside run.
func readU64s(run []byte, off int, ndata uint32) []uint64 {
	n := int(min(ndata, maxInternalData))
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(run[off+8*i:])
	}
	return out
}
