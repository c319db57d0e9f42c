package scheduler

import (
	"strings"
	"testing"
	"time"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/state"
)

// evacuationState builds, through the FSM, hosts a (down), b and c (c has
// room for one instance), an anti-affinity group with g1 on a and g2 on b,
// and p1 (no group) on a.
func evacuationState(t *testing.T, disableC bool) (*state.Store, time.Time) {
	t.Helper()
	f := fsm.New(state.New(), nil)
	var idx uint64
	at := func(d time.Duration) fsm.Header { return fsm.Header{At: now.Add(d)} }
	must := func(c fsm.Command) *fsm.Result {
		t.Helper()
		idx++
		r := f.ApplyCommand(idx, c)
		if r.Err != nil {
			t.Fatalf("%T: %v", c, r.Err)
		}
		if errs, ok := r.Value.([]error); ok && errs[0] != nil {
			t.Fatalf("%T: %v", c, errs[0])
		}
		return r
	}
	must(&fsm.ProjectCreate{Header: at(0), Project: state.Project{ID: "p", Name: "p"}})
	must(&fsm.FlavorCreate{Header: at(0), Flavor: state.Flavor{ID: "f", Name: "f", VCPUs: 2, MemoryMB: 1024, DiskGB: 1}})
	for name, vcpus := range map[string]int{"a": 8, "b": 8, "c": 2} {
		must(&fsm.HostRegister{Header: at(0), Host: state.Host{ID: "id-" + name, Name: name, VCPUs: vcpus, MemoryMB: 8192, DiskGB: 100, CPURatio: 1, RAMRatio: 1, DiskRatio: 1}})
	}
	must(&fsm.GroupCreate{Header: at(0), Group: state.ServerGroup{ID: "g", ProjectID: "p", Name: "g", Policy: state.PolicyAntiAffinity}})
	for id, h := range map[string]string{"g1": "id-a", "g2": "id-b", "p1": "id-a"} {
		group := ""
		if id[0] == 'g' {
			group = "g"
		}
		must(&fsm.InstanceCreate{Header: at(0), Instances: []*state.Instance{{ID: id, Name: id, ProjectID: "p", FlavorID: "f", ServerGroupID: group}}})
		must(&fsm.InstancePlace{Header: at(0), Rules: state.PlacementRules{HostTTL: time.Minute}, Placements: []state.Placement{{InstanceID: id, HostID: h}}})
	}
	later := 2 * time.Minute
	must(&fsm.HostHeartbeat{Header: at(later), ID: "id-b"})
	must(&fsm.HostHeartbeat{Header: at(later), ID: "id-c"})
	must(&fsm.HostDown{Header: at(later), ID: "id-a", TTL: time.Minute})
	if disableC {
		must(&fsm.HostEnable{Header: at(later), ID: "id-c"})
	}
	return f.Store(), now.Add(later)
}

func TestPlanEvacuation(t *testing.T) {
	tests := []struct {
		name     string
		disableC bool
		want     map[string]string
		reason   string
	}{
		// g1 may not join g2 on b; p1 then finds c full (capacity taken
		// within the plan) and goes to b.
		{"anti-affinity and capacity", false, map[string]string{"g1": "id-c", "p1": "id-b"}, ""},
		{"no host for g1", true, map[string]string{"g1": "", "p1": "id-b"}, "ServerGroupAntiAffinityFilter removed 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, at := evacuationState(t, tc.disableC)
			r := st.Read(nil)
			var insts []*state.Instance
			for _, id := range []string{"g1", "p1"} {
				in, _ := r.Instance(id)
				if in.State != state.InstanceHostDown {
					t.Fatalf("%s is %s", id, in.State)
				}
				insts = append(insts, in)
			}
			ps, err := PlanEvacuation(r, insts, at, Options{Strategy: Spread, HostTTL: time.Minute})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range ps {
				if p.HostID != tc.want[p.InstanceID] {
					t.Fatalf("%s → %q (%s), want %q", p.InstanceID, p.HostID, p.Error, tc.want[p.InstanceID])
				}
				if p.HostID == "" && !strings.Contains(p.Error, tc.reason) {
					t.Fatalf("%s: reason %q lacks %q", p.InstanceID, p.Error, tc.reason)
				}
				if p.HostID == "id-a" {
					t.Fatalf("%s planned onto its down host", p.InstanceID)
				}
			}
		})
	}
}
