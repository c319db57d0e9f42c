package net

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	stdnet "net"
	"sync"
	"sync/atomic"
	"time"

	"kvmstack/netdev"
	"kvmstack/virtio"
	"kvmstack/virtio/ratelimit"
)

// Queue indexes: one receive/transmit pair, no control queue.
const (
	rxQueue = 0
	txQueue = 1
)

// QueueSize is the size of each queue offered to the driver.
const QueueSize = 256

// Link status bit of the configuration space.
const statusLinkUp = 1

// configSize is the configuration space the device fills: mac[6], status.
const configSize = 8

// Backend is where frames go: a TAP, or in tests a socket pair. Every packet
// read or written starts with an HdrLen-byte virtio-net header.
type Backend interface {
	// ReadPacket scatters one packet into bufs; beforeWait runs when
	// none is waiting, before the call blocks.
	ReadPacket(bufs [][]byte, beforeWait func()) (int, error)
	// WritePacket gathers bufs into one packet.
	WritePacket(bufs [][]byte) (int, error)
	// SetDeadline with a past time wakes blocked calls; zero clears it.
	SetDeadline(t time.Time) error
	// SupportedOffloads is what SetOffload may enable.
	SupportedOffloads() netdev.Offload
	// SetOffload says which unfinished packets ReadPacket may return.
	SetOffload(o netdev.Offload) error
	// MTU bounds the frames ReadPacket returns without segmentation
	// offloads.
	MTU() (int, error)
	// Close releases the backend.
	Close() error
}

// Config describes one virtio-net device.
type Config struct {
	// Tap is the TAP interface to attach to (created if missing).
	Tap string
	// Netns is the network namespace (path) the TAP is in; "" is vmm's.
	Netns string
	// MAC is the guest's address; nil picks a random locally
	// administered one.
	MAC stdnet.HardwareAddr
	// RateLimit throttles each direction on its own (receive and
	// transmit get a bucket pair each): the bandwidth bucket counts frame
	// bytes, the ops bucket packets. The zero value does not limit.
	RateLimit ratelimit.Limits
}

// Stats counts what the device moved. Bytes exclude virtio-net headers.
type Stats struct {
	RxPackets, RxBytes, RxDropped atomic.Uint64
	TxPackets, TxBytes, TxDropped atomic.Uint64
}

// Device is a virtio-net device on a Backend. It implements virtio.Device.
type Device struct {
	name    string
	backend Backend
	mac     stdnet.HardwareAddr
	log     *slog.Logger
	stats   Stats
	// rxLim and txLim throttle the two directions; they live as long as
	// the device, so a driver reset does not refill them.
	rxLim, txLim *ratelimit.Limiter

	mu  sync.Mutex // serialises Activate, Reset and Close
	cur *run
}

// run is one activation: the workers and what they share.
type run struct {
	d         *Device
	act       virtio.Activation
	mrg       bool
	guestCsum bool
	rxNeed    int // buffer space that holds any packet the TAP may deliver

	stop     chan struct{}
	haltOnce sync.Once
	brkOnce  sync.Once
	wg       sync.WaitGroup
}

// openTap opens the TAP with virtio-net headers, in namespace netns when
// set (the fd stays bound to that namespace's TAP; vmm's threads stay in
// their own).
func openTap(name, netns string) (*netdev.Tap, error) {
	if netns == "" {
		return netdev.OpenTap(name, true)
	}
	ns, err := netdev.OpenNamespace(netns)
	if err != nil {
		return nil, err
	}
	defer ns.Close()
	return ns.OpenTap(name, true)
}

// New opens the TAP named in cfg with virtio-net headers and returns a
// device on it.
func New(cfg Config) (*Device, error) {
	tap, err := openTap(cfg.Tap, cfg.Netns)
	if err != nil {
		return nil, fmt.Errorf("virtio-net: %w", err)
	}
	d, err := NewWithBackend(tap.Name(), tap, cfg.MAC)
	if err != nil {
		tap.Close()
		return nil, err
	}
	if err := d.SetRateLimit(cfg.RateLimit); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return d, nil
}

