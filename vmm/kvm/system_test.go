package kvm

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestOpenMissingDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kvm")
	_, err := Open(path)
	if !errors.Is(err, ErrNoKVM) || !errors.Is(err, unix.ENOENT) {
		t.Fatalf("Open(%s) = %v, want ErrNoKVM wrapping ENOENT", path, err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("error %q does not name the path", err)
	}
}

// TestOpenNotKVM opens a device that is not KVM: the first ioctl must fail
// with an error naming it, not be ignored.
func TestOpenNotKVM(t *testing.T) {
	_, err := Open("/dev/null")
	if err == nil {
		t.Fatal("Open(/dev/null) succeeded")
	}
	if errors.Is(err, ErrNoKVM) || !strings.Contains(err.Error(), "KVM_GET_API_VERSION") || !errors.Is(err, unix.ENOTTY) {
		t.Fatalf("Open(/dev/null) = %v, want KVM_GET_API_VERSION: ENOTTY", err)
	}
}

// notKVM returns handles whose fd is /dev/null, so every ioctl fails with
// ENOTTY; each wrapper must return that error wrapped with its ioctl name.
func notKVM(t *testing.T) (*System, *VM, *VCPU) {
	t.Helper()
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	fd := int(f.Fd())
	return &System{fd: fd, mmapSize: RunPageSize}, &VM{fd: fd, mmapSize: RunPageSize},
		&VCPU{fd: fd, run: make([]byte, RunPageSize), xsaveSize: XSaveSize}
}

