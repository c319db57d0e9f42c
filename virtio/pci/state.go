package pci

import (
	"errors"
	"fmt"

	"kvmstack/virtio"
	pcibus "kvmstack/vmm/devices/pci"
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

// State returns the transport's state. A running device must be paused
// first (Pause): then nothing is in flight and each queue's position is
// exact. Queues of a device never activated have none.
func (t *Transport) State() (TransportState, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.activated && !t.paused {
		return TransportState{}, fmt.Errorf("virtio-pci %v: state of a running device: pause it first", t.dev.Type())
	}
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
		if t.activated && i < len(t.activation.Queues) && t.activation.Queues[i] != nil {
			qs.LastAvail, qs.UsedIdx = t.activation.Queues[i].Position()
		}
		st.Queues = append(st.Queues, qs)
	}
	return st, nil
}

// SetState puts a freshly built transport (its device never activated) into
// st. A device that was running comes back paused, as the machine it
// belongs to: its queues are rebuilt at the saved ring positions and Resume
// starts its workers. Every queue gets one kick for then, since a
// notification pending when the snapshot was taken is not part of it.
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
		return fmt.Errorf("%w: %v device already activated", ErrStateMismatch, t.dev.Type())
	}
	for i, qs := range st.Queues {
		if qs.Size > t.sizes[i] {
			return fmt.Errorf("%w: queue %d of size %d, device maximum %d", ErrStateMismatch, i, qs.Size, t.sizes[i])
		}
	}
	t.devFeatSelect, t.drvFeatSelect, t.driverFeatures = st.DevFeatSelect, st.DrvFeatSelect, st.DriverFeatures
	t.status, t.queueSelect = st.Status&^virtio.StatusDeviceNeedsReset, st.QueueSelect
	t.configVector.Store(uint32(t.checkVector(st.ConfigVector)))
	t.needsReset.Store(st.NeedsReset)
	t.intxMu.Lock()
	t.isr.Store(st.ISR)
	// A pending ISR bit holds INTA# high (with INTx in use): assert it in
	// this VM too, or the guest's handler would find the line low.
	err := t.updateINTxLocked()
	t.intxMu.Unlock()
	if err != nil {
		return fmt.Errorf("virtio-pci %v: INTx: %w", t.dev.Type(), err)
	}
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

// reactivateLocked rebuilds the activation from restored queues, paused.
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
	t.activation = virtio.Activation{
		Memory: t.mem, Features: t.driverFeatures, Queues: qs, Kicks: t.notify.channels(),
		Interrupt: t.Interrupt, Broken: t.Broken,
	}
	t.activated, t.paused = true, true
	for i, q := range qs {
		if q != nil {
			t.notify.kick(i)
		}
	}
	return nil
}
