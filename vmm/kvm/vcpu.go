package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrInterrupted is returned by VCPU.Run when KVM_RUN ended with EINTR: a
// signal arrived or immediate_exit was set. The caller checks why (pause,
// stop) and calls Run again.
var ErrInterrupted = errors.New("KVM_RUN interrupted")

// VCPU is a KVM vCPU file descriptor with its mmap'd kvm_run page. Run and
// the register accessors must be called from one OS thread at a time
// (KVM binds the vCPU to the calling task while it runs);
// SetImmediateExit may be called from any goroutine.
type VCPU struct {
	fd        int
	id        int
	run       []byte
	xsaveSize int
	useXSave2 bool
	// tid is the OS thread that last entered KVM_RUN, for Kick. Zero
	// until the first Run.
	tid atomic.Int32
}

// ID returns the vCPU id passed to CreateVCPU (its initial APIC ID).
func (v *VCPU) ID() int { return v.id }

// FD returns the vCPU's file descriptor (for diagnostics; do not close it).
func (v *VCPU) FD() int { return v.fd }

// Close unmaps the run page and closes the fd.
func (v *VCPU) Close() error {
	var errs []error
	if v.run != nil {
		if err := unix.Munmap(v.run); err != nil {
			errs = append(errs, fmt.Errorf("munmap kvm_run of vCPU %d: %w", v.id, err))
		}
		v.run = nil
	}
	if v.fd >= 0 {
		if err := unix.Close(v.fd); err != nil {
			errs = append(errs, fmt.Errorf("close vCPU %d: %w", v.id, err))
		}
		v.fd = -1
	}
	return errors.Join(errs...)
}

// Run is KVM_RUN. It returns nil when the vCPU exited normally (decode the
// exit with Exit), ErrInterrupted on EINTR, and otherwise the wrapped
// errno. EAGAIN — an AP woken in wait-for-SIPI without becoming runnable —
// only means "enter again", so Run re-enters; the kernel blocks in that
// state rather than spinning, and a pending signal turns it into EINTR.
//
// Run records the calling OS thread for Kick the first time it is called,
// so the caller must hold runtime.LockOSThread for every Run of this vCPU.
func (v *VCPU) Run() error {
	if v.tid.Load() == 0 {
		v.tid.Store(int32(unix.Gettid()))
	}
	for {
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(v.fd), kvmRun, 0)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			return ErrInterrupted
		case unix.EAGAIN:
			continue
		}
		return fmt.Errorf("KVM_RUN on vCPU %d: %w", v.id, errno)
	}
}

// RunData returns the vCPU's kvm_run mapping. Writes through it are
// visible to KVM; prefer the typed accessors.
func (v *VCPU) RunData() []byte { return v.run }

// Exit decodes the last exit from the run page (see DecodeExit).
func (v *VCPU) Exit() (Exit, error) { return DecodeExit(v.run) }

// ExitReason returns kvm_run.exit_reason.
func (v *VCPU) ExitReason() ExitReason {
	return ExitReason(binary.LittleEndian.Uint32(v.run[runOffExitReason:]))
}

// IO decodes the run page as a KVM_EXIT_IO exit.
func (v *VCPU) IO() (IOExit, error) {
	if r := v.ExitReason(); r != ExitIO {
		return IOExit{}, fmt.Errorf("exit reason is %v, not IO", r)
	}
	return decodeIO(v.run)
}

// MMIO decodes the run page as a KVM_EXIT_MMIO exit.
func (v *VCPU) MMIO() (MMIOExit, error) {
	e, err := v.exitAs(ExitMMIO)
	if err != nil {
		return MMIOExit{}, err
	}
	return e.(MMIOExit), nil
}

// Internal decodes the run page as a KVM_EXIT_INTERNAL_ERROR exit.
func (v *VCPU) Internal() (InternalErrorExit, error) {
	e, err := v.exitAs(ExitInternalError)
	if err != nil {
		return InternalErrorExit{}, err
	}
	return e.(InternalErrorExit), nil
}

// SystemEvent decodes the run page as a KVM_EXIT_SYSTEM_EVENT exit.
func (v *VCPU) SystemEvent() (SystemEventExit, error) {
	e, err := v.exitAs(ExitSystemEvent)
	if err != nil {
		return SystemEventExit{}, err
	}
	return e.(SystemEventExit), nil
}

