package block

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"kvmstack/virtio"
	"kvmstack/virtio/ratelimit"
)

// QueueSize is the request queue's maximum size.
const QueueSize = 256

// segMax is the most data buffers a request may have: the queue size less
// the header and status descriptors, as Linux assumes without indirect
// descriptors (with them a table may be larger, but Linux sizes its
// scatterlists by seg_max).
const segMax = QueueSize - 2

// ErrConfig is wrapped by errors about an invalid Config.
var ErrConfig = errors.New("virtio-blk: invalid configuration")

// Config describes one disk.
type Config struct {
	// Path is a raw image file or a host block device.
	Path string
	// ReadOnly opens it read-only and offers VIRTIO_BLK_F_RO: the guest
	// sees a read-only disk, and writes, discards and write-zeroes get
	// VIRTIO_BLK_S_IOERR.
	ReadOnly bool
	// ID is the serial the guest reads with GET_ID, at most IDSize bytes.
	ID string
	// Log receives per-device events (I/O errors); nil means slog.Default().
	Log *slog.Logger
	// RateLimit throttles requests: the bandwidth bucket counts data
	// bytes of reads and writes, the ops bucket every request. The zero
	// value does not limit.
	RateLimit ratelimit.Limits
	// Clock drives the rate limiter; nil means the system clock.
	Clock ratelimit.Clock
}

// Device is a virtio-blk device. It implements virtio.Device and io.Closer.
type Device struct {
	backend  Backend
	capacity uint64 // sectors
	readOnly bool
	id       [IDSize]byte
	config   [ConfigSize]byte
	log      *slog.Logger
	// limiter lives as long as the device (its buckets survive driver
	// resets, so a reset cannot be used to refill them).
	limiter *ratelimit.Limiter

	mu     sync.Mutex
	stop   chan struct{}
	done   chan struct{}
	worker *worker
	// closed guards against use of the backend after Close.
	closed bool
}

// New opens cfg.Path and returns a disk over it.
func New(cfg Config) (*Device, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	f, size, err := OpenFile(cfg.Path, cfg.ReadOnly)
	if err != nil {
		return nil, err
	}
	d, err := NewWithBackend(cfg, f, size)
	if err != nil {
		return nil, errors.Join(err, f.Close())
	}
	return d, nil
}

// NewWithBackend returns a disk of size bytes over b (cfg.Path is only
// used in logs). Bytes past the last whole sector are not visible to the
// guest. The device owns b and closes it in Close.
func NewWithBackend(cfg Config, b Backend, size int64) (*Device, error) {
	if err := checkConfig(cfg); err != nil {
		return nil, err
	}
	if size < 0 {
		return nil, fmt.Errorf("%w: negative size %d", ErrConfig, size)
	}
	lim, err := ratelimit.New(cfg.RateLimit, cfg.Clock)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	d := &Device{backend: b, capacity: uint64(size) >> sectorShift, readOnly: cfg.ReadOnly, log: cfg.Log, limiter: lim}
	if d.log == nil {
		d.log = slog.Default()
	}
	d.log = d.log.With("device", "virtio-blk", "path", cfg.Path)
	copy(d.id[:], cfg.ID)
	d.config = configSpace(d.capacity, segMax)
	return d, nil
}

