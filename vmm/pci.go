package vmm

import (
	"errors"
	"fmt"
	"io"
	"net"

	"kvmstack/virtio"
	"kvmstack/virtio/block"
	virtionet "kvmstack/virtio/net"
	virtiopci "kvmstack/virtio/pci"
	"kvmstack/virtio/rng"
	"kvmstack/vmm/arch/x86"
	pcibus "kvmstack/vmm/devices/pci"
)

// virtioDevice is a device model with resources to release.
type virtioDevice interface {
	virtio.Device
	io.Closer
}

// setupPCI creates bus 0 (type-1 ports, ECAM, the 32-bit BAR window) and
// one virtio-pci function per configured device. A machine without virtio
// devices gets no bus, as before PCI existed: configuration reads return
// all-ones, Linux finds no PCI devices, and boots without devices stay
// exactly as they were.
func (m *Machine) setupPCI() error {
	if len(m.cfg.Disks) == 0 && len(m.cfg.Nets) == 0 && !m.cfg.RNG {
		return nil
	}
	m.pci = pcibus.NewBus(uint64(x86.PCIMMIOStart), uint64(x86.PCIMMIOEnd))
	m.gsi = pcibus.NewGSIRouter(m.vm)
	if err := m.pio.Register(pcibus.ConfigAddressPort, pcibus.ConfigPorts, m.pci.ConfigIO()); err != nil {
		return err
	}
	if err := m.mmio.Register(uint64(x86.ECAMAddr), x86.ECAMSize, m.pci.ECAM()); err != nil {
		return err
	}
	if err := m.mmio.Register(uint64(x86.PCIMMIOStart), uint64(x86.PCIMMIOEnd-x86.PCIMMIOStart), m.pci.MMIO()); err != nil {
		return err
	}
	devs, err := m.virtioDevices()
	if err != nil {
		return err
	}
	for _, d := range devs {
		if err := m.addVirtio(d); err != nil {
			return err
		}
	}
	return nil
}

// virtioDevices opens the configured device models, in slot order: disks,
// nets, rng. On error the ones already opened are closed.
func (m *Machine) virtioDevices() (devs []virtioDevice, err error) {
	defer func() {
		if err != nil {
			for _, d := range devs {
				err = errors.Join(err, d.Close())
			}
			devs = nil
		}
	}()
	for i, dc := range m.cfg.Disks {
		d, err := block.New(block.Config{Path: dc.Path, ReadOnly: dc.ReadOnly, ID: dc.ID, Log: m.log, RateLimit: dc.RateLimit})
		if err != nil {
			return devs, fmt.Errorf("disk %d (%s): %w", i, dc.Path, err)
		}
		devs = append(devs, d)
	}
	for i, nc := range m.cfg.Nets {
		var mac net.HardwareAddr
		if nc.MAC != "" {
			if mac, err = net.ParseMAC(nc.MAC); err != nil {
				return devs, fmt.Errorf("%w: net %d: %v", ErrConfig, i, err)
			}
		}
		d, err := virtionet.New(virtionet.Config{Tap: nc.Tap, Netns: nc.Netns, MAC: mac, RateLimit: nc.RateLimit})
		if err != nil {
			return devs, fmt.Errorf("net %d (tap %s): %w", i, nc.Tap, err)
		}
		devs = append(devs, d)
	}
	if m.cfg.RNG {
		devs = append(devs, rng.New())
	}
	return devs, nil
}

// addVirtio puts d behind a virtio-pci transport on bus 0. The machine owns
// both from here on, also when this fails.
func (m *Machine) addVirtio(d virtioDevice) error {
	t, err := virtiopci.New(d, virtiopci.Config{Memory: m.mem, VM: m.vm, Router: m.gsi, Log: m.log})
	if err != nil {
		return errors.Join(err, d.Close())
	}
	m.virtio = append(m.virtio, pciFunction{t, d})
	slot, err := m.pci.Add(t)
	if err != nil {
		return err
	}
	m.log.Info("virtio device", "type", d.Type().String(), "slot", slot)
	return nil
}

// pciFunction is one virtio device and its transport.
type pciFunction struct {
	transport *virtiopci.Transport
	dev       virtioDevice
}

// closePCI stops every virtio device and releases its eventfds.
func (m *Machine) closePCI() error {
	var errs []error
	for _, f := range m.virtio {
		errs = append(errs, f.transport.Close(), f.dev.Close())
	}
	m.virtio = nil
	return errors.Join(errs...)
}
