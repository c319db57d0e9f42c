package api

import (
	"net/http"
	"strings"
	"time"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/identity"
	"kvmstack/orchestrator/state"
)

// authenticate verifies the request's token against the keys and revocations
// in the local state and resolves the caller's current role.
func (s *Server) authenticate(r *http.Request) (*identity.Subject, error) {
	tok := r.Header.Get(HeaderToken)
	if tok == "" {
		if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer ") {
			tok = strings.TrimPrefix(h, "Bearer ")
		}
	}
	if tok == "" {
		return nil, &Error{Status: http.StatusUnauthorized, Message: "authentication required: send a token in X-Auth-Token"}
	}
	rt := s.Store.Read(nil)
	c, err := identity.Verify(tok, func(id string) []byte {
		k, err := rt.SigningKey(id)
		if err != nil || k == nil {
			return nil
		}
		return k.Secret
	}, rt.TokenRevoked, s.Now())
	if err != nil {
		return nil, &Error{Status: http.StatusUnauthorized, Message: "invalid token: " + err.Error()}
	}
	admin := rt.AdminProject()
	if c.Service {
		return &identity.Subject{Claims: c, Role: state.RoleAdmin, System: true}, nil
	}
	u, err := rt.User(c.UserID)
	if err != nil || u == nil || u.ID != c.UserID {
		return nil, &Error{Status: http.StatusUnauthorized, Message: "invalid token: user no longer exists"}
	}
	return &identity.Subject{Claims: c, Role: rt.Role(c.UserID, c.ProjectID), System: c.ProjectID == admin}, nil
}

// projectAccess checks a project-scoped action on a resource of project pid.
func projectAccess(a identity.Action, sub *identity.Subject, pid string) error {
	return identity.Authorize(a, sub, pid)
}

// TokenRequest is the body of POST /v1/auth/tokens.
type TokenRequest struct {
	User     string `json:"user"`
	Password string `json:"password"`
	Project  string `json:"project"`
	// TTL optionally shortens the token's lifetime (e.g. "10m"); it can
	// never exceed the server's token TTL.
	TTL string `json:"ttl,omitempty"`
}

