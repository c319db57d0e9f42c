package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"

	"kvmstack/virtio"
	pcibus "kvmstack/vmm/devices/pci"
	"kvmstack/vmm/kvm"
	"kvmstack/vmm/memory"
)

// VM is what the transport needs from KVM; *kvm.VM implements it and tests
// fake it.
type VM interface {
	IOEventFD(e kvm.IOEventFD) error
	IRQFD(f kvm.IRQFD) error
	IRQLine(irq uint32, level bool) error
}

// Config wires a transport to its machine.
type Config struct {
	// Memory is guest RAM, for the queues.
	Memory *memory.Memory
	// VM registers ioeventfds and irqfds and drives INTx.
	VM VM
	// Router allocates GSIs and sets MSI routes (*pcibus.GSIRouter).
	Router pcibus.MSIRouter
	// Log receives device errors; nil discards them.
	Log *slog.Logger
}

// ErrConfig is wrapped by New's errors about the device itself.
var ErrConfig = errors.New("virtio-pci: bad device")

// queueConfig is what the driver programmed for one queue.
type queueConfig struct {
	size    uint16
	enabled bool
	desc    uint64
	driver  uint64
	device  uint64
}

// Transport is one virtio device as a PCI function (pcibus.Device).
//
// Locking: mu guards the driver-visible configuration and is held while the
// device is activated and reset. Device workers call Interrupt and Broken,
// which use only atomics and the MSI-X state, never mu: Reset waits for
// those workers while holding mu.
type Transport struct {
	dev   virtio.Device
	cfg   *pcibus.ConfigSpace
	msix  *pcibus.MSIX
	vm    VM
	mem   *memory.Memory
	log   *slog.Logger
	sizes []uint16

	mu             sync.Mutex
	devFeatSelect  uint32
	drvFeatSelect  uint32
	driverFeatures uint64
	status         uint8
	queueSelect    uint16
	queues         []queueConfig
	activated      bool
	// activation is what the device was last activated with; paused
	// means its workers are stopped for a machine pause and Resume
	// activates it again with the same queues.
	activation virtio.Activation
	paused     bool
	// retired holds the counters of queues from earlier activations.
	retired virtio.QueueCounters

	notifications atomic.Uint64
	interrupts    atomic.Uint64
	errors        atomic.Uint64

	needsReset   atomic.Bool
	isr          atomic.Uint32
	configVector atomic.Uint32
	queueVectors []atomic.Uint32
	// intx is the function's INTA# pin (nil until the bus assigns it).
	// intxMu orders ISR changes with the pin's level, so the line is high
	// exactly while the ISR is non-zero and INTx is in use.
	intx   atomic.Pointer[pcibus.INTxPin]
	intxMu sync.Mutex

	notify *notifier

	closeOnce sync.Once
}

