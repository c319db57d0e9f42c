package kvm

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// These tests need a real /dev/kvm and skip, saying so, where there is none.

func openKVM(tb testing.TB) *System {
	tb.Helper()
	s, err := Open("")
	if errors.Is(err, ErrNoKVM) {
		tb.Skipf("%v", err) // ErrNoKVM: "no /dev/kvm: open ..."
	}
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Error(err)
		}
	})
	return s
}

const guestMemSize = 0x10000

// realModeGuest creates a VM with 64 KiB of RAM at 0, copies code to
// 0x1000, and points vCPU 0 at it in real mode.
func realModeGuest(tb testing.TB, sys *System, code []byte, irqchip bool) (*VM, *VCPU) {
	tb.Helper()
	vm, err := sys.CreateVM()
	if err != nil {
		tb.Fatal(err)
	}
	mem, err := unix.Mmap(-1, 0, guestMemSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		vm.Close()
		tb.Fatal(err)
	}
	var v *VCPU
	tb.Cleanup(func() {
		if v != nil {
			if err := v.Close(); err != nil {
				tb.Error(err)
			}
		}
		if err := vm.Close(); err != nil {
			tb.Error(err)
		}
		if err := unix.Munmap(mem); err != nil {
			tb.Error(err)
		}
	})
	copy(mem[0x1000:], code)
	if err := vm.SetTSSAddr(0xfffb_d000); err != nil {
		tb.Fatal(err)
	}
	if irqchip {
		if err := vm.CreateIRQChip(); err != nil {
			tb.Fatal(err)
		}
	}
	if err := vm.SetUserMemoryRegion(UserspaceMemoryRegion{
		Slot: 0, GuestPhysAddr: 0, MemorySize: guestMemSize,
		UserspaceAddr: uint64(uintptr(unsafe.Pointer(&mem[0]))),
	}); err != nil {
		tb.Fatal(err)
	}
	v, err = vm.CreateVCPU(0)
	if err != nil {
		tb.Fatal(err)
	}
	sregs, err := v.GetSregs()
	if err != nil {
		tb.Fatal(err)
	}
	sregs.CS.Base, sregs.CS.Selector = 0, 0
	if err := v.SetSregs(sregs); err != nil {
		tb.Fatal(err)
	}
	if err := v.SetRegs(Regs{RIP: 0x1000, RFLAGS: 0x2}); err != nil {
		tb.Fatal(err)
	}
	return vm, v
}

// runToExit enters the guest until it exits for a reason other than a
// stray signal, and decodes the exit.
func runToExit(tb testing.TB, v *VCPU) Exit {
	tb.Helper()
	for range 1000 {
		err := v.Run()
		if errors.Is(err, ErrInterrupted) {
			continue
		}
		if err != nil {
			tb.Fatal(err)
		}
		e, err := v.Exit()
		if err != nil {
			tb.Fatal(err)
		}
		return e
	}
	tb.Fatal("KVM_RUN interrupted 1000 times in a row")
	return nil
}

func TestRealModeGuestExits(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sys := openKVM(t)
	code := []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'K', // mov al, 'K'
		0xee, // out dx, al
		0xec, // in al, dx
		0xee, // out dx, al   (echoes what the IN returned)
		0xf4, // hlt
	}
	_, v := realModeGuest(t, sys, code, false)

	e := runToExit(t, v)
	io, ok := e.(IOExit)
	if !ok || io.In || io.Port != 0x3f8 || io.Size != 1 || io.Count != 1 || string(io.Data) != "K" {
		t.Fatalf("exit 1 = %#v, want OUT 'K' to 0x3f8", e)
	}
	e = runToExit(t, v)
	io, ok = e.(IOExit)
	if !ok || !io.In || io.Port != 0x3f8 || len(io.Data) != 1 {
		t.Fatalf("exit 2 = %#v, want IN from 0x3f8", e)
	}
	io.Data[0] = 'Z'
	e = runToExit(t, v)
	io, ok = e.(IOExit)
	if !ok || io.In || string(io.Data) != "Z" {
		t.Fatalf("exit 3 = %#v, want OUT 'Z' (the value the IN returned)", e)
	}
	if e = runToExit(t, v); e.Kind() != ExitHLT {
		t.Fatalf("exit 4 = %#v, want HLT", e)
	}
	regs, err := v.GetRegs()
	if err != nil {
		t.Fatal(err)
	}
	if regs.RIP != 0x1000+uint64(len(code)) || regs.RAX&0xff != 'Z' {
		t.Fatalf("after HLT: RIP %#x RAX %#x, want RIP %#x AL 'Z'", regs.RIP, regs.RAX, 0x1000+len(code))
	}
}

