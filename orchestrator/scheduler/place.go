package scheduler

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"kvmstack/orchestrator/state"
)

// Strategy chooses among hosts that pass the filters.
type Strategy string

// Weighing strategies.
const (
	// Spread puts each instance on the host with the most free memory.
	Spread Strategy = "spread"
	// Pack puts each instance on the fullest host that still fits.
	Pack Strategy = "pack"
)

// Options configures placement.
type Options struct {
	Strategy Strategy
	HostTTL  time.Duration
}

// Request is one instance to place.
type Request struct {
	InstanceID string
	Resources  state.Resources
	GroupID    string
	// GroupPolicy is the server group's policy ("" without a group).
	GroupPolicy string
}

// filter names, in the order they run; they appear in "no valid host" reasons.
const (
	filterCompute      = "ComputeFilter"
	filterVCPU         = "VCPUFilter"
	filterRAM          = "RAMFilter"
	filterDisk         = "DiskFilter"
	filterAffinity     = "ServerGroupAffinityFilter"
	filterAntiAffinity = "ServerGroupAntiAffinityFilter"
)

var filterOrder = []string{filterCompute, filterVCPU, filterRAM, filterDisk, filterAffinity, filterAntiAffinity}

type candidate struct {
	id, name string
	up       bool
	free     state.Resources
	memTotal int
}

// Placer places batches against a snapshot of the hosts, updating its view
// of free resources and group membership as it goes so the decisions within
// one batch are consistent with each other.
type Placer struct {
	opts  Options
	hosts []*candidate
	// groups maps a server group to the hosts its live members occupy.
	groups map[string]map[string]int
}

// NewPlacer builds a placer from the hosts and the live instances that
// belong to server groups, as of now.
func NewPlacer(hosts []*state.Host, grouped []*state.Instance, now time.Time, opts Options) *Placer {
	p := &Placer{opts: opts, groups: map[string]map[string]int{}}
	for _, h := range hosts {
		p.hosts = append(p.hosts, &candidate{id: h.ID, name: h.Name, up: h.Enabled && h.Up(now, opts.HostTTL), free: h.Free(), memTotal: h.MemoryMB})
	}
	// Deterministic order makes ties (and so tests and replays) reproducible.
	sort.Slice(p.hosts, func(i, j int) bool { return p.hosts[i].name < p.hosts[j].name })
	for _, in := range grouped {
		if in.ServerGroupID != "" && in.HostID != "" && in.State != state.InstanceDeleted {
			p.addMember(in.ServerGroupID, in.HostID)
		}
	}
	return p
}

func (p *Placer) addMember(group, host string) {
	m := p.groups[group]
	if m == nil {
		m = map[string]int{}
		p.groups[group] = m
	}
	m[host]++
}

// Place chooses a host for each request in order. A request that cannot be
// placed gets a Placement with an empty HostID and the reason.
func (p *Placer) Place(reqs []Request) []state.Placement {
	out := make([]state.Placement, len(reqs))
	for i, r := range reqs {
		out[i] = p.placeOne(r)
	}
	return out
}

func (p *Placer) placeOne(r Request) state.Placement {
	var removed [6]int
	var best *candidate
	members := p.groups[r.GroupID]
	for _, h := range p.hosts {
		f := p.firstFailing(h, r, members)
		if f >= 0 {
			removed[f]++
			continue
		}
		if best == nil || p.better(h, best) {
			best = h
		}
	}
	if best == nil {
		return state.Placement{InstanceID: r.InstanceID, Error: noValidHost(len(p.hosts), removed)}
	}
	best.free.VCPUs -= r.Resources.VCPUs
	best.free.MemoryMB -= r.Resources.MemoryMB
	best.free.DiskGB -= r.Resources.DiskGB
	if r.GroupID != "" {
		p.addMember(r.GroupID, best.id)
	}
	return state.Placement{InstanceID: r.InstanceID, HostID: best.id}
}

// firstFailing returns the index in filterOrder of the first filter that
// removes h, or -1 if it passes them all.
func (p *Placer) firstFailing(h *candidate, r Request, members map[string]int) int {
	switch {
	case !h.up:
		return 0
	case r.Resources.VCPUs > h.free.VCPUs:
		return 1
	case r.Resources.MemoryMB > h.free.MemoryMB:
		return 2
	case r.Resources.DiskGB > h.free.DiskGB:
		return 3
	case r.GroupPolicy == state.PolicyAffinity && len(members) > 0 && members[h.id] == 0:
		return 4
	case r.GroupPolicy == state.PolicyAntiAffinity && members[h.id] > 0:
		return 5
	}
	return -1
}

func (p *Placer) better(a, b *candidate) bool {
	if p.opts.Strategy == Pack {
		return a.free.MemoryMB < b.free.MemoryMB
	}
	return a.free.MemoryMB > b.free.MemoryMB
}

func noValidHost(total int, removed [6]int) string {
	var parts []string
	left := total
	for i, n := range removed {
		if n > 0 {
			left -= n
			parts = append(parts, fmt.Sprintf("%s removed %d (%d left)", filterOrder[i], n, left))
		}
	}
	if total == 0 {
		return "no valid host: no hosts are registered"
	}
	return fmt.Sprintf("no valid host: %d hosts; %s", total, strings.Join(parts, ", "))
}
