package vmm

import (
	"errors"
	"fmt"
	"sync/atomic"

	"kvmstack/vmm/devices"
	"kvmstack/vmm/kvm"
)

// EmulationError is a KVM internal error: most often an instruction the
// host's KVM could not emulate (on kvm_pvm, any privileged guest code it
// does not know). The machine stops; the error says where and what.
type EmulationError struct {
	VCPU     int
	RIP      uint64
	Suberror kvm.InternalErrorSuberror
	Bytes    []byte
	Data     []uint64
}

func (e *EmulationError) Error() string {
	if len(e.Bytes) > 0 {
		return fmt.Sprintf("vCPU %d: KVM cannot emulate the instruction at RIP %#x (bytes % x), suberror %v",
			e.VCPU, e.RIP, e.Bytes, e.Suberror)
	}
	return fmt.Sprintf("vCPU %d: KVM internal error %v at RIP %#x, data %#x", e.VCPU, e.Suberror, e.RIP, e.Data)
}

// ErrEntryFailed wraps KVM_EXIT_FAIL_ENTRY: the vCPU state was refused by
// the hardware, a VMM bug rather than a guest one.
var ErrEntryFailed = errors.New("VM entry failed")

// vcpuState is what exit handling needs from a vCPU besides the exit
// itself; *kvm.VCPU implements it, tests fake it.
type vcpuState interface {
	ID() int
	GetRegs() (kvm.Regs, error)
	SetRegs(kvm.Regs) error
	GetVCPUEvents() (kvm.VCPUEvents, error)
	SetVCPUEvents(kvm.VCPUEvents) error
}

// exitStats counts exits by kind; read by metrics and benchmarks.
type exitStats struct {
	io, mmio, unhandledIO, unhandledMMIO, int3Fixups, other atomic.Uint64
	// interrupted counts KVM_RUN returning EINTR (kicks and signals).
	interrupted atomic.Uint64
}

// exitHandler routes decoded exits. It holds no vCPU: everything it needs
// is passed in, so it is tested with fake exits and a fake vCPU.
type exitHandler struct {
	pio   *devices.Bus
	mmio  *devices.Bus
	stats *exitStats
}

// verdict is what the vCPU loop does after an exit.
type verdict struct {
	stop    bool
	outcome Outcome
	err     error
}

var resume = verdict{}

func (h *exitHandler) handle(v vcpuState, e kvm.Exit) verdict {
	switch e := e.(type) {
	case kvm.IOExit:
		h.stats.io.Add(1)
		h.portIO(e)
		return resume
	case kvm.MMIOExit:
		h.stats.mmio.Add(1)
		var ok bool
		if e.Write {
			ok = h.mmio.Write(e.Addr, e.Data)
		} else {
			ok = h.mmio.Read(e.Addr, e.Data)
		}
		if !ok {
			h.stats.unhandledMMIO.Add(1)
		}
		return resume
	case kvm.IntrExit, kvm.HLTExit, kvm.IRQWindowOpenExit:
		// HLT only exits without an in-kernel LAPIC, which vmm always
		// has; treat a stray one like a spurious wake-up.
		h.stats.other.Add(1)
		return resume
	case kvm.ShutdownExit:
		return verdict{stop: true, outcome: OutcomeCrash, err: fmt.Errorf("vCPU %d: triple fault", v.ID())}
	case kvm.SystemEventExit:
		switch e.Type {
		case kvm.SystemEventShutdown:
			return verdict{stop: true, outcome: OutcomePowerOff}
		case kvm.SystemEventReset:
			return verdict{stop: true, outcome: OutcomeReset}
		case kvm.SystemEventCrash:
			return verdict{stop: true, outcome: OutcomeCrash, err: fmt.Errorf("vCPU %d: KVM reported a guest crash", v.ID())}
		}
		return verdict{stop: true, outcome: OutcomeError, err: fmt.Errorf("vCPU %d: unexpected system event %v", v.ID(), e.Type)}
	case kvm.InternalErrorExit:
		return h.internalError(v, e)
	case kvm.FailEntryExit:
		return verdict{stop: true, outcome: OutcomeError,
			err: fmt.Errorf("vCPU %d: %w: hardware reason %#x on CPU %d", v.ID(), ErrEntryFailed, e.Reason, e.CPU)}
	}
	return verdict{stop: true, outcome: OutcomeError, err: fmt.Errorf("vCPU %d: unhandled exit %v", v.ID(), e.Kind())}
}

// portIO performs each element of a (possibly rep) port access in turn.
func (h *exitHandler) portIO(e kvm.IOExit) {
	size := int(e.Size)
	if size == 0 {
		return
	}
	for off := 0; off+size <= len(e.Data); off += size {
		chunk := e.Data[off : off+size]
		var ok bool
		if e.In {
			ok = h.pio.Read(uint64(e.Port), chunk)
		} else {
			ok = h.pio.Write(uint64(e.Port), chunk)
		}
		if !ok {
			h.stats.unhandledIO.Add(1)
		}
	}
}

// internalError applies the int3 fixup and stops on anything else. KVM's
// instruction emulator (which runs all guest kernel code on kvm_pvm)
// cannot emulate int3 in 64-bit mode, yet Linux uses it at boot and for
// live patching: stepping over the byte and injecting #BP is exactly what
// the CPU would have done, trap-style, with RIP after the instruction. On
// hardware KVM this exit never happens, so the fixup costs nothing there.
func (h *exitHandler) internalError(v vcpuState, e kvm.InternalErrorExit) verdict {
	regs, err := v.GetRegs()
	if err != nil {
		return verdict{stop: true, outcome: OutcomeError, err: err}
	}
	insn, _ := e.InstructionBytes()
	if len(insn) == 1 && insn[0] == 0xcc {
		if err := injectBreakpoint(v, regs); err != nil {
			return verdict{stop: true, outcome: OutcomeError, err: err}
		}
		h.stats.int3Fixups.Add(1)
		return resume
	}
	return verdict{stop: true, outcome: OutcomeError,
		err: &EmulationError{VCPU: v.ID(), RIP: regs.RIP, Suberror: e.Suberror, Bytes: insn, Data: e.Data}}
}

func injectBreakpoint(v vcpuState, regs kvm.Regs) error {
	ev, err := v.GetVCPUEvents()
	if err != nil {
		return err
	}
	if ev.Exception.Injected != 0 || ev.Exception.Pending != 0 {
		return fmt.Errorf("vCPU %d: int3 at RIP %#x while exception %d is already pending", v.ID(), regs.RIP, ev.Exception.Nr)
	}
	regs.RIP++
	if err := v.SetRegs(regs); err != nil {
		return err
	}
	ev.Exception.Injected = 1
	ev.Exception.Nr = kvm.BPVector
	ev.Exception.HasErrorCode = 0
	ev.Exception.ErrorCode = 0
	// Only the exception is ours to set: the other optional members keep
	// what KVM_GET_VCPU_EVENTS said.
	ev.Flags = 0
	return v.SetVCPUEvents(ev)
}