// NewWithBackend returns a device on b, named name in logs. The device owns
// b from now on and closes it in Close.
func NewWithBackend(name string, b Backend, mac stdnet.HardwareAddr) (*Device, error) {
	if mac == nil {
		mac = make(stdnet.HardwareAddr, 6)
		if _, err := rand.Read(mac[3:]); err != nil {
			return nil, fmt.Errorf("virtio-net: random MAC: %w", err)
		}
		copy(mac, []byte{0x52, 0x54, 0x00})
	}
	if len(mac) != 6 {
		return nil, fmt.Errorf("virtio-net: MAC %s is not 6 bytes", mac)
	}
	if mac[0]&1 != 0 {
		return nil, fmt.Errorf("virtio-net: MAC %s is a multicast address", mac)
	}
	// Unlimited limiters cannot fail to build.
	rx, _ := ratelimit.New(ratelimit.Limits{}, nil)
	tx, _ := ratelimit.New(ratelimit.Limits{}, nil)
	return &Device{name: name, backend: b, mac: mac, log: slog.Default().With("dev", "virtio-net", "tap", name), rxLim: rx, txLim: tx}, nil
}

// SetRateLimit gives both directions the limits l (each its own buckets,
// full at first); the control API calls it while the device runs. Invalid
// limits wrap ratelimit.ErrInvalid and change nothing.
func (d *Device) SetRateLimit(l ratelimit.Limits) error {
	if err := l.Validate(); err != nil {
		return fmt.Errorf("virtio-net: %w", err)
	}
	return errors.Join(d.SetRxRateLimit(l), d.SetTxRateLimit(l))
}

// SetRxRateLimit limits what the guest receives.
func (d *Device) SetRxRateLimit(l ratelimit.Limits) error {
	if err := d.rxLim.Set(l); err != nil {
		return fmt.Errorf("virtio-net: receive: %w", err)
	}
	return nil
}

// SetTxRateLimit limits what the guest sends.
func (d *Device) SetTxRateLimit(l ratelimit.Limits) error {
	if err := d.txLim.Set(l); err != nil {
		return fmt.Errorf("virtio-net: transmit: %w", err)
	}
	return nil
}

// Throttled counts the times the receive and transmit workers had to wait
// for tokens.
func (d *Device) Throttled() (rx, tx uint64) { return d.rxLim.Throttled(), d.txLim.Throttled() }

// RateLimit returns the receive and transmit limits.
func (d *Device) RateLimit() (rx, tx ratelimit.Limits) { return d.rxLim.Limits(), d.txLim.Limits() }

// MAC is the guest's MAC address.
func (d *Device) MAC() stdnet.HardwareAddr { return d.mac }

// Stats returns the device's counters (live).
func (d *Device) Stats() *Stats { return &d.stats }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.DeviceNet }

// Features implements virtio.Device. Transmit offloads need only the vnet
// header; receive offloads are offered as far as the TAP accepts them, so a
// driver that takes them gets checksum-less super-packets from the host
// exactly when the kernel may produce them.
func (d *Device) Features() uint64 {
	f := FeatureMAC | FeatureStatus | FeatureMrgRxBuf |
		FeatureCsum | FeatureHostTSO4 | FeatureHostTSO6 | FeatureHostECN
	o := d.backend.SupportedOffloads()
	if o&netdev.OffloadCsum != 0 {
		f |= FeatureGuestCsum
		if o&netdev.OffloadTSO4 != 0 {
			f |= FeatureGuestTSO4
		}
		if o&netdev.OffloadTSO6 != 0 {
			f |= FeatureGuestTSO6
		}
		if o&netdev.OffloadTSOECN != 0 && o&(netdev.OffloadTSO4|netdev.OffloadTSO6) != 0 {
			f |= FeatureGuestECN
		}
	}
	return f
}

// QueueSizes implements virtio.Device: receiveq1 and transmitq1.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize, QueueSize} }

// ReadConfig implements virtio.Device: mac, then status (link up).
func (d *Device) ReadConfig(offset uint64, data []byte) {
	var cfg [configSize]byte
	copy(cfg[:6], d.mac)
	binary.LittleEndian.PutUint16(cfg[6:], statusLinkUp)
	for i := range data {
		data[i] = 0
		if o := offset + uint64(i); o >= offset && o < configSize {
			data[i] = cfg[o]
		}
	}
}

// WriteConfig implements virtio.Device. The MAC is writable only through the
// control queue this device does not offer, so every byte is read-only.
func (d *Device) WriteConfig(offset uint64, data []byte) {}

