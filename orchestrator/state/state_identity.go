package state

import (
	"fmt"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

const (
	tableProjects = "projects"
	tableUsers    = "users"
	tableRoles    = "roles"
	tableMeta     = "meta"
)

// Role names, ordered admin ⇒ member ⇒ reader.
const (
	RoleAdmin  = "admin"
	RoleMember = "member"
	RoleReader = "reader"
)

// Project is a tenant: every instance, image and server group belongs to one.
type Project struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description,omitempty"`
	CreatedAt   time.Time `json:"created_at"`
}

// User is an identity that authenticates with a password.
type User struct {
	ID           string    `json:"id"`
	Name         string    `json:"name"`
	PasswordHash string    `json:"password_hash,omitempty"`
	CreatedAt    time.Time `json:"created_at"`
}

// RoleAssignment grants a user one role on one project.
type RoleAssignment struct {
	ID        string `json:"id"`
	UserID    string `json:"user_id"`
	ProjectID string `json:"project_id"`
	Role      string `json:"role"`
}

// Meta is a singleton cluster fact such as the admin project created at bootstrap.
type Meta struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// MetaAdminProject is the key under which the bootstrap admin project id is kept.
const MetaAdminProject = "admin_project"

func init() {
	register(&memdb.TableSchema{Name: tableProjects, Indexes: map[string]*memdb.IndexSchema{
		"id": idIndex("ID"), "name": strIndex("name", "Name", true),
	}}, func() any { return &Project{} })
	register(&memdb.TableSchema{Name: tableUsers, Indexes: map[string]*memdb.IndexSchema{
		"id": idIndex("ID"), "name": strIndex("name", "Name", true),
	}}, func() any { return &User{} })
	register(&memdb.TableSchema{Name: tableRoles, Indexes: map[string]*memdb.IndexSchema{
		"id": idIndex("ID"), "user": strIndex("user", "UserID", false), "project": strIndex("project", "ProjectID", false),
	}}, func() any { return &RoleAssignment{} })
	register(&memdb.TableSchema{Name: tableMeta, Indexes: map[string]*memdb.IndexSchema{
		"id": idIndex("Key"),
	}}, func() any { return &Meta{} })
}

// ValidRole reports whether r is one of the three known roles.
func ValidRole(r string) bool { return r == RoleAdmin || r == RoleMember || r == RoleReader }

// Bootstrap creates the admin project and user with the admin role. It is
// rejected once the cluster has been bootstrapped, so only one of several
// racing servers wins.
func (w *WriteTxn) Bootstrap(p *Project, u *User) error {
	if m, err := first[Meta](w.tx, nil, tableMeta, "id", MetaAdminProject); err != nil {
		return err
	} else if m != nil {
		return fmt.Errorf("cluster already bootstrapped: %w", ErrConflict)
	}
	if err := w.CreateProject(p); err != nil {
		return err
	}
	if err := w.CreateUser(u); err != nil {
		return err
	}
	if err := w.AssignRole(&RoleAssignment{UserID: u.ID, ProjectID: p.ID, Role: RoleAdmin}); err != nil {
		return err
	}
	return w.insert(tableMeta, &Meta{Key: MetaAdminProject, Value: p.ID})
}

// CreateProject adds a project with a unique name.
func (w *WriteTxn) CreateProject(p *Project) error {
	if err := checkID("project", p.ID); err != nil {
		return err
	}
	if err := checkName("project", p.Name); err != nil {
		return err
	}
	if x, err := first[Project](w.tx, nil, tableProjects, "id", p.ID); err != nil || x != nil {
		return firstErr(err, fmt.Errorf("project %s exists: %w", p.ID, ErrConflict))
	}
	if x, err := first[Project](w.tx, nil, tableProjects, "name", p.Name); err != nil || x != nil {
		return firstErr(err, fmt.Errorf("project name %q is taken: %w", p.Name, ErrConflict))
	}
	c := *p
	c.CreatedAt = fixedTime(c.CreatedAt)
	return w.insert(tableProjects, &c)
}

// DeleteProject removes an empty project and its role assignments.
func (w *WriteTxn) DeleteProject(id string) error {
	p, err := first[Project](w.tx, nil, tableProjects, "id", id)
	if err != nil {
		return err
	}
	if p == nil {
		return fmt.Errorf("project %s: %w", id, ErrNotFound)
	}
	if m, _ := first[Meta](w.tx, nil, tableMeta, "id", MetaAdminProject); m != nil && m.Value == id {
		return fmt.Errorf("the admin project cannot be deleted: %w", ErrInvalid)
	}
	insts, err := w.read().Instances(InstanceFilter{ProjectID: id})
	if err != nil {
		return err
	}
	if len(insts) > 0 {
		return fmt.Errorf("project %s still has %d instances: %w", id, len(insts), ErrConflict)
	}
	if nets, err := all[Network](w.tx, nil, tableNetworks, "project", id); err != nil || len(nets) > 0 {
		return firstErr(err, fmt.Errorf("project %s still has %d networks: %w", id, len(nets), ErrConflict))
	}
	roles, err := all[RoleAssignment](w.tx, nil, tableRoles, "project", id)
	if err != nil {
		return err
	}
	for _, r := range roles {
		if err := w.delete(tableRoles, r); err != nil {
			return err
		}
	}
	return w.delete(tableProjects, p)
}