// FailEntry decodes the run page as a KVM_EXIT_FAIL_ENTRY exit.
func (v *VCPU) FailEntry() (FailEntryExit, error) {
	e, err := v.exitAs(ExitFailEntry)
	if err != nil {
		return FailEntryExit{}, err
	}
	return e.(FailEntryExit), nil
}

func (v *VCPU) exitAs(want ExitReason) (Exit, error) {
	if r := v.ExitReason(); r != want {
		return nil, fmt.Errorf("exit reason is %v, not %v", r, want)
	}
	return DecodeExit(v.run)
}

// setRunByte stores b at off (0 or 1) of the run page's first word with
// an atomic compare-and-swap, so SetImmediateExit from a signalling
// goroutine and RequestInterruptWindow from the vCPU thread never
// overwrite each other's byte and the race detector sees a synchronized
// access.
func (v *VCPU) setRunByte(off int, b bool) {
	p := (*uint32)(unsafe.Pointer(&v.run[0]))
	shift := uint(8 * off)
	for {
		old := atomic.LoadUint32(p)
		nw := old &^ (0xff << shift)
		if b {
			nw |= 1 << shift
		}
		if atomic.CompareAndSwapUint32(p, old, nw) {
			return
		}
	}
}

// SetImmediateExit sets kvm_run.immediate_exit: while set, KVM_RUN returns
// EINTR (ErrInterrupted) at once instead of entering the guest. Paired
// with a signal to the vCPU thread it stops a running vCPU without races.
func (v *VCPU) SetImmediateExit(b bool) { v.setRunByte(runOffImmediateExit, b) }

// Kick makes a running or about-to-run KVM_RUN return ErrInterrupted: it
// sets immediate_exit (so an entry that has not happened yet returns at
// once) and sends SIGURG to the vCPU's thread (so one in progress leaves
// the guest). SIGURG is the signal Go's runtime already uses for
// preemption and ignores otherwise, so no handler is needed. The vCPU
// thread clears immediate_exit with SetImmediateExit(false) when it wants
// to run the guest again.
func (v *VCPU) Kick() error {
	v.SetImmediateExit(true)
	tid := v.tid.Load()
	if tid == 0 {
		// Never entered: immediate_exit alone stops the first entry.
		return nil
	}
	if err := unix.Tgkill(unix.Getpid(), int(tid), unix.SIGURG); err != nil && err != unix.ESRCH {
		return fmt.Errorf("kick vCPU %d (thread %d): %w", v.id, tid, err)
	}
	return nil
}

// RequestInterruptWindow sets kvm_run.request_interrupt_window, asking for
// an ExitIRQWindowOpen as soon as the guest can take an interrupt (only
// meaningful without an in-kernel irqchip).
func (v *VCPU) RequestInterruptWindow(b bool) { v.setRunByte(runOffRequestInterruptWindow, b) }

// ReadyForInterruptInjection reports kvm_run.ready_for_interrupt_injection.
func (v *VCPU) ReadyForInterruptInjection() bool { return v.run[runOffReadyForInjection] != 0 }

// IFFlag reports kvm_run.if_flag (the guest's RFLAGS.IF at exit).
func (v *VCPU) IFFlag() bool { return v.run[runOffIFFlag] != 0 }

// GetRegs is KVM_GET_REGS.
func (v *VCPU) GetRegs() (Regs, error) {
	var r Regs
	if _, err := ioctlPtr(v.fd, kvmGetRegs, unsafe.Pointer(&r)); err != nil {
		return Regs{}, fmt.Errorf("KVM_GET_REGS: %w", err)
	}
	return r, nil
}

// SetRegs is KVM_SET_REGS.
func (v *VCPU) SetRegs(r Regs) error {
	if _, err := ioctlPtr(v.fd, kvmSetRegs, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("KVM_SET_REGS: %w", err)
	}
	return nil
}

// GetSregs is KVM_GET_SREGS.
func (v *VCPU) GetSregs() (Sregs, error) {
	var s Sregs
	if _, err := ioctlPtr(v.fd, kvmGetSregs, unsafe.Pointer(&s)); err != nil {
		return Sregs{}, fmt.Errorf("KVM_GET_SREGS: %w", err)
	}
	return s, nil
}