// New builds the PCI function for dev. The caller adds it to the bus
// (which places BAR 0 and assigns INTx) and closes it when vmm stops.
func New(dev virtio.Device, c Config) (_ *Transport, err error) {
	sizes := dev.QueueSizes()
	if len(sizes) == 0 || len(sizes) > MaxQueues {
		return nil, fmt.Errorf("%w: %v device with %d queues (1 to %d)", ErrConfig, dev.Type(), len(sizes), MaxQueues)
	}
	for i, s := range sizes {
		if s == 0 || s > virtio.MaxQueueSize || s&(s-1) != 0 {
			return nil, fmt.Errorf("%w: %v queue %d of size %d", ErrConfig, dev.Type(), i, s)
		}
	}
	log := c.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Transport{
		dev: dev, vm: c.VM, mem: c.Memory, log: log.With("virtio", dev.Type().String()), sizes: sizes,
		queues: make([]queueConfig, len(sizes)), queueVectors: make([]atomic.Uint32, len(sizes)),
	}
	t.cfg = pcibus.NewConfigSpace(pcibus.Header{
		VendorID: vendorVirtio, DeviceID: deviceIDBase + uint16(dev.Type()), Revision: revisionModern,
		Class: classOf(dev.Type()), SubsystemVendor: vendorVirtio, SubsystemID: subsystemID, InterruptPin: 1,
	})
	if err := t.cfg.AddBAR(bar, barSize); err != nil {
		return nil, err
	}
	for _, vc := range []struct {
		typ       uint8
		off, size uint32
		extra     []byte
	}{
		{capCommonCfg, commonOffset, commonSize, nil},
		{capNotifyCfg, notifyOffset, uint32(notifyMult * len(sizes)), binary.LittleEndian.AppendUint32(nil, notifyMult)},
		{capISRCfg, isrOffset, isrSize, nil},
		{capDeviceCfg, deviceOffset, deviceSize, nil},
	} {
		body := make([]byte, virtioCapBodyLen, virtioCapBodyLen+len(vc.extra))
		body[0] = byte(2 + virtioCapBodyLen + len(vc.extra)) // cap_len
		body[1] = vc.typ
		body[2] = bar
		binary.LittleEndian.PutUint32(body[6:], vc.off)
		binary.LittleEndian.PutUint32(body[10:], vc.size)
		if _, err := t.cfg.AddCapability(pcibus.CapIDVendor, append(body, vc.extra...), nil, nil); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			_ = t.Close()
		}
	}()
	if t.msix, err = pcibus.NewMSIX(t.cfg, len(sizes)+1, bar, msixTableOffset, msixPBAOffset, c.Router, c.VM); err != nil {
		return nil, err
	}
	if t.notify, err = newNotifier(c.VM, len(sizes), t.log, func() { t.notifications.Add(1) }); err != nil {
		return nil, err
	}
	t.cfg.OnBARChange(t.barMoved)
	// INTx disable and MSI-X enable decide whether INTA# may be asserted.
	t.cfg.OnWrite(t.syncINTx)
	t.resetLocked()
	return t, nil
}

// Config implements pcibus.Device.
func (t *Transport) Config() *pcibus.ConfigSpace { return t.cfg }

// SetINTx implements pcibus.INTxUser.
func (t *Transport) SetINTx(pin *pcibus.INTxPin) { t.intx.Store(pin) }

// NotifyViaIOEventFD reports whether queue notifications currently reach
// the device through ioeventfds (true) or through MMIO exits.
func (t *Transport) NotifyViaIOEventFD() bool { return t.notify.usingIOEventFD() }

// barMoved re-registers the notify ioeventfds where BAR 0 now decodes.
func (t *Transport) barMoved() {
	addr, ok := t.cfg.BARMapping(bar)
	t.notify.moveTo(addr+notifyOffset, ok)
}

// BARRead implements pcibus.Device.
func (t *Transport) BARRead(_ int, off uint64, data []byte) {
	switch {
	case off < commonOffset+commonSize:
		t.readCommon(off-commonOffset, data)
	case off >= isrOffset && off < isrOffset+regionSize:
		clear(data)
		if off == isrOffset {
			// Reading the ISR acknowledges the interrupt (read-to-clear).
			data[0] = byte(t.takeISR())
		}
	case off >= deviceOffset && off < deviceOffset+deviceSize:
		t.dev.ReadConfig(off-deviceOffset, data)
	case off >= msixTableOffset && off < msixTableOffset+regionSize:
		t.msix.TableRead(off-msixTableOffset, data)
	case off >= msixPBAOffset && off < msixPBAOffset+regionSize:
		t.msix.PBARead(off-msixPBAOffset, data)
	default:
		clear(data)
	}
}

// BARWrite implements pcibus.Device.
func (t *Transport) BARWrite(_ int, off uint64, data []byte) {
	switch {
	case off < commonOffset+commonSize:
		t.writeCommon(off-commonOffset, data)
	case off >= deviceOffset && off < deviceOffset+deviceSize:
		t.dev.WriteConfig(off-deviceOffset, data)
	case off >= notifyOffset && off < notifyOffset+regionSize:
		// Only reached when KVM took no ioeventfd for this address.
		t.notify.kick(int((off - notifyOffset) / notifyMult))
	case off >= msixTableOffset && off < msixTableOffset+regionSize:
		t.msix.TableWrite(off-msixTableOffset, data)
	}
}

