package virtio

import (
	"strconv"

	"kvmstack/vmm/memory"
)

// DeviceType is the virtio device ID (virtio 1.2 section 5). The PCI device
// ID of a modern device is 0x1040 + DeviceType.
type DeviceType uint32

// Device types this project implements.
const (
	DeviceNet   DeviceType = 1
	DeviceBlock DeviceType = 2
	DeviceRNG   DeviceType = 4
)

// String names the device type for logs.
func (t DeviceType) String() string {
	switch t {
	case DeviceNet:
		return "net"
	case DeviceBlock:
		return "block"
	case DeviceRNG:
		return "rng"
	}
	return "type-" + strconv.FormatUint(uint64(t), 10)
}

// Feature bits the transport offers for every device (device-independent,
// virtio 1.2 section 6). Devices report only their own bits from Features.
const (
	FeatureIndirectDesc uint64 = 1 << 28
	FeatureEventIdx     uint64 = 1 << 29
	FeatureVersion1     uint64 = 1 << 32
)

// Device is one virtio device behind a transport. The transport calls
// Type, Features, QueueSizes, ReadConfig and WriteConfig from vCPU threads,
// so they must be cheap and safe to call concurrently with the device's
// workers; Activate and Reset are serialised by the transport.
type Device interface {
	// Type is the virtio device ID.
	Type() DeviceType
	// Features is the set of device-specific feature bits offered; the
	// transport adds the common ones (FeatureVersion1, ...).
	Features() uint64
	// QueueSizes is the maximum size of each queue; its length is the
	// number of queues. Sizes are powers of two.
	QueueSizes() []uint16
	// ReadConfig fills data from the device-specific configuration space
	// at offset. Out-of-range bytes read as zero.
	ReadConfig(offset uint64, data []byte)
	// WriteConfig stores data into the device-specific configuration
	// space at offset; read-only or out-of-range bytes are ignored.
	WriteConfig(offset uint64, data []byte)
	// Activate starts the device after the driver set DRIVER_OK. It must
	// return quickly: the work runs in goroutines the device starts here.
	Activate(a Activation) error
	// Reset stops the workers, waits for them to finish and forgets all
	// negotiated state. It is called when the driver writes status 0 and
	// when vmm stops, also for a device that was never activated.
	Reset()
}

// Activation is everything a device needs to run its queues.
type Activation struct {
	// Memory is guest RAM.
	Memory *memory.Memory
	// Features is the negotiated feature set (device and common bits).
	Features uint64
	// Queues holds one queue per QueueSizes entry; an entry is nil when
	// the driver did not enable that queue.
	Queues []*Queue
	// Kicks[i] receives after the driver notified queue i. Notifications
	// are coalesced: one receive may stand for many kicks.
	Kicks []<-chan struct{}
	// Interrupt raises the used-buffer notification for queue i (its
	// MSI-X vector, or INTx). Call it only when Queue.NeedInterrupt says so.
	Interrupt func(queue int) error
	// Broken reports that the guest misused the device. The transport
	// sets DEVICE_NEEDS_RESET and raises a configuration interrupt; the
	// device stops processing its queues until the next Reset.
	Broken func(err error)
}

// Device status bits (virtio 1.2 section 2.1).
const (
	StatusAcknowledge      uint8 = 1
	StatusDriver           uint8 = 2
	StatusDriverOK         uint8 = 4
	StatusFeaturesOK       uint8 = 8
	StatusDeviceNeedsReset uint8 = 64
	StatusFailed           uint8 = 128
)
