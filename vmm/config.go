package vmm

import (
	"errors"
	"fmt"
	"io"

	"kvmstack/vmm/arch/x86/acpi"
	"kvmstack/vmm/memory"
)

// DefaultCmdline is the kernel command line when the user gives none:
// the console on COM1, resets through the i8042 (which vmm implements), and
// a reboot one second after a panic, by which time pvpanic has reported it.
const DefaultCmdline = "console=ttyS0 reboot=k panic=1"

// Config describes one machine.
type Config struct {
	// Kernel is the path of an ELF vmlinux or a bzImage.
	Kernel string
	// Initrd is an optional initramfs path.
	Initrd string
	// Cmdline is the kernel command line; empty means DefaultCmdline.
	// The host profile may append to it (see x86.HostProfile).
	Cmdline string
	// CPUs is the vCPU count (1 to acpi.MaxCPUs).
	CPUs int
	// MemoryBytes is guest RAM.
	MemoryBytes uint64
	// Serial receives COM1 output; nil discards it.
	Serial io.Writer
	// SerialInput, if set, is read and fed to COM1's receiver.
	SerialInput io.Reader
	// KVMPath is the KVM device; empty means /dev/kvm.
	KVMPath string
	// PreferPVH enters an ELF kernel through its PVH note instead of the
	// 64-bit entry.
	PreferPVH bool
}

// ErrConfig is wrapped by every configuration error, so callers can tell
// a user mistake from a host failure.
var ErrConfig = errors.New("invalid configuration")

// Validate checks the configuration without touching the host.
func (c *Config) Validate() error {
	if c.Kernel == "" {
		return fmt.Errorf("%w: no kernel given", ErrConfig)
	}
	if c.CPUs < 1 || c.CPUs > acpi.MaxCPUs {
		return fmt.Errorf("%w: %d vCPUs: want 1 to %d", ErrConfig, c.CPUs, acpi.MaxCPUs)
	}
	if _, err := memory.Plan(c.MemoryBytes); err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return nil
}
