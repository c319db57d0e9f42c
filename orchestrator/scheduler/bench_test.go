package scheduler

import (
	"fmt"
	"testing"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/state"
)

// BenchmarkPlaceAndCommit measures the CPU cost of one placement on one
// replica without Raft: filter/weigh against all hosts, then apply the
// batch through the FSM with its re-validation.
func BenchmarkPlaceAndCommit(b *testing.B) {
	for _, hosts := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("hosts=%d", hosts), func(b *testing.B) {
			f := fsm.New(state.New(), nil)
			var idx uint64
			must := func(c fsm.Command) *fsm.Result {
				idx++
				r := f.ApplyCommand(idx, c)
				if r.Err != nil {
					b.Fatal(r.Err)
				}
				return r
			}
			hd := fsm.Header{At: now}
			must(&fsm.ProjectCreate{Header: hd, Project: state.Project{ID: "p", Name: "p"}})
			must(&fsm.FlavorCreate{Header: hd, Flavor: state.Flavor{ID: "f", Name: "f", VCPUs: 1, MemoryMB: 64}})
			for h := range hosts {
				must(&fsm.HostRegister{Header: hd, Host: state.Host{ID: fmt.Sprintf("h%05d", h), Name: fmt.Sprintf("h%05d", h),
					VCPUs: 1 << 20, MemoryMB: 1 << 30, CPURatio: 1, RAMRatio: 1, DiskRatio: 1}})
			}
			const batch = 1000
			b.ResetTimer()
			for done := 0; done < b.N; done += batch {
				b.StopTimer()
				insts := make([]*state.Instance, batch)
				for i := range insts {
					insts[i] = &state.Instance{ID: fmt.Sprintf("i%09d", done+i), Name: "i", ProjectID: "p", FlavorID: "f"}
				}
				must(&fsm.InstanceCreate{Header: hd, Instances: insts})
				b.StartTimer()
				r := f.Store().Read(nil)
				hs, _ := r.Hosts()
				reqs := make([]Request, batch)
				for i, in := range insts {
					reqs[i] = Request{InstanceID: in.ID, Resources: state.Resources{VCPUs: 1, MemoryMB: 64}}
				}
				ps := NewPlacer(hs, nil, now, Options{HostTTL: 1 << 62}).Place(reqs)
				cmd := &fsm.InstancePlace{Header: hd, Rules: state.PlacementRules{HostTTL: 1 << 62}, Placements: ps}
				buf, err := fsm.Encode(cmd)
				if err != nil {
					b.Fatal(err)
				}
				dec, err := fsm.Decode(buf)
				if err != nil {
					b.Fatal(err)
				}
				must(dec)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "placements/s")
		})
	}
}
