package pci

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"kvmstack/vmm/kvm"
)

// MSI-X layout (PCI Local Bus 3.0, 6.8.2).
const (
	msixEntrySize     = 16
	msixCtrlMasked    = 1
	msixControlEnable = 1 << 15
	msixControlMask   = 1 << 14
	// MaxMSIXVectors is the largest table the capability can describe.
	MaxMSIXVectors = 2048
)

// MSIRouter hands out GSIs and routes them to MSI messages; *GSIRouter
// implements it.
type MSIRouter interface {
	Allocate() (uint32, error)
	SetMSI(gsi uint32, m kvm.IRQRoutingMSI) error
}

// IRQFDBinder binds an eventfd to a GSI; *kvm.VM implements it.
type IRQFDBinder interface {
	IRQFD(f kvm.IRQFD) error
}

// ErrMSIXDisabled is returned by Trigger while the guest has not enabled
// MSI-X: the device must use INTx instead.
var ErrMSIXDisabled = errors.New("pci: MSI-X disabled")

// MSIX is one function's MSI-X capability, table and pending-bit array.
// Each vector has its own GSI and eventfd bound with KVM_IRQFD, so
// signalling a vector is one eventfd write from the device's goroutine; the
// GSI's route follows the guest's table entry, committed when the vector is
// live (enabled, neither function- nor vector-masked). A vector that fires
// while masked sets its pending bit and fires when unmasked.
type MSIX struct {
	mu      sync.Mutex
	cfg     *ConfigSpace
	capOff  int
	table   []byte
	pba     []uint64
	gsi     []uint32
	efd     []int
	routed  []bool
	enabled bool
	fmask   bool
	router  MSIRouter
}

// NewMSIX adds an MSI-X capability for vectors vectors to cfg, with the
// table at tableOff and the PBA at pbaOff in BAR bar (the caller routes those
// BAR ranges to TableRead/TableWrite/PBARead). It allocates a GSI and an
// eventfd per vector and binds them with irqfds.
func NewMSIX(cfg *ConfigSpace, vectors int, bar int, tableOff, pbaOff uint32, router MSIRouter, irqfds IRQFDBinder) (_ *MSIX, err error) {
	if vectors < 1 || vectors > MaxMSIXVectors || bar < 0 || bar >= NumBARs || tableOff&7 != 0 || pbaOff&7 != 0 {
		return nil, fmt.Errorf("%w: MSI-X with %d vectors in BAR %d", ErrConfigSpace, vectors, bar)
	}
	m := &MSIX{
		cfg: cfg, table: make([]byte, vectors*msixEntrySize), pba: make([]uint64, (vectors+63)/64),
		gsi: make([]uint32, vectors), efd: make([]int, vectors), routed: make([]bool, vectors), router: router,
	}
	for i := range m.efd {
		m.efd[i] = -1
	}
	defer func() {
		if err != nil {
			_ = m.Close()
		}
	}()
	for v := range vectors {
		binary.LittleEndian.PutUint32(m.table[v*msixEntrySize+12:], msixCtrlMasked)
		if m.gsi[v], err = router.Allocate(); err != nil {
			return nil, err
		}
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return nil, fmt.Errorf("pci: MSI-X eventfd: %w", err)
		}
		m.efd[v] = fd
		if err := irqfds.IRQFD(kvm.IRQFD{FD: uint32(fd), GSI: m.gsi[v]}); err != nil {
			return nil, fmt.Errorf("pci: irqfd for MSI-X vector %d (GSI %d): %w", v, m.gsi[v], err)
		}
	}
	body := make([]byte, 10)
	binary.LittleEndian.PutUint16(body, uint16(vectors-1))
	binary.LittleEndian.PutUint32(body[2:], tableOff|uint32(bar))
	binary.LittleEndian.PutUint32(body[6:], pbaOff|uint32(bar))
	wmask := make([]byte, 10)
	wmask[1] = byte((msixControlEnable | msixControlMask) >> 8)
	if m.capOff, err = cfg.AddCapability(CapIDMSIX, body, wmask, m.controlWritten); err != nil {
		return nil, err
	}
	return m, nil
}

// Vectors is the table size.
func (m *MSIX) Vectors() int { return len(m.gsi) }

// TableSize is the table's length in bytes; PBASize the PBA's.
func (m *MSIX) TableSize() uint64 { return uint64(len(m.table)) }

// PBASize is the pending-bit array's length in bytes.
func (m *MSIX) PBASize() uint64 { return uint64(8 * len(m.pba)) }

// Enabled reports whether the guest enabled MSI-X.
func (m *MSIX) Enabled() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.enabled
}

