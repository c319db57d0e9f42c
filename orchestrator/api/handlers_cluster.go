package api

import (
	"net/http"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/identity"
	"kvmstack/orchestrator/state"
)

// MemberView is a Raft member with its HTTP address.
type MemberView struct {
	ID         string `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	HTTPAddr   string `json:"http_addr,omitempty"`
	Suffrage   string `json:"suffrage"`
	Leader     bool   `json:"leader"`
	FailingFor string `json:"failing_for,omitempty"`
}

func (s *Server) members(w http.ResponseWriter, _ *http.Request, _ *identity.Subject) error {
	ms, err := s.Node.Members()
	if err != nil {
		return err
	}
	rt := s.Store.Read(nil)
	out := make([]MemberView, 0, len(ms))
	for _, m := range ms {
		v := MemberView{ID: m.ID, RaftAddr: m.Address, Suffrage: m.Suffrage, Leader: m.Leader, FailingFor: m.FailingFor}
		if srv, _ := rt.Server(m.ID); srv != nil {
			v.HTTPAddr = srv.HTTPAddr
		}
		out = append(out, v)
	}
	return writeJSON(w, http.StatusOK, out)
}

// JoinRequest adds a server to the cluster.
type JoinRequest struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	HTTPAddr string `json:"http_addr"`
}

func (s *Server) join(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	var req JoinRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if req.ID == "" || req.RaftAddr == "" || req.HTTPAddr == "" {
		return badRequest("id, raft_addr and http_addr are required")
	}
	// Record the HTTP address first so the new server can forward as soon
	// as it has replicated this entry.
	if _, err := s.apply(r, w, &fsm.ServerUpsert{Header: s.hdr(), Server: state.Server{ID: req.ID, RaftAddr: req.RaftAddr, HTTPAddr: req.HTTPAddr}}); err != nil {
		return err
	}
	if err := s.Node.AddVoter(req.ID, req.RaftAddr); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) removeMember(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	id := r.PathValue("id")
	if err := s.Node.RemoveServer(id); err != nil {
		return err
	}
	if s.Node.IsLeader() {
		if _, err := s.apply(r, w, &fsm.ServerDelete{Header: s.hdr(), ID: id}); err != nil {
			s.Log.Warn("forgetting removed server", "id", id, "err", err)
		}
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// StatusView describes the answering server.
type StatusView struct {
	ID       string            `json:"id"`
	HTTPAddr string            `json:"http_addr"`
	RaftAddr string            `json:"raft_addr"`
	Leader   string            `json:"leader_id"`
	IsLeader bool              `json:"is_leader"`
	Raft     map[string]string `json:"raft"`
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request, _ *identity.Subject) error {
	_, lid := s.Node.Leader()
	return writeJSON(w, http.StatusOK, StatusView{ID: s.Node.ID(), HTTPAddr: s.SelfHTTP, RaftAddr: s.Node.RaftAddr(), Leader: lid,
		IsLeader: s.Node.IsLeader(), Raft: s.Node.Stats()})
}

func (s *Server) metrics(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	if s.Metrics == nil {
		return notFound("endpoint", r.URL.Path)
	}
	s.Metrics.Handler().ServeHTTP(w, r)
	return nil
}