func TestImmediateExit(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sys := openKVM(t)
	if n, err := sys.CheckExtension(CapImmediateExit); err != nil || n == 0 {
		t.Skipf("KVM_CAP_IMMEDIATE_EXIT not supported (%d, %v)", n, err)
	}
	_, v := realModeGuest(t, sys, []byte{0xf4}, false)
	v.SetImmediateExit(true)
	if err := v.Run(); !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Run with immediate_exit = %v, want ErrInterrupted", err)
	}
	v.SetImmediateExit(false)
	if e := runToExit(t, v); e.Kind() != ExitHLT {
		t.Fatalf("exit = %#v, want HLT", e)
	}
}

// TestKickStopsRunningGuest interrupts a guest spinning in `jmp $` from
// another goroutine, the way pause and stop do.
func TestKickStopsRunningGuest(t *testing.T) {
	sys := openKVM(t)
	_, v := realModeGuest(t, sys, []byte{0xeb, 0xfe}, false)
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		for {
			err := v.Run()
			if errors.Is(err, ErrInterrupted) {
				if v.RunData()[runOffImmediateExit] == 1 {
					done <- nil
					return
				}
				continue // a stray signal, not the kick
			}
			if err == nil {
				e, derr := v.Exit()
				err = fmt.Errorf("unexpected exit %#v (%v)", e, derr)
			}
			done <- err
			return
		}
	}()
	time.Sleep(50 * time.Millisecond)
	// The first Run records the thread; kick until the goroutine answers
	// so a kick racing that first entry is covered by immediate_exit.
	deadline := time.After(10 * time.Second)
	for {
		if err := v.Kick(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("vCPU still running 10 s after Kick")
		}
	}
}

