package state

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

const tableHosts = "hosts"

// Default allocation ratios (the same defaults Nova uses).
const (
	DefaultCPURatio  = 16.0
	DefaultRAMRatio  = 1.5
	DefaultDiskRatio = 1.0
)

// Host is a compute node: its capacity, allocation ratios and what the
// instances placed on it consume. Usage is kept here, updated by every
// placement and deletion, so placement checks are O(1).
type Host struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
	// UnderlayIP is the address other hosts send this host's VXLAN traffic to.
	UnderlayIP string `json:"underlay_ip,omitempty"`
	// ConsoleAddr is where the host's agent serves instance consoles
	// (host:port) to the servers, which sign each request with ConsoleKey
	// (64 hex digits, made by the agent; the API never shows it). Both are
	// empty for agents that serve no console.
	ConsoleAddr string  `json:"console_addr,omitempty"`
	ConsoleKey  string  `json:"console_key,omitempty"`
	VCPUs       int     `json:"vcpus"`
	MemoryMB    int     `json:"memory_mb"`
	DiskGB      int     `json:"disk_gb"`
	CPURatio    float64 `json:"cpu_allocation_ratio"`
	RAMRatio    float64 `json:"ram_allocation_ratio"`
	DiskRatio   float64 `json:"disk_allocation_ratio"`
	Enabled     bool    `json:"enabled"`
	// Down is set by the leader's failure detector (MarkHostDown) once the
	// host missed heartbeats for longer than the TTL, and cleared by its
	// next heartbeat or registration. It is replicated so that every
	// server agrees which instances are host-down.
	Down          bool      `json:"down,omitempty"`
	LastHeartbeat time.Time `json:"last_heartbeat"`
	RegisteredAt  time.Time `json:"registered_at"`
	UsedVCPUs     int       `json:"used_vcpus"`
	UsedMemoryMB  int       `json:"used_memory_mb"`
	UsedDiskGB    int       `json:"used_disk_gb"`
	Instances     int       `json:"instances"`
}

// Up reports whether the host heartbeated within ttl of now and has not
// been marked down since.
func (h *Host) Up(now time.Time, ttl time.Duration) bool {
	return !h.Down && !h.LastHeartbeat.IsZero() && now.Sub(h.LastHeartbeat) <= ttl
}

// Resources is a demand or capacity in the three scheduled dimensions.
type Resources struct {
	VCPUs    int `json:"vcpus"`
	MemoryMB int `json:"memory_mb"`
	DiskGB   int `json:"disk_gb"`
}

// Free returns what can still be allocated after applying the ratios; a
// component can be negative on an over-committed host.
func (h *Host) Free() Resources {
	return Resources{
		VCPUs:    int(float64(h.VCPUs)*h.CPURatio) - h.UsedVCPUs,
		MemoryMB: int(float64(h.MemoryMB)*h.RAMRatio) - h.UsedMemoryMB,
		DiskGB:   int(float64(h.DiskGB)*h.DiskRatio) - h.UsedDiskGB,
	}
}

// Fits reports whether r can be allocated on the host.
func (h *Host) Fits(r Resources) bool {
	f := h.Free()
	return r.VCPUs <= f.VCPUs && r.MemoryMB <= f.MemoryMB && r.DiskGB <= f.DiskGB
}

// Overcommitted reports whether usage exceeds capacity × ratio in any dimension.
func (h *Host) Overcommitted() bool {
	f := h.Free()
	return f.VCPUs < 0 || f.MemoryMB < 0 || f.DiskGB < 0
}

func init() {
	register(&memdb.TableSchema{Name: tableHosts, Indexes: map[string]*memdb.IndexSchema{
		"id": idIndex("ID"), "name": strIndex("name", "Name", true),
	}}, func() any { return &Host{} })
}

