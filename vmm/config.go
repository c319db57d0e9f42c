package vmm

import (
	"errors"
	"fmt"
	"io"
	"net"

	"kvmstack/virtio/ratelimit"
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
	// Disks are virtio-blk devices, in PCI slot order (the guest's vda,
	// vdb, ...).
	Disks []DiskConfig
	// Nets are virtio-net devices on host TAP interfaces.
	Nets []NetConfig
	// RNG adds a virtio-rng device fed by the host's getrandom.
	RNG bool
}

// DiskConfig is one virtio-blk disk.
type DiskConfig struct {
	// Path is a raw image file.
	Path string `json:"path"`
	// ReadOnly makes the device refuse writes (VIRTIO_BLK_F_RO).
	ReadOnly bool `json:"readonly,omitempty"`
	// ID is the serial the guest reads (VIRTIO_BLK_T_GET_ID), at most 20
	// bytes.
	ID string `json:"id,omitempty"`
	// RateLimit throttles the disk: bytes read and written, and requests.
	RateLimit RateLimit `json:"rate_limit,omitzero"`
}

// NetConfig is one virtio-net interface.
type NetConfig struct {
	// Tap is the host TAP interface name.
	Tap string `json:"tap"`
	// Netns, if set, is the network namespace (a path such as
	// /var/run/netns/NAME) the TAP lives in: vmm opens it there and stays
	// in its own namespace, as the host agent runs guests' networks in one.
	Netns string `json:"netns,omitempty"`
	// MAC is the guest's address (aa:bb:cc:dd:ee:ff); empty picks one.
	MAC string `json:"mac,omitempty"`
	// RateLimit throttles each direction on its own: frame bytes and
	// packets received, and the same sent.
	RateLimit RateLimit `json:"rate_limit,omitzero"`
}

// RateLimit is a device's throttle: a bandwidth and an operations token
// bucket (docs/VIRTIO.md, "Rate limits"). Its JSON form is Firecracker's,
// {"bandwidth":{"size":N,"one_time_burst":N,"refill_time":MS},"ops":{...}};
// on the command line --disk and --net take ratelimit.OptionKeys
// (bw=2M,iops=500,...), applied with RateLimit.SetOption. The zero value
// does not limit.
type RateLimit = ratelimit.Limits

// TokenBucket is one bucket of a RateLimit: Size tokens refilled in
// RefillTime, plus a OneTimeBurst.
type TokenBucket = ratelimit.TokenBucket

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
	for i, d := range c.Disks {
		if d.Path == "" {
			return fmt.Errorf("%w: disk %d: no path", ErrConfig, i)
		}
		if len(d.ID) > maxDiskID {
			return fmt.Errorf("%w: disk %d: id %q longer than %d bytes", ErrConfig, i, d.ID, maxDiskID)
		}
		if err := d.RateLimit.Validate(); err != nil {
			return fmt.Errorf("%w: disk %d: rate limit: %w", ErrConfig, i, err)
		}
	}
	for i, n := range c.Nets {
		if n.Tap == "" || len(n.Tap) >= 16 {
			return fmt.Errorf("%w: net %d: tap name %q: want 1 to 15 bytes", ErrConfig, i, n.Tap)
		}
		if n.MAC != "" {
			mac, err := net.ParseMAC(n.MAC)
			if err != nil || len(mac) != 6 {
				return fmt.Errorf("%w: net %d: MAC %q: want aa:bb:cc:dd:ee:ff", ErrConfig, i, n.MAC)
			}
			if mac[0]&1 != 0 {
				return fmt.Errorf("%w: net %d: MAC %q is a multicast address", ErrConfig, i, n.MAC)
			}
		}
		if err := n.RateLimit.Validate(); err != nil {
			return fmt.Errorf("%w: net %d: rate limit: %w", ErrConfig, i, err)
		}
	}
	if n := len(c.Disks) + len(c.Nets); n+btoi(c.RNG) > maxPCIDevices {
		return fmt.Errorf("%w: %d PCI devices, at most %d", ErrConfig, n+btoi(c.RNG), maxPCIDevices)
	}
	return nil
}

// maxDiskID is the size of virtio-blk's ID string.
const maxDiskID = 20

// maxPCIDevices is bus 0's slots minus the host bridge.
const maxPCIDevices = 31

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