func TestIoctlErrorsNamed(t *testing.T) {
	sys, vm, v := notKVM(t)
	tests := []struct {
		name string
		f    func() error
	}{
		{"KVM_GET_API_VERSION", func() error { _, err := sys.APIVersion(); return err }},
		{"KVM_CHECK_EXTENSION", func() error { _, err := sys.CheckExtension(CapIRQChip); return err }},
		{"KVM_GET_SUPPORTED_CPUID", func() error { _, err := sys.SupportedCPUID(); return err }},
		{"KVM_GET_MSR_INDEX_LIST", func() error { _, err := sys.MSRIndexList(); return err }},
		{"KVM_GET_MSR_FEATURE_INDEX_LIST", func() error { _, err := sys.FeatureMSRIndexList(); return err }},
		{"KVM_CREATE_VM", func() error { _, err := sys.CreateVM(); return err }},
		{"KVM_SET_USER_MEMORY_REGION", func() error { return vm.SetUserMemoryRegion(UserspaceMemoryRegion{}) }},
		{"KVM_CREATE_IRQCHIP", vm.CreateIRQChip},
		{"KVM_CREATE_PIT2", func() error { return vm.CreatePIT2(PITConfig{}) }},
		{"KVM_SET_TSS_ADDR", func() error { return vm.SetTSSAddr(0xfffbd000) }},
		{"KVM_SET_IDENTITY_MAP_ADDR", func() error { return vm.SetIdentityMapAddr(0xfeffc000) }},
		{"KVM_IRQ_LINE", func() error { return vm.IRQLine(4, true) }},
		{"KVM_IOEVENTFD", func() error { return vm.IOEventFD(IOEventFD{}) }},
		{"KVM_IRQFD", func() error { return vm.IRQFD(IRQFD{}) }},
		{"KVM_SET_GSI_ROUTING", func() error { return vm.SetGSIRouting(nil) }},
		{"KVM_SIGNAL_MSI", func() error { _, err := vm.SignalMSI(MSI{}); return err }},
		{"KVM_GET_CLOCK", func() error { _, err := vm.GetClock(); return err }},
		{"KVM_SET_CLOCK", func() error { return vm.SetClock(ClockData{}) }},
		{"KVM_GET_IRQCHIP", func() error { _, err := vm.GetIRQChip(IRQChipIOAPIC); return err }},
		{"KVM_SET_IRQCHIP", func() error { return vm.SetIRQChip(IRQChip{}) }},
		{"KVM_GET_PIT2", func() error { _, err := vm.GetPIT2(); return err }},
		{"KVM_SET_PIT2", func() error { return vm.SetPIT2(PITState2{}) }},
		{"KVM_ENABLE_CAP", func() error { return vm.EnableCap(CapX2APICAPI, 0, 3) }},
		{"KVM_CREATE_VCPU", func() error { _, err := vm.CreateVCPU(0); return err }},
		{"KVM_RUN", v.Run},
		{"KVM_GET_REGS", func() error { _, err := v.GetRegs(); return err }},
		{"KVM_SET_REGS", func() error { return v.SetRegs(Regs{}) }},
		{"KVM_GET_SREGS", func() error { _, err := v.GetSregs(); return err }},
		{"KVM_SET_SREGS", func() error { return v.SetSregs(Sregs{}) }},
		{"KVM_GET_FPU", func() error { _, err := v.GetFPU(); return err }},
		{"KVM_SET_FPU", func() error { return v.SetFPU(FPU{}) }},
		{"KVM_GET_XSAVE", func() error { _, err := v.GetXSave(); return err }},
		{"KVM_SET_XSAVE", func() error { return v.SetXSave(&XSave{}) }},
		{"KVM_GET_XCRS", func() error { _, err := v.GetXCRS(); return err }},
		{"KVM_SET_XCRS", func() error { return v.SetXCRS(XCRs{}) }},
		{"KVM_GET_MSRS", func() error { return v.GetMSRs([]MSREntry{{Index: 0x10}}) }},
		{"KVM_SET_MSRS", func() error { return v.SetMSRs([]MSREntry{{Index: 0x10}}) }},
		{"KVM_SET_CPUID2", func() error { return v.SetCPUID2([]CPUIDEntry2{{}}) }},
		{"KVM_GET_CPUID2", func() error { _, err := v.GetCPUID2(); return err }},
		{"KVM_GET_LAPIC", func() error { _, err := v.GetLAPIC(); return err }},
		{"KVM_SET_LAPIC", func() error { return v.SetLAPIC(LAPICState{}) }},
		{"KVM_GET_MP_STATE", func() error { _, err := v.GetMPState(); return err }},
		{"KVM_SET_MP_STATE", func() error { return v.SetMPState(MPStateRunnable) }},
		{"KVM_GET_VCPU_EVENTS", func() error { _, err := v.GetVCPUEvents(); return err }},
		{"KVM_SET_VCPU_EVENTS", func() error { return v.SetVCPUEvents(VCPUEvents{}) }},
		{"KVM_TRANSLATE", func() error { _, err := v.Translate(0x1000); return err }},
		{"KVM_INTERRUPT", func() error { return v.Interrupt(0x20) }},
		{"KVM_NMI", v.NMI},
		{"KVM_GET_TSC_KHZ", func() error { _, err := v.TSCKHz(); return err }},
		{"KVM_SET_TSC_KHZ", func() error { return v.SetTSCKHz(1000000) }},
		{"KVM_KVMCLOCK_CTRL", v.KVMClockCtrl},
		{"KVM_ENABLE_CAP", func() error { return v.EnableCap(CapHLT, 0) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.f()
			if err == nil {
				t.Fatal("succeeded on /dev/null")
			}
			if !strings.HasPrefix(err.Error(), tc.name) || !errors.Is(err, unix.ENOTTY) {
				t.Fatalf("err = %v, want %s: ...ENOTTY", err, tc.name)
			}
		})
	}
}

func TestEnableCapTooManyArgs(t *testing.T) {
	_, vm, _ := notKVM(t)
	if err := vm.EnableCap(CapX2APICAPI, 0, 1, 2, 3, 4, 5); err == nil || errors.Is(err, unix.ENOTTY) {
		t.Fatalf("err = %v, want an argument-count error before any ioctl", err)
	}
}

