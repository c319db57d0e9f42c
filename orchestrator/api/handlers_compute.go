package api

import (
	"fmt"
	"net/http"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/identity"
	"kvmstack/orchestrator/state"
)

// FlavorRequest creates a flavor.
type FlavorRequest struct {
	Name     string `json:"name"`
	VCPUs    int    `json:"vcpus"`
	MemoryMB int    `json:"memory_mb"`
	DiskGB   int    `json:"disk_gb"`
}

func (s *Server) createFlavor(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	var req FlavorRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	f := state.Flavor{ID: identity.NewID(), Name: req.Name, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, DiskGB: req.DiskGB, CreatedAt: s.Now()}
	if _, err := s.apply(r, w, &fsm.FlavorCreate{Header: s.hdr(), Flavor: f}); err != nil {
		return err
	}
	got, _ := s.Store.Read(nil).Flavor(f.ID)
	return writeJSON(w, http.StatusCreated, got)
}

func (s *Server) listFlavors(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		fs, err := t.Flavors()
		return t.Index("flavors"), nonNil(fs), err
	})
}

func (s *Server) showFlavor(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		f, err := t.Flavor(r.PathValue("id"))
		if err == nil && f == nil {
			err = notFound("flavor", r.PathValue("id"))
		}
		return t.Index("flavors"), f, err
	})
}

func (s *Server) deleteFlavor(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	f, _ := s.Store.Read(nil).Flavor(r.PathValue("id"))
	if f == nil {
		return notFound("flavor", r.PathValue("id"))
	}
	if _, err := s.apply(r, w, &fsm.FlavorDelete{Header: s.hdr(), ID: f.ID}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// QuotaView is a project's quota and usage.
type QuotaView struct {
	state.Quota
	Usage state.Usage `json:"usage"`
}

func (s *Server) showQuota(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		p, _ := t.Project(r.PathValue("id"))
		if p == nil || projectAccess("quota:show", sub, p.ID) != nil {
			return 0, nil, notFound("project", r.PathValue("id"))
		}
		q, err := t.Quota(p.ID)
		if err != nil {
			return 0, nil, err
		}
		u, err := t.ProjectUsage(p.ID)
		return t.Index("quotas", "instances"), QuotaView{Quota: *q, Usage: u}, err
	})
}

// QuotaRequest sets a quota; negative values mean unlimited.
type QuotaRequest struct {
	Instances int `json:"instances"`
	VCPUs     int `json:"vcpus"`
	MemoryMB  int `json:"memory_mb"`
}

func (s *Server) setQuota(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	req := QuotaRequest{Instances: -1, VCPUs: -1, MemoryMB: -1}
	if err := decode(r, &req); err != nil {
		return err
	}
	p, _ := s.Store.Read(nil).Project(r.PathValue("id"))
	if p == nil {
		return notFound("project", r.PathValue("id"))
	}
	q := state.Quota{ProjectID: p.ID, Instances: req.Instances, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB}
	if _, err := s.apply(r, w, &fsm.QuotaSet{Header: s.hdr(), Quota: q}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, q)
}

// HostRequest registers a host.
type HostRequest struct {
	Name    string `json:"name"`
	Address string `json:"address,omitempty"`
	// UnderlayIP is where other hosts send this host's VXLAN traffic.
	UnderlayIP string `json:"underlay_ip,omitempty"`
	// ConsoleAddr and ConsoleKey: where the host's agent serves consoles
	// and the key servers sign those requests with (docs/AGENT.md).
	ConsoleAddr string  `json:"console_addr,omitempty"`
	ConsoleKey  string  `json:"console_key,omitempty"`
	VCPUs       int     `json:"vcpus"`
	MemoryMB    int     `json:"memory_mb"`
	DiskGB      int     `json:"disk_gb"`
	CPURatio    float64 `json:"cpu_allocation_ratio,omitempty"`
	RAMRatio    float64 `json:"ram_allocation_ratio,omitempty"`
	DiskRatio   float64 `json:"disk_allocation_ratio,omitempty"`
}

// HostView is a host with its computed up/down status.
type HostView struct {
	*state.Host
	Status string          `json:"status"`
	Free   state.Resources `json:"free"`
	// ConsoleKey shadows the host's: an empty field that is never
	// written, so the key stays between the agent and the servers.
	ConsoleKey string `json:"console_key,omitempty"`
}

func (s *Server) hostView(h *state.Host) HostView {
	st := "down"
	if h.Up(s.Now(), s.Config.HostTTL) {
		st = "up"
	}
	return HostView{Host: h, Status: st, Free: h.Free()}
}

