package state

import (
	"fmt"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

const tableGroups = "server_groups"

// Server-group policies.
const (
	PolicyAffinity     = "affinity"
	PolicyAntiAffinity = "anti-affinity"
)

// ServerGroup constrains where its member instances may be placed relative to
// each other.
type ServerGroup struct {
	ID        string    `json:"id"`
	ProjectID string    `json:"project_id"`
	Name      string    `json:"name"`
	Policy    string    `json:"policy"`
	CreatedAt time.Time `json:"created_at"`
}

func init() {
	register(&memdb.TableSchema{Name: tableGroups, Indexes: map[string]*memdb.IndexSchema{
		"id": idIndex("ID"), "project": strIndex("project", "ProjectID", false),
	}}, func() any { return &ServerGroup{} })
}

// CreateServerGroup adds a group to a project.
func (w *WriteTxn) CreateServerGroup(g *ServerGroup) error {
	if err := checkID("server group", g.ID); err != nil {
		return err
	}
	if err := checkName("server group", g.Name); err != nil {
		return err
	}
	if g.Policy != PolicyAffinity && g.Policy != PolicyAntiAffinity {
		return fmt.Errorf("policy %q is not affinity or anti-affinity: %w", g.Policy, ErrInvalid)
	}
	if p, err := first[Project](w.tx, nil, tableProjects, "id", g.ProjectID); err != nil || p == nil {
		return firstErr(err, fmt.Errorf("project %s: %w", g.ProjectID, ErrNotFound))
	}
	if x, err := first[ServerGroup](w.tx, nil, tableGroups, "id", g.ID); err != nil || x != nil {
		return firstErr(err, fmt.Errorf("server group %s exists: %w", g.ID, ErrConflict))
	}
	c := *g
	c.CreatedAt = fixedTime(c.CreatedAt)
	return w.insert(tableGroups, &c)
}

// DeleteServerGroup removes a group that has no live members.
func (w *WriteTxn) DeleteServerGroup(id string) error {
	g, err := first[ServerGroup](w.tx, nil, tableGroups, "id", id)
	if err != nil {
		return err
	}
	if g == nil {
		return fmt.Errorf("server group %s: %w", id, ErrNotFound)
	}
	members, err := w.read().Instances(InstanceFilter{GroupID: id})
	if err != nil {
		return err
	}
	if len(members) > 0 {
		return fmt.Errorf("server group %s has %d live members: %w", id, len(members), ErrConflict)
	}
	return w.delete(tableGroups, g)
}

// ServerGroup returns a group by id.
func (r *ReadTxn) ServerGroup(id string) (*ServerGroup, error) {
	return first[ServerGroup](r.tx, r.ws, tableGroups, "id", id)
}

// ServerGroups lists a project's groups ("" lists all).
func (r *ReadTxn) ServerGroups(projectID string) ([]*ServerGroup, error) {
	if projectID == "" {
		return all[ServerGroup](r.tx, r.ws, tableGroups, "id")
	}
	return all[ServerGroup](r.tx, r.ws, tableGroups, "project", projectID)
}
