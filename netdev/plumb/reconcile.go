package plumb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"kvmstack/netdev"
)

// Options configures a Reconciler.
type Options struct {
	// Namespace is where the links live (the agent's --netns, or
	// netdev.OpenNamespace(netdev.CurrentNamespace)). It stays the
	// caller's to close, after the Reconciler is no longer used.
	Namespace *netdev.Namespace
	// Prefixes mark the names this reconciler owns. Only bridges, VXLANs
	// and TAPs whose names start with one of them are ever changed or
	// deleted. Each must be at least 2 bytes, so that an empty or
	// one-letter prefix cannot claim the host's own interfaces.
	Prefixes []string
	// Logger receives one Info record per change; nil discards.
	Logger *slog.Logger
}

// Reconciler converges the links of one namespace to a Desired state. Calls
// to Reconcile must not overlap (the agent's single sync loop owns it).
type Reconciler struct {
	ns       *netdev.Namespace
	nl       *netlink.Handle
	prefixes []string
	log      *slog.Logger
}

// New checks o and returns a Reconciler.
func New(o Options) (*Reconciler, error) {
	if o.Namespace == nil {
		return nil, errors.New("plumb: no namespace")
	}
	if len(o.Prefixes) == 0 {
		return nil, errors.New("plumb: no owned name prefixes")
	}
	for _, p := range o.Prefixes {
		if len(p) < 2 || len(p) > 12 {
			return nil, fmt.Errorf("plumb: owned prefix %q: want 2..12 bytes", p)
		}
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Reconciler{ns: o.Namespace, nl: o.Namespace.Netlink(), prefixes: slices.Clone(o.Prefixes), log: log}, nil
}

// Owns reports whether name carries one of the owned prefixes.
func (r *Reconciler) Owns(name string) bool {
	for _, p := range r.prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// kind is what this package manages a link as.
type kind int

const (
	kindOther kind = iota
	kindBridge
	kindVXLAN
	kindTap
)

func (k kind) String() string {
	return [...]string{"foreign link", "bridge", "vxlan", "tap"}[k]
}

func kindOf(l netlink.Link) kind {
	switch v := l.(type) {
	case *netlink.Bridge:
		return kindBridge
	case *netlink.Vxlan:
		return kindVXLAN
	case *netlink.Tuntap:
		if v.Mode == netlink.TUNTAP_MODE_TAP {
			return kindTap
		}
	}
	return kindOther
}

// Reconcile makes the namespace's owned links match d:
//   - every network has an up bridge with the MTU, multicast snooping off
//     and IPv4 forwarding off; a VXLAN with the VNI, local address, port
//     4789, learning off, the MTU, attached to the bridge and up; exactly
//     the forwarding entries that Remotes and Neighbors ask for; and its
//     TAPs, persistent, owned as asked, attached, up; IPv6 is disabled on
//     all of them;
//   - owned bridges, VXLANs and TAPs that d does not name are deleted
//     (first, so that a VNI or name can move between networks);
//   - a link of the right name but wrong kind or unchangeable attributes
//     (VNI, local address, port) is deleted and created again;
//   - links without an owned prefix, and links of other kinds, are never
//     touched; a desired name held by one fails that network with
//     ErrConflict.
//
// It is idempotent: with nothing to do it only reads. An invalid d (see
// ErrInvalid) changes nothing. Otherwise each network is converged on its
// own and the errors of all networks are joined, so one broken network does
// not hold back the others; calling again retries what failed. A cancelled
// ctx stops between steps with ctx's error.
func (r *Reconciler) Reconcile(ctx context.Context, d Desired) error {
	if err := d.validate(r.Owns); err != nil {
		return err
	}
	links, err := r.links()
	if err != nil {
		return err
	}
	want := map[string]kind{}
	for _, n := range d.Networks {
		want[n.Bridge] = kindBridge
		want[n.VXLAN] = kindVXLAN
		for _, t := range n.Taps {
			want[t.Name] = kindTap
		}
	}
	var errs []error
	// Ports before the bridges they sit on, so nothing is left dangling
	// if a delete fails half way.
	for _, k := range []kind{kindTap, kindVXLAN, kindBridge} {
		for _, l := range links {
			name := l.Attrs().Name
			if kindOf(l) != k || !r.Owns(name) || want[name] == k {
				continue
			}
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := r.del(l, "no longer desired"); err != nil {
				errs = append(errs, err)
			}
		}
	}
	for _, n := range d.Networks {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, err)...)
		}
		if err := r.network(ctx, &n); err != nil {
			errs = append(errs, fmt.Errorf("plumb: network %s (VNI %d): %w", n.Bridge, n.VNI, err))
		}
	}
	return errors.Join(errs...)
}

