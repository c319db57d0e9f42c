package api

import (
	"context"
	"errors"
	"time"
)

// States the API reports besides the machine's own.
const (
	// StateNotStarted: vmm waits for configuration and InstanceStart.
	StateNotStarted = "not_started"
	// StateStarting: InstanceStart or a restore is building the machine.
	StateStarting = "starting"
)

// Machine is a built guest as the API drives it. cmd/vmm adapts
// *vmm.Machine to it; the handler tests use a fake.
type Machine interface {
	// Status reports the lifecycle state ("created", "running",
	// "paused", "stopped"), uptime and size.
	Status() Status
	// Pause parks every vCPU and quiesces the devices.
	Pause(ctx context.Context) error
	// Resume runs a paused machine again.
	Resume() error
	// Shutdown presses the ACPI power button; the guest powers off.
	Shutdown() error
	// Kill stops the machine at once.
	Kill()
	// Metrics is a snapshot of the machine's counters.
	Metrics() Metrics
	// Snapshot writes a paused machine to dir.
	Snapshot(ctx context.Context, dir string) error
	// SetRateLimit replaces a device's limits while it runs.
	SetRateLimit(dev DeviceRef, rl RateLimiter) error
}

// Launcher builds machines: from a configuration (InstanceStart) or from
// a snapshot (POST /restore). The machine it returns is already running
// (or paused, after a restore); the Launcher owns its Run.
type Launcher interface {
	// Start builds and runs a machine. ctx bounds the build only.
	Start(ctx context.Context, cfg VMConfig) (Machine, error)
	// Restore builds a machine from a snapshot directory and returns it
	// with the configuration it was snapshotted with.
	Restore(ctx context.Context, dir string) (Machine, VMConfig, error)
}

// Status is a machine's lifecycle state and size.
type Status struct {
	// State is the lifecycle state's name.
	State string
	// Uptime counts from the start of the run.
	Uptime time.Duration
	// VCPUs is the vCPU count.
	VCPUs int
	// MemoryBytes is guest RAM.
	MemoryBytes uint64
}

// DeviceKind tells drives from network interfaces.
type DeviceKind string

// Device kinds, as they appear in paths and metric labels.
const (
	KindDrive DeviceKind = "drive"
	KindNet   DeviceKind = "net"
)

// DeviceRef names one device: its kind, its API ID and its position among
// the devices of that kind (its order in the configuration).
type DeviceRef struct {
	Kind  DeviceKind
	ID    string
	Index int
}

// Metrics is what GET /metrics exposes.
type Metrics struct {
	// Exits counts VM exits by reason.
	Exits map[string]uint64
	// Devices holds one entry per device.
	Devices []DeviceMetrics
	// VCPUTime is each vCPU's time spent running the guest.
	VCPUTime []time.Duration
}

// DeviceMetrics are one device's counters.
type DeviceMetrics struct {
	// Name is the device's ID (drive_id, iface_id) or a name such as "rng".
	Name string
	// Kind is drive, net or rng.
	Kind string
	// Bytes moved, requests or frames handled, and failed requests.
	Bytes, Ops, Errors uint64
}

// Errors a Machine or Launcher wraps so the server picks the status code.
var (
	// ErrWrongState: the operation is not valid in the machine's state
	// (409).
	ErrWrongState = errors.New("wrong state")
	// ErrInvalid: the request's values are wrong (400).
	ErrInvalid = errors.New("invalid request")
	// ErrNotFound: no such device (404).
	ErrNotFound = errors.New("not found")
	// ErrUnsupported: this vmm cannot do it (501).
	ErrUnsupported = errors.New("not supported")
)
