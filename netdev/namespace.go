package netdev

import (
	"errors"
	"fmt"
	"net"
	"os/exec"
	"runtime"

	"github.com/songgao/water"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Namespace is a network namespace this process created. It lives while the
// Namespace is open or a process runs in it, and vanishes with its links
// (TAPs, veths, addresses) after Close and the last such process: nothing is
// left on the host. Tests use it to keep every packet off the host's own
// network.
type Namespace struct {
	handle netns.NsHandle
	nl     *netlink.Handle
}

// NewNamespace creates an empty network namespace with its loopback up.
func NewNamespace() (*Namespace, error) {
	var ns netns.NsHandle
	err := onLockedThread(func() error {
		var err error
		ns, err = netns.New()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netdev: new namespace: %w", err)
	}
	// Route netlink only: a kernel without xfrm or netfilter netlink
	// (modules not loaded) would fail the default families.
	nl, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		ns.Close()
		return nil, fmt.Errorf("netdev: netlink in namespace: %w", err)
	}
	n := &Namespace{handle: ns, nl: nl}
	if err := n.SetUp("lo"); err != nil {
		n.Close()
		return nil, err
	}
	return n, nil
}

// onLockedThread runs fn on a thread of its own and puts the thread back in
// the caller's namespace afterwards. fn may switch the thread's namespace
// (netns.New, netns.Set). If the thread cannot be restored it stays locked
// and dies with its goroutine, so no other goroutine inherits the switch.
func onLockedThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("restore namespace: %w", err))
			return // thread stays locked: the runtime ends it
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Do runs fn on a thread inside the namespace. Sockets and TAPs that fn
// opens belong to the namespace for their whole life, whichever thread uses
// them later; a process fn starts runs in it too.
func (n *Namespace) Do(fn func() error) error {
	return onLockedThread(func() error {
		if err := netns.Set(n.handle); err != nil {
			return fmt.Errorf("netdev: enter namespace: %w", err)
		}
		return fn()
	})
}

// Start starts cmd inside the namespace.
func (n *Namespace) Start(cmd *exec.Cmd) error {
	return n.Do(cmd.Start)
}

// Listen opens a listener inside the namespace (net.Listen's arguments).
func (n *Namespace) Listen(network, address string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() error {
		var err error
		ln, err = net.Listen(network, address)
		return err
	})
	return ln, err
}

// Dial connects from inside the namespace (net.Dial's arguments).
func (n *Namespace) Dial(network, address string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() error {
		var err error
		c, err = net.Dial(network, address)
		return err
	})
	return c, err
}

// CreateTap creates a persistent TAP device, owned by no process, for a
// later OpenTap (by vmm, say) to attach to.
func (n *Namespace) CreateTap(name string) error {
	return n.Do(func() error {
		ifc, err := water.New(water.Config{
			DeviceType:             water.TAP,
			PlatformSpecificParams: water.PlatformSpecificParams{Name: name, Persist: true},
		})
		if err != nil {
			return fmt.Errorf("netdev: create tap %q: %w", name, err)
		}
		return ifc.Close()
	})
}

// OpenTap is OpenTap inside the namespace.
func (n *Namespace) OpenTap(name string, vnetHdr bool) (*Tap, error) {
	var t *Tap
	err := n.Do(func() error {
		var err error
		t, err = OpenTap(name, vnetHdr)
		return err
	})
	return t, err
}

// AddVeth creates a veth pair: name in this namespace, peerName in peer.
func (n *Namespace) AddVeth(name, peerName string, peer *Namespace) error {
	v := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: name},
		PeerName:      peerName,
		PeerNamespace: netlink.NsFd(int(peer.handle)),
	}
	if err := n.nl.LinkAdd(v); err != nil {
		return fmt.Errorf("netdev: add veth %s/%s: %w", name, peerName, err)
	}
	return nil
}

// AddAddress assigns cidr (such as "10.0.2.1/24") to the link.
func (n *Namespace) AddAddress(link, cidr string) error {
	l, err := n.nl.LinkByName(link)
	if err != nil {
		return fmt.Errorf("netdev: link %s: %w", link, err)
	}
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		return fmt.Errorf("netdev: address %q: %w", cidr, err)
	}
	if err := n.nl.AddrAdd(l, a); err != nil {
		return fmt.Errorf("netdev: add %s to %s: %w", cidr, link, err)
	}
	return nil
}

// SetUp brings the link up.
func (n *Namespace) SetUp(link string) error {
	l, err := n.nl.LinkByName(link)
	if err != nil {
		return fmt.Errorf("netdev: link %s: %w", link, err)
	}
	if err := n.nl.LinkSetUp(l); err != nil {
		return fmt.Errorf("netdev: set %s up: %w", link, err)
	}
	return nil
}

// SetMTU changes the link's MTU.
func (n *Namespace) SetMTU(link string, mtu int) error {
	l, err := n.nl.LinkByName(link)
	if err != nil {
		return fmt.Errorf("netdev: link %s: %w", link, err)
	}
	if err := n.nl.LinkSetMTU(l, mtu); err != nil {
		return fmt.Errorf("netdev: set %s mtu %d: %w", link, mtu, err)
	}
	return nil
}

// Close drops this process's hold on the namespace. It and its links go
// away once no process runs in it.
func (n *Namespace) Close() error {
	n.nl.Close()
	return n.handle.Close()
}