// links lists the namespace's links, retrying a dump the kernel reports as
// interrupted by a concurrent change.
func (r *Reconciler) links() ([]netlink.Link, error) {
	for try := 0; ; try++ {
		ls, err := r.nl.LinkList()
		if errors.Is(err, netlink.ErrDumpInterrupted) && try < 5 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("plumb: list links: %w", err)
		}
		return ls, nil
	}
}

func (r *Reconciler) del(l netlink.Link, why string) error {
	a := l.Attrs()
	if err := r.nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("plumb: delete %s %s: %w", kindOf(l), a.Name, err)
	}
	r.log.Info("deleted link", "kind", kindOf(l).String(), "name", a.Name, "reason", why)
	return nil
}

// lookup returns the link called name if it exists and is of kind k. One
// of another managed kind is deleted (it is ours: it carries the prefix);
// a foreign one is a conflict.
func (r *Reconciler) lookup(name string, k kind) (netlink.Link, error) {
	l, err := r.nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look up %s: %w", name, err)
	}
	switch got := kindOf(l); got {
	case k:
		return l, nil
	case kindOther:
		return nil, fmt.Errorf("%w: %s is a %s, want a %s", ErrConflict, name, l.Type(), k)
	default:
		return nil, r.del(l, "is a "+got.String()+", want a "+k.String())
	}
}

// network converges one network: links exist with the right kind and
// fixed attributes, then their settings in one trip into the namespace
// (before anything comes up, so no IPv6 chatter escapes), then master, MTU
// and up, then the forwarding entries. A failing TAP does not stop the
// others.
func (r *Reconciler) network(ctx context.Context, n *Network) error {
	br, err := r.bridge(n)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	vx, err := r.vxlan(n, br)
	if err != nil {
		return err
	}
	var errs []error
	taps := make([]netlink.Link, 0, len(n.Taps))
	for _, t := range n.Taps {
		if err := ctx.Err(); err != nil {
			return err
		}
		l, err := r.tap(t)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		taps = append(taps, l)
	}
	settings := map[string][]linkSysctl{n.Bridge: bridgeSysctls, n.VXLAN: portSysctls}
	for _, l := range taps {
		settings[l.Attrs().Name] = portSysctls
	}
	if err := r.sysctls(settings); err != nil {
		return errors.Join(append(errs, err)...)
	}
	mtu, master := n.mtu(), br.Attrs().Index
	if err := r.port(br, mtu, 0); err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, l := range append([]netlink.Link{vx}, taps...) {
		if err := r.port(l, mtu, master); err != nil {
			errs = append(errs, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := r.fdb(n, vx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (r *Reconciler) bridge(n *Network) (netlink.Link, error) {
	l, err := r.lookup(n.Bridge, kindBridge)
	if err != nil {
		return nil, err
	}
	// Multicast snooping off: with it the bridge itself joins the
	// all-snoopers group and sends IGMP reports (from 0.0.0.0) to every
	// guest and every remote; snooping buys nothing when each frame is
	// copied to every remote host anyway.
	if l != nil {
		if b := l.(*netlink.Bridge); b.MulticastSnooping == nil || *b.MulticastSnooping {
			if err := r.nl.BridgeSetMcastSnoop(bareBridge(l), false); err != nil {
				return nil, fmt.Errorf("bridge %s: multicast snooping off: %w", n.Bridge, err)
			}
			r.log.Info("set bridge multicast snooping off", "name", n.Bridge)
		}
	}
	if l == nil {
		off := false
		if err := r.nl.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: n.Bridge, MTU: n.mtu()}, MulticastSnooping: &off}); err != nil {
			return nil, fmt.Errorf("create bridge %s: %w", n.Bridge, err)
		}
		r.log.Info("created bridge", "name", n.Bridge)
		if l, err = r.nl.LinkByName(n.Bridge); err != nil {
			return nil, fmt.Errorf("look up new bridge %s: %w", n.Bridge, err)
		}
	}
	return l, nil
}

// bareBridge names l's bridge for a change of bridge options: modifying
// with the full link as read back resends attributes the kernel refuses to
// change (EOPNOTSUPP).
func bareBridge(l netlink.Link) *netlink.Bridge {
	return &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: l.Attrs().Name, Index: l.Attrs().Index}}
}