func TestSetXSaveTooLarge(t *testing.T) {
	_, _, v := notKVM(t)
	err := v.SetXSave(&XSave{Extra: make([]uint32, 1)})
	if err == nil || errors.Is(err, unix.ENOTTY) {
		t.Fatalf("err = %v, want a size error before any ioctl", err)
	}
}

func TestRunPageAccessors(t *testing.T) {
	v := &VCPU{run: make([]byte, RunPageSize)}
	v.RequestInterruptWindow(true)
	v.SetImmediateExit(true)
	if v.run[0] != 1 || v.run[1] != 1 {
		t.Fatalf("run[0:2] = % x, want 01 01", v.run[:2])
	}
	v.SetImmediateExit(false)
	if v.run[0] != 1 || v.run[1] != 0 {
		t.Fatalf("clearing immediate_exit touched request_interrupt_window: % x", v.run[:2])
	}
	v.run[runOffReadyForInjection], v.run[runOffIFFlag] = 1, 1
	if !v.ReadyForInterruptInjection() || !v.IFFlag() {
		t.Fatal("ready_for_interrupt_injection/if_flag not read")
	}

	if err := EncodeExit(v.run, IOExit{Port: 0x3f8, Size: 1, Count: 1, Data: []byte{'h'}}); err != nil {
		t.Fatal(err)
	}
	if v.ExitReason() != ExitIO {
		t.Fatalf("ExitReason = %v", v.ExitReason())
	}
	io, err := v.IO()
	if err != nil || io.Port != 0x3f8 || string(io.Data) != "h" {
		t.Fatalf("IO() = %+v, %v", io, err)
	}
	if _, err := v.MMIO(); err == nil {
		t.Fatal("MMIO() accepted an IO exit")
	}

	for _, e := range []Exit{
		MMIOExit{Addr: 0xd0000000, Len: 2, Data: []byte{1, 2}},
		InternalErrorExit{Suberror: InternalErrorEmulation, Data: []uint64{0}},
		SystemEventExit{Type: SystemEventShutdown, Data: []uint64{}},
		FailEntryExit{Reason: 33, CPU: 1},
	} {
		if err := EncodeExit(v.run, e); err != nil {
			t.Fatal(err)
		}
		var got Exit
		switch e.(type) {
		case MMIOExit:
			got, err = v.MMIO()
		case InternalErrorExit:
			got, err = v.Internal()
		case SystemEventExit:
			got, err = v.SystemEvent()
		case FailEntryExit:
			got, err = v.FailEntry()
		}
		if err != nil || got.Kind() != e.Kind() {
			t.Fatalf("accessor for %T: %#v, %v", e, got, err)
		}
		if _, err := v.IO(); err == nil {
			t.Fatalf("IO() accepted a %v exit", e.Kind())
		}
	}
}

func TestMSRErrorMessage(t *testing.T) {
	err := error(&MSRError{Op: "KVM_SET_MSRS", Index: 0x10a, Done: 2, Total: 5})
	if got := err.Error(); got != "KVM_SET_MSRS: MSR 0x10a refused (2 of 5 done)" {
		t.Fatalf("Error() = %q", got)
	}
	var me *MSRError
	if !errors.As(err, &me) || me.Index != 0x10a {
		t.Fatal("errors.As failed")
	}
}

func TestKick(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	v := &VCPU{run: make([]byte, RunPageSize)}
	if err := v.Kick(); err != nil || v.run[runOffImmediateExit] != 1 {
		t.Fatalf("Kick before any Run: %v, immediate_exit %d", err, v.run[runOffImmediateExit])
	}
	v.SetImmediateExit(false)
	// A vCPU thread that is this test's own: the SIGURG must be delivered
	// without harm and immediate_exit set.
	v.tid.Store(int32(unix.Gettid()))
	if err := v.Kick(); err != nil || v.run[runOffImmediateExit] != 1 {
		t.Fatalf("Kick: %v, immediate_exit %d", err, v.run[runOffImmediateExit])
	}
}