// CreateUser adds a user with a unique name and a password hash.
func (w *WriteTxn) CreateUser(u *User) error {
	if err := checkID("user", u.ID); err != nil {
		return err
	}
	if err := checkName("user", u.Name); err != nil {
		return err
	}
	if u.PasswordHash == "" {
		return fmt.Errorf("user %q needs a password hash: %w", u.Name, ErrInvalid)
	}
	if x, err := first[User](w.tx, nil, tableUsers, "id", u.ID); err != nil || x != nil {
		return firstErr(err, fmt.Errorf("user %s exists: %w", u.ID, ErrConflict))
	}
	if x, err := first[User](w.tx, nil, tableUsers, "name", u.Name); err != nil || x != nil {
		return firstErr(err, fmt.Errorf("user name %q is taken: %w", u.Name, ErrConflict))
	}
	c := *u
	c.CreatedAt = fixedTime(c.CreatedAt)
	return w.insert(tableUsers, &c)
}

// DeleteUser removes a user and its role assignments.
func (w *WriteTxn) DeleteUser(id string) error {
	u, err := first[User](w.tx, nil, tableUsers, "id", id)
	if err != nil {
		return err
	}
	if u == nil {
		return fmt.Errorf("user %s: %w", id, ErrNotFound)
	}
	roles, err := all[RoleAssignment](w.tx, nil, tableRoles, "user", id)
	if err != nil {
		return err
	}
	for _, r := range roles {
		if err := w.delete(tableRoles, r); err != nil {
			return err
		}
	}
	return w.delete(tableUsers, u)
}

// AssignRole grants (or replaces) the user's role on a project.
func (w *WriteTxn) AssignRole(a *RoleAssignment) error {
	if !ValidRole(a.Role) {
		return fmt.Errorf("role %q is not admin, member or reader: %w", a.Role, ErrInvalid)
	}
	if u, err := first[User](w.tx, nil, tableUsers, "id", a.UserID); err != nil || u == nil {
		return firstErr(err, fmt.Errorf("user %s: %w", a.UserID, ErrNotFound))
	}
	if p, err := first[Project](w.tx, nil, tableProjects, "id", a.ProjectID); err != nil || p == nil {
		return firstErr(err, fmt.Errorf("project %s: %w", a.ProjectID, ErrNotFound))
	}
	c := *a
	c.ID = a.UserID + "/" + a.ProjectID
	return w.insert(tableRoles, &c)
}

// UnassignRole removes the user's role on a project.
func (w *WriteTxn) UnassignRole(userID, projectID string) error {
	r, err := first[RoleAssignment](w.tx, nil, tableRoles, "id", userID+"/"+projectID)
	if err != nil {
		return err
	}
	if r == nil {
		return fmt.Errorf("no role for user %s on project %s: %w", userID, projectID, ErrNotFound)
	}
	return w.delete(tableRoles, r)
}

// AdminProject returns the id of the bootstrap admin project ("" before bootstrap).
func (r *ReadTxn) AdminProject() string {
	m, err := first[Meta](r.tx, r.ws, tableMeta, "id", MetaAdminProject)
	if err != nil || m == nil {
		return ""
	}
	return m.Value
}

// Project returns a project by id or name.
func (r *ReadTxn) Project(idOrName string) (*Project, error) {
	p, err := first[Project](r.tx, r.ws, tableProjects, "id", idOrName)
	if err == nil && p == nil {
		p, err = first[Project](r.tx, r.ws, tableProjects, "name", idOrName)
	}
	return p, err
}

// Projects lists all projects.
func (r *ReadTxn) Projects() ([]*Project, error) {
	return all[Project](r.tx, r.ws, tableProjects, "id")
}

// User returns a user by id or name.
func (r *ReadTxn) User(idOrName string) (*User, error) {
	u, err := first[User](r.tx, r.ws, tableUsers, "id", idOrName)
	if err == nil && u == nil {
		u, err = first[User](r.tx, r.ws, tableUsers, "name", idOrName)
	}
	return u, err
}

// Users lists all users.
func (r *ReadTxn) Users() ([]*User, error) { return all[User](r.tx, r.ws, tableUsers, "id") }

// Role returns the user's role on a project, or "" if none.
func (r *ReadTxn) Role(userID, projectID string) string {
	a, err := first[RoleAssignment](r.tx, r.ws, tableRoles, "id", userID+"/"+projectID)
	if err != nil || a == nil {
		return ""
	}
	return a.Role
}

// RoleAssignments lists assignments, optionally for one project.
func (r *ReadTxn) RoleAssignments(projectID string) ([]*RoleAssignment, error) {
	if projectID != "" {
		return all[RoleAssignment](r.tx, r.ws, tableRoles, "project", projectID)
	}
	return all[RoleAssignment](r.tx, r.ws, tableRoles, "id")
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