// port brings l to mtu, under master (0: none asked) and up.
func (r *Reconciler) port(l netlink.Link, mtu, master int) error {
	a := l.Attrs()
	if master != 0 && a.MasterIndex != master {
		if err := r.nl.LinkSetMasterByIndex(l, master); err != nil {
			return fmt.Errorf("attach %s to bridge: %w", a.Name, err)
		}
		r.log.Info("attached link", "name", a.Name, "master", master)
	}
	if a.MTU != mtu {
		if err := r.nl.LinkSetMTU(l, mtu); err != nil {
			return fmt.Errorf("set %s mtu %d: %w", a.Name, mtu, err)
		}
		r.log.Info("set mtu", "name", a.Name, "mtu", mtu, "was", a.MTU)
	}
	if a.Flags&net.FlagUp == 0 {
		if err := r.nl.LinkSetUp(l); err != nil {
			return fmt.Errorf("set %s up: %w", a.Name, err)
		}
		r.log.Info("set link up", "name", a.Name)
	}
	return nil
}

func (r *Reconciler) vxlan(n *Network, br netlink.Link) (netlink.Link, error) {
	want := &netlink.Vxlan{
		LinkAttrs: netlink.LinkAttrs{Name: n.VXLAN, MTU: n.mtu(), MasterIndex: br.Attrs().Index},
		VxlanId:   int(n.VNI),
		SrcAddr:   net.IP(n.Local.AsSlice()),
		Port:      VXLANPort,
		Learning:  false,
	}
	if n.UnderlayDevice != "" {
		u, err := r.nl.LinkByName(n.UnderlayDevice)
		if err != nil {
			return nil, fmt.Errorf("underlay device %s: %w", n.UnderlayDevice, err)
		}
		want.VtepDevIndex = u.Attrs().Index
	}
	l, err := r.lookup(n.VXLAN, kindVXLAN)
	if err != nil {
		return nil, err
	}
	if l != nil {
		// VNI, addresses and port cannot be changed on a live VXLAN.
		if why := vxlanDiff(l.(*netlink.Vxlan), want); why != "" {
			if err := r.del(l, why); err != nil {
				return nil, err
			}
			l = nil
		}
	}
	if l == nil {
		if err := r.nl.LinkAdd(want); err != nil {
			return nil, fmt.Errorf("create vxlan %s: %w", n.VXLAN, err)
		}
		r.log.Info("created vxlan", "name", n.VXLAN, "vni", n.VNI, "local", n.Local)
		if l, err = r.nl.LinkByName(n.VXLAN); err != nil {
			return nil, fmt.Errorf("look up new vxlan %s: %w", n.VXLAN, err)
		}
	}
	return l, nil
}

// vxlanDiff says why have cannot serve as want, or "" if it can.
func vxlanDiff(have, want *netlink.Vxlan) string {
	switch {
	case have.VxlanId != want.VxlanId:
		return fmt.Sprintf("VNI %d, want %d", have.VxlanId, want.VxlanId)
	case !have.SrcAddr.Equal(want.SrcAddr):
		return fmt.Sprintf("local %v, want %v", have.SrcAddr, want.SrcAddr)
	case have.Port != want.Port:
		return fmt.Sprintf("port %d, want %d", have.Port, want.Port)
	case have.Learning != want.Learning:
		return "learning on"
	case have.VtepDevIndex != want.VtepDevIndex:
		return fmt.Sprintf("underlay ifindex %d, want %d", have.VtepDevIndex, want.VtepDevIndex)
	case len(have.Group) != 0 && !have.Group.IsUnspecified():
		return fmt.Sprintf("remote/group %v set", have.Group)
	}
	return ""
}

// fdbKey names a forwarding entry: one MAC may point at several remotes
// (the all-zero MAC does, one per remote).
func fdbKey(mac net.HardwareAddr, ip net.IP) string {
	return mac.String() + "@" + ip.String()
}