func TestSystemQueries(t *testing.T) {
	sys := openKVM(t)
	if v, err := sys.APIVersion(); err != nil || v != APIVersion {
		t.Fatalf("APIVersion = %d, %v", v, err)
	}
	if n, err := sys.CheckExtension(CapUserMemory); err != nil || n == 0 {
		t.Fatalf("CheckExtension(CapUserMemory) = %d, %v", n, err)
	}
	if sys.VCPUMmapSize() < runSize {
		t.Fatalf("VCPUMmapSize = %d", sys.VCPUMmapSize())
	}
	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if len(cpuid) == 0 || cpuid[0].Function != 0 || cpuid[0].EAX == 0 {
		t.Fatalf("SupportedCPUID: %d entries, first %+v", len(cpuid), cpuid)
	}
	msrs, err := sys.MSRIndexList()
	if err != nil || len(msrs) == 0 {
		t.Fatalf("MSRIndexList = %d entries, %v", len(msrs), err)
	}
	if n, _ := sys.CheckExtension(CapGetMSRFeatures); n > 0 {
		if _, err := sys.FeatureMSRIndexList(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestVCPUStateRoundTrips(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sys := openKVM(t)
	vm, v := realModeGuest(t, sys, []byte{0xf4}, true)

	cpuid, err := sys.SupportedCPUID()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetCPUID2(cpuid); err != nil {
		t.Fatal(err)
	}
	if got, err := v.GetCPUID2(); err != nil || len(got) != len(cpuid) {
		t.Fatalf("GetCPUID2: %d entries, %v; set %d", len(got), err, len(cpuid))
	}

	const sysenterCS = 0x174
	if err := v.SetMSRs([]MSREntry{{Index: sysenterCS, Data: 0x10}}); err != nil {
		t.Fatal(err)
	}
	got := []MSREntry{{Index: sysenterCS}}
	if err := v.GetMSRs(got); err != nil || got[0].Data != 0x10 {
		t.Fatalf("GetMSRs = %+v, %v", got, err)
	}
	if b, err := os.ReadFile("/sys/module/kvm/parameters/ignore_msrs"); err == nil && strings.TrimSpace(string(b)) == "N" {
		err := v.SetMSRs([]MSREntry{{Index: sysenterCS, Data: 0x8}, {Index: 0xdead_beef, Data: 1}})
		var me *MSRError
		if !errors.As(err, &me) || me.Index != 0xdead_beef || me.Done != 1 {
			t.Fatalf("SetMSRs with a bogus MSR = %v, want *MSRError naming 0xdeadbeef", err)
		}
	}

	fpu, err := v.GetFPU()
	if err != nil {
		t.Fatal(err)
	}
	fpu.FCW = 0x27f
	fpu.XMM[0][0] = 0x55
	if err := v.SetFPU(fpu); err != nil {
		t.Fatal(err)
	}
	if f2, err := v.GetFPU(); err != nil || f2.FCW != 0x27f || f2.XMM[0][0] != 0x55 {
		t.Fatalf("GetFPU after set: FCW %#x XMM0[0] %#x, %v", f2.FCW, f2.XMM[0][0], err)
	}
	if n, _ := sys.CheckExtension(CapXSave); n > 0 {
		// MXCSR only travels through xsave (KVM_GET/SET_FPU skip it).
		x, err := v.GetXSave()
		if err != nil {
			t.Fatal(err)
		}
		const mxcsrWord, xstateBVWord, sse = 6, 128, 1 << 1
		x.Region[mxcsrWord] = 0x1fa0
		x.Region[xstateBVWord] |= sse
		if err := v.SetXSave(x); err != nil {
			t.Fatal(err)
		}
		if x2, err := v.GetXSave(); err != nil || x2.Region[mxcsrWord] != 0x1fa0 {
			t.Fatalf("MXCSR after SetXSave = %#x, %v", x2.Region[mxcsrWord], err)
		}
	}
	if n, _ := sys.CheckExtension(CapXCRS); n > 0 {
		x, err := v.GetXCRS()
		if err != nil {
			t.Fatal(err)
		}
		if err := v.SetXCRS(x); err != nil {
			t.Fatal(err)
		}
	}

	lapic, err := v.GetLAPIC()
	if err != nil {
		t.Fatal(err)
	}
	lapic.SetReg32(0x350, 0x700) // LVT LINT0: ExtINT
	if err := v.SetLAPIC(lapic); err != nil {
		t.Fatal(err)
	}
	if l2, err := v.GetLAPIC(); err != nil {
		t.Fatal(err)
	} else if r, _ := l2.Reg32(0x350); r&0x700 != 0x700 {
		t.Fatalf("LVT0 after SetLAPIC = %#x", r)
	}

	if mp, err := v.GetMPState(); err != nil || mp != MPStateRunnable {
		t.Fatalf("GetMPState = %d, %v", mp, err)
	}
	if err := v.SetMPState(MPStateRunnable); err != nil {
		t.Fatal(err)
	}
	ev, err := v.GetVCPUEvents()
	if err != nil {
		t.Fatal(err)
	}
	if err := v.SetVCPUEvents(ev); err != nil {
		t.Fatal(err)
	}
	if tr, err := v.Translate(0x1000); err != nil || tr.Valid == 0 || tr.PhysicalAddress != 0x1000 {
		t.Fatalf("Translate(0x1000) in real mode = %+v, %v", tr, err)
	}

	chip, err := vm.GetIRQChip(IRQChipIOAPIC)
	if err != nil {
		t.Fatal(err)
	}
	if base := chip.IOAPIC().BaseAddress; base != 0xfec0_0000 {
		t.Fatalf("IOAPIC base %#x", base)
	}
	if err := vm.SetIRQChip(chip); err != nil {
		t.Fatal(err)
	}
	if err := vm.CreatePIT2(PITConfig{Flags: PITSpeakerDummy}); err != nil {
		t.Fatal(err)
	}
	pit, err := vm.GetPIT2()
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.SetPIT2(pit); err != nil {
		t.Fatal(err)
	}
	clk, err := vm.GetClock()
	if err != nil {
		t.Fatal(err)
	}
	if err := vm.SetClock(ClockData{Clock: clk.Clock}); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQLine(4, true); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQLine(4, false); err != nil {
		t.Fatal(err)
	}

	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	iev := IOEventFD{Addr: 0x5000, Len: 2, FD: int32(efd), Flags: IOEventFDFlagPIO}
	if err := vm.IOEventFD(iev); err != nil {
		t.Fatal(err)
	}
	iev.Flags |= IOEventFDFlagDeassign
	if err := vm.IOEventFD(iev); err != nil {
		t.Fatal(err)
	}
	routes := []IRQRoutingEntry{
		NewIRQRoutingIRQChip(4, IRQRoutingIRQChip{IRQChip: IRQChipIOAPIC, Pin: 4}),
		NewIRQRoutingMSI(24, IRQRoutingMSI{AddressLo: 0xfee0_0000, Data: 0x41}),
	}
	if err := vm.SetGSIRouting(routes); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQFD(IRQFD{FD: uint32(efd), GSI: 24}); err != nil {
		t.Fatal(err)
	}
	if err := vm.IRQFD(IRQFD{FD: uint32(efd), GSI: 24, Flags: IRQFDFlagDeassign}); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.SignalMSI(MSI{AddressLo: 0xfee0_0000, Data: 0x41}); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkIOExitRoundTrip measures one KVM_RUN round trip for a port
// write: the guest loops on `out dx, al`.
func BenchmarkIOExitRoundTrip(b *testing.B) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	sys := openKVM(b)
	code := []byte{
		0xba, 0xf8, 0x03, // mov dx, 0x3f8
		0xb0, 'K', // mov al, 'K'
		0xee,       // out dx, al
		0xeb, 0xfd, // jmp back to the out
	}
	_, v := realModeGuest(b, sys, code, false)
	b.ResetTimer()
	for range b.N {
		if e := runToExit(b, v); e.Kind() != ExitIO {
			b.Fatalf("exit %#v, want IO", e)
		}
	}
}
