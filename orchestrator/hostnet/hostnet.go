package hostnet

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"

	"kvmstack/netdev"
	"kvmstack/netdev/dhcp"
	"kvmstack/netdev/plumb"
	"kvmstack/orchestrator/agent"
	"kvmstack/orchestrator/network"
	"kvmstack/orchestrator/state"
)

// NetnsDir is where `ip netns add NAME` puts the namespace NAME.
const NetnsDir = "/var/run/netns"

// HostNet plumbs one host's networks in one network namespace. It keeps no
// state beyond the kernel's and its DHCP servers, so a restarted agent picks
// up the links its predecessor made.
type HostNet struct {
	ns    *netdev.Namespace
	rec   *plumb.Reconciler
	dhcps *dhcp.Servers
	log   *slog.Logger
	// mu serialises Reconcile: plumb allows one pass at a time.
	mu sync.Mutex
}

var _ agent.Network = (*HostNet)(nil)

// New opens the namespace netns (a name under NetnsDir, a path, or "" for
// the process's own) and returns a HostNet that plumbs there. A nil log
// discards. Close releases it.
func New(netns string, log *slog.Logger) (*HostNet, error) {
	path := netdev.CurrentNamespace
	switch {
	case strings.ContainsRune(netns, '/'):
		path = netns
	case netns != "":
		path = filepath.Join(NetnsDir, netns)
	}
	ns, err := netdev.OpenNamespace(path)
	if err != nil {
		return nil, fmt.Errorf("hostnet: %w", err)
	}
	h, err := newIn(ns, log)
	if err != nil {
		ns.Close()
		return nil, err
	}
	return h, nil
}

func newIn(ns *netdev.Namespace, log *slog.Logger) (*HostNet, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	rec, err := plumb.New(plumb.Options{Namespace: ns,
		Prefixes: []string{network.BridgePrefix, network.VXLANPrefix, network.TapPrefix}, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("hostnet: %w", err)
	}
	return &HostNet{ns: ns, rec: rec, dhcps: dhcp.NewServers(ns, log), log: log}, nil
}

// Reconcile makes the namespace match hn: links first, so that every bridge
// exists before its DHCP server binds to it, then the DHCP servers. Both
// steps always run (a network that failed to plumb does not hold back the
// DHCP of the others) and their errors are joined; the agent calls again
// after a failure. A view with no networks removes every owned link and
// stops every server.
func (h *HostNet) Reconcile(ctx context.Context, hn *state.HostNetworking) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	d, cfgs, planErr := plan(hn)
	if planErr != nil {
		h.log.Warn("hostnet: parts of the view left out", "err", planErr)
	}
	plumbErr := h.rec.Reconcile(ctx, d)
	if err := ctx.Err(); err != nil {
		return errors.Join(plumbErr, err)
	}
	dhcpErr := h.dhcps.Reconcile(ctx, cfgs)
	return errors.Join(planErr, plumbErr, dhcpErr)
}

// Close stops the DHCP servers and releases the namespace. The links stay:
// the guests on them keep running, and the next agent adopts them.
func (h *HostNet) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return errors.Join(h.dhcps.Close(), h.ns.Close())
}
