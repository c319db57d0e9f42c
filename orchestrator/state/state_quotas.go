package state

import (
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

const tableQuotas = "quotas"

// Quota limits a project's live instances; a negative limit means unlimited.
type Quota struct {
	ProjectID string `json:"project_id"`
	Instances int    `json:"instances"`
	VCPUs     int    `json:"vcpus"`
	MemoryMB  int    `json:"memory_mb"`
}

// Unlimited is the quota of a project that has none set.
func Unlimited(projectID string) *Quota {
	return &Quota{ProjectID: projectID, Instances: -1, VCPUs: -1, MemoryMB: -1}
}

func init() {
	register(&memdb.TableSchema{Name: tableQuotas, Indexes: map[string]*memdb.IndexSchema{"id": idIndex("ProjectID")}},
		func() any { return &Quota{} })
}

// SetQuota replaces a project's quota.
func (w *WriteTxn) SetQuota(q *Quota) error {
	if p, err := first[Project](w.tx, nil, tableProjects, "id", q.ProjectID); err != nil || p == nil {
		return firstErr(err, fmt.Errorf("project %s: %w", q.ProjectID, ErrNotFound))
	}
	c := *q
	return w.insert(tableQuotas, &c)
}

// Quota returns a project's quota (unlimited if none is set).
func (r *ReadTxn) Quota(projectID string) (*Quota, error) {
	q, err := first[Quota](r.tx, r.ws, tableQuotas, "id", projectID)
	if err != nil {
		return nil, err
	}
	if q == nil {
		return Unlimited(projectID), nil
	}
	return q, nil
}

// Usage is what a project's live instances consume.
type Usage struct {
	Instances int `json:"instances"`
	VCPUs     int `json:"vcpus"`
	MemoryMB  int `json:"memory_mb"`
}

// ProjectUsage sums the project's live (not deleted) instances.
func (r *ReadTxn) ProjectUsage(projectID string) (Usage, error) {
	insts, err := all[Instance](r.tx, r.ws, tableInstances, "project", projectID)
	if err != nil {
		return Usage{}, err
	}
	var u Usage
	for _, i := range insts {
		if i.State == InstanceDeleted {
			continue
		}
		u.Instances++
		u.VCPUs += i.VCPUs
		u.MemoryMB += i.MemoryMB
	}
	return u, nil
}
