package pci

import (
	"errors"
	"fmt"

	"kvmstack/virtio"
	pcibus "kvmstack/vmm/devices/pci"
	"kvmstack/vmm/memory"
)

// ErrStateMismatch is wrapped by SetState when saved state belongs to
// another kind of device or queue layout.
var ErrStateMismatch = errors.New("virtio-pci: saved state does not match the device")

// TransportState is the virtio-pci transport as a snapshot records it: the
// common configuration the driver programmed, the interrupt state and each
// queue's configuration and ring position. The PCI configuration space is
// saved with the bus (pcibus.BusState).
type TransportState struct {
	DeviceType     uint32              `json:"device_type"`
	DevFeatSelect  uint32              `json:"device_feature_select"`
	DrvFeatSelect  uint32              `json:"driver_feature_select"`
	DriverFeatures uint64              `json:"driver_features"`
	Status         uint8               `json:"status"`
	QueueSelect    uint16              `json:"queue_select"`
	Activated      bool                `json:"activated"`
	NeedsReset     bool                `json:"needs_reset,omitempty"`
	ISR            uint32              `json:"isr,omitempty"`
	ConfigVector   uint16              `json:"config_vector"`
	Queues         []virtio.QueueState `json:"queues"`
	MSIX           pcibus.MSIXState    `json:"msix"`
}

// State returns the transport's state. The device's workers must be
// quiesced (the machine paused): each running queue's position is read from
// its used ring, and last_avail is set to it, so receive buffers a device
// popped but never filled are handed out again after restore.
func (t *Transport) State() (TransportState, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st := TransportState{
		DeviceType: uint32(t.dev.Type()), DevFeatSelect: t.devFeatSelect, DrvFeatSelect: t.drvFeatSelect,
		DriverFeatures: t.driverFeatures, Status: t.status, QueueSelect: t.queueSelect, Activated: t.activated,
		NeedsReset: t.needsReset.Load(), ISR: t.isr.Load(), ConfigVector: uint16(t.configVector.Load()),
		MSIX: t.msix.State(),
	}
	for i, qc := range t.queues {
		qs := virtio.QueueState{
			Size: qc.size, Enabled: qc.enabled, Desc: qc.desc, Driver: qc.driver, Device: qc.device,
			Vector: uint16(t.queueVectors[i].Load()),
		}
		if t.activated && qc.enabled && !st.NeedsReset {
			used, err := virtio.UsedIndex(t.mem, memory.GuestAddr(qc.device))
			if err != nil {
				return TransportState{}, fmt.Errorf("%v queue %d: %w", t.dev.Type(), i, err)
			}
			qs.LastAvail, qs.UsedIdx = used, used
		}
		st.Queues = append(st.Queues, qs)
	}
	return st, nil
}

// SetState puts a freshly built transport (its device never activated) into
// st. A device that was running is activated again with its queues at the
// saved ring positions and every queue kicked once, since a notification
// that was pending when the snapshot was taken is not part of it.
func (t *Transport) SetState(st TransportState) error {
	if st.DeviceType != uint32(t.dev.Type()) || len(st.Queues) != len(t.queues) {
		return fmt.Errorf("%w: saved %v device with %d queues, this is %v with %d",
			ErrStateMismatch, virtio.DeviceType(st.DeviceType), len(st.Queues), t.dev.Type(), len(t.queues))
	}
	if err := t.msix.SetState(st.MSIX); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.activated {
		return fmt.Errorf("%w: %v device already running", ErrStateMismatch, t.dev.Type())
	}
	for i, qs := range st.Queues {
		if qs.Size > t.sizes[i] {
			return fmt.Errorf("%w: queue %d of size %d, device maximum %d", ErrStateMismatch, i, qs.Size, t.sizes[i])
		}
	}
	t.devFeatSelect, t.drvFeatSelect, t.driverFeatures = st.DevFeatSelect, st.DrvFeatSelect, st.DriverFeatures
	t.status, t.queueSelect = st.Status&^virtio.StatusDeviceNeedsReset, st.QueueSelect
	t.configVector.Store(uint32(t.checkVector(st.ConfigVector)))
	t.isr.Store(st.ISR)
	t.needsReset.Store(st.NeedsReset)
	for i, qs := range st.Queues {
		t.queues[i] = queueConfig{size: qs.Size, enabled: qs.Enabled, desc: qs.Desc, driver: qs.Driver, device: qs.Device}
		t.queueVectors[i].Store(uint32(t.checkVector(qs.Vector)))
	}
	if !st.Activated || st.NeedsReset {
		// A broken device stays stopped until the driver resets it, as it
		// was; one never activated waits for DRIVER_OK.
		return nil
	}
	return t.reactivateLocked(st.Queues)
}

// reactivateLocked is activateLocked for restored queues.
func (t *Transport) reactivateLocked(saved []virtio.QueueState) error {
	eventIdx := t.driverFeatures&virtio.FeatureEventIdx != 0
	qs := make([]*virtio.Queue, len(t.queues))
	for i, s := range saved {
		if !s.Enabled {
			continue
		}
		q, err := virtio.RestoreQueue(t.mem, s, eventIdx)
		if err != nil {
			return fmt.Errorf("%v queue %d: %w", t.dev.Type(), i, err)
		}
		qs[i] = q
	}
	t.notify.drain()
	if err := t.dev.Activate(virtio.Activation{
		Memory: t.mem, Features: t.driverFeatures, Queues: qs, Kicks: t.notify.channels(),
		Interrupt: t.Interrupt, Broken: t.Broken,
	}); err != nil {
		return fmt.Errorf("%v device: activate: %w", t.dev.Type(), err)
	}
	t.activated = true
	for i, q := range qs {
		if q != nil {
			t.notify.kick(i)
		}
	}
	return nil
}
