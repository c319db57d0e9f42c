package api

import (
	"net/http"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/identity"
	"kvmstack/orchestrator/network"
	"kvmstack/orchestrator/state"
)

// NetworkRequest creates a network in the caller's project.
type NetworkRequest struct {
	Name string `json:"name"`
	CIDR string `json:"cidr"`
}

// NetworkView is a network with its address usage.
type NetworkView struct {
	*state.Network
	// Ports is the number of ports (guest NICs) on the network.
	Ports int `json:"ports"`
	// Addresses is the number of guest addresses of the subnet.
	Addresses int `json:"addresses"`
}

// InstanceView is an instance with its ports, as returned by create and show.
type InstanceView struct {
	*state.Instance
	Ports []*state.Port `json:"ports,omitempty"`
}

func instanceView(t *state.ReadTxn, in *state.Instance) InstanceView {
	ports, _ := t.Ports(state.PortFilter{InstanceID: in.ID})
	return InstanceView{Instance: in, Ports: ports}
}

func networkView(t *state.ReadTxn, n *state.Network) (NetworkView, error) {
	ports, err := t.Ports(state.PortFilter{NetworkID: n.ID})
	v := NetworkView{Network: n, Ports: len(ports)}
	if sub, perr := network.ParseSubnet(n.CIDR); perr == nil {
		v.Addresses = sub.Size()
	}
	return v, err
}

func (s *Server) createNetwork(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	var req NetworkRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	n := state.Network{ID: identity.NewID(), ProjectID: sub.Claims.ProjectID, Name: req.Name, CIDR: req.CIDR}
	res, err := s.apply(r, w, &fsm.NetworkCreate{Header: s.hdr(), Network: n})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, NetworkView{Network: res.Value.(*state.Network)})
}

// lookupNetwork finds a network by id, or by name within the caller's
// project; another project's network is reported as missing.
func lookupNetwork(t *state.ReadTxn, sub *identity.Subject, idOrName string) (*state.Network, error) {
	n, err := t.Network(idOrName)
	if err == nil && n == nil {
		n, err = t.NetworkByName(sub.Claims.ProjectID, idOrName)
	}
	if err != nil {
		return nil, err
	}
	if n == nil || projectAccess("network:list", sub, n.ProjectID) != nil {
		return nil, notFound("network", idOrName)
	}
	return n, nil
}

// resolveNetworks maps the names or ids of an instance request to networks.
func (s *Server) resolveNetworks(t *state.ReadTxn, sub *identity.Subject, refs []string) ([]*state.Network, error) {
	if len(refs) > state.MaxPortsPerInstance {
		return nil, badRequest("at most %d networks per instance", state.MaxPortsPerInstance)
	}
	out := make([]*state.Network, 0, len(refs))
	for _, ref := range refs {
		n, err := lookupNetwork(t, sub, ref)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}

func (s *Server) listNetworks(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		ns, err := t.Networks(scopeProject(r, sub))
		if err != nil {
			return 0, nil, err
		}
		out := make([]NetworkView, 0, len(ns))
		for _, n := range ns {
			v, err := networkView(t, n)
			if err != nil {
				return 0, nil, err
			}
			out = append(out, v)
		}
		return t.Index("networks", "ports"), out, nil
	})
}

func (s *Server) showNetwork(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		n, err := lookupNetwork(t, sub, r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		v, err := networkView(t, n)
		return t.Index("networks", "ports"), v, err
	})
}

func (s *Server) deleteNetwork(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	n, err := lookupNetwork(s.Store.Read(nil), sub, r.PathValue("id"))
	if err != nil {
		return err
	}
	if err := projectAccess("network:delete", sub, n.ProjectID); err != nil {
		return err
	}
	if _, err := s.apply(r, w, &fsm.NetworkDelete{Header: s.hdr(), ID: n.ID}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listNetworkPorts(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		n, err := lookupNetwork(t, sub, r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		ports, err := t.Ports(state.PortFilter{NetworkID: n.ID})
		return t.Index("ports"), nonNil(ports), err
	})
}

func (s *Server) listInstancePorts(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		in, err := t.Instance(r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		if in == nil || projectAccess("instance:list", sub, in.ProjectID) != nil {
			return 0, nil, notFound("instance", r.PathValue("id"))
		}
		ports, err := t.Ports(state.PortFilter{InstanceID: in.ID})
		return t.Index("ports"), nonNil(ports), err
	})
}

// hostPorts answers GET /v1/ports?host=X: the networking the agent of host
// X (id or name) must plumb. It is a blocking query over every table the
// answer depends on, so an agent learns of a new port, a removed instance
// or a peer's new underlay address with one long poll.
func (s *Server) hostPorts(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	ref := r.URL.Query().Get("host")
	if ref == "" {
		return badRequest("the host query parameter is required")
	}
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		h, err := t.Host(ref)
		if err != nil {
			return 0, nil, err
		}
		if h == nil {
			return 0, nil, notFound("host", ref)
		}
		hn, err := t.HostNetworking(h.ID)
		return t.Index(state.HostNetworkingTables...), hn, err
	})
}
