package state

import (
	"fmt"
	"maps"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

const tableInstances = "instances"

// Instance states.
const (
	InstancePending   = "pending"
	InstanceScheduled = "scheduled"
	InstanceBuilding  = "building"
	InstanceRunning   = "running"
	InstanceStopped   = "stopped"
	InstancePaused    = "paused"
	InstanceError     = "error"
	InstanceDeleted   = "deleted"
	// InstanceHostDown: the instance's host stopped heartbeating. It goes
	// back to the state it had (DownFrom) when the host returns, or to
	// building on another host when evacuated.
	InstanceHostDown = "host-down"
)

// transitions lists the states each state may move to; placement
// (pending → scheduled) goes through PlaceInstances only.
var transitions = map[string][]string{
	InstancePending:   {InstanceError, InstanceDeleted},
	InstanceScheduled: {InstanceBuilding, InstanceError, InstanceDeleted},
	InstanceBuilding:  {InstanceRunning, InstanceError, InstanceDeleted},
	InstanceRunning:   {InstanceStopped, InstancePaused, InstanceError, InstanceDeleted},
	InstanceStopped:   {InstanceRunning, InstanceError, InstanceDeleted},
	InstancePaused:    {InstanceRunning, InstanceStopped, InstanceError, InstanceDeleted},
	// error → building: the agent restarts a failed vmm when the instance's
	// restart policy says so, recording the failure first.
	InstanceError: {InstanceBuilding, InstanceDeleted},
	// host-down → anything the agent may report once its host is back
	// (normally the host's heartbeat restores DownFrom first), or deleted
	// by the user while the host is away.
	InstanceHostDown: {InstanceBuilding, InstanceRunning, InstanceStopped, InstancePaused, InstanceError, InstanceDeleted},
}

// Restart policies: what the agent does when an instance's vmm exits on its
// own (not because of a stop, reboot or delete it was asked for).
const (
	// RestartNever leaves the instance in error (or stopped after a guest
	// power-off). It is the default ("").
	RestartNever = "never"
	// RestartOnFailure restarts after an exit other than a guest power-off.
	RestartOnFailure = "on-failure"
	// RestartAlways restarts after any exit, a guest power-off included.
	RestartAlways = "always"
)

// Power actions a user asks for; the agent carries them out and reports the
// resulting state.
const (
	ActionStop   = "stop"
	ActionStart  = "start"
	ActionReboot = "reboot"
	ActionPause  = "pause"
	ActionResume = "resume"
)

// Transition is one recorded state change.
type Transition struct {
	State  string    `json:"state"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

// Instance is a virtual machine and its placement. Sizes are copied from the
// flavor at creation so later flavor changes do not alter accounting.
type Instance struct {
	ID            string            `json:"id"`
	ProjectID     string            `json:"project_id"`
	Name          string            `json:"name"`
	FlavorID      string            `json:"flavor_id"`
	VCPUs         int               `json:"vcpus"`
	MemoryMB      int               `json:"memory_mb"`
	DiskGB        int               `json:"disk_gb"`
	ImageID       string            `json:"image_id,omitempty"`
	KernelID      string            `json:"kernel_id,omitempty"`
	InitrdID      string            `json:"initrd_id,omitempty"`
	ServerGroupID string            `json:"server_group_id,omitempty"`
	Metadata      map[string]string `json:"metadata,omitempty"`
	// RestartPolicy is one of the Restart* constants ("" means never).
	RestartPolicy string `json:"restart_policy,omitempty"`
	// Action is the last power action asked for (the Action* constants)
	// and ActionSeq counts the actions asked for so far. The agent carries
	// out the latest one when ActionSeq passes the last it handled, so a
	// guest that powers itself off stays off until the next start.
	Action    string `json:"action,omitempty"`
	ActionSeq int    `json:"action_seq,omitempty"`
	// DownFrom is the state the instance had when its host went down; it
	// is set only while the instance is host-down.
	DownFrom  string       `json:"down_from,omitempty"`
	State     string       `json:"state"`
	HostID    string       `json:"host_id,omitempty"`
	History   []Transition `json:"history"`
	CreatedAt time.Time    `json:"created_at"`
	UpdatedAt time.Time    `json:"updated_at"`
}

// Resources returns what the instance consumes on its host.
func (i *Instance) Resources() Resources {
	return Resources{VCPUs: i.VCPUs, MemoryMB: i.MemoryMB, DiskGB: i.DiskGB}
}

func (i *Instance) clone() *Instance {
	c := *i
	c.History = append([]Transition(nil), i.History...)
	c.Metadata = maps.Clone(i.Metadata)
	return &c
}

func (i *Instance) moveTo(state, reason string, at time.Time) {
	i.State = state
	i.UpdatedAt = fixedTime(at)
	i.History = append(i.History, Transition{State: state, Reason: reason, At: i.UpdatedAt})
}

func init() {
	register(&memdb.TableSchema{Name: tableInstances, Indexes: map[string]*memdb.IndexSchema{
		"id":      idIndex("ID"),
		"project": strIndex("project", "ProjectID", false),
		"state":   strIndex("state", "State", false),
		"host":    strIndex("host", "HostID", false),
		"group":   strIndex("group", "ServerGroupID", false),
	}}, func() any { return &Instance{} })
}

const maxMetadata = 64

// CreateInstances adds instances in the pending state after checking their
// references and the project quota for the whole batch.
func (w *WriteTxn) CreateInstances(insts []*Instance, at time.Time) error {
	if len(insts) == 0 || len(insts) > 1000 {
		return fmt.Errorf("create 1 to 1000 instances at once: %w", ErrInvalid)
	}
	r := w.read()
	need := map[string]Usage{}
	for _, in := range insts {
		if in == nil {
			return fmt.Errorf("null instance: %w", ErrInvalid)
		}
		if err := checkID("instance", in.ID); err != nil {
			return err
		}
		if err := checkName("instance", in.Name); err != nil {
			return err
		}
		if len(in.Metadata) > maxMetadata {
			return fmt.Errorf("instance %q: at most %d metadata keys: %w", in.Name, maxMetadata, ErrInvalid)
		}
		for k, v := range in.Metadata {
			if len(k) == 0 || len(k) > 255 || len(v) > 4096 {
				return fmt.Errorf("instance %q: metadata key 1-255 and value up to 4096 bytes: %w", in.Name, ErrInvalid)
			}
		}
		switch in.RestartPolicy {
		case "", RestartNever, RestartOnFailure, RestartAlways:
		default:
			return fmt.Errorf("instance %q: restart policy %q is not never, on-failure or always: %w", in.Name, in.RestartPolicy, ErrInvalid)
		}
		if p, err := r.Project(in.ProjectID); err != nil || p == nil || p.ID != in.ProjectID {
			return firstErr(err, fmt.Errorf("project %s: %w", in.ProjectID, ErrNotFound))
		}
		if x, err := first[Instance](w.tx, nil, tableInstances, "id", in.ID); err != nil || x != nil {
			return firstErr(err, fmt.Errorf("instance %s exists: %w", in.ID, ErrConflict))
		}
		f, err := first[Flavor](w.tx, nil, tableFlavors, "id", in.FlavorID)
		if err != nil {
			return err
		}
		if f == nil {
			return fmt.Errorf("flavor %s: %w", in.FlavorID, ErrNotFound)
		}
		for _, ref := range []struct{ id, kind string }{{in.ImageID, ImageDisk}, {in.KernelID, ImageKernel}, {in.InitrdID, ImageInitrd}} {
			if ref.id == "" {
				continue
			}
			img, err := r.Image(ref.id)
			if err != nil {
				return err
			}
			if img == nil || !img.VisibleTo(in.ProjectID) {
				return fmt.Errorf("image %s: %w", ref.id, ErrNotFound)
			}
			if img.Kind != ref.kind {
				return fmt.Errorf("image %s is a %s image, not %s: %w", ref.id, img.Kind, ref.kind, ErrInvalid)
			}
		}
		if in.ServerGroupID != "" {
			g, err := r.ServerGroup(in.ServerGroupID)
			if err != nil {
				return err
			}
			if g == nil || g.ProjectID != in.ProjectID {
				return fmt.Errorf("server group %s: %w", in.ServerGroupID, ErrNotFound)
			}
		}
		u := need[in.ProjectID]
		u.Instances++
		u.VCPUs += f.VCPUs
		u.MemoryMB += f.MemoryMB
		need[in.ProjectID] = u
		c := in.clone()
		c.VCPUs, c.MemoryMB, c.DiskGB = f.VCPUs, f.MemoryMB, f.DiskGB
		c.HostID, c.Action, c.ActionSeq, c.DownFrom = "", "", 0, ""
		c.CreatedAt = fixedTime(at)
		c.History = nil
		c.moveTo(InstancePending, "created", at)
		if err := w.insert(tableInstances, c); err != nil {
			return err
		}
	}
	for pid, n := range need {
		q, err := r.Quota(pid)
		if err != nil {
			return err
		}
		// The inserts above are visible to this transaction, so usage already
		// includes the batch.
		u, err := r.ProjectUsage(pid)
		if err != nil {
			return err
		}
		if over(q.Instances, u.Instances) || over(q.VCPUs, u.VCPUs) || over(q.MemoryMB, u.MemoryMB) {
			return fmt.Errorf("project %s would use %d instances, %d vcpus, %d MiB (quota %d/%d/%d; this request %d/%d/%d): %w",
				pid, u.Instances, u.VCPUs, u.MemoryMB, q.Instances, q.VCPUs, q.MemoryMB, n.Instances, n.VCPUs, n.MemoryMB, ErrQuota)
		}
	}
	return nil
}

func over(limit, used int) bool { return limit >= 0 && used > limit }

// Placement assigns a pending instance to a host, or (HostID empty) fails it
// with Error as the reason.
type Placement struct {
	InstanceID string `json:"instance_id"`
	HostID     string `json:"host_id,omitempty"`
	Error      string `json:"error,omitempty"`
}

// failure is why the scheduler found no host for the placement.
func (p Placement) failure() string {
	if p.Error == "" {
		return "no valid host"
	}
	return p.Error
}

// charge adds in's resources to the host's usage (sign 1) or takes them
// off it (sign -1), counting the instance too, and stores the host.
func (w *WriteTxn) charge(h *Host, in *Instance, sign int) error {
	hc := *h
	hc.UsedVCPUs += sign * in.VCPUs
	hc.UsedMemoryMB += sign * in.MemoryMB
	hc.UsedDiskGB += sign * in.DiskGB
	hc.Instances += sign
	return w.insert(tableHosts, &hc)
}

// PlacementRules are the scheduler settings the FSM re-checks with.
type PlacementRules struct {
	HostTTL time.Duration `json:"host_ttl"`
}

// PlaceInstances applies placements in order; each is re-validated against
// the state including the earlier placements of the same batch. A rejected
// placement leaves its instance untouched and is reported at its position.
func (w *WriteTxn) PlaceInstances(ps []Placement, rules PlacementRules, at time.Time) []error {
	errs := make([]error, len(ps))
	for i, p := range ps {
		errs[i] = w.place(p, rules, at)
	}
	return errs
}

func (w *WriteTxn) place(p Placement, rules PlacementRules, at time.Time) error {
	in, err := first[Instance](w.tx, nil, tableInstances, "id", p.InstanceID)
	if err != nil {
		return err
	}
	if in == nil {
		return fmt.Errorf("instance %s: %w", p.InstanceID, ErrNotFound)
	}
	if in.State != InstancePending {
		// A replayed or stale placement lands here and changes nothing.
		return fmt.Errorf("instance %s is %s, not pending: %w", in.ID, in.State, ErrConflict)
	}
	c := in.clone()
	if p.HostID == "" {
		c.moveTo(InstanceError, p.failure(), at)
		return w.insert(tableInstances, c)
	}
	h, err := w.checkTarget(in, p.HostID, rules, at, false)
	if err != nil {
		return err
	}
	if err := w.charge(h, in, 1); err != nil {
		return err
	}
	c.HostID = h.ID
	c.moveTo(InstanceScheduled, "placed on "+h.Name, at)
	return w.insert(tableInstances, c)
}

// checkGroup enforces in's server-group policy for hostID. evacuating
// leaves out members that are host-down (they are leaving their host too,
// or will be when evacuated).
// checkTarget re-validates a placement (or evacuation) target in the FSM:
// the host is enabled and up, has room for in, and keeps in's server group
// rules. It returns the host as stored.
func (w *WriteTxn) checkTarget(in *Instance, hostID string, rules PlacementRules, at time.Time, evacuating bool) (*Host, error) {
	h, err := w.host(hostID)
	if err != nil {
		return nil, err
	}
	if !h.Enabled || !h.Up(at, rules.HostTTL) {
		return nil, fmt.Errorf("host %s is disabled or down: %w", h.Name, ErrNoCapacity)
	}
	if !h.Fits(in.Resources()) {
		return nil, fmt.Errorf("instance %s does not fit on host %s (free %+v): %w", in.ID, h.Name, h.Free(), ErrNoCapacity)
	}
	if in.ServerGroupID != "" {
		if err := w.checkGroup(in, h.ID, evacuating); err != nil {
			return nil, err
		}
	}
	return h, nil
}

func (w *WriteTxn) checkGroup(in *Instance, hostID string, evacuating bool) error {
	g, err := first[ServerGroup](w.tx, nil, tableGroups, "id", in.ServerGroupID)
	if err != nil {
		return err
	}
	if g == nil {
		return fmt.Errorf("server group %s: %w", in.ServerGroupID, ErrNotFound)
	}
	members, err := all[Instance](w.tx, nil, tableInstances, "group", g.ID)
	if err != nil {
		return err
	}
	for _, m := range members {
		if m.ID == in.ID || m.HostID == "" || m.State == InstanceDeleted || evacuating && m.State == InstanceHostDown {
			continue
		}
		if g.Policy == PolicyAntiAffinity && m.HostID == hostID {
			return fmt.Errorf("anti-affinity group %s already has %s on that host: %w", g.Name, m.ID, ErrNoCapacity)
		}
		if g.Policy == PolicyAffinity && m.HostID != hostID {
			return fmt.Errorf("affinity group %s has members on host %s: %w", g.Name, m.HostID, ErrNoCapacity)
		}
	}
	return nil
}

// SetInstanceState moves an instance along the state machine with a reason;
// moving to deleted releases its host resources.
func (w *WriteTxn) SetInstanceState(id, state, reason string, at time.Time) error {
	in, err := first[Instance](w.tx, nil, tableInstances, "id", id)
	if err != nil {
		return err
	}
	if in == nil {
		return fmt.Errorf("instance %s: %w", id, ErrNotFound)
	}
	allowed := false
	for _, s := range transitions[in.State] {
		allowed = allowed || s == state
	}
	if !allowed {
		return fmt.Errorf("instance %s cannot go from %s to %q: %w", id, in.State, state, ErrConflict)
	}
	if len(reason) > 1024 {
		return fmt.Errorf("reason longer than 1024 bytes: %w", ErrInvalid)
	}
	c := in.clone()
	if state == InstanceDeleted {
		if err := w.deleteInstancePorts(id); err != nil {
			return err
		}
	}
	if state == InstanceDeleted && c.HostID != "" {
		h, err := w.host(c.HostID)
		if err == nil {
			if err := w.charge(h, c, -1); err != nil {
				return err
			}
		}
	}
	c.moveTo(state, reason, at)
	return w.insert(tableInstances, c)
}

// actionFrom lists the states each power action applies to. Actions may be
// asked for while the agent is still building the instance; it carries them
// out once the guest runs.
var actionFrom = map[string][]string{
	// A stop asked for while the host is down is recorded and carried out
	// by the agent when the host returns (or after an evacuation).
	ActionStop:   {InstanceScheduled, InstanceBuilding, InstanceRunning, InstancePaused, InstanceHostDown},
	ActionStart:  {InstanceStopped},
	ActionReboot: {InstanceScheduled, InstanceBuilding, InstanceRunning, InstancePaused},
	ActionPause:  {InstanceScheduled, InstanceBuilding, InstanceRunning},
	ActionResume: {InstancePaused},
}

// RequestInstanceAction records a power action (the Action* constants) for
// the agent to carry out. The state is left alone: the agent reports the
// new state once done. An action that does not apply to the instance's
// state is refused with ErrConflict.
func (w *WriteTxn) RequestInstanceAction(id, action string, at time.Time) error {
	in, err := first[Instance](w.tx, nil, tableInstances, "id", id)
	if err != nil {
		return err
	}
	if in == nil {
		return fmt.Errorf("instance %s: %w", id, ErrNotFound)
	}
	from, ok := actionFrom[action]
	if !ok {
		return fmt.Errorf("action %q is not stop, start, reboot, pause or resume: %w", action, ErrInvalid)
	}
	allowed := false
	for _, s := range from {
		allowed = allowed || s == in.State
	}
	if !allowed {
		return fmt.Errorf("cannot %s a %s instance: %w", action, in.State, ErrConflict)
	}
	c := in.clone()
	c.Action = action
	c.ActionSeq++
	c.UpdatedAt = fixedTime(at)
	return w.insert(tableInstances, c)
}

// Instance returns an instance by id.
func (r *ReadTxn) Instance(id string) (*Instance, error) {
	return first[Instance](r.tx, r.ws, tableInstances, "id", id)
}

// InstanceFilter narrows Instances; zero fields match everything, and deleted
// instances are included only when State asks for them.
type InstanceFilter struct {
	ProjectID string
	State     string
	HostID    string
	GroupID   string
	Name      string
}

// Instances lists instances matching f, using the most selective index.
func (r *ReadTxn) Instances(f InstanceFilter) ([]*Instance, error) {
	var (
		list []*Instance
		err  error
	)
	switch {
	case f.HostID != "":
		list, err = all[Instance](r.tx, r.ws, tableInstances, "host", f.HostID)
	case f.GroupID != "":
		list, err = all[Instance](r.tx, r.ws, tableInstances, "group", f.GroupID)
	case f.State != "":
		list, err = all[Instance](r.tx, r.ws, tableInstances, "state", f.State)
	case f.ProjectID != "":
		list, err = all[Instance](r.tx, r.ws, tableInstances, "project", f.ProjectID)
	default:
		list, err = all[Instance](r.tx, r.ws, tableInstances, "id")
	}
	if err != nil {
		return nil, err
	}
	out := list[:0:0]
	for _, in := range list {
		if (f.ProjectID != "" && in.ProjectID != f.ProjectID) || (f.HostID != "" && in.HostID != f.HostID) ||
			(f.GroupID != "" && in.ServerGroupID != f.GroupID) || (f.Name != "" && in.Name != f.Name) {
			continue
		}
		if f.State != "" && in.State != f.State || f.State == "" && in.State == InstanceDeleted {
			continue
		}
		out = append(out, in)
	}
	return out, nil
}
