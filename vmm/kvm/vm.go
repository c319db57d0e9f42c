package kvm

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// VM is a KVM virtual machine file descriptor.
type VM struct {
	fd       int
	mmapSize int
}

// FD returns the VM's file descriptor (for diagnostics; do not close it).
func (vm *VM) FD() int { return vm.fd }

// Close closes the VM fd. The kernel frees the VM once every vCPU fd is
// closed too.
func (vm *VM) Close() error {
	if vm.fd < 0 {
		return nil
	}
	err := unix.Close(vm.fd)
	vm.fd = -1
	if err != nil {
		return fmt.Errorf("close VM: %w", err)
	}
	return nil
}

// CheckExtension is KVM_CHECK_EXTENSION on the VM fd, which answers for
// this VM (needed for CapXSave2's size and per-VM limits).
func (vm *VM) CheckExtension(c Cap) (int, error) {
	return checkExtension(vm.fd, c)
}

// EnableCap is KVM_ENABLE_CAP on the VM fd.
func (vm *VM) EnableCap(c Cap, flags uint32, args ...uint64) error {
	ec, err := newEnableCap(c, flags, args)
	if err != nil {
		return err
	}
	if _, err := ioctlPtr(vm.fd, kvmEnableCap, unsafe.Pointer(&ec)); err != nil {
		return fmt.Errorf("KVM_ENABLE_CAP(%d): %w", c, err)
	}
	return nil
}

func newEnableCap(c Cap, flags uint32, args []uint64) (EnableCap, error) {
	ec := EnableCap{Cap: c, Flags: flags}
	if len(args) > len(ec.Args) {
		return ec, fmt.Errorf("KVM_ENABLE_CAP(%d): %d args, at most %d", c, len(args), len(ec.Args))
	}
	copy(ec.Args[:], args)
	return ec, nil
}

// SetUserMemoryRegion is KVM_SET_USER_MEMORY_REGION: maps host memory at
// r.UserspaceAddr into guest-physical r.GuestPhysAddr as slot r.Slot.
func (vm *VM) SetUserMemoryRegion(r UserspaceMemoryRegion) error {
	if _, err := ioctlPtr(vm.fd, kvmSetUserMemoryRegion, unsafe.Pointer(&r)); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION(slot %d, gpa %#x, size %#x): %w", r.Slot, r.GuestPhysAddr, r.MemorySize, err)
	}
	return nil
}

// CreateIRQChip is KVM_CREATE_IRQCHIP: in-kernel PICs, IOAPIC and LAPICs.
// It must precede CreateVCPU.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctlVal(vm.fd, kvmCreateIRQChip, 0); err != nil {
		return fmt.Errorf("KVM_CREATE_IRQCHIP: %w", err)
	}
	return nil
}

// CreatePIT2 is KVM_CREATE_PIT2: the in-kernel i8254.
func (vm *VM) CreatePIT2(c PITConfig) error {
	if _, err := ioctlPtr(vm.fd, kvmCreatePIT2, unsafe.Pointer(&c)); err != nil {
		return fmt.Errorf("KVM_CREATE_PIT2: %w", err)
	}
	return nil
}

// SetTSSAddr is KVM_SET_TSS_ADDR: three pages of guest-physical space VMX
// needs for real-mode emulation; they must not overlap RAM or MMIO.
func (vm *VM) SetTSSAddr(addr uint64) error {
	if _, err := ioctlVal(vm.fd, kvmSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("KVM_SET_TSS_ADDR(%#x): %w", addr, err)
	}
	return nil
}

// SetIdentityMapAddr is KVM_SET_IDENTITY_MAP_ADDR: one page for the
// EPT identity map VMX uses in unpaged modes.
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	if _, err := ioctlPtr(vm.fd, kvmSetIdentityMapAddr, unsafe.Pointer(&addr)); err != nil {
		return fmt.Errorf("KVM_SET_IDENTITY_MAP_ADDR(%#x): %w", addr, err)
	}
	return nil
}

// IRQLine is KVM_IRQ_LINE: sets GSI irq to level (edge interrupts need a
// raise then a lower).
func (vm *VM) IRQLine(irq uint32, level bool) error {
	l := irqLevel{IRQ: irq}
	if level {
		l.Level = 1
	}
	if _, err := ioctlPtr(vm.fd, kvmIRQLine, unsafe.Pointer(&l)); err != nil {
		return fmt.Errorf("KVM_IRQ_LINE(%d, %t): %w", irq, level, err)
	}
	return nil
}

// IOEventFD is KVM_IOEVENTFD (assign, or deassign with IOEventFDFlagDeassign).
func (vm *VM) IOEventFD(e IOEventFD) error {
	if _, err := ioctlPtr(vm.fd, kvmIOEventFD, unsafe.Pointer(&e)); err != nil {
		return fmt.Errorf("KVM_IOEVENTFD(addr %#x, len %d): %w", e.Addr, e.Len, err)
	}
	return nil
}

