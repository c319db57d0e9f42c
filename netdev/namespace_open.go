package netdev

import (
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// CurrentNamespace is the path OpenNamespace takes for the namespace the
// process itself runs in (its main thread's, whatever any locked thread of
// it was switched to).
const CurrentNamespace = "/proc/self/ns/net"

// OpenNamespace opens an existing network namespace by path: a bind mount
// such as /var/run/netns/NAME (what `ip netns add NAME` makes),
// /proc/PID/ns/net, or CurrentNamespace. Close releases this process's hold;
// it never deletes the namespace.
func OpenNamespace(path string) (*Namespace, error) {
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("netdev: open namespace %s: %w", path, err)
	}
	nl, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netdev: netlink in namespace %s: %w", path, err)
	}
	return &Namespace{handle: ns, nl: nl}, nil
}

// Netlink is the namespace's route-netlink handle. Every request on it acts
// inside the namespace whichever thread sends it; it stays owned by the
// Namespace (Close closes it).
func (n *Namespace) Netlink() *netlink.Handle { return n.nl }

// TapOwner says who may attach to a persistent TAP without CAP_NET_ADMIN.
// A negative UID or GID leaves that check off.
type TapOwner struct {
	UID, GID int
}

// NoTapOwner leaves a TAP to privileged users only.
var NoTapOwner = TapOwner{UID: -1, GID: -1}

// CreatePersistentTap creates a persistent TAP device name in the namespace,
// attached to by no process, that owner may later open (OpenTap) without
// privileges: the agent creates it, an unprivileged vmm runs the NIC on it.
// A TAP of that name that already exists gets owner applied instead (which
// fails with an error wrapping unix.EBUSY while a process has it open); a
// negative UID or GID leaves that part as it is, since the kernel cannot
// clear an owner once set.
func (n *Namespace) CreatePersistentTap(name string, owner TapOwner) error {
	if len(name) == 0 || len(name) >= unix.IFNAMSIZ {
		return fmt.Errorf("netdev: tap name %q: want 1..%d bytes", name, unix.IFNAMSIZ-1)
	}
	return n.Do(func() error {
		// Opened inside the namespace: the TUN driver creates the device in
		// the namespace of the descriptor's opener.
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("netdev: open /dev/net/tun: %w", err)
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return fmt.Errorf("netdev: tap %q: %w", name, err)
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return fmt.Errorf("netdev: TUNSETIFF %q: %w", name, err)
		}
		// Owner and group are applied before persisting so that a tap
		// left behind by a crash here is not persistent and vanishes with
		// the descriptor.
		for _, o := range []struct {
			req uint
			id  int
			do  string
		}{{unix.TUNSETOWNER, owner.UID, "TUNSETOWNER"}, {unix.TUNSETGROUP, owner.GID, "TUNSETGROUP"}} {
			if o.id < 0 {
				continue
			}
			if err := unix.IoctlSetInt(fd, o.req, o.id); err != nil {
				return fmt.Errorf("netdev: %s %s %d: %w", o.do, name, o.id, err)
			}
		}
		if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
			return fmt.Errorf("netdev: TUNSETPERSIST %s: %w", name, err)
		}
		return nil
	})
}
