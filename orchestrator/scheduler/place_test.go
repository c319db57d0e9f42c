package scheduler

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/state"
)

var now = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func host(name string, vcpus, mem int, up, enabled bool) *state.Host {
	h := &state.Host{ID: "id-" + name, Name: name, VCPUs: vcpus, MemoryMB: mem, DiskGB: 100, CPURatio: 1, RAMRatio: 1, DiskRatio: 1, Enabled: enabled}
	if up {
		h.LastHeartbeat = now
	}
	return h
}

func small(id string) Request {
	return Request{InstanceID: id, Resources: state.Resources{VCPUs: 1, MemoryMB: 512, DiskGB: 1}}
}

func TestFiltersAndWeighers(t *testing.T) {
	hosts := []*state.Host{host("a", 4, 4096, true, true), host("b", 4, 2048, true, true), host("down", 64, 65536, false, true), host("off", 64, 65536, true, false)}
	tests := []struct {
		name     string
		strategy Strategy
		reqs     []Request
		want     []string
	}{
		{"spread picks most free RAM", Spread, []Request{small("1")}, []string{"id-a"}},
		{"pack picks least free RAM", Pack, []Request{small("1")}, []string{"id-b"}},
		{"spread moves on when vcpus run out", Spread, []Request{small("1"), small("2"), small("3"), small("4"), small("5")}, []string{"id-a", "id-a", "id-a", "id-a", "id-b"}},
		{"too big for any", Spread, []Request{{InstanceID: "x", Resources: state.Resources{VCPUs: 8, MemoryMB: 512}}}, []string{""}},
		{"anti-affinity spreads", Pack, []Request{
			{InstanceID: "1", Resources: state.Resources{VCPUs: 1, MemoryMB: 1}, GroupID: "g", GroupPolicy: state.PolicyAntiAffinity},
			{InstanceID: "2", Resources: state.Resources{VCPUs: 1, MemoryMB: 1}, GroupID: "g", GroupPolicy: state.PolicyAntiAffinity},
			{InstanceID: "3", Resources: state.Resources{VCPUs: 1, MemoryMB: 1}, GroupID: "g", GroupPolicy: state.PolicyAntiAffinity},
		}, []string{"id-b", "id-a", ""}},
		{"affinity sticks", Spread, []Request{
			{InstanceID: "1", Resources: state.Resources{VCPUs: 1, MemoryMB: 1}, GroupID: "g", GroupPolicy: state.PolicyAffinity},
			{InstanceID: "2", Resources: state.Resources{VCPUs: 1, MemoryMB: 3000}, GroupID: "g", GroupPolicy: state.PolicyAffinity},
		}, []string{"id-a", "id-a"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := NewPlacer(hosts, nil, now, Options{Strategy: tc.strategy, HostTTL: time.Minute})
			got := p.Place(tc.reqs)
			for i, pl := range got {
				if pl.HostID != tc.want[i] {
					t.Fatalf("request %d: got %q (%s), want %q", i, pl.HostID, pl.Error, tc.want[i])
				}
			}
		})
	}
}

func TestNoValidHostExplains(t *testing.T) {
	hosts := []*state.Host{host("a", 1, 4096, true, true), host("b", 4, 256, true, true), host("c", 4, 4096, false, true), host("d", 4, 4096, true, true)}
	grouped := []*state.Instance{{ID: "m", ServerGroupID: "g", HostID: "id-d", State: state.InstanceRunning}}
	p := NewPlacer(hosts, grouped, now, Options{HostTTL: time.Minute})
	got := p.Place([]Request{{InstanceID: "x", Resources: state.Resources{VCPUs: 2, MemoryMB: 512}, GroupID: "g", GroupPolicy: state.PolicyAntiAffinity}})[0]
	want := "no valid host: 4 hosts; ComputeFilter removed 1 (3 left), VCPUFilter removed 1 (2 left), RAMFilter removed 1 (1 left), ServerGroupAntiAffinityFilter removed 1 (0 left)"
	if got.Error != want {
		t.Fatalf("got %q\nwant %q", got.Error, want)
	}
}

// TestLoopCommitsThroughFSM drives the leader loop against a real FSM and
// checks that no host ends over capacity and anti-affinity holds.
func TestLoopCommitsThroughFSM(t *testing.T) {
	f := fsm.New(state.New(), nil)
	var idx atomic.Uint64
	apply := func(_ context.Context, c fsm.Command) (*fsm.Result, error) {
		return f.ApplyCommand(idx.Add(1), c), nil
	}
	must := func(c fsm.Command) {
		if r, _ := apply(context.Background(), c); r.Err != nil {
			t.Fatalf("%T: %v", c, r.Err)
		}
	}
	hd := fsm.Header{At: now}
	must(&fsm.ProjectCreate{Header: hd, Project: state.Project{ID: "p", Name: "p"}})
	must(&fsm.FlavorCreate{Header: hd, Flavor: state.Flavor{ID: "f", Name: "f", VCPUs: 2, MemoryMB: 1024}})
	must(&fsm.GroupCreate{Header: hd, Group: state.ServerGroup{ID: "g", ProjectID: "p", Name: "g", Policy: state.PolicyAntiAffinity}})
	for i := range 5 {
		must(&fsm.HostRegister{Header: hd, Host: state.Host{ID: fmt.Sprintf("h%d", i), Name: fmt.Sprintf("h%d", i), VCPUs: 4, MemoryMB: 4096, CPURatio: 1, RAMRatio: 1, DiskRatio: 1}})
	}
	var insts []*state.Instance
	for i := range 14 {
		in := &state.Instance{ID: fmt.Sprintf("i%02d", i), Name: "i", ProjectID: "p", FlavorID: "f"}
		if i < 7 {
			in.ServerGroupID = "g"
		}
		insts = append(insts, in)
	}
	must(&fsm.InstanceCreate{Header: hd, Instances: insts})
	l := &Loop{Store: f.Store(), Propose: apply, Options: Options{HostTTL: time.Minute}, BatchSize: 4, Now: func() time.Time { return now }}
	l.rejects = map[string]int{}
	for {
		n, err := l.RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
	}
	r := f.Store().Read(nil)
	hosts, _ := r.Hosts()
	for _, h := range hosts {
		if h.Overcommitted() || h.Instances > 2 {
			t.Fatalf("host over capacity: %+v", h)
		}
	}
	placed, failed := 0, 0
	seen := map[string]bool{}
	all, _ := r.Instances(state.InstanceFilter{})
	for _, in := range all {
		switch in.State {
		case state.InstanceScheduled:
			placed++
			if in.ServerGroupID == "g" {
				if seen[in.HostID] {
					t.Fatalf("anti-affinity violated on %s", in.HostID)
				}
				seen[in.HostID] = true
			}
		case state.InstanceError:
			failed++
			if !strings.HasPrefix(in.History[len(in.History)-1].Reason, "no valid host") {
				t.Fatalf("failure without reason: %+v", in.History)
			}
		default:
			t.Fatalf("instance left %s", in.State)
		}
	}
	// 5 hosts × 2 slots = 10 placements; 2 anti-affinity members find no host.
	if placed != 10 || failed != 4 {
		t.Fatalf("placed %d failed %d", placed, failed)
	}
}