// commonImage serialises the common configuration as the driver sees it.
func (t *Transport) commonImage() [commonSize]byte {
	var b [commonSize]byte
	le := binary.LittleEndian
	le.PutUint32(b[ccDeviceFeatureSelect:], t.devFeatSelect)
	if t.devFeatSelect < 2 {
		le.PutUint32(b[ccDeviceFeature:], uint32(t.offered()>>(32*t.devFeatSelect)))
	}
	le.PutUint32(b[ccDriverFeatureSelect:], t.drvFeatSelect)
	if t.drvFeatSelect < 2 {
		le.PutUint32(b[ccDriverFeature:], uint32(t.driverFeatures>>(32*t.drvFeatSelect)))
	}
	le.PutUint16(b[ccConfigMSIXVector:], uint16(t.configVector.Load()))
	le.PutUint16(b[ccNumQueues:], uint16(len(t.queues)))
	b[ccDeviceStatus] = t.statusValue()
	b[ccConfigGeneration] = 0 // device config never changes under the driver
	le.PutUint16(b[ccQueueSelect:], t.queueSelect)
	if q := int(t.queueSelect); q < len(t.queues) {
		qc := t.queues[q]
		le.PutUint16(b[ccQueueSize:], qc.size)
		le.PutUint16(b[ccQueueMSIXVector:], uint16(t.queueVectors[q].Load()))
		if qc.enabled {
			le.PutUint16(b[ccQueueEnable:], 1)
		}
		le.PutUint16(b[ccQueueNotifyOff:], uint16(q))
		le.PutUint64(b[ccQueueDesc:], qc.desc)
		le.PutUint64(b[ccQueueDriver:], qc.driver)
		le.PutUint64(b[ccQueueDevice:], qc.device)
	}
	return b
}

func (t *Transport) statusValue() uint8 {
	s := t.status
	if t.needsReset.Load() {
		s |= virtio.StatusDeviceNeedsReset
	}
	return s
}

// offered is the feature set the device offers.
func (t *Transport) offered() uint64 { return t.dev.Features() | transportFeatures }

func (t *Transport) readCommon(off uint64, data []byte) {
	t.mu.Lock()
	img := t.commonImage()
	t.mu.Unlock()
	for i := range data {
		data[i] = 0
		if o := off + uint64(i); o < commonSize {
			data[i] = img[o]
		}
	}
}

// writeCommon overlays the write on the current image and applies every
// field it touched, whatever the access width.
func (t *Transport) writeCommon(off uint64, data []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	img := t.commonImage()
	end := off + uint64(len(data))
	if end > commonSize {
		end = commonSize
	}
	if off >= end {
		return
	}
	copy(img[off:end], data)
	le := binary.LittleEndian
	touched := func(field, size uint64) bool { return off < field+size && field < end }
	q := int(t.queueSelect)
	validQ := q < len(t.queues)
	// Queue configuration may change only while the queue is disabled
	// and the device is not running.
	queueWritable := validQ && !t.queues[q].enabled && t.status&virtio.StatusDriverOK == 0
	// Apply every field the write touched, in register order.
	if touched(ccDeviceFeatureSelect, 4) {
		t.devFeatSelect = le.Uint32(img[ccDeviceFeatureSelect:])
	}
	if touched(ccDriverFeatureSelect, 4) {
		t.drvFeatSelect = le.Uint32(img[ccDriverFeatureSelect:])
	}
	if touched(ccDriverFeature, 4) {
		if t.status&virtio.StatusFeaturesOK == 0 && t.drvFeatSelect < 2 {
			shift := 32 * t.drvFeatSelect
			t.driverFeatures = t.driverFeatures&^(0xFFFF_FFFF<<shift) | uint64(le.Uint32(img[ccDriverFeature:]))<<shift
		}
	}
	if touched(ccConfigMSIXVector, 2) {
		t.configVector.Store(uint32(t.checkVector(le.Uint16(img[ccConfigMSIXVector:]))))
	}
	if touched(ccDeviceStatus, 1) {
		t.writeStatus(img[ccDeviceStatus])
	}
	if touched(ccQueueSelect, 2) {
		t.queueSelect = le.Uint16(img[ccQueueSelect:])
	}
	if touched(ccQueueSize, 2) {
		if queueWritable {
			t.queues[q].size = le.Uint16(img[ccQueueSize:])
		}
	}
	if touched(ccQueueMSIXVector, 2) {
		if validQ {
			t.queueVectors[q].Store(uint32(t.checkVector(le.Uint16(img[ccQueueMSIXVector:]))))
		}
	}
	if touched(ccQueueEnable, 2) {
		// Drivers never write 0 (virtio 1.2 4.1.4.3.2); 1 enables.
		if queueWritable && le.Uint16(img[ccQueueEnable:]) == 1 {
			t.queues[q].enabled = true
		}
	}
	if touched(ccQueueDesc, 8) {
		if queueWritable {
			t.queues[q].desc = le.Uint64(img[ccQueueDesc:])
		}
	}
	if touched(ccQueueDriver, 8) {
		if queueWritable {
			t.queues[q].driver = le.Uint64(img[ccQueueDriver:])
		}
	}
	if touched(ccQueueDevice, 8) {
		if queueWritable {
			t.queues[q].device = le.Uint64(img[ccQueueDevice:])
		}
	}
}

