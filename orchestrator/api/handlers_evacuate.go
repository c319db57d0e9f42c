package api

import (
	"fmt"
	"net/http"
	"strings"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/identity"
	"kvmstack/orchestrator/scheduler"
	"kvmstack/orchestrator/state"
)

// CodeNoValidHost is the error code of an evacuation no host can take.
const CodeNoValidHost = "no_valid_host"

// EvacuateResponse lists the instances an evacuation moved, each now
// building on its new host.
type EvacuateResponse struct {
	Instances []InstanceView `json:"instances"`
}

func (s *Server) evacuateInstance(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	rt := s.Store.Read(nil)
	in, err := rt.Instance(r.PathValue("id"))
	if err != nil {
		return err
	}
	if in == nil || in.State == state.InstanceDeleted {
		return notFound("instance", r.PathValue("id"))
	}
	if in.State != state.InstanceHostDown {
		where := "no host"
		if h, _ := rt.Host(in.HostID); h != nil {
			where = "host " + h.Name + " (" + s.hostView(h).Status + ")"
		}
		return &Error{Status: http.StatusConflict, Message: fmt.Sprintf("instance %s is %s on %s: only instances of a down host are evacuated", in.Name, in.State, where)}
	}
	return s.evacuate(w, r, rt, []*state.Instance{in})
}

func (s *Server) evacuateHost(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	rt := s.Store.Read(nil)
	h, err := rt.Host(r.PathValue("id"))
	if err != nil {
		return err
	}
	if h == nil {
		return notFound("host", r.PathValue("id"))
	}
	if !h.Down {
		return &Error{Status: http.StatusConflict, Message: fmt.Sprintf("host %s is %s, not marked down: only a down host is evacuated", h.Name, s.hostView(h).Status)}
	}
	insts, err := rt.Instances(state.InstanceFilter{HostID: h.ID, State: state.InstanceHostDown})
	if err != nil {
		return err
	}
	if len(insts) == 0 {
		return writeJSON(w, http.StatusOK, EvacuateResponse{Instances: []InstanceView{}})
	}
	return s.evacuate(w, r, rt, insts)
}

// evacuate places insts on other hosts and commits all the moves in one
// command, or none: if any instance fits nowhere the request fails with 409
// and the reasons, and nothing changes.
func (s *Server) evacuate(w http.ResponseWriter, r *http.Request, rt *state.ReadTxn, insts []*state.Instance) error {
	now := s.Now()
	opts := scheduler.Options{Strategy: s.Config.Strategy, HostTTL: s.Config.HostTTL}
	ps, err := scheduler.PlanEvacuation(rt, insts, now, opts)
	if err != nil {
		return err
	}
	var failed []string
	for i, p := range ps {
		if p.HostID == "" {
			failed = append(failed, insts[i].Name+": "+p.Error)
		}
	}
	if len(failed) > 0 {
		return &Error{Status: http.StatusConflict, Code: CodeNoValidHost,
			Message: fmt.Sprintf("cannot evacuate %d of %d instances, nothing was moved: %s", len(failed), len(insts), strings.Join(failed, "; "))}
	}
	if _, err := s.apply(r, w, &fsm.InstanceEvacuate{Header: fsm.Header{At: now.UTC()}, Rules: state.PlacementRules{HostTTL: s.Config.HostTTL}, Placements: ps}); err != nil {
		return err
	}
	rt = s.Store.Read(nil)
	out := EvacuateResponse{Instances: make([]InstanceView, 0, len(insts))}
	for _, in := range insts {
		if got, _ := rt.Instance(in.ID); got != nil {
			out.Instances = append(out.Instances, instanceView(rt, got))
		}
	}
	return writeJSON(w, http.StatusAccepted, out)
}