func checkConfig(cfg Config) error {
	if len(cfg.ID) > IDSize {
		return fmt.Errorf("%w: id %q longer than %d bytes", ErrConfig, cfg.ID, IDSize)
	}
	if err := cfg.RateLimit.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// SetRateLimit replaces the disk's rate limits while it runs (the control
// API's PATCH /drives). The new buckets start full; a worker waiting for
// tokens looks again at once. Invalid limits wrap ErrConfig and
// ratelimit.ErrInvalid and change nothing.
func (d *Device) SetRateLimit(l ratelimit.Limits) error {
	if err := d.limiter.Set(l); err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	return nil
}

// RateLimit returns the disk's current rate limits.
func (d *Device) RateLimit() ratelimit.Limits { return d.limiter.Limits() }

// Throttled counts the times the request worker had to wait for tokens.
func (d *Device) Throttled() uint64 { return d.limiter.Throttled() }

// Capacity is the disk size in 512-byte sectors.
func (d *Device) Capacity() uint64 { return d.capacity }

// Type implements virtio.Device.
func (d *Device) Type() virtio.DeviceType { return virtio.DeviceBlock }

// Features implements virtio.Device. A read-only disk offers F_RO and no
// discard or write-zeroes.
func (d *Device) Features() uint64 {
	f := FeatureSegMax | FeatureBlkSize | FeatureFlush | FeatureTopology
	if d.readOnly {
		return f | FeatureRO
	}
	return f | FeatureDiscard | FeatureWriteZeroes
}

// QueueSizes implements virtio.Device: one request queue.
func (d *Device) QueueSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device.
func (d *Device) ReadConfig(offset uint64, data []byte) {
	clear(data)
	if offset < ConfigSize {
		copy(data, d.config[offset:])
	}
}

// WriteConfig implements virtio.Device: without VIRTIO_BLK_F_CONFIG_WCE
// every field is read-only.
func (d *Device) WriteConfig(uint64, []byte) {}

// Activate implements virtio.Device.
func (d *Device) Activate(a virtio.Activation) error {
	if len(a.Queues) != 1 || len(a.Kicks) != 1 {
		return fmt.Errorf("virtio-blk: %d queues, want 1", len(a.Queues))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("virtio-blk: device closed")
	}
	if d.stop != nil {
		return fmt.Errorf("virtio-blk: already active")
	}
	if a.Queues[0] == nil {
		return nil
	}
	w := &worker{
		dev: d,
		a:   a,
		q:   a.Queues[0],
		lim: limits{
			capacity:       d.capacity,
			readOnly:       d.readOnly,
			features:       a.Features & d.Features(),
			maxDiscardSecs: maxDiscardSectors,
			maxDiscardSegs: maxDiscardSegs,
			maxZeroesSecs:  maxZeroesSectors,
			maxZeroesSegs:  maxZeroesSegs,
		},
	}
	d.stop, d.done, d.worker = make(chan struct{}), make(chan struct{}), w
	go w.run(d.stop, d.done)
	return nil
}

// Reset implements virtio.Device: it waits for the request in progress to
// finish, so no guest memory is touched afterwards.
func (d *Device) Reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.resetLocked()
}

func (d *Device) resetLocked() {
	if d.stop != nil {
		close(d.stop)
		<-d.done
		w := d.worker
		// Whether the driver left requests the device never took tells a
		// lost notification from a guest stuck elsewhere when a guest hangs.
		pending, err := w.q.EnableNotifications()
		level := slog.LevelInfo
		if pending || err != nil {
			level = slog.LevelWarn
		}
		d.log.Log(context.Background(), level, "virtio-blk stopped", "requests", w.requests, "kicks", w.kicks, "interrupts", w.interrupts,
			"pending", pending, "queue_err", err)
		d.stop, d.done, d.worker = nil, nil, nil
	}
}

// Close stops the device, flushes the backend and closes it.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.resetLocked()
	d.closed = true
	var ferr error
	if !d.readOnly {
		ferr = d.backend.Flush()
	}
	return errors.Join(ferr, d.backend.Close())
}

// worker serves one activation of the request queue.
type worker struct {
	dev *Device
	a   virtio.Activation
	q   *virtio.Queue
	lim limits
	// Counters for the log line at reset; only the worker writes them
	// and Reset reads them after the worker stopped.
	requests, kicks, interrupts uint64
}

func (w *worker) run(stop, done chan struct{}) {
	defer close(done)
	for {
		wait, err := w.serve(stop)
		if err != nil {
			w.dev.log.Warn("device broken by the guest", "err", err)
			w.a.Broken(err)
			return
		}
		if wait > 0 {
			// Throttled: the requests stay in the available ring and
			// notifications stay off until the tokens are there.
			if !w.dev.limiter.Wait(wait, stop) {
				return
			}
			continue
		}
		select {
		case <-stop:
			return
		case <-w.a.Kicks[0]:
			w.kicks++
		}
	}
}