// checkVector accepts an MSI-X vector the table has; anything else reads
// back as NO_VECTOR, which is how the driver learns it was refused.
func (t *Transport) checkVector(v uint16) uint16 {
	if v != noVector && int(v) >= t.msix.Vectors() {
		return noVector
	}
	return v
}

// writeStatus runs the device status state machine (virtio 1.2 3.1).
func (t *Transport) writeStatus(v uint8) {
	if v == 0 {
		t.resetLocked()
		return
	}
	old := t.status
	if v&virtio.StatusFeaturesOK != 0 && old&virtio.StatusFeaturesOK == 0 {
		if !t.featuresAcceptable() {
			// Leaving FEATURES_OK clear tells the driver we refused.
			v &^= virtio.StatusFeaturesOK
		}
	}
	v &^= virtio.StatusDeviceNeedsReset
	t.status = v
	if v&virtio.StatusDriverOK != 0 && old&virtio.StatusDriverOK == 0 && v&virtio.StatusFeaturesOK != 0 && !t.activated {
		t.activateLocked()
	}
}

// featuresAcceptable: the driver may only accept offered features, and a
// modern device requires VIRTIO_F_VERSION_1.
func (t *Transport) featuresAcceptable() bool {
	f := t.driverFeatures
	return f&^t.offered() == 0 && f&virtio.FeatureVersion1 != 0
}

func (t *Transport) activateLocked() {
	eventIdx := t.driverFeatures&virtio.FeatureEventIdx != 0
	qs := make([]*virtio.Queue, len(t.queues))
	for i, qc := range t.queues {
		if !qc.enabled {
			continue
		}
		if qc.size > t.sizes[i] {
			t.brokenLocked(fmt.Errorf("queue %d: size %d above the maximum %d: %w", i, qc.size, t.sizes[i], virtio.ErrMalformed))
			return
		}
		q, err := virtio.NewQueue(t.mem, qc.size, memory.GuestAddr(qc.desc), memory.GuestAddr(qc.driver), memory.GuestAddr(qc.device), eventIdx)
		if err != nil {
			t.brokenLocked(fmt.Errorf("queue %d: %w", i, err))
			return
		}
		qs[i] = q
	}
	t.notify.drain()
	t.activation = virtio.Activation{
		Memory: t.mem, Features: t.driverFeatures, Queues: qs, Kicks: t.notify.channels(),
		Interrupt: t.Interrupt, Broken: t.Broken,
	}
	err := t.dev.Activate(t.activation)
	t.activated = true
	if err != nil {
		t.brokenLocked(fmt.Errorf("activate: %w", err))
		return
	}
	t.log.Debug("device activated", "features", fmt.Sprintf("%#x", t.driverFeatures), "msix", t.msix.Enabled())
}

