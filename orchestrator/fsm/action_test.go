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
		name        string
		placed      bool
		actions     []string
		wantErr     error
		wantPower   string
		wantReboots int
	}{
		{"stop", true, []string{state.ActionStop}, nil, state.InstanceStopped, 0},
		{"stop then start", true, []string{state.ActionStop, state.ActionStart}, nil, state.InstanceRunning, 0},
		{"pause", true, []string{state.ActionPause}, nil, state.InstancePaused, 0},
		{"pause then resume", true, []string{state.ActionPause, state.ActionResume}, nil, state.InstanceRunning, 0},
		{"two reboots", true, []string{state.ActionReboot, state.ActionReboot}, nil, state.InstanceRunning, 2},
		{"unknown action", true, []string{"hibernate"}, state.ErrInvalid, "", 0},
		{"pending instance", false, []string{state.ActionStop}, state.ErrConflict, "", 0},
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
			var err error
			for _, a := range tc.actions {
				if r := hs.apply(&InstanceAction{Header: h(2 * time.Second), ID: "i1", Action: a}); r.Err != nil {
					err = r.Err
				}
			}
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			in, _ := hs.f.Store().Read(nil).Instance("i1")
			if in.Power != tc.wantPower || in.Reboots != tc.wantReboots {
				t.Fatalf("power %q reboots %d, want %q %d", in.Power, in.Reboots, tc.wantPower, tc.wantReboots)
			}
			want := state.InstancePending
			if tc.placed {
				want = state.InstanceScheduled
			}
			if in.State != want {
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