// serve handles every available request with notifications off, raising
// one interrupt per batch, and returns once notifications are re-armed with
// nothing pending, or, when the rate limiter says so, with the time to wait
// before the next request (notifications still off, the next request still
// in the available ring). An error means the guest broke the queue or the
// protocol.
func (w *worker) serve(stop chan struct{}) (time.Duration, error) {
	for {
		if err := w.q.DisableNotifications(); err != nil {
			return 0, err
		}
		var wait time.Duration
		for {
			select {
			case <-stop:
				return 0, nil
			default:
			}
			if wait = w.dev.limiter.Delay(); wait > 0 {
				break
			}
			c, err := w.q.Pop()
			if err != nil {
				return 0, err
			}
			if c == nil {
				break
			}
			n, err := w.dev.handle(w.a, c, &w.lim)
			if err != nil {
				return 0, err
			}
			if err := w.q.Push(c.Head, n); err != nil {
				return 0, err
			}
			w.requests++
		}
		if w.q.NeedInterrupt() {
			if err := w.a.Interrupt(0); err != nil {
				return 0, err
			}
			w.interrupts++
		}
		if wait > 0 {
			return wait, nil
		}
		more, err := w.q.EnableNotifications()
		if err != nil {
			return 0, err
		}
		if !more {
			return 0, nil
		}
	}
}

// handle parses and executes one request, writes its status, and returns
// the number of bytes written into the chain. An error is a protocol
// violation the guest cannot be told about (no status byte).
func (d *Device) handle(a virtio.Activation, c *virtio.Chain, l *limits) (uint32, error) {
	r, err := parseRequest(a.Memory, c, l)
	if errors.Is(err, ErrNoStatus) {
		return 0, err
	}
	// Every request costs an operation; reads and writes also their data.
	// A rejected request is charged too, or a guest could flood the host
	// with bad ones for free.
	var bytes uint64
	if err == nil && (r.Type == TypeIn || r.Type == TypeOut) {
		bytes = uint64(r.DataLen())
	}
	d.limiter.Charge(bytes)
	status := StatusOK
	written := uint32(1)
	switch {
	case errors.Is(err, ErrUnsupported):
		status = StatusUnsupp
	case err != nil:
		d.log.Debug("bad request", "err", err)
		status = StatusIOErr
	default:
		n, err := d.execute(r)
		if err != nil {
			d.log.Warn("request failed", "type", r.Type, "offset", r.Offset, "err", err)
			status = StatusIOErr
		}
		written += n
	}
	r.Status[0] = status
	return written, nil
}

// execute runs a checked request against the backend and returns how many
// bytes it wrote into guest buffers (besides the status).
func (d *Device) execute(r *Request) (uint32, error) {
	switch r.Type {
	case TypeIn:
		if err := d.backend.ReadAt(r.Data, r.Offset); err != nil {
			return 0, err
		}
		return uint32(r.DataLen()), nil
	case TypeOut:
		return 0, d.backend.WriteAt(r.Data, r.Offset)
	case TypeFlush:
		if d.readOnly {
			return 0, nil
		}
		return 0, d.backend.Flush()
	case TypeGetID:
		var n uint32
		id := d.id[:]
		for _, b := range r.Data {
			c := copy(b, id)
			id, n = id[c:], n+uint32(c)
		}
		return n, nil
	case TypeDiscard:
		for _, s := range r.Segments {
			if err := d.backend.Discard(s.Offset, s.Length); err != nil {
				return 0, err
			}
		}
		return 0, nil
	case TypeWriteZeroes:
		for _, s := range r.Segments {
			if err := d.backend.WriteZeroes(s.Offset, s.Length, s.Unmap); err != nil {
				return 0, err
			}
		}
		return 0, nil
	}
	return 0, fmt.Errorf("%w: request type %d", ErrUnsupported, r.Type)
}
