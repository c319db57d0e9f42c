package api

import (
	"fmt"
	"time"

	"kvmstack/vmm"
)

// BootSource is the body of PUT /boot-source.
type BootSource struct {
	// KernelImagePath is an ELF vmlinux or a bzImage on the host.
	KernelImagePath string `json:"kernel_image_path"`
	// InitrdPath is an optional initramfs on the host.
	InitrdPath string `json:"initrd_path,omitempty"`
	// BootArgs is the kernel command line; empty means vmm's default.
	BootArgs string `json:"boot_args,omitempty"`
}

// MachineConfig is the body of PUT /machine-config.
type MachineConfig struct {
	// VCPUCount is the number of vCPUs.
	VCPUCount int `json:"vcpu_count"`
	// MemSizeMiB is guest RAM in MiB.
	MemSizeMiB uint64 `json:"mem_size_mib"`
	// PVH enters an ELF kernel through its PVH note.
	PVH bool `json:"pvh,omitempty"`
}

// TokenBucket is one rate limit: Size tokens (bytes or operations) refilled
// every RefillTimeMs milliseconds, plus a one-time burst at start. Size 0
// (with no refill time or burst) does not limit.
type TokenBucket struct {
	// Size is the bucket's capacity and the tokens added per refill period.
	Size uint64 `json:"size"`
	// OneTimeBurst is an initial credit spent before the bucket applies.
	OneTimeBurst uint64 `json:"one_time_burst,omitempty"`
	// RefillTimeMs is the period in which the bucket refills completely.
	RefillTimeMs uint64 `json:"refill_time"`
}

// RateLimiter limits a device by bandwidth (bytes) and operations; a nil
// bucket does not limit.
type RateLimiter struct {
	// Bandwidth counts bytes.
	Bandwidth *TokenBucket `json:"bandwidth,omitempty"`
	// Ops counts requests (virtio-blk) or frames (virtio-net).
	Ops *TokenBucket `json:"ops,omitempty"`
}