// offloadsFor maps negotiated receive features to TAP offloads.
func offloadsFor(features uint64) netdev.Offload {
	var o netdev.Offload
	if features&FeatureGuestCsum == 0 {
		return 0
	}
	o |= netdev.OffloadCsum
	if features&FeatureGuestTSO4 != 0 {
		o |= netdev.OffloadTSO4
	}
	if features&FeatureGuestTSO6 != 0 {
		o |= netdev.OffloadTSO6
	}
	if features&FeatureGuestECN != 0 && o&(netdev.OffloadTSO4|netdev.OffloadTSO6) != 0 {
		o |= netdev.OffloadTSOECN
	}
	return o
}

// ErrActive is returned by Activate on a device that runs already.
var ErrActive = errors.New("virtio-net: already active")

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cur != nil {
		return ErrActive
	}
	if a.Features&virtio.FeatureVersion1 == 0 {
		return errors.New("virtio-net: driver did not accept VIRTIO_F_VERSION_1")
	}
	if len(a.Queues) != 2 || len(a.Kicks) != 2 {
		return fmt.Errorf("virtio-net: %d queues and %d kick channels, want 2", len(a.Queues), len(a.Kicks))
	}
	o := offloadsFor(a.Features)
	if err := d.backend.SetOffload(o); err != nil {
		return fmt.Errorf("virtio-net: %w", err)
	}
	r := &run{d: d, act: a, stop: make(chan struct{}),
		mrg:       a.Features&FeatureMrgRxBuf != 0,
		guestCsum: a.Features&FeatureGuestCsum != 0,
	}
	if o&(netdev.OffloadTSO4|netdev.OffloadTSO6) != 0 {
		r.rxNeed = HdrLen + maxFrame
	} else {
		mtu, err := d.backend.MTU()
		if err != nil {
			return fmt.Errorf("virtio-net: %w", err)
		}
		// Ethernet header and a VLAN tag on top of the MTU.
		r.rxNeed = HdrLen + min(mtu+18, maxFrame)
	}
	if a.Queues[rxQueue] != nil {
		r.wg.Add(1)
		go d.rxLoop(r)
	}
	if a.Queues[txQueue] != nil {
		r.wg.Add(1)
		go d.txLoop(r)
	}
	d.cur = r
	d.log.Debug("virtio-net: active", "features", fmt.Sprintf("%#x", a.Features), "offload", fmt.Sprintf("%#x", uint32(o)), "rxNeed", r.rxNeed)
	return nil
}

// Reset implements virtio.Device: stop the workers, wait for them, and
// return the TAP to offering only finished packets.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resetLocked()
}

func (d *Device) resetLocked() {
	r := d.cur
	if r == nil {
		return
	}
	r.halt()
	r.wg.Wait()
	d.cur = nil
	if err := d.backend.SetDeadline(time.Time{}); err != nil {
		d.log.Error("virtio-net: clear deadline", "err", err)
	}
	if err := d.backend.SetOffload(0); err != nil {
		d.log.Error("virtio-net: reset offloads", "err", err)
	}
}

// Close resets the device and closes its backend.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resetLocked()
	return d.backend.Close()
}

// halt stops both workers: closes stop and wakes a blocked TAP read.
func (r *run) halt() {
	r.haltOnce.Do(func() {
		close(r.stop)
		if err := r.d.backend.SetDeadline(time.Now()); err != nil {
			r.d.log.Error("virtio-net: wake workers", "err", err)
		}
	})
}

func (r *run) stopping() bool {
	select {
	case <-r.stop:
		return true
	default:
		return false
	}
}

// broken reports a guest error once and stops the device until Reset.
func (r *run) broken(err error) {
	r.brkOnce.Do(func() {
		r.d.log.Warn("virtio-net: guest broke the device", "err", err)
		if r.act.Broken != nil {
			r.act.Broken(err)
		}
		r.halt()
	})
}

// interrupt notifies the driver of used buffers on queue i if it asked.
func (r *run) interrupt(q *virtio.Queue, i int) {
	if !q.NeedInterrupt() {
		return
	}
	if err := r.act.Interrupt(i); err != nil {
		r.d.log.Error("virtio-net: interrupt", "queue", i, "err", err)
	}
}