// SetSregs is KVM_SET_SREGS.
func (v *VCPU) SetSregs(s Sregs) error {
	if _, err := ioctlPtr(v.fd, kvmSetSregs, unsafe.Pointer(&s)); err != nil {
		return fmt.Errorf("KVM_SET_SREGS: %w", err)
	}
	return nil
}

// GetFPU is KVM_GET_FPU. KVM leaves MXCSR out of both KVM_GET_FPU and
// KVM_SET_FPU (FPU.MXCSR reads 0 and writes are dropped; measured on
// kvm-amd), so MXCSR is read and set through GetXSave/SetXSave (Region[6]).
func (v *VCPU) GetFPU() (FPU, error) {
	var f FPU
	if _, err := ioctlPtr(v.fd, kvmGetFPU, unsafe.Pointer(&f)); err != nil {
		return FPU{}, fmt.Errorf("KVM_GET_FPU: %w", err)
	}
	return f, nil
}

// SetFPU is KVM_SET_FPU; FPU.MXCSR is ignored by KVM (see GetFPU).
func (v *VCPU) SetFPU(f FPU) error {
	if _, err := ioctlPtr(v.fd, kvmSetFPU, unsafe.Pointer(&f)); err != nil {
		return fmt.Errorf("KVM_SET_FPU: %w", err)
	}
	return nil
}

// XSaveSize returns the xsave buffer size this vCPU uses: 4096, or the
// larger size KVM_CAP_XSAVE2 reported.
func (v *VCPU) XSaveSize() int { return v.xsaveSize }

// GetXSave is KVM_GET_XSAVE2 when the kernel has KVM_CAP_XSAVE2, else
// KVM_GET_XSAVE. Extra holds the bytes beyond 4 KiB, if any.
func (v *VCPU) GetXSave() (*XSave, error) {
	buf := alignedBuf(v.xsaveSize)
	req, name := kvmGetXSave, "KVM_GET_XSAVE"
	if v.useXSave2 {
		req, name = kvmGetXSave2, "KVM_GET_XSAVE2"
	}
	if _, err := ioctlPtr(v.fd, req, unsafe.Pointer(&buf[0])); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	x := &XSave{}
	copy(asBytes(x.Region[:]), buf)
	if extra := (v.xsaveSize - XSaveSize) / 4; extra > 0 {
		x.Extra = make([]uint32, extra)
		copy(asBytes(x.Extra), buf[XSaveSize:])
	}
	return x, nil
}

// SetXSave is KVM_SET_XSAVE. The kernel reads XSaveSize() bytes, so a
// shorter Extra is zero-filled and a longer one is an error.
func (v *VCPU) SetXSave(x *XSave) error {
	if XSaveSize+4*len(x.Extra) > v.xsaveSize {
		return fmt.Errorf("KVM_SET_XSAVE: %d bytes of state, vCPU takes %d", XSaveSize+4*len(x.Extra), v.xsaveSize)
	}
	buf := alignedBuf(v.xsaveSize)
	copy(buf, asBytes(x.Region[:]))
	copy(buf[XSaveSize:], asBytes(x.Extra))
	if _, err := ioctlPtr(v.fd, kvmSetXSave, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("KVM_SET_XSAVE: %w", err)
	}
	return nil
}

// GetXCRS is KVM_GET_XCRS.
func (v *VCPU) GetXCRS() (XCRs, error) {
	var x XCRs
	if _, err := ioctlPtr(v.fd, kvmGetXCRS, unsafe.Pointer(&x)); err != nil {
		return XCRs{}, fmt.Errorf("KVM_GET_XCRS: %w", err)
	}
	return x, nil
}

// SetXCRS is KVM_SET_XCRS.
func (v *VCPU) SetXCRS(x XCRs) error {
	if _, err := ioctlPtr(v.fd, kvmSetXCRS, unsafe.Pointer(&x)); err != nil {
		return fmt.Errorf("KVM_SET_XCRS: %w", err)
	}
	return nil
}

