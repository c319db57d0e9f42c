package fsm

import (
	"errors"
	"testing"
	"time"

	"kvmstack/orchestrator/state"
)

const ttl = 30 * time.Second

// failureHarness has hosts a and b (2 vCPUs... 8 vCPUs, 4 GiB each, ratio
// 1) and instances i1, i2 on a, running, heartbeats at 0.
func failureHarness(t *testing.T) *harness {
	t.Helper()
	hs := newHarness(t)
	hs.host("a", 8, 4096, 0)
	hs.host("b", 8, 4096, 0)
	for _, id := range []string{"i1", "i2"} {
		hs.instance(id, "p1", "")
		if err := hs.place(id, "h-a", time.Second); err != nil {
			t.Fatal(err)
		}
		hs.must(&InstanceState{Header: h(time.Second), ID: id, State: state.InstanceBuilding})
		hs.must(&InstanceState{Header: h(time.Second), ID: id, State: state.InstanceRunning})
	}
	return hs
}

func (hs *harness) inst(id string) *state.Instance {
	hs.t.Helper()
	in, err := hs.f.Store().Read(nil).Instance(id)
	if err != nil || in == nil {
		hs.t.Fatalf("instance %s: %v", id, err)
	}
	return in
}

func (hs *harness) hostRec(id string) *state.Host {
	hs.t.Helper()
	x, err := hs.f.Store().Read(nil).Host(id)
	if err != nil || x == nil {
		hs.t.Fatalf("host %s: %v", id, err)
	}
	return x
}

func TestHostDown(t *testing.T) {
	tests := []struct {
		name     string
		cmd      *HostDown
		wantErr  error
		wantDown bool
	}{
		{"expired", &HostDown{Header: h(ttl + time.Second), ID: "h-a", TTL: ttl}, nil, true},
		{"heartbeat still fresh", &HostDown{Header: h(ttl), ID: "h-a", TTL: ttl}, state.ErrConflict, false},
		{"clock behind the heartbeat", &HostDown{Header: h(-time.Hour), ID: "h-a", TTL: ttl}, state.ErrConflict, false},
		{"unknown host", &HostDown{Header: h(time.Hour), ID: "h-x", TTL: ttl}, state.ErrNotFound, false},
		{"no ttl", &HostDown{Header: h(time.Hour), ID: "h-a"}, state.ErrInvalid, false},
		{"negative ttl", &HostDown{Header: h(time.Hour), ID: "h-a", TTL: -ttl}, state.ErrInvalid, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := failureHarness(t)
			before := hs.f.Store().Read(nil).Index("instances")
			r := hs.apply(tc.cmd)
			if !errors.Is(r.Err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", r.Err, tc.wantErr)
			}
			if got := hs.hostRec("h-a").Down; got != tc.wantDown {
				t.Fatalf("down = %v, want %v", got, tc.wantDown)
			}
			for _, id := range []string{"i1", "i2"} {
				in := hs.inst(id)
				if tc.wantDown {
					if in.State != state.InstanceHostDown || in.DownFrom != state.InstanceRunning {
						t.Fatalf("%s: state %s from %q", id, in.State, in.DownFrom)
					}
				} else if in.State != state.InstanceRunning {
					t.Fatalf("%s: state %s after a refused HostDown", id, in.State)
				}
			}
			if !tc.wantDown && hs.f.Store().Read(nil).Index("instances") != before {
				t.Fatal("refused command changed the instances table")
			}
			if hs.hostRec("h-b").Down {
				t.Fatal("the other host went down")
			}
		})
	}
}

