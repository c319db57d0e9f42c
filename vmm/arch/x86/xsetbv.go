package x86

import (
	"errors"
	"fmt"
	"runtime"

	"kvmstack/vmm/kvm"
	"kvmstack/vmm/memory"
)

// probeTSSAddr is the three-page area Intel KVM needs for its real-mode
// TSS; it lies in the hole, above anything the probe maps.
const probeTSSAddr = 0xFFFB_D000

// ProbeXSETBV runs a throw-away guest that enables OSXSAVE and sets XCR0 to
// the x87, SSE and (if supported) AVX state, then asks KVM for the guest's
// XCR0. It reports whether the xsetbv reached KVM: true on hardware KVM
// and whenever the host offers no XSAVE; false where the instruction is
// lost (kvm-amd nested under QEMU's TCG), which HostProfile.BrokenXSETBV
// records. It takes a few milliseconds on hardware KVM. Call it only when
// the profile is not Emulating: that profile removes XSAVE anyway, and its
// instruction emulator need not run xsetbv (the probe would then fail with
// an error naming the exit).
func ProbeXSETBV(sys *kvm.System) (bool, error) {
	supported, err := sys.SupportedCPUID()
	if err != nil {
		return false, fmt.Errorf("probe xsetbv: %w", err)
	}
	const (
		xsaveBit = 1 << 26
		xcr0SSE  = 0x3 // x87 | SSE
		xcr0AVX  = 0x4
	)
	var hasXSAVE bool
	xcr0 := uint64(xcr0SSE)
	for _, e := range supported {
		if e.Function == leafFeatures {
			hasXSAVE = e.ECX&xsaveBit != 0
		}
		if e.Function == leafXSAVE && e.Index == 0 && e.EAX&xcr0AVX != 0 {
			xcr0 |= xcr0AVX
		}
	}
	if !hasXSAVE {
		return true, nil
	}
	got, err := runXSETBVGuest(sys, supported, xcr0)
	if err != nil {
		return false, fmt.Errorf("probe xsetbv: %w", err)
	}
	return got == xcr0, nil
}

// xsetbvGuest enables CR4.OSXSAVE, runs xsetbv(0, EDX:EAX) with the value
// preloaded in RAX, and halts.
var xsetbvGuest = []byte{
	0x48, 0x89, 0xC3, // mov rbx, rax
	0x0F, 0x20, 0xE0, // mov rax, cr4
	0x48, 0x0D, 0x00, 0x00, 0x04, 0x00, // or rax, 1 << 18 (OSXSAVE)
	0x0F, 0x22, 0xE0, // mov cr4, rax
	0x48, 0x89, 0xD8, // mov rax, rbx
	0x31, 0xD2, // xor edx, edx
	0x31, 0xC9, // xor ecx, ecx
	0x0F, 0x01, 0xD1, // xsetbv
	0xF4, // hlt
}

// runXSETBVGuest returns the XCR0 KVM holds after the guest set xcr0.
func runXSETBVGuest(sys *kvm.System, supported []kvm.CPUIDEntry2, xcr0 uint64) (uint64, error) {
	// KVM_RUN and the vCPU's state must stay on one OS thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	mem, err := memory.New(memory.MinSize)
	if err != nil {
		return 0, err
	}
	defer mem.Close()
	vm, err := sys.CreateVM()
	if err != nil {
		return 0, err
	}
	defer vm.Close()
	if err := vm.SetTSSAddr(probeTSSAddr); err != nil {
		return 0, err
	}
	r := mem.Regions()[0]
	if err := vm.SetUserMemoryRegion(kvm.UserspaceMemoryRegion{
		GuestPhysAddr: uint64(r.Start), MemorySize: r.Size(), UserspaceAddr: uint64(r.HostAddr()),
	}); err != nil {
		return 0, err
	}
	if err := WriteGDT(mem); err != nil {
		return 0, err
	}
	if err := WritePageTables(mem); err != nil {
		return 0, err
	}
	if err := mem.WriteAt(xsetbvGuest, KernelLoadAddr); err != nil {
		return 0, err
	}
	cpu, err := vm.CreateVCPU(0)
	if err != nil {
		return 0, err
	}
	defer cpu.Close()
	if err := cpu.SetCPUID2(ShapeCPUID(supported, Topology{CPUs: 1}, HostProfile{})); err != nil {
		return 0, err
	}
	sregs, err := cpu.GetSregs()
	if err != nil {
		return 0, err
	}
	LongModeSregs(&sregs)
	if err := cpu.SetSregs(sregs); err != nil {
		return 0, err
	}
	regs := LongModeRegs(uint64(KernelLoadAddr), 0)
	regs.RAX = xcr0
	if err := cpu.SetRegs(regs); err != nil {
		return 0, err
	}
	for range 100 {
		err := cpu.Run()
		if errors.Is(err, kvm.ErrInterrupted) {
			continue
		}
		if err != nil {
			return 0, err
		}
		e, err := cpu.Exit()
		if err != nil {
			return 0, err
		}
		if _, ok := e.(kvm.HLTExit); !ok {
			return 0, fmt.Errorf("probe guest stopped with %#v instead of halting", e)
		}
		xcrs, err := cpu.GetXCRS()
		if err != nil {
			return 0, err
		}
		for _, x := range xcrs.XCRs[:min(int(xcrs.NrXCRs), len(xcrs.XCRs))] {
			if x.XCR == 0 {
				return x.Value, nil
			}
		}
		return 0, errors.New("KVM_GET_XCRS has no XCR0")
	}
	return 0, errors.New("probe guest interrupted 100 times in a row")
}