// GetMSRs is KVM_GET_MSRS: fills Data of every entry from its Index. A
// short count from the kernel is an error naming the first MSR not read;
// entries before it are filled.
func (v *VCPU) GetMSRs(entries []MSREntry) error {
	if len(entries) == 0 {
		return nil
	}
	buf, err := marshalMSRs(entries)
	if err != nil {
		return fmt.Errorf("KVM_GET_MSRS: %w", err)
	}
	n, err := ioctlPtr(v.fd, kvmGetMSRs, unsafe.Pointer(&buf[0]))
	if err != nil {
		return fmt.Errorf("KVM_GET_MSRS: %w", err)
	}
	got := min(int(n), len(entries))
	unmarshalMSRs(buf, entries[:got])
	if got < len(entries) {
		return &MSRError{Op: "KVM_GET_MSRS", Index: entries[got].Index, Done: got, Total: len(entries)}
	}
	return nil
}

// SetMSRs is KVM_SET_MSRS. KVM stops at the first MSR it refuses; that is
// reported as an *MSRError naming it.
func (v *VCPU) SetMSRs(entries []MSREntry) error {
	if len(entries) == 0 {
		return nil
	}
	buf, err := marshalMSRs(entries)
	if err != nil {
		return fmt.Errorf("KVM_SET_MSRS: %w", err)
	}
	n, err := ioctlPtr(v.fd, kvmSetMSRs, unsafe.Pointer(&buf[0]))
	if err != nil {
		return fmt.Errorf("KVM_SET_MSRS: %w", err)
	}
	if int(n) < len(entries) {
		return &MSRError{Op: "KVM_SET_MSRS", Index: entries[n].Index, Done: int(n), Total: len(entries)}
	}
	return nil
}

// MSRError reports a KVM_GET_MSRS/KVM_SET_MSRS that processed fewer
// entries than asked: KVM stops at the first MSR it refuses.
type MSRError struct {
	Op    string // ioctl name
	Index uint32 // first MSR not processed
	Done  int    // entries processed before it
	Total int
}

// Error names the ioctl and the refused MSR.
func (e *MSRError) Error() string {
	return fmt.Sprintf("%s: MSR %#x refused (%d of %d done)", e.Op, e.Index, e.Done, e.Total)
}

// SetCPUID2 is KVM_SET_CPUID2.
func (v *VCPU) SetCPUID2(entries []CPUIDEntry2) error {
	buf, err := marshalCPUID2(entries)
	if err != nil {
		return fmt.Errorf("KVM_SET_CPUID2: %w", err)
	}
	if _, err := ioctlPtr(v.fd, kvmSetCPUID2, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("KVM_SET_CPUID2(%d entries): %w", len(entries), err)
	}
	return nil
}

// GetCPUID2 is KVM_GET_CPUID2: the table last set on this vCPU.
func (v *VCPU) GetCPUID2() ([]CPUIDEntry2, error) {
	for n := 64; ; n *= 2 {
		buf, err := marshalCPUID2(make([]CPUIDEntry2, n))
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_CPUID2: %w", err)
		}
		_, err = ioctlPtr(v.fd, kvmGetCPUID2, unsafe.Pointer(&buf[0]))
		if errnoOf(err) == unix.E2BIG && n < maxCPUIDEntries {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_CPUID2: %w", err)
		}
		entries, err := unmarshalCPUID2(buf)
		if err != nil {
			return nil, fmt.Errorf("KVM_GET_CPUID2: %w", err)
		}
		return entries, nil
	}
}

// GetLAPIC is KVM_GET_LAPIC.
func (v *VCPU) GetLAPIC() (LAPICState, error) {
	var l LAPICState
	if _, err := ioctlPtr(v.fd, kvmGetLAPIC, unsafe.Pointer(&l)); err != nil {
		return LAPICState{}, fmt.Errorf("KVM_GET_LAPIC: %w", err)
	}
	return l, nil
}

// SetLAPIC is KVM_SET_LAPIC.
func (v *VCPU) SetLAPIC(l LAPICState) error {
	if _, err := ioctlPtr(v.fd, kvmSetLAPIC, unsafe.Pointer(&l)); err != nil {
		return fmt.Errorf("KVM_SET_LAPIC: %w", err)
	}
	return nil
}

// GetMPState is KVM_GET_MP_STATE.
func (v *VCPU) GetMPState() (MPState, error) {
	var s MPState
	if _, err := ioctlPtr(v.fd, kvmGetMPState, unsafe.Pointer(&s)); err != nil {
		return 0, fmt.Errorf("KVM_GET_MP_STATE: %w", err)
	}
	return s, nil
}

