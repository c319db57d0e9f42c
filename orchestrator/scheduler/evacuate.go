package scheduler

import (
	"fmt"
	"time"

	"kvmstack/orchestrator/state"
)

// PlanEvacuation chooses a new host for each instance, with the same filters
// and weigher as ordinary placement, against the hosts as r shows them at
// now. The instances' own (down) hosts fail the ComputeFilter, so an
// instance never lands where it was. The placements are consistent with
// each other (capacity is taken as they are chosen); an instance no host
// accepts gets a Placement with an empty HostID and the reason.
func PlanEvacuation(r *state.ReadTxn, insts []*state.Instance, now time.Time, opts Options) ([]state.Placement, error) {
	hosts, err := r.Hosts()
	if err != nil {
		return nil, fmt.Errorf("scheduler: hosts: %w", err)
	}
	var grouped []*state.Instance
	policies := map[string]string{}
	reqs := make([]Request, 0, len(insts))
	for _, in := range insts {
		req := Request{InstanceID: in.ID, Resources: in.Resources(), GroupID: in.ServerGroupID}
		if in.ServerGroupID != "" {
			if _, ok := policies[in.ServerGroupID]; !ok {
				g, err := r.ServerGroup(in.ServerGroupID)
				if err != nil {
					return nil, fmt.Errorf("scheduler: server group: %w", err)
				}
				if g != nil {
					policies[g.ID] = g.Policy
					members, err := r.Instances(state.InstanceFilter{GroupID: g.ID})
					if err != nil {
						return nil, fmt.Errorf("scheduler: group members: %w", err)
					}
					for _, m := range members {
						// Host-down members (the evacuees among them) are
						// leaving their hosts: they do not count there,
						// as in the FSM's check.
						if m.State != state.InstanceHostDown {
							grouped = append(grouped, m)
						}
					}
				}
			}
			req.GroupPolicy = policies[in.ServerGroupID]
		}
		reqs = append(reqs, req)
	}
	return NewPlacer(hosts, grouped, now, opts).Place(reqs), nil
}