func (s *Server) registerHost(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	var req HostRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	h := state.Host{ID: identity.NewID(), Name: req.Name, Address: req.Address, UnderlayIP: req.UnderlayIP,
		ConsoleAddr: req.ConsoleAddr, ConsoleKey: req.ConsoleKey, VCPUs: req.VCPUs, MemoryMB: req.MemoryMB, DiskGB: req.DiskGB,
		CPURatio: orDefault(req.CPURatio, state.DefaultCPURatio), RAMRatio: orDefault(req.RAMRatio, state.DefaultRAMRatio),
		DiskRatio: orDefault(req.DiskRatio, state.DefaultDiskRatio)}
	res, err := s.apply(r, w, &fsm.HostRegister{Header: s.hdr(), Host: h})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, s.hostView(res.Value.(*state.Host)))
}

func orDefault(v, d float64) float64 {
	if v == 0 {
		return d
	}
	return v
}

func (s *Server) hostID(r *http.Request) (string, error) {
	h, _ := s.Store.Read(nil).Host(r.PathValue("id"))
	if h == nil {
		return "", notFound("host", r.PathValue("id"))
	}
	return h.ID, nil
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	id, err := s.hostID(r)
	if err != nil {
		return err
	}
	if _, err := s.apply(r, w, &fsm.HostHeartbeat{Header: s.hdr(), ID: id}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) enableHost(enabled bool) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
		id, err := s.hostID(r)
		if err != nil {
			return err
		}
		if _, err := s.apply(r, w, &fsm.HostEnable{Header: s.hdr(), ID: id, Enabled: enabled}); err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

func (s *Server) deleteHost(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	id, err := s.hostID(r)
	if err != nil {
		return err
	}
	if _, err := s.apply(r, w, &fsm.HostDelete{Header: s.hdr(), ID: id}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listHosts(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		hs, err := t.Hosts()
		out := make([]HostView, 0, len(hs))
		for _, h := range hs {
			out = append(out, s.hostView(h))
		}
		return t.Index("hosts"), out, err
	})
}

func (s *Server) showHost(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		h, err := t.Host(r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		if h == nil {
			return 0, nil, notFound("host", r.PathValue("id"))
		}
		return t.Index("hosts"), s.hostView(h), nil
	})
}

// GroupRequest creates a server group.
type GroupRequest struct {
	Name   string `json:"name"`
	Policy string `json:"policy"`
}

func (s *Server) createGroup(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	var req GroupRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	g := state.ServerGroup{ID: identity.NewID(), ProjectID: sub.Claims.ProjectID, Name: req.Name, Policy: req.Policy, CreatedAt: s.Now()}
	if _, err := s.apply(r, w, &fsm.GroupCreate{Header: s.hdr(), Group: g}); err != nil {
		return err
	}
	got, _ := s.Store.Read(nil).ServerGroup(g.ID)
	return writeJSON(w, http.StatusCreated, got)
}

func (s *Server) listGroups(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		gs, err := t.ServerGroups(scopeProject(r, sub))
		return t.Index("server_groups"), nonNil(gs), err
	})
}

func (s *Server) showGroup(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		g, err := t.ServerGroup(r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		if g == nil || projectAccess("server-group:list", sub, g.ProjectID) != nil {
			return 0, nil, notFound("server group", r.PathValue("id"))
		}
		return t.Index("server_groups"), g, nil
	})
}