// RegisterHost adds a host, or updates the capacity of a host with the same
// name (an agent re-registering after a restart) while keeping its id and usage.
// It returns the stored host.
func (w *WriteTxn) RegisterHost(h *Host, now time.Time) (*Host, error) {
	if err := checkID("host", h.ID); err != nil {
		return nil, err
	}
	if err := checkName("host", h.Name); err != nil {
		return nil, err
	}
	if h.VCPUs < 1 || h.MemoryMB < 64 || h.DiskGB < 0 {
		return nil, fmt.Errorf("host %q needs vcpus >= 1, memory >= 64 MiB, disk >= 0: %w", h.Name, ErrInvalid)
	}
	for _, r := range []float64{h.CPURatio, h.RAMRatio, h.DiskRatio} {
		if r <= 0 || r > 1000 {
			return nil, fmt.Errorf("host %q: allocation ratios must be in (0, 1000]: %w", h.Name, ErrInvalid)
		}
	}
	c := *h
	if c.UnderlayIP != "" {
		a, err := netip.ParseAddr(c.UnderlayIP)
		if err != nil || a.Zone() != "" || a.IsUnspecified() || a.IsMulticast() {
			return nil, fmt.Errorf("host %q: underlay_ip %q is not a unicast IP address: %w", h.Name, h.UnderlayIP, ErrInvalid)
		}
		c.UnderlayIP = a.Unmap().String()
	}
	if err := checkConsole(&c); err != nil {
		return nil, err
	}
	c.LastHeartbeat = fixedTime(now)
	old, err := first[Host](w.tx, nil, tableHosts, "name", h.Name)
	if err != nil {
		return nil, err
	}
	if old != nil {
		c.ID = old.ID
		c.RegisteredAt = old.RegisteredAt
		c.Enabled = old.Enabled
		c.UsedVCPUs, c.UsedMemoryMB, c.UsedDiskGB, c.Instances = old.UsedVCPUs, old.UsedMemoryMB, old.UsedDiskGB, old.Instances
		if old.UnderlayIP != c.UnderlayIP {
			// Agents watch the ports index, not the hosts table (which
			// every heartbeat changes): a moved underlay must wake them.
			w.touched[tablePorts] = true
		}
	} else {
		if x, err := first[Host](w.tx, nil, tableHosts, "id", h.ID); err != nil || x != nil {
			return nil, firstErr(err, fmt.Errorf("host %s exists: %w", h.ID, ErrConflict))
		}
		c.RegisteredAt = fixedTime(now)
		c.Enabled = true
		c.UsedVCPUs, c.UsedMemoryMB, c.UsedDiskGB, c.Instances = 0, 0, 0, 0
	}
	if err := w.insert(tableHosts, &c); err != nil {
		return nil, err
	}
	if old != nil && old.Down {
		// A restarted agent registers before it heartbeats: it is back.
		if err := w.restoreHostDown(c.ID, now); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

func (w *WriteTxn) host(id string) (*Host, error) {
	h, err := first[Host](w.tx, nil, tableHosts, "id", id)
	if err != nil {
		return nil, err
	}
	if h == nil {
		return nil, fmt.Errorf("host %s: %w", id, ErrNotFound)
	}
	return h, nil
}

// Heartbeat records that the host is alive at now. Heartbeats never move
// the clock backwards, so a delayed one cannot mark a host stale.
func (w *WriteTxn) Heartbeat(id string, now time.Time) error {
	h, err := w.host(id)
	if err != nil {
		return err
	}
	if !now.After(h.LastHeartbeat) && !h.Down {
		return nil
	}
	c := *h
	if now.After(h.LastHeartbeat) {
		c.LastHeartbeat = fixedTime(now)
	}
	c.Down = false
	if err := w.insert(tableHosts, &c); err != nil {
		return err
	}
	if h.Down {
		return w.restoreHostDown(h.ID, now)
	}
	return nil
}

// SetHostEnabled enables or disables a host for scheduling.
func (w *WriteTxn) SetHostEnabled(id string, enabled bool) error {
	h, err := w.host(id)
	if err != nil {
		return err
	}
	c := *h
	c.Enabled = enabled
	return w.insert(tableHosts, &c)
}

// DeleteHost removes a host that runs no live instance.
func (w *WriteTxn) DeleteHost(id string) error {
	h, err := w.host(id)
	if err != nil {
		return err
	}
	if h.Instances > 0 {
		return fmt.Errorf("host %s still has %d instances: %w", id, h.Instances, ErrConflict)
	}
	return w.delete(tableHosts, h)
}

// Host returns a host by id or name.
func (r *ReadTxn) Host(idOrName string) (*Host, error) {
	h, err := first[Host](r.tx, r.ws, tableHosts, "id", idOrName)
	if err == nil && h == nil {
		h, err = first[Host](r.tx, r.ws, tableHosts, "name", idOrName)
	}
	return h, err
}

// Hosts lists all hosts.
func (r *ReadTxn) Hosts() ([]*Host, error) { return all[Host](r.tx, r.ws, tableHosts, "id") }

// checkConsole validates a registration's console endpoint: an address
// the servers can dial (host:port) and the key they sign with, both or
// neither.
func checkConsole(h *Host) error {
	if h.ConsoleAddr == "" && h.ConsoleKey == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(h.ConsoleAddr)
	if n, perr := strconv.ParseUint(port, 10, 16); err != nil || host == "" || perr != nil || n == 0 || strings.ContainsAny(host, "/?#@ ") {
		return fmt.Errorf("host %q: console_addr %q is not HOST:PORT: %w", h.Name, h.ConsoleAddr, ErrInvalid)
	}
	if len(h.ConsoleKey) != 64 || strings.Trim(h.ConsoleKey, "0123456789abcdef") != "" {
		return fmt.Errorf("host %q: console_key must be 64 lower-case hex digits: %w", h.Name, ErrInvalid)
	}
	return nil
}