func TestHostDownIdempotentAndBack(t *testing.T) {
	hs := failureHarness(t)
	hs.must(&InstanceState{Header: h(2 * time.Second), ID: "i2", State: state.InstanceStopped})
	hs.must(&HostDown{Header: h(time.Minute), ID: "h-a", TTL: ttl})
	hist := len(hs.inst("i1").History)
	hs.must(&HostDown{Header: h(2 * time.Minute), ID: "h-a", TTL: ttl})
	if len(hs.inst("i1").History) != hist {
		t.Fatal("marking a down host again changed its instances")
	}
	if hs.hostRec("h-a").Up(t0.Add(2*time.Minute), time.Hour) {
		t.Fatal("a down host counts as up")
	}
	// The agent asks for nothing: the heartbeat alone restores each
	// instance's state from before.
	hs.must(&HostHeartbeat{Header: h(3 * time.Minute), ID: "h-a"})
	if hs.hostRec("h-a").Down {
		t.Fatal("heartbeat did not bring the host back")
	}
	for id, want := range map[string]string{"i1": state.InstanceRunning, "i2": state.InstanceStopped} {
		if in := hs.inst(id); in.State != want || in.DownFrom != "" {
			t.Fatalf("%s: %s (down from %q), want %s", id, in.State, in.DownFrom, want)
		}
	}
	// A re-registration (agent restart) brings it back too.
	hs.must(&HostDown{Header: h(10 * time.Minute), ID: "h-a", TTL: ttl})
	hs.host("a", 8, 4096, 11*time.Minute)
	if hs.hostRec("h-a").Down || hs.inst("i1").State != state.InstanceRunning {
		t.Fatal("re-registration did not bring the host back")
	}
}

func TestActionsOnHostDown(t *testing.T) {
	hs := failureHarness(t)
	hs.must(&HostDown{Header: h(time.Minute), ID: "h-a", TTL: ttl})
	// Stop is recorded for when the host returns; start/pause are refused.
	hs.must(&InstanceAction{Header: h(time.Minute), ID: "i1", Action: state.ActionStop})
	if r := hs.apply(&InstanceAction{Header: h(time.Minute), ID: "i1", Action: state.ActionPause}); !errors.Is(r.Err, state.ErrConflict) {
		t.Fatalf("pause on host-down: %v", r.Err)
	}
	// Delete is accepted and releases the down host's reservation.
	hs.must(&InstanceState{Header: h(time.Minute), ID: "i2", State: state.InstanceDeleted, Reason: "user"})
	if a := hs.hostRec("h-a"); a.Instances != 1 || a.UsedVCPUs != 2 {
		t.Fatalf("host a after delete: %d instances, %d vcpus", a.Instances, a.UsedVCPUs)
	}
	hs.must(&HostHeartbeat{Header: h(2 * time.Minute), ID: "h-a"})
	in := hs.inst("i1")
	if in.State != state.InstanceRunning || in.Action != state.ActionStop || in.ActionSeq != 1 {
		t.Fatalf("after return: %s action %s seq %d", in.State, in.Action, in.ActionSeq)
	}
	if hs.inst("i2").State != state.InstanceDeleted {
		t.Fatal("deleted instance came back")
	}
}

