package vmm

import (
	"errors"
	"fmt"

	"kvmstack/virtio/block"
	virtionet "kvmstack/virtio/net"
)

// ErrNoDevice is returned for a device index the machine does not have.
var ErrNoDevice = errors.New("no such device")

// SetDiskRateLimit replaces the rate limit of disk i (Config.Disks order)
// while the machine runs. Invalid limits wrap ErrConfig.
func (m *Machine) SetDiskRateLimit(i int, l RateLimit) error {
	d, err := nthDevice[*block.Device](m, i)
	if err != nil {
		return fmt.Errorf("disk %d: %w", i, err)
	}
	if err := d.SetRateLimit(l); err != nil {
		return fmt.Errorf("%w: disk %d: %w", ErrConfig, i, err)
	}
	return nil
}

// SetNetRateLimit replaces the rate limit of net i (Config.Nets order),
// both directions, while the machine runs. Invalid limits wrap ErrConfig.
func (m *Machine) SetNetRateLimit(i int, l RateLimit) error {
	d, err := nthDevice[*virtionet.Device](m, i)
	if err != nil {
		return fmt.Errorf("net %d: %w", i, err)
	}
	if err := d.SetRateLimit(l); err != nil {
		return fmt.Errorf("%w: net %d: %w", ErrConfig, i, err)
	}
	return nil
}

// DiskRateLimit returns disk i's current rate limit.
func (m *Machine) DiskRateLimit(i int) (RateLimit, error) {
	d, err := nthDevice[*block.Device](m, i)
	if err != nil {
		return RateLimit{}, fmt.Errorf("disk %d: %w", i, err)
	}
	return d.RateLimit(), nil
}

// NetRateLimit returns net i's current rate limit (the transmit side's;
// SetNetRateLimit sets both the same).
func (m *Machine) NetRateLimit(i int) (RateLimit, error) {
	d, err := nthDevice[*virtionet.Device](m, i)
	if err != nil {
		return RateLimit{}, fmt.Errorf("net %d: %w", i, err)
	}
	_, tx := d.RateLimit()
	return tx, nil
}

// nthDevice finds the i-th device model of type T in slot order. The list
// is fixed once New returns, so no lock is needed.
func nthDevice[T virtioDevice](m *Machine, i int) (T, error) {
	var zero T
	if i < 0 {
		return zero, ErrNoDevice
	}
	for _, f := range m.virtio {
		if d, ok := f.dev.(T); ok {
			if i == 0 {
				return d, nil
			}
			i--
		}
	}
	return zero, ErrNoDevice
}
