package netdev

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// VnetHdrLen is the virtio-net header the TAP carries in front of every
// frame when opened with vnetHdr: struct virtio_net_hdr_mrg_rxbuf, the
// header of a VIRTIO_F_VERSION_1 device. Using the guest's header size means
// a frame and its header move between guest buffers and the TAP unchanged.
const VnetHdrLen = 12

// Offload is a set of TUN_F_* flags: what the kernel may hand to the TAP's
// reader without finishing it first (partial checksums, unsegmented TCP).
type Offload uint32

// Offloads a TAP reader can accept.
const (
	OffloadCsum   Offload = unix.TUN_F_CSUM
	OffloadTSO4   Offload = unix.TUN_F_TSO4
	OffloadTSO6   Offload = unix.TUN_F_TSO6
	OffloadTSOECN Offload = unix.TUN_F_TSO_ECN
)

// ErrNoVnetHdr means the kernel's TUN driver lacks IFF_VNET_HDR.
var ErrNoVnetHdr = errors.New("netdev: tun driver has no IFF_VNET_HDR")

// Tap is an open TAP device (IFF_TAP|IFF_NO_PI), non-blocking, optionally
// with virtio-net headers.
type Tap struct {
	*PacketFile
	name      string
	vnetHdr   bool
	supported Offload
	// ctl is a datagram socket in the TAP's namespace for interface
	// ioctls (SIOCGIFMTU): by name lookups from other threads would ask
	// whatever namespace that thread is in.
	ctl int
}

// OpenTap attaches to the TAP device name (creating it if it does not exist,
// which needs CAP_NET_ADMIN) in the calling thread's network namespace. With
// vnetHdr every packet read or written starts with a VnetHdrLen-byte
// virtio-net header, and the offloads the kernel accepts are probed (see
// SupportedOffloads); none is enabled until SetOffload.
func OpenTap(name string, vnetHdr bool) (*Tap, error) {
	if len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("netdev: tap name %q longer than %d bytes", name, unix.IFNAMSIZ-1)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netdev: open /dev/net/tun: %w", err)
	}
	t, err := setupTap(fd, name, vnetHdr)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return t, nil
}

func setupTap(fd int, name string, vnetHdr bool) (*Tap, error) {
	flags := uint16(unix.IFF_TAP | unix.IFF_NO_PI)
	if vnetHdr {
		features, err := unix.IoctlGetUint32(fd, unix.TUNGETFEATURES)
		if err != nil {
			return nil, fmt.Errorf("netdev: TUNGETFEATURES: %w", err)
		}
		if features&unix.IFF_VNET_HDR == 0 {
			return nil, ErrNoVnetHdr
		}
		flags |= unix.IFF_VNET_HDR
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("netdev: tap %q: %w", name, err)
	}
	ifr.SetUint16(flags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return nil, fmt.Errorf("netdev: TUNSETIFF %q: %w", name, err)
	}
	t := &Tap{name: ifr.Name(), vnetHdr: vnetHdr, ctl: -1}
	if vnetHdr {
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETHDRSZ, VnetHdrLen); err != nil {
			return nil, fmt.Errorf("netdev: TUNSETVNETHDRSZ %s: %w", t.name, err)
		}
		// virtio 1.x headers are little-endian whatever the host is.
		if err := unix.IoctlSetPointerInt(fd, unix.TUNSETVNETLE, 1); err != nil {
			return nil, fmt.Errorf("netdev: TUNSETVNETLE %s: %w", t.name, err)
		}
		t.supported = probeOffloads(fd)
		if err := setOffload(fd, 0); err != nil {
			return nil, fmt.Errorf("netdev: %s: %w", t.name, err)
		}
	}
	ctl, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("netdev: %s: control socket: %w", t.name, err)
	}
	pf, err := NewPacketFile(os.NewFile(uintptr(fd), "tap:"+t.name))
	if err != nil {
		unix.Close(ctl)
		return nil, err
	}
	t.PacketFile, t.ctl = pf, ctl
	return t, nil
}

// probeOffloads finds the largest offload set the kernel accepts, from the
// most to the least capable. The kernel rejects unknown flags with EINVAL.
func probeOffloads(fd int) Offload {
	for _, o := range []Offload{
		OffloadCsum | OffloadTSO4 | OffloadTSO6 | OffloadTSOECN,
		OffloadCsum | OffloadTSO4 | OffloadTSO6,
		OffloadCsum,
	} {
		if setOffload(fd, o) == nil {
			return o
		}
	}
	return 0
}

func setOffload(fd int, o Offload) error {
	if err := unix.IoctlSetInt(fd, unix.TUNSETOFFLOAD, int(o)); err != nil {
		return fmt.Errorf("TUNSETOFFLOAD %#x: %w", uint32(o), err)
	}
	return nil
}

// Name is the interface name.
func (t *Tap) Name() string { return t.name }

// VnetHdr reports whether packets carry a VnetHdrLen-byte virtio-net header.
func (t *Tap) VnetHdr() bool { return t.vnetHdr }

// SupportedOffloads is the offload set the kernel accepted when the TAP was
// opened (zero without vnet headers: offloads need them).
func (t *Tap) SupportedOffloads() Offload { return t.supported }

// SetOffload tells the kernel which unfinished packets this reader accepts.
// o must be a subset of SupportedOffloads; TSO flags need OffloadCsum.
func (t *Tap) SetOffload(o Offload) error {
	if o&^t.supported != 0 {
		return fmt.Errorf("netdev: %s: offloads %#x not supported (have %#x)", t.name, uint32(o), uint32(t.supported))
	}
	var err error
	cerr := t.raw.Control(func(fd uintptr) { err = setOffload(int(fd), o) })
	if cerr != nil {
		return fmt.Errorf("netdev: %s: %w", t.name, cerr)
	}
	if err != nil {
		return fmt.Errorf("netdev: %s: %w", t.name, err)
	}
	return nil
}

// MTU is the interface's current MTU.
func (t *Tap) MTU() (int, error) {
	ifr, err := unix.NewIfreq(t.name)
	if err != nil {
		return 0, fmt.Errorf("netdev: %s: %w", t.name, err)
	}
	if err := unix.IoctlIfreq(t.ctl, unix.SIOCGIFMTU, ifr); err != nil {
		return 0, fmt.Errorf("netdev: SIOCGIFMTU %s: %w", t.name, err)
	}
	return int(ifr.Uint32()), nil
}

// Close closes the TAP (a persistent TAP stays, without a reader).
func (t *Tap) Close() error {
	err := t.PacketFile.Close()
	if cerr := unix.Close(t.ctl); err == nil && cerr != nil {
		err = fmt.Errorf("netdev: %s: close control socket: %w", t.name, cerr)
	}
	return err
}