// SetMPState is KVM_SET_MP_STATE.
func (v *VCPU) SetMPState(s MPState) error {
	if _, err := ioctlPtr(v.fd, kvmSetMPState, unsafe.Pointer(&s)); err != nil {
		return fmt.Errorf("KVM_SET_MP_STATE(%d): %w", s, err)
	}
	return nil
}

// GetVCPUEvents is KVM_GET_VCPU_EVENTS.
func (v *VCPU) GetVCPUEvents() (VCPUEvents, error) {
	var e VCPUEvents
	if _, err := ioctlPtr(v.fd, kvmGetVCPUEvents, unsafe.Pointer(&e)); err != nil {
		return VCPUEvents{}, fmt.Errorf("KVM_GET_VCPU_EVENTS: %w", err)
	}
	return e, nil
}

// SetVCPUEvents is KVM_SET_VCPU_EVENTS (e.g. injecting #BP for the int3
// fixup: Exception.Injected=1, Exception.Nr=BPVector).
func (v *VCPU) SetVCPUEvents(e VCPUEvents) error {
	if _, err := ioctlPtr(v.fd, kvmSetVCPUEvents, unsafe.Pointer(&e)); err != nil {
		return fmt.Errorf("KVM_SET_VCPU_EVENTS: %w", err)
	}
	return nil
}

// Translate is KVM_TRANSLATE: walks the guest's page tables for gva.
func (v *VCPU) Translate(gva uint64) (Translation, error) {
	t := Translation{LinearAddress: gva}
	if _, err := ioctlPtr(v.fd, kvmTranslate, unsafe.Pointer(&t)); err != nil {
		return Translation{}, fmt.Errorf("KVM_TRANSLATE(%#x): %w", gva, err)
	}
	return t, nil
}

// Interrupt is KVM_INTERRUPT: queues an external interrupt vector (only
// without an in-kernel irqchip).
func (v *VCPU) Interrupt(vector uint32) error {
	if _, err := ioctlPtr(v.fd, kvmInterrupt, unsafe.Pointer(&vector)); err != nil {
		return fmt.Errorf("KVM_INTERRUPT(%d): %w", vector, err)
	}
	return nil
}

// NMI is KVM_NMI: queues an NMI.
func (v *VCPU) NMI() error {
	if _, err := ioctlVal(v.fd, kvmNMI, 0); err != nil {
		return fmt.Errorf("KVM_NMI: %w", err)
	}
	return nil
}

// TSCKHz is KVM_GET_TSC_KHZ: the guest's TSC frequency.
func (v *VCPU) TSCKHz() (uint32, error) {
	r, err := ioctlVal(v.fd, kvmGetTSCKHz, 0)
	if err != nil {
		return 0, fmt.Errorf("KVM_GET_TSC_KHZ: %w", err)
	}
	return uint32(r), nil
}

// SetTSCKHz is KVM_SET_TSC_KHZ.
func (v *VCPU) SetTSCKHz(khz uint32) error {
	if _, err := ioctlVal(v.fd, kvmSetTSCKHz, uintptr(khz)); err != nil {
		return fmt.Errorf("KVM_SET_TSC_KHZ(%d): %w", khz, err)
	}
	return nil
}

// KVMClockCtrl is KVM_KVMCLOCK_CTRL: tells the guest's kvmclock that the
// vCPU was paused by the host, so its soft-lockup watchdog does not fire.
func (v *VCPU) KVMClockCtrl() error {
	if _, err := ioctlVal(v.fd, kvmKVMClockCtrl, 0); err != nil {
		return fmt.Errorf("KVM_KVMCLOCK_CTRL: %w", err)
	}
	return nil
}

// EnableCap is KVM_ENABLE_CAP on the vCPU fd.
func (v *VCPU) EnableCap(c Cap, flags uint32, args ...uint64) error {
	ec, err := newEnableCap(c, flags, args)
	if err != nil {
		return err
	}
	if _, err := ioctlPtr(v.fd, kvmEnableCap, unsafe.Pointer(&ec)); err != nil {
		return fmt.Errorf("KVM_ENABLE_CAP(%d) on vCPU %d: %w", c, v.id, err)
	}
	return nil
}