// controlWritten picks up the enable and function-mask bits after a guest
// write to the capability.
func (m *MSIX) controlWritten() {
	var b [2]byte
	m.cfg.Read(uint64(m.capOff+2), b[:])
	ctrl := binary.LittleEndian.Uint16(b[:])
	m.mu.Lock()
	m.enabled, m.fmask = ctrl&msixControlEnable != 0, ctrl&msixControlMask != 0
	fire := m.refreshLocked()
	m.mu.Unlock()
	m.fire(fire)
}

// live reports whether vector v may be delivered now.
func (m *MSIX) liveLocked(v int) bool {
	return m.enabled && !m.fmask && binary.LittleEndian.Uint32(m.table[v*msixEntrySize+12:])&msixCtrlMasked == 0
}

// refreshLocked commits routes of live vectors and collects pending live
// vectors to fire.
func (m *MSIX) refreshLocked() []int {
	var fire []int
	for v := range m.gsi {
		if !m.liveLocked(v) {
			continue
		}
		m.routeLocked(v)
		if m.pba[v/64]&(1<<(v%64)) != 0 {
			m.pba[v/64] &^= 1 << (v % 64)
			fire = append(fire, v)
		}
	}
	return fire
}

// routeLocked commits vector v's message to its GSI if it changed. A
// failure leaves the vector unrouted; the next write or trigger retries.
func (m *MSIX) routeLocked(v int) {
	if m.routed[v] {
		return
	}
	e := m.table[v*msixEntrySize:]
	msg := kvm.IRQRoutingMSI{
		AddressLo: binary.LittleEndian.Uint32(e), AddressHi: binary.LittleEndian.Uint32(e[4:]), Data: binary.LittleEndian.Uint32(e[8:]),
	}
	if err := m.router.SetMSI(m.gsi[v], msg); err == nil {
		m.routed[v] = true
	}
}

func (m *MSIX) fire(vs []int) {
	for _, v := range vs {
		_ = m.signal(v)
	}
}

// signal writes vector v's eventfd; KVM injects the routed MSI.
func (m *MSIX) signal(v int) error {
	var one [8]byte
	binary.LittleEndian.PutUint64(one[:], 1)
	if _, err := unix.Write(m.efd[v], one[:]); err != nil && !errors.Is(err, unix.EAGAIN) {
		// EAGAIN: the counter is saturated, so an interrupt is pending anyway.
		return fmt.Errorf("pci: signal MSI-X vector %d: %w", v, err)
	}
	return nil
}

// Trigger delivers vector v, or marks it pending while it is masked. It
// returns ErrMSIXDisabled while MSI-X is off.
func (m *MSIX) Trigger(v int) error {
	m.mu.Lock()
	if v < 0 || v >= len(m.gsi) {
		m.mu.Unlock()
		return fmt.Errorf("pci: MSI-X vector %d of %d", v, len(m.gsi))
	}
	if !m.enabled {
		m.mu.Unlock()
		return ErrMSIXDisabled
	}
	if !m.liveLocked(v) {
		m.pba[v/64] |= 1 << (v % 64)
		m.mu.Unlock()
		return nil
	}
	m.routeLocked(v)
	routed := m.routed[v]
	m.mu.Unlock()
	if !routed {
		return fmt.Errorf("pci: MSI-X vector %d has no route", v)
	}
	return m.signal(v)
}

// TableRead reads the MSI-X table at offset.
func (m *MSIX) TableRead(offset uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range data {
		o := offset + uint64(i)
		data[i] = 0
		if o < uint64(len(m.table)) {
			data[i] = m.table[o]
		}
	}
}

// TableWrite writes the MSI-X table at offset. Only the message fields and
// the mask bit are writable.
func (m *MSIX) TableWrite(offset uint64, data []byte) {
	m.mu.Lock()
	touched := map[int]bool{}
	for i := range data {
		o := offset + uint64(i)
		if o >= uint64(len(m.table)) {
			break
		}
		v, f := int(o/msixEntrySize), o%msixEntrySize
		b := data[i]
		switch {
		case f == 12:
			b &= msixCtrlMasked
		case f > 12:
			b = 0
		}
		if m.table[o] != b {
			m.table[o] = b
			if f < 12 {
				m.routed[v] = false
			}
			touched[v] = true
		}
	}
	var fire []int
	if len(touched) > 0 {
		fire = m.refreshLocked()
	}
	m.mu.Unlock()
	m.fire(fire)
}

// PBARead reads the pending-bit array (read-only to the guest).
func (m *MSIX) PBARead(offset uint64, data []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := range data {
		o := offset + uint64(i)
		data[i] = 0
		if o < uint64(8*len(m.pba)) {
			data[i] = byte(m.pba[o/8] >> (8 * (o % 8)))
		}
	}
}

// Close closes the eventfds (which also detaches their irqfds).
func (m *MSIX) Close() error {
	var errs []error
	for i, fd := range m.efd {
		if fd >= 0 {
			errs = append(errs, unix.Close(fd))
			m.efd[i] = -1
		}
	}
	return errors.Join(errs...)
}