// TokenResponse describes an issued token.
type TokenResponse struct {
	Token     string    `json:"token,omitempty"`
	ID        string    `json:"id"`
	UserID    string    `json:"user_id"`
	ProjectID string    `json:"project_id"`
	Role      string    `json:"role"`
	System    bool      `json:"system"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (s *Server) createToken(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	var req TokenRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	rt := s.Store.Read(nil)
	u, err := rt.User(req.User)
	if err != nil {
		return err
	}
	if u == nil {
		// Hash anyway so timing does not reveal which user names exist.
		_ = identity.CheckPassword("$2a$10$invalidinvalidinvalidinvalidinvalidinvalidinvalidinva", req.Password)
		return identity.ErrBadCredentials
	}
	if err := identity.CheckPassword(u.PasswordHash, req.Password); err != nil {
		return err
	}
	p, err := rt.Project(req.Project)
	if err != nil {
		return err
	}
	if p == nil || rt.Role(u.ID, p.ID) == "" {
		return &Error{Status: http.StatusForbidden, Message: "user has no role on project " + req.Project}
	}
	keys, err := rt.SigningKeys()
	if err != nil {
		return err
	}
	if len(keys) == 0 {
		return &Error{Status: http.StatusServiceUnavailable, Code: CodeNoLeader, Message: "cluster has no signing key yet"}
	}
	k := keys[len(keys)-1]
	ttl := s.Config.TokenTTL
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			return badRequest("ttl must be a positive duration such as 10m")
		}
		ttl = min(d, ttl)
	}
	now := s.Now()
	c := identity.Claims{ID: identity.NewID(), UserID: u.ID, ProjectID: p.ID, IssuedAt: now.UTC(), ExpiresAt: now.Add(ttl).UTC()}
	tok, err := identity.Sign(c, identity.Key{ID: k.ID, Secret: k.Secret})
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, TokenResponse{Token: tok, ID: c.ID, UserID: u.ID, ProjectID: p.ID, Role: rt.Role(u.ID, p.ID),
		System: p.ID == rt.AdminProject(), ExpiresAt: c.ExpiresAt})
}

func (s *Server) showToken(w http.ResponseWriter, _ *http.Request, sub *identity.Subject) error {
	c := sub.Claims
	return writeJSON(w, http.StatusOK, TokenResponse{ID: c.ID, UserID: c.UserID, ProjectID: c.ProjectID, Role: sub.Role, System: sub.System, ExpiresAt: c.ExpiresAt})
}

// revokeToken revokes the caller's own token, or (system admin only) the
// token given in X-Subject-Token.
func (s *Server) revokeToken(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	target := sub.Claims
	if other := r.Header.Get("X-Subject-Token"); other != "" {
		if !sub.SystemAdmin() {
			return &Error{Status: http.StatusForbidden, Message: "revoking another token needs the admin role on the admin project"}
		}
		rt := s.Store.Read(nil)
		c, err := identity.Verify(other, func(id string) []byte {
			k, _ := rt.SigningKey(id)
			if k == nil {
				return nil
			}
			return k.Secret
		}, rt.TokenRevoked, s.Now())
		if err != nil {
			return &Error{Status: http.StatusNotFound, Message: "subject token: " + err.Error()}
		}
		target = c
	}
	if _, err := s.apply(r, w, &fsm.TokenRevoke{Header: s.hdr(), Token: state.RevokedToken{ID: target.ID, ExpiresAt: target.ExpiresAt}}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) rotateKey(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	now := s.Now()
	k := state.SigningKey{ID: identity.NewID(), Secret: identity.NewSecret(), CreatedAt: now}
	// Keep the previous keys long enough for every token they signed to expire.
	if _, err := s.apply(r, w, &fsm.KeyRotate{Header: s.hdr(), Key: k, RetireBefore: now.Add(-s.Config.TokenTTL - time.Minute)}); err != nil {
		return err
	}
	return writeJSON(w, http.StatusCreated, map[string]string{"id": k.ID})
}

func (s *Server) hdr() fsm.Header { return fsm.Header{At: s.Now().UTC()} }

// ProjectRequest creates a project.
type ProjectRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	var req ProjectRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	p := state.Project{ID: identity.NewID(), Name: req.Name, Description: req.Description, CreatedAt: s.Now()}
	if _, err := s.apply(r, w, &fsm.ProjectCreate{Header: s.hdr(), Project: p}); err != nil {
		return err
	}
	got, _ := s.Store.Read(nil).Project(p.ID)
	return writeJSON(w, http.StatusCreated, got)
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		ps, err := t.Projects()
		return t.Index("projects"), nonNil(ps), err
	})
}

func (s *Server) showProject(w http.ResponseWriter, r *http.Request, sub *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		p, err := t.Project(r.PathValue("id"))
		if err != nil {
			return 0, nil, err
		}
		if p == nil || (!sub.System && p.ID != sub.Claims.ProjectID) {
			return 0, nil, notFound("project", r.PathValue("id"))
		}
		return t.Index("projects"), p, nil
	})
}

func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	p, _ := s.Store.Read(nil).Project(r.PathValue("id"))
	if p == nil {
		return notFound("project", r.PathValue("id"))
	}
	if _, err := s.apply(r, w, &fsm.ProjectDelete{Header: s.hdr(), ID: p.ID}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// UserRequest creates a user, optionally with a role on a project.
type UserRequest struct {
	Name     string `json:"name"`
	Password string `json:"password"`
	Project  string `json:"project,omitempty"`
	Role     string `json:"role,omitempty"`
}

// UserView is a user without its password hash.
type UserView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	var req UserRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	hash, err := identity.HashPassword(req.Password, s.Config.BcryptCost)
	if err != nil {
		return badRequest("%v", err)
	}
	u := state.User{ID: identity.NewID(), Name: req.Name, PasswordHash: hash, CreatedAt: s.Now()}
	if _, err := s.apply(r, w, &fsm.UserCreate{Header: s.hdr(), User: u}); err != nil {
		return err
	}
	if req.Project != "" {
		if err := s.assign(w, r, u.ID, req.Project, req.Role); err != nil {
			return err
		}
	}
	return writeJSON(w, http.StatusCreated, UserView{ID: u.ID, Name: u.Name, CreatedAt: u.CreatedAt.UTC()})
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		us, err := t.Users()
		out := []UserView{}
		for _, u := range us {
			out = append(out, UserView{ID: u.ID, Name: u.Name, CreatedAt: u.CreatedAt})
		}
		return t.Index("users"), out, err
	})
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	u, _ := s.Store.Read(nil).User(r.PathValue("id"))
	if u == nil {
		return notFound("user", r.PathValue("id"))
	}
	if _, err := s.apply(r, w, &fsm.UserDelete{Header: s.hdr(), ID: u.ID}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// RoleRequest assigns a role.
type RoleRequest struct {
	User    string `json:"user"`
	Project string `json:"project"`
	Role    string `json:"role"`
}

func (s *Server) assign(w http.ResponseWriter, r *http.Request, user, project, role string) error {
	rt := s.Store.Read(nil)
	u, _ := rt.User(user)
	if u == nil {
		return notFound("user", user)
	}
	p, _ := rt.Project(project)
	if p == nil {
		return notFound("project", project)
	}
	if role == "" {
		role = state.RoleMember
	}
	_, err := s.apply(r, w, &fsm.RoleAssign{Header: s.hdr(), Assignment: state.RoleAssignment{UserID: u.ID, ProjectID: p.ID, Role: role}})
	return err
}

func (s *Server) assignRole(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	var req RoleRequest
	if err := decode(r, &req); err != nil {
		return err
	}
	if err := s.assign(w, r, req.User, req.Project, req.Role); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) unassignRole(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	rt := s.Store.Read(nil)
	u, _ := rt.User(r.PathValue("user"))
	p, _ := rt.Project(r.PathValue("project"))
	if u == nil || p == nil {
		return notFound("role assignment", r.PathValue("user")+"/"+r.PathValue("project"))
	}
	if _, err := s.apply(r, w, &fsm.RoleUnassign{Header: s.hdr(), UserID: u.ID, ProjectID: p.ID}); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request, _ *identity.Subject) error {
	return s.read(w, r, func(t *state.ReadTxn) (uint64, any, error) {
		pid := r.URL.Query().Get("project")
		if pid != "" {
			if p, _ := t.Project(pid); p != nil {
				pid = p.ID
			}
		}
		rs, err := t.RoleAssignments(pid)
		return t.Index("roles"), nonNil(rs), err
	})
}

func nonNil[T any](s []*T) []*T {
	if s == nil {
		return []*T{}
	}
	return s
}
