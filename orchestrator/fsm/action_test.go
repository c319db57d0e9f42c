package fsm

import (
	"errors"
	"testing"
	"time"

	"kvmstack/orchestrator/state"
)

// TestInstanceActions checks that power actions only record what the user
// asked for (Power, Reboots) and leave the state to the agent, and that the
// FSM refuses them where they cannot apply.
func TestInstanceActions(t *testing.T) {
	tests := []struct {
		name    string
		placed  bool
		state   []string // reported by the agent before the actions
		actions []string
		wantErr error
		wantSeq int
	}{
		{"stop while building", true, nil, []string{state.ActionStop}, nil, 1},
		{"pause running", true, []string{state.InstanceBuilding, state.InstanceRunning}, []string{state.ActionPause}, nil, 1},
		{"two reboots", true, []string{state.InstanceBuilding, state.InstanceRunning}, []string{state.ActionReboot, state.ActionReboot}, nil, 2},
		{"start stopped", true, []string{state.InstanceBuilding, state.InstanceRunning, state.InstanceStopped}, []string{state.ActionStart}, nil, 1},
		{"start running", true, []string{state.InstanceBuilding, state.InstanceRunning}, []string{state.ActionStart}, state.ErrConflict, 0},
		{"resume running", true, []string{state.InstanceBuilding, state.InstanceRunning}, []string{state.ActionResume}, state.ErrConflict, 0},
		{"unknown action", true, nil, []string{"hibernate"}, state.ErrInvalid, 0},
		{"pending instance", false, nil, []string{state.ActionStop}, state.ErrConflict, 0},
		{"failed instance", true, []string{state.InstanceError}, []string{state.ActionReboot}, state.ErrConflict, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			hs := newHarness(t)
			hs.instance("i1", "p1", "")
			if tc.placed {
				if err := hs.place("i1", hs.host("a", 4, 4096, 0), time.Second); err != nil {
					t.Fatal(err)
				}
			}
			for _, st := range tc.state {
				hs.must(&InstanceState{Header: h(2 * time.Second), ID: "i1", State: st, Reason: "agent"})
			}
			before, _ := hs.f.Store().Read(nil).Instance("i1")
			var err error
			for _, a := range tc.actions {
				if r := hs.apply(&InstanceAction{Header: h(3 * time.Second), ID: "i1", Action: a}); r.Err != nil {
					err = r.Err
				}
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			in, _ := hs.f.Store().Read(nil).Instance("i1")
			if in.ActionSeq != tc.wantSeq || tc.wantSeq > 0 && in.Action != tc.actions[len(tc.actions)-1] {
				t.Fatalf("action %q seq %d, want seq %d", in.Action, in.ActionSeq, tc.wantSeq)
			}
			if in.State != before.State || len(in.History) != len(before.History) {
				t.Fatalf("an action changed the state to %s", in.State)
			}
		})
	}
}

// TestRestartPolicy checks the policy's validation and the error → building
// transition an agent uses to restart a failed vmm.
func TestRestartPolicy(t *testing.T) {
	hs := newHarness(t)
	bad := hs.apply(&InstanceCreate{Header: h(time.Second), Instances: []*state.Instance{{ID: "i0", Name: "i0", ProjectID: "p1", FlavorID: "f-small", RestartPolicy: "sometimes"}}})
	if !errors.Is(bad.Err, state.ErrInvalid) {
		t.Fatalf("restart policy sometimes: %v", bad.Err)
	}
	hs.must(&InstanceCreate{Header: h(time.Second), Instances: []*state.Instance{{ID: "i1", Name: "i1", ProjectID: "p1", FlavorID: "f-small", RestartPolicy: state.RestartOnFailure}}})
	if err := hs.place("i1", hs.host("a", 4, 4096, 0), time.Second); err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{state.InstanceBuilding, state.InstanceRunning, state.InstanceError, state.InstanceBuilding, state.InstanceRunning} {
		hs.must(&InstanceState{Header: h(2 * time.Second), ID: "i1", State: st, Reason: "test"})
	}
	in, _ := hs.f.Store().Read(nil).Instance("i1")
	if in.RestartPolicy != state.RestartOnFailure || in.State != state.InstanceRunning {
		t.Fatalf("policy %q state %s", in.RestartPolicy, in.State)
	}
}