// IRQFD is KVM_IRQFD (assign, or deassign with IRQFDFlagDeassign).
func (vm *VM) IRQFD(f IRQFD) error {
	if _, err := ioctlPtr(vm.fd, kvmIRQFD, unsafe.Pointer(&f)); err != nil {
		return fmt.Errorf("KVM_IRQFD(fd %d, gsi %d): %w", f.FD, f.GSI, err)
	}
	return nil
}

// SetGSIRouting is KVM_SET_GSI_ROUTING. It replaces the whole table, so
// entries must include the default irqchip routes the VM still needs.
func (vm *VM) SetGSIRouting(entries []IRQRoutingEntry) error {
	buf, err := marshalIRQRouting(entries)
	if err != nil {
		return fmt.Errorf("KVM_SET_GSI_ROUTING: %w", err)
	}
	if _, err := ioctlPtr(vm.fd, kvmSetGSIRouting, unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("KVM_SET_GSI_ROUTING(%d entries): %w", len(entries), err)
	}
	return nil
}

// SignalMSI is KVM_SIGNAL_MSI: injects one MSI directly. It returns
// whether the interrupt was delivered (false: the guest blocked it).
func (vm *VM) SignalMSI(m MSI) (bool, error) {
	r, err := ioctlPtr(vm.fd, kvmSignalMSI, unsafe.Pointer(&m))
	if err != nil {
		return false, fmt.Errorf("KVM_SIGNAL_MSI(addr %#x, data %#x): %w", uint64(m.AddressHi)<<32|uint64(m.AddressLo), m.Data, err)
	}
	return r > 0, nil
}

// GetClock is KVM_GET_CLOCK: the VM's kvmclock time base.
func (vm *VM) GetClock() (ClockData, error) {
	var c ClockData
	if _, err := ioctlPtr(vm.fd, kvmGetClock, unsafe.Pointer(&c)); err != nil {
		return ClockData{}, fmt.Errorf("KVM_GET_CLOCK: %w", err)
	}
	return c, nil
}

// SetClock is KVM_SET_CLOCK.
func (vm *VM) SetClock(c ClockData) error {
	if _, err := ioctlPtr(vm.fd, kvmSetClock, unsafe.Pointer(&c)); err != nil {
		return fmt.Errorf("KVM_SET_CLOCK: %w", err)
	}
	return nil
}

// GetIRQChip is KVM_GET_IRQCHIP for chip (IRQChipPICMaster, IRQChipPICSlave
// or IRQChipIOAPIC).
func (vm *VM) GetIRQChip(chip uint32) (IRQChip, error) {
	c := IRQChip{ChipID: chip}
	if _, err := ioctlPtr(vm.fd, kvmGetIRQChip, unsafe.Pointer(&c)); err != nil {
		return IRQChip{}, fmt.Errorf("KVM_GET_IRQCHIP(%d): %w", chip, err)
	}
	return c, nil
}

// SetIRQChip is KVM_SET_IRQCHIP; c.ChipID selects the chip.
func (vm *VM) SetIRQChip(c IRQChip) error {
	if _, err := ioctlPtr(vm.fd, kvmSetIRQChip, unsafe.Pointer(&c)); err != nil {
		return fmt.Errorf("KVM_SET_IRQCHIP(%d): %w", c.ChipID, err)
	}
	return nil
}

// GetPIT2 is KVM_GET_PIT2.
func (vm *VM) GetPIT2() (PITState2, error) {
	var p PITState2
	if _, err := ioctlPtr(vm.fd, kvmGetPIT2, unsafe.Pointer(&p)); err != nil {
		return PITState2{}, fmt.Errorf("KVM_GET_PIT2: %w", err)
	}
	return p, nil
}

// SetPIT2 is KVM_SET_PIT2.
func (vm *VM) SetPIT2(p PITState2) error {
	if _, err := ioctlPtr(vm.fd, kvmSetPIT2, unsafe.Pointer(&p)); err != nil {
		return fmt.Errorf("KVM_SET_PIT2: %w", err)
	}
	return nil
}

// CreateVCPU is KVM_CREATE_VCPU with APIC ID id, and maps its kvm_run page.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	if id < 0 {
		return nil, fmt.Errorf("KVM_CREATE_VCPU: negative id %d", id)
	}
	fd, err := ioctlVal(vm.fd, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU(%d): %w", id, err)
	}
	run, err := unix.Mmap(int(fd), 0, vm.mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("mmap kvm_run of vCPU %d (%d bytes): %w", id, vm.mmapSize, err)
	}
	// KVM_CAP_XSAVE2 on the VM fd reports the buffer KVM_GET_XSAVE2 needs;
	// 0 means the kernel predates it and the legacy 4 KiB ioctl applies.
	xsave2, err := vm.CheckExtension(CapXSave2)
	if err != nil {
		unix.Munmap(run)
		unix.Close(int(fd))
		return nil, fmt.Errorf("vCPU %d: %w", id, err)
	}
	v := &VCPU{fd: int(fd), id: id, run: run, xsaveSize: max(xsave2, XSaveSize), useXSave2: xsave2 > 0}
	return v, nil
}