// Drive is the body of PUT /drives/{id}; PATCH takes the same fields and
// applies only rate_limiter.
type Drive struct {
	// DriveID must equal the {id} in the path; it is also the serial the
	// guest reads (VIRTIO_BLK_T_GET_ID).
	DriveID string `json:"drive_id"`
	// PathOnHost is a raw image file or block device.
	PathOnHost string `json:"path_on_host,omitempty"`
	// IsReadOnly makes the device refuse writes.
	IsReadOnly bool `json:"is_read_only,omitempty"`
	// RateLimiter limits the drive's I/O.
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// NetworkInterface is the body of PUT /network-interfaces/{id}; PATCH
// applies only rate_limiter.
type NetworkInterface struct {
	// IfaceID must equal the {id} in the path.
	IfaceID string `json:"iface_id"`
	// HostDevName is the host TAP interface.
	HostDevName string `json:"host_dev_name,omitempty"`
	// GuestMAC is the guest's address; empty picks one.
	GuestMAC string `json:"guest_mac,omitempty"`
	// RateLimiter limits the interface in both directions.
	RateLimiter *RateLimiter `json:"rate_limiter,omitempty"`
}

// RNG is the body of PUT /rng.
type RNG struct {
	// Enabled adds (true, the default when absent) or removes the
	// virtio-rng device.
	Enabled *bool `json:"enabled,omitempty"`
}

// VMConfig is everything the API knows about the guest's configuration:
// what PUT requests collected before InstanceStart, or the flags' settings
// for a vmm that booted at once. GET /vm returns it.
type VMConfig struct {
	// BootSource is the kernel, initrd and command line.
	BootSource *BootSource `json:"boot-source,omitempty"`
	// MachineConfig is the vCPU count and memory size.
	MachineConfig MachineConfig `json:"machine-config"`
	// Drives are virtio-blk devices in PCI slot order.
	Drives []Drive `json:"drives"`
	// NetworkInterfaces are virtio-net devices after the drives.
	NetworkInterfaces []NetworkInterface `json:"network-interfaces"`
	// RNG says whether a virtio-rng device is present.
	RNG bool `json:"rng"`
}

// DefaultMachineConfig is what a vmm started without guest flags assumes
// until PUT /machine-config: the same defaults as its flags.
var DefaultMachineConfig = MachineConfig{VCPUCount: 1, MemSizeMiB: 128}

// VMMConfig turns the API configuration into vmm's. It does not fill the
// host-side fields (serial, KVM path); the Launcher does.
func (c *VMConfig) VMMConfig() vmm.Config {
	cfg := vmm.Config{CPUs: c.MachineConfig.VCPUCount, MemoryBytes: c.MachineConfig.MemSizeMiB << 20,
		PreferPVH: c.MachineConfig.PVH, RNG: c.RNG}
	if c.BootSource != nil {
		cfg.Kernel, cfg.Initrd, cfg.Cmdline = c.BootSource.KernelImagePath, c.BootSource.InitrdPath, c.BootSource.BootArgs
	}
	for _, d := range c.Drives {
		cfg.Disks = append(cfg.Disks, vmm.DiskConfig{Path: d.PathOnHost, ReadOnly: d.IsReadOnly, ID: d.DriveID, RateLimit: d.RateLimiter.Limits()})
	}
	for _, n := range c.NetworkInterfaces {
		cfg.Nets = append(cfg.Nets, vmm.NetConfig{Tap: n.HostDevName, MAC: n.GuestMAC, RateLimit: n.RateLimiter.Limits()})
	}
	return cfg
}

// ConfigFromVMM describes a vmm.Config (a vmm booted from flags) in API
// terms. A disk without an ID is named drive<N>, and interface N net<N>, so
// that PATCH can address every device.
func ConfigFromVMM(cfg vmm.Config) VMConfig {
	c := VMConfig{
		BootSource:    &BootSource{KernelImagePath: cfg.Kernel, InitrdPath: cfg.Initrd, BootArgs: cfg.Cmdline},
		MachineConfig: MachineConfig{VCPUCount: cfg.CPUs, MemSizeMiB: cfg.MemoryBytes >> 20, PVH: cfg.PreferPVH},
		Drives:        []Drive{}, NetworkInterfaces: []NetworkInterface{}, RNG: cfg.RNG,
	}
	for i, d := range cfg.Disks {
		id := d.ID
		if id == "" {
			id = fmt.Sprintf("drive%d", i)
		}
		c.Drives = append(c.Drives, Drive{DriveID: id, PathOnHost: d.Path, IsReadOnly: d.ReadOnly, RateLimiter: rateLimiterFrom(d.RateLimit)})
	}
	for i, n := range cfg.Nets {
		c.NetworkInterfaces = append(c.NetworkInterfaces, NetworkInterface{IfaceID: fmt.Sprintf("net%d", i), HostDevName: n.Tap, GuestMAC: n.MAC,
			RateLimiter: rateLimiterFrom(n.RateLimit)})
	}
	return c
}

// validID reports whether id may name a device: 1 to 20 of A-Z a-z 0-9 _ -,
// short enough to be a virtio-blk serial and plain enough to sit in a URL
// path and a metric label. (A loop, not a regexp: nothing compiled at vmm
// start.)
func validID(id string) bool {
	if len(id) < 1 || len(id) > 20 {
		return false
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Limits converts the wire form to the devices' limits; a missing bucket
// does not limit.
func (rl *RateLimiter) Limits() vmm.RateLimit {
	var l vmm.RateLimit
	if rl == nil {
		return l
	}
	conv := func(tb *TokenBucket) vmm.TokenBucket {
		if tb == nil {
			return vmm.TokenBucket{}
		}
		// Above a day (what the devices accept) the product could wrap;
		// clamp so Validate reports it instead.
		ms := min(tb.RefillTimeMs, uint64(maxRefillMs))
		return vmm.TokenBucket{Size: tb.Size, OneTimeBurst: tb.OneTimeBurst, RefillTime: time.Duration(ms) * time.Millisecond}
	}
	l.Bandwidth, l.Ops = conv(rl.Bandwidth), conv(rl.Ops)
	return l
}

// maxRefillMs is past any refill time the devices accept (a day), and
// small enough that it converts to a time.Duration without wrapping.
const maxRefillMs = 48 * 3600 * 1000

// rateLimiterFrom is the wire form of a device's limits; nil when they do
// not limit.
func rateLimiterFrom(l vmm.RateLimit) *RateLimiter {
	if !l.Enabled() {
		return nil
	}
	conv := func(b vmm.TokenBucket) *TokenBucket {
		if !b.Enabled() {
			return nil
		}
		return &TokenBucket{Size: b.Size, OneTimeBurst: b.OneTimeBurst, RefillTimeMs: uint64(b.RefillTime / time.Millisecond)}
	}
	return &RateLimiter{Bandwidth: conv(l.Bandwidth), Ops: conv(l.Ops)}
}

// validate checks the limiter as the devices will.
func (rl *RateLimiter) validate() error {
	if err := rl.checkWire(); err != nil {
		return err
	}
	return rl.Limits().Validate()
}

// checkWire refuses refill times Limits would have to clamp.
func (rl *RateLimiter) checkWire() error {
	if rl != nil && (rl.Bandwidth != nil && rl.Bandwidth.RefillTimeMs > maxRefillMs || rl.Ops != nil && rl.Ops.RefillTimeMs > maxRefillMs) {
		return fmt.Errorf("refill_time over %d ms", uint64(maxRefillMs))
	}
	return nil
}

// StateBody is the body of PUT /vm/state.
type StateBody struct {
	// State is "running" or "paused".
	State string `json:"state"`
}

// Action is the body of PUT /actions.
type Action struct {
	// ActionType is "InstanceStart".
	ActionType string `json:"action_type"`
}

// DirBody is the body of PUT /snapshot and POST /restore.
type DirBody struct {
	// Dir is a host directory: created by a snapshot, read by a restore.
	Dir string `json:"dir"`
}

// VMInfo is the body GET /vm returns.
type VMInfo struct {
	// State is not_started, starting, or the machine's state (created,
	// running, paused, stopped).
	State string `json:"state"`
	// UptimeSeconds counts from InstanceStart (or the boot from flags).
	UptimeSeconds float64 `json:"uptime_seconds"`
	// VCPUs is the vCPU count.
	VCPUs int `json:"vcpu_count"`
	// MemoryBytes is guest RAM.
	MemoryBytes uint64 `json:"memory_bytes"`
	// Config is the guest's configuration.
	Config VMConfig `json:"config"`
}

// Error is the body of every 4xx and 5xx response.
type Error struct {
	// Code is a stable, machine-readable reason (the Code* constants).
	Code string `json:"code"`
	// Message says what was wrong, for people.
	Message string `json:"message"`
}