func (r *Reconciler) fdb(n *Network, vx netlink.Link) error {
	zero := net.HardwareAddr(make([]byte, 6))
	want := map[string]netlink.Neigh{}
	entry := func(mac net.HardwareAddr, ip net.IP) {
		want[fdbKey(mac, ip)] = netlink.Neigh{
			LinkIndex:    vx.Attrs().Index,
			Family:       unix.AF_BRIDGE,
			Flags:        netlink.NTF_SELF,
			State:        netlink.NUD_PERMANENT | netlink.NUD_NOARP,
			HardwareAddr: mac,
			IP:           ip,
		}
	}
	for _, rem := range n.Remotes {
		entry(zero, net.IP(rem.AsSlice()))
	}
	for _, nb := range n.Neighbors {
		entry(nb.MAC, net.IP(nb.Remote.AsSlice()))
	}
	have, err := FDB(r.nl, vx.Attrs().Index)
	if err != nil {
		return err
	}
	var errs []error
	// Stale entries go first: a MAC that moved host must not keep both.
	for _, h := range have {
		if _, ok := want[fdbKey(h.HardwareAddr, h.IP)]; ok {
			delete(want, fdbKey(h.HardwareAddr, h.IP))
			continue
		}
		if err := r.nl.NeighDel(&h); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete fdb %s dst %s on %s: %w", h.HardwareAddr, h.IP, n.VXLAN, err))
			continue
		}
		r.log.Info("deleted fdb entry", "vxlan", n.VXLAN, "mac", h.HardwareAddr.String(), "dst", h.IP.String())
	}
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		e := want[k]
		// Append, not replace: the all-zero MAC holds one entry per remote.
		if err := r.nl.NeighAppend(&e); err != nil {
			errs = append(errs, fmt.Errorf("add fdb %s dst %s on %s: %w", e.HardwareAddr, e.IP, n.VXLAN, err))
			continue
		}
		r.log.Info("added fdb entry", "vxlan", n.VXLAN, "mac", e.HardwareAddr.String(), "dst", e.IP.String())
	}
	return errors.Join(errs...)
}

// FDB lists the VXLAN device's own forwarding entries (those with a remote
// address), leaving out the bridge's learned entries for the same port.
func FDB(nl *netlink.Handle, vxlanIndex int) ([]netlink.Neigh, error) {
	for try := 0; ; try++ {
		ns, err := nl.NeighList(vxlanIndex, unix.AF_BRIDGE)
		if errors.Is(err, netlink.ErrDumpInterrupted) && try < 5 {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("plumb: list fdb of ifindex %d: %w", vxlanIndex, err)
		}
		var own []netlink.Neigh
		for _, e := range ns {
			if e.Flags&netlink.NTF_SELF != 0 && e.IP != nil && len(e.HardwareAddr) == 6 {
				own = append(own, e)
			}
		}
		return own, nil
	}
}

func (r *Reconciler) tap(t Tap) (netlink.Link, error) {
	l, err := r.lookup(t.Name, kindTap)
	if err != nil {
		return nil, err
	}
	if l != nil {
		tt := l.(*netlink.Tuntap)
		// The kernel reports no owner as uid 0, so only a wanted owner
		// can be compared. Changing it needs the TAP free.
		if (t.Owner.UID >= 0 && tt.Owner != uint32(t.Owner.UID)) || (t.Owner.GID >= 0 && tt.Group != uint32(t.Owner.GID)) {
			if err := r.ns.CreatePersistentTap(t.Name, t.Owner); err != nil {
				return nil, fmt.Errorf("tap %s owner %d/%d (has %d/%d): %w", t.Name, t.Owner.UID, t.Owner.GID, tt.Owner, tt.Group, err)
			}
			r.log.Info("changed tap owner", "name", t.Name, "uid", t.Owner.UID, "gid", t.Owner.GID)
		}
	} else {
		if err := r.ns.CreatePersistentTap(t.Name, t.Owner); err != nil {
			return nil, fmt.Errorf("create tap: %w", err)
		}
		r.log.Info("created tap", "name", t.Name, "uid", t.Owner.UID, "gid", t.Owner.GID)
		if l, err = r.nl.LinkByName(t.Name); err != nil {
			return nil, fmt.Errorf("look up new tap %s: %w", t.Name, err)
		}
	}
	return l, nil
}