func (s *Server) deleteGroup(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	g, _ := s.Store.Read(nil).ServerGroup(r.PathValue("id"))
	if g == nil || projectAccess("server-group:list", sub, g.ProjectID) != nil {
		return notFound("server group", r.PathValue("id"))
	}
	if err := projectAccess("server-group:delete", sub, g.ProjectID); err != nil {
		return err
	}
	if _, err := s.apply(r, w, &fsm.GroupDelete{Header: s.hdr(), ID: g.ID}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// scopeProject is the project a list is limited to: the caller's, unless a
// system admin asks for ?all_projects.
func scopeProject(r *http.Request, sub *identity.Subject) string {
	if sub.SystemAdmin() && r.URL.Query().Has("all_projects") {
		return ""
	}
	return sub.Claims.ProjectID
}

// InstanceRequest creates one or more instances.
type InstanceRequest struct {
	Name        string            `json:"name"`
	Flavor      string            `json:"flavor"`
	Image       string            `json:"image,omitempty"`
	Kernel      string            `json:"kernel,omitempty"`
	Initrd      string            `json:"initrd,omitempty"`
	ServerGroup string            `json:"server_group,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	// Networks are network ids or names of the caller's project; each
	// instance gets one NIC per entry, in this order.
	Networks []string `json:"networks,omitempty"`
	// RestartPolicy is never (default), on-failure or always: what the
	// agent does when the instance's vmm exits on its own.
	RestartPolicy string `json:"restart_policy,omitempty"`
	// Count creates that many instances named NAME-1..NAME-N (1 if zero).
	Count int `json:"count,omitempty"`
}

func (s *Server) createInstances(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	var req InstanceRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.Count == 0 {
		req.Count = 1
	}
	if req.Count < 1 || req.Count > 1000 {
		return badRequest("count must be 1 to 1000")
	}
	rt := s.Store.Read(nil)
	f, _ := rt.Flavor(req.Flavor)
	if f == nil {
		return notFound("flavor", req.Flavor)
	}
	nets, err := s.resolveNetworks(rt, sub, req.Networks)
	if err != nil {
		return err
	}
	insts := make([]*state.Instance, req.Count)
	var ports []*state.Port
	for i := range insts {
		name := req.Name
		if req.Count > 1 {
			name = fmt.Sprintf("%s-%d", req.Name, i+1)
		}
		// The FSM re-checks every reference; these ids are only hints.
		insts[i] = &state.Instance{ID: identity.NewID(), ProjectID: sub.Claims.ProjectID, Name: name, FlavorID: f.ID,
			ImageID: req.Image, KernelID: req.Kernel, InitrdID: req.Initrd, ServerGroupID: req.ServerGroup, Metadata: req.Metadata,
			RestartPolicy: req.RestartPolicy}
		for nic, n := range nets {
			// The FSM derives the MAC from this random id and allocates
			// the address; the proposer decides neither.
			ports = append(ports, &state.Port{ID: identity.NewID(), InstanceID: insts[i].ID, NetworkID: n.ID, Index: nic})
		}
	}
	if _, err := s.apply(r, w, &fsm.InstanceCreate{Header: s.hdr(), Instances: insts, Ports: ports}); err != nil {
		return err
	}
	out := make([]InstanceView, 0, len(insts))
	rt = s.Store.Read(nil)
	for _, in := range insts {
		if got, _ := rt.Instance(in.ID); got != nil {
			out = append(out, instanceView(rt, got))
		}
	}
	return writeJSON(w, http.StatusCreated, out)
}

func (s *Server) listInstances(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	q := r.URL.Query()
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		f := state.InstanceFilter{ProjectID: scopeProject(r, sub), State: q.Get("state"), Name: q.Get("name"), GroupID: q.Get("server_group")}
		if h := q.Get("host"); h != "" {
			// Agents (system admins) watch every instance assigned to their host.
			if sub.SystemAdmin() {
				f.ProjectID = ""
			}
			hh, _ := t.Host(h)
			if hh == nil {
				return t.Index("instances"), []*state.Instance{}, nil
			}
			f.HostID = hh.ID
		}
		list, err := t.Instances(f)
		return t.Index("instances"), nonNil(list), err
	})
}

func (s *Server) showInstance(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		in, err := t.Instance(r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		// Another project's instance is reported as missing, not forbidden,
		// so ids cannot be probed.
		if in == nil || projectAccess("instance:list", sub, in.ProjectID) != nil {
			return 0, nil, notFound("instance", r.PathValue("id"))
		}
		return t.Index("instances", "ports"), instanceView(t, in), nil
	})
}

func (s *Server) deleteInstance(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	in, _ := s.Store.Read(nil).Instance(r.PathValue("id"))
	if in == nil || projectAccess("instance:list", sub, in.ProjectID) != nil {
		return notFound("instance", r.PathValue("id"))
	}
	if err := projectAccess("instance:delete", sub, in.ProjectID); err != nil {
		return err
	}
	if _, err := s.apply(r, w, &fsm.InstanceState{Header: s.hdr(), ID: in.ID, State: state.InstanceDeleted, Reason: "deleted by user " + sub.Claims.UserID}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// StateRequest reports an instance state change (agents).
type StateRequest struct {
	State  string `json:"state"`
	Reason string `json:"reason"`
}

func (s *Server) setInstanceState(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	var req StateRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if _, err := s.apply(r, w, &fsm.InstanceState{Header: s.hdr(), ID: r.PathValue("id"), State: req.State, Reason: req.Reason}); err != nil {
		return err
	}
	got, _ := s.Store.Read(nil).Instance(r.PathValue("id"))
	return writeJSON(w, http.StatusOK, got)
}

// ActionRequest asks for a power action on an instance.
type ActionRequest struct {
	// Action is stop, start, reboot, pause or resume.
	Action string `json:"action"`
}

func (s *Server) instanceAction(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	var req ActionRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	in, _ := s.Store.Read(nil).Instance(r.PathValue("id"))
	if in == nil || projectAccess("instance:list", sub, in.ProjectID) != nil {
		return notFound("instance", r.PathValue("id"))
	}
	if err := projectAccess("instance:action", sub, in.ProjectID); err != nil {
		return err
	}
	if _, err := s.apply(r, w, &fsm.InstanceAction{Header: s.hdr(), ID: in.ID, Action: req.Action}); err != nil {
		return err
	}
	got, _ := s.Store.Read(nil).Instance(in.ID)
	return writeJSON(w, http.StatusAccepted, got)
}