func TestEvacuate(t *testing.T) {
	rules := state.PlacementRules{HostTTL: ttl}
	at := ttl + 5*time.Second
	evac := func(ps ...state.Placement) *InstanceEvacuate {
		return &InstanceEvacuate{Header: h(at), Rules: rules, Placements: ps}
	}
	tests := []struct {
		name    string
		setup   func(hs *harness)
		cmd     *InstanceEvacuate
		wantErr error
	}{
		{"both to b", nil, evac(state.Placement{InstanceID: "i1", HostID: "h-b"}, state.Placement{InstanceID: "i2", HostID: "h-b"}), nil},
		{"host not down", func(hs *harness) { hs.must(&HostHeartbeat{Header: h(at - time.Second), ID: "h-a"}) },
			evac(state.Placement{InstanceID: "i1", HostID: "h-b"}), state.ErrConflict},
		{"to its own host", nil, evac(state.Placement{InstanceID: "i1", HostID: "h-a"}), state.ErrInvalid},
		{"target down", func(hs *harness) {}, &InstanceEvacuate{Header: h(time.Hour), Rules: rules, Placements: []state.Placement{{InstanceID: "i1", HostID: "h-b"}}}, state.ErrNoCapacity},
		{"target disabled", func(hs *harness) { hs.must(&HostEnable{Header: h(at), ID: "h-b"}) }, evac(state.Placement{InstanceID: "i1", HostID: "h-b"}), state.ErrNoCapacity},
		{"target full on the second", func(hs *harness) {
			hs.instance("big", "p2", "")
			hs.must(&FlavorCreate{Header: h(0), Flavor: state.Flavor{ID: "f-big", Name: "big", VCPUs: 4, MemoryMB: 2048, DiskGB: 1}})
			hs.must(&InstanceCreate{Header: h(time.Second), Instances: []*state.Instance{{ID: "fill", Name: "fill", ProjectID: "p2", FlavorID: "f-big"}}})
			if err := hs.place("fill", "h-b", 2*time.Second); err != nil {
				t.Fatal(err)
			}
			if err := hs.place("big", "h-b", 2*time.Second); err != nil {
				t.Fatal(err)
			}
			// b now has 2 vcpus free: one evacuee fits, not two.
		}, evac(state.Placement{InstanceID: "i1", HostID: "h-b"}, state.Placement{InstanceID: "i2", HostID: "h-b"}), state.ErrNoCapacity},
		{"no valid host", nil, evac(state.Placement{InstanceID: "i1", Error: "no valid host: 2 hosts"}), state.ErrNoCapacity},
		{"duplicate", nil, evac(state.Placement{InstanceID: "i1", HostID: "h-b"}, state.Placement{InstanceID: "i1", HostID: "h-b"}), state.ErrConflict},
		{"unknown instance", nil, evac(state.Placement{InstanceID: "nope", HostID: "h-b"}), state.ErrNotFound},
		{"empty", nil, evac(), state.ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := failureHarness(t)
			hs.must(&HostHeartbeat{Header: h(ttl), ID: "h-b"})
			hs.must(&HostDown{Header: h(ttl + time.Second), ID: "h-a", TTL: ttl})
			if tc.setup != nil {
				tc.setup(hs)
			}
			a0, b0 := *hs.hostRec("h-a"), *hs.hostRec("h-b")
			r := hs.apply(tc.cmd)
			if !errors.Is(r.Err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", r.Err, tc.wantErr)
			}
			a, b := hs.hostRec("h-a"), hs.hostRec("h-b")
			if tc.wantErr != nil {
				if a.UsedVCPUs != a0.UsedVCPUs || b.UsedVCPUs != b0.UsedVCPUs || a.Instances != a0.Instances || b.Instances != b0.Instances {
					t.Fatalf("refused evacuation changed usage: a %d→%d b %d→%d", a0.UsedVCPUs, a.UsedVCPUs, b0.UsedVCPUs, b.UsedVCPUs)
				}
				if in := hs.inst("i1"); in.HostID != "h-a" {
					t.Fatalf("refused evacuation moved i1 to %s (%s)", in.HostID, in.State)
				}
				return
			}
			for _, id := range []string{"i1", "i2"} {
				in := hs.inst(id)
				if in.HostID != "h-b" || in.State != state.InstanceBuilding || in.DownFrom != "" {
					t.Fatalf("%s: on %s, %s", id, in.HostID, in.State)
				}
			}
			if a.UsedVCPUs != 0 || a.UsedMemoryMB != 0 || a.UsedDiskGB != 0 || a.Instances != 0 {
				t.Fatalf("down host keeps a reservation: %+v", a)
			}
			if b.UsedVCPUs != 4 || b.UsedMemoryMB != 2048 || b.UsedDiskGB != 20 || b.Instances != 2 || b.Overcommitted() {
				t.Fatalf("target host usage: %+v", b)
			}
			// The old host returning finds nothing of them any more.
			hs.must(&HostHeartbeat{Header: h(time.Hour), ID: "h-a"})
			if in := hs.inst("i1"); in.HostID != "h-b" || in.State != state.InstanceBuilding {
				t.Fatalf("returning host took i1 back: %s %s", in.HostID, in.State)
			}
		})
	}
}
