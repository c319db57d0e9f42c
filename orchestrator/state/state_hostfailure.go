package state

import (
	"fmt"
	"time"
)

// downFrom lists the states an instance can be in when its host goes down
// and that are worth restoring; pending and deleted instances have no host,
// host-down ones are already marked.
var downFrom = map[string]bool{
	InstanceScheduled: true, InstanceBuilding: true, InstanceRunning: true,
	InstanceStopped: true, InstancePaused: true, InstanceError: true,
}

// MarkHostDown marks a host down and every instance on it host-down. The
// leader proposes it when the host's last heartbeat is older than ttl; the
// check is repeated here against the command's time, so a heartbeat that
// was committed first wins and the command is refused with ErrConflict.
// Marking a host that is already down changes nothing.
func (w *WriteTxn) MarkHostDown(id string, ttl time.Duration, at time.Time) error {
	if ttl <= 0 {
		return fmt.Errorf("host ttl must be positive: %w", ErrInvalid)
	}
	h, err := w.host(id)
	if err != nil {
		return err
	}
	if h.Down {
		return nil
	}
	if !h.LastHeartbeat.IsZero() && at.Sub(h.LastHeartbeat) <= ttl {
		return fmt.Errorf("host %s heartbeated at %s, within %s of %s: %w", h.Name, h.LastHeartbeat.Format(time.RFC3339Nano), ttl, at.UTC().Format(time.RFC3339Nano), ErrConflict)
	}
	c := *h
	c.Down = true
	if err := w.insert(tableHosts, &c); err != nil {
		return err
	}
	insts, err := all[Instance](w.tx, nil, tableInstances, "host", id)
	if err != nil {
		return err
	}
	reason := fmt.Sprintf("host %s stopped heartbeating (last heartbeat %s, ttl %s)", h.Name, h.LastHeartbeat.Format(time.RFC3339), ttl)
	for _, in := range insts {
		if !downFrom[in.State] {
			continue
		}
		ic := in.clone()
		ic.DownFrom = in.State
		ic.moveTo(InstanceHostDown, reason, at)
		if err := w.insert(tableInstances, ic); err != nil {
			return err
		}
	}
	return nil
}

// restoreHostDown gives the host-down instances of a host that is back
// their state from before; the agent reports whatever changed since.
func (w *WriteTxn) restoreHostDown(hostID string, at time.Time) error {
	h, err := w.host(hostID)
	if err != nil {
		return err
	}
	insts, err := all[Instance](w.tx, nil, tableInstances, "host", hostID)
	if err != nil {
		return err
	}
	for _, in := range insts {
		if in.State != InstanceHostDown {
			continue
		}
		ic := in.clone()
		prev := in.DownFrom
		if !downFrom[prev] {
			prev = InstanceError
		}
		ic.DownFrom = ""
		ic.moveTo(prev, "host "+h.Name+" is back", at)
		if err := w.insert(tableInstances, ic); err != nil {
			return err
		}
	}
	return nil
}

// EvacuateInstances moves host-down instances to other hosts: each is
// re-checked like a placement (target enabled, up, not its own host, enough
// free capacity, server-group policy) against the state including the
// earlier moves of the batch; the down host's reservation is released and
// the instance goes to building on its new host with its ports (MAC and
// address) unchanged. The batch is all or nothing: the first refusal is
// returned and the transaction is aborted by the caller.
func (w *WriteTxn) EvacuateInstances(ps []Placement, rules PlacementRules, at time.Time) error {
	if len(ps) == 0 || len(ps) > 5000 {
		return fmt.Errorf("evacuate 1 to 5000 instances at once: %w", ErrInvalid)
	}
	for _, p := range ps {
		if err := w.evacuate(p, rules, at); err != nil {
			return err
		}
	}
	return nil
}

func (w *WriteTxn) evacuate(p Placement, rules PlacementRules, at time.Time) error {
	in, err := first[Instance](w.tx, nil, tableInstances, "id", p.InstanceID)
	if err != nil {
		return err
	}
	if in == nil {
		return fmt.Errorf("instance %s: %w", p.InstanceID, ErrNotFound)
	}
	if in.State != InstanceHostDown {
		return fmt.Errorf("instance %s is %s, not host-down: only instances of a down host are evacuated: %w", in.ID, in.State, ErrConflict)
	}
	if p.HostID == "" {
		return fmt.Errorf("instance %s: %s: %w", in.ID, p.failure(), ErrNoCapacity)
	}
	if p.HostID == in.HostID {
		return fmt.Errorf("instance %s: cannot evacuate to its own host: %w", in.ID, ErrInvalid)
	}
	old, err := w.host(in.HostID)
	if err != nil {
		return err
	}
	if !old.Down {
		return fmt.Errorf("host %s is not down: %w", old.Name, ErrConflict)
	}
	h, err := w.checkTarget(in, p.HostID, rules, at, true)
	if err != nil {
		return err
	}
	if err := w.charge(old, in, -1); err != nil {
		return err
	}
	if err := w.charge(h, in, 1); err != nil {
		return err
	}
	c := in.clone()
	c.HostID = h.ID
	c.DownFrom = ""
	c.moveTo(InstanceBuilding, fmt.Sprintf("evacuated from host %s to %s", old.Name, h.Name), at)
	// The host networking views of both hosts derive from instances, so
	// the ports follow the instance without being rewritten.
	w.touched[tablePorts] = true
	return w.insert(tableInstances, c)
}