// resetLocked returns the device to its initial state; it waits for the
// device's workers to stop.
func (t *Transport) resetLocked() {
	t.dev.Reset()
	t.retired = t.retired.Add(queueCounters(t.activation.Queues))
	t.activation = virtio.Activation{}
	t.activated = false
	t.devFeatSelect, t.drvFeatSelect, t.driverFeatures = 0, 0, 0
	t.status, t.queueSelect = 0, 0
	for i := range t.queues {
		t.queues[i] = queueConfig{size: t.sizes[i]}
		t.queueVectors[i].Store(noVector)
	}
	t.configVector.Store(noVector)
	t.needsReset.Store(false)
	t.intxMu.Lock()
	t.isr.Store(0)
	if err := t.updateINTxLocked(); err != nil {
		t.log.Warn("INTx deassert at reset", "err", err)
	}
	t.intxMu.Unlock()
	if t.notify != nil {
		t.notify.drain()
	}
}

// Interrupt raises queue's used-buffer notification: its MSI-X vector, or
// the ISR queue bit and INTx when MSI-X is off. Safe from device workers.
func (t *Transport) Interrupt(queue int) error {
	if queue < 0 || queue >= len(t.queueVectors) {
		return fmt.Errorf("virtio-pci: interrupt for queue %d of %d", queue, len(t.queueVectors))
	}
	err := t.raise(uint16(t.queueVectors[queue].Load()), isrQueue)
	if err != nil {
		t.errors.Add(1)
	}
	return err
}

// Broken marks the device as needing a reset and tells the driver with a
// configuration interrupt. Safe from device workers.
func (t *Transport) Broken(err error) {
	if t.needsReset.Swap(true) {
		return
	}
	t.errors.Add(1)
	t.log.Warn("guest misused the device; DEVICE_NEEDS_RESET set", "err", err)
	if rerr := t.raise(uint16(t.configVector.Load()), isrConfig); rerr != nil {
		t.log.Warn("config interrupt", "err", rerr)
	}
}

func (t *Transport) brokenLocked(err error) {
	// Broken touches no state that mu guards.
	t.Broken(err)
}

func (t *Transport) raise(vector uint16, isrBit uint32) error {
	t.interrupts.Add(1)
	if t.msix.Enabled() {
		if vector == noVector {
			return nil
		}
		err := t.msix.Trigger(int(vector))
		if !errors.Is(err, pcibus.ErrMSIXDisabled) {
			return err
		}
	}
	t.intxMu.Lock()
	defer t.intxMu.Unlock()
	t.isr.Or(isrBit)
	return t.updateINTxLocked()
}

// takeISR is the driver's ISR read: it returns and clears the ISR, which
// deasserts INTx (the line is level-triggered: it stays high, and the
// IOAPIC re-delivers after EOI, until the driver acknowledges here).
func (t *Transport) takeISR() uint32 {
	t.intxMu.Lock()
	defer t.intxMu.Unlock()
	v := t.isr.Swap(0)
	if err := t.updateINTxLocked(); err != nil {
		t.log.Warn("INTx deassert", "err", err)
	}
	return v
}

// syncINTx re-evaluates INTA# after a configuration write: disabling INTx
// or enabling MSI-X drops a pending assertion (the ISR bit stays for the
// driver to read), re-enabling INTx raises it again.
func (t *Transport) syncINTx() {
	t.intxMu.Lock()
	defer t.intxMu.Unlock()
	if err := t.updateINTxLocked(); err != nil {
		t.log.Warn("INTx after a configuration write", "err", err)
	}
}

// updateINTxLocked sets INTA# to what the ISR and the function's state
// say: asserted while an ISR bit is pending, INTx is not disabled in the
// command register and MSI-X is off. Called with intxMu held.
func (t *Transport) updateINTxLocked() error {
	pin := t.intx.Load()
	if pin == nil {
		return nil
	}
	level := t.isr.Load() != 0 && t.cfg.Command()&pcibus.CommandINTxDisable == 0 && !t.msix.Enabled()
	return pin.Set(t.vm, level)
}

// Close resets the device (stopping its workers) and releases the
// eventfds.
func (t *Transport) Close() error {
	var errs []error
	t.closeOnce.Do(func() {
		t.mu.Lock()
		if t.queueVectors != nil && t.cfg != nil {
			t.dev.Reset()
			t.activated = false
		}
		t.mu.Unlock()
		if t.notify != nil {
			errs = append(errs, t.notify.close())
		}
		if t.msix != nil {
			errs = append(errs, t.msix.Close())
		}
	})
	return errors.Join(errs...)
}
