package state

import (
	"fmt"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

const tableFlavors = "flavors"

// Flavor is an instance size.
type Flavor struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	VCPUs     int       `json:"vcpus"`
	MemoryMB  int       `json:"memory_mb"`
	DiskGB    int       `json:"disk_gb"`
	CreatedAt time.Time `json:"created_at"`
}

func init() {
	register(&memdb.TableSchema{Name: tableFlavors, Indexes: map[string]*memdb.IndexSchema{
		"id": idIndex("ID"), "name": strIndex("name", "Name", true),
	}}, func() any { return &Flavor{} })
}

// CreateFlavor adds a flavor with a unique name and sane sizes.
func (w *WriteTxn) CreateFlavor(f *Flavor) error {
	if err := checkID("flavor", f.ID); err != nil {
		return err
	}
	if err := checkName("flavor", f.Name); err != nil {
		return err
	}
	if f.VCPUs < 1 || f.VCPUs > 1024 || f.MemoryMB < 16 || f.MemoryMB > 1<<24 || f.DiskGB < 0 || f.DiskGB > 1<<20 {
		return fmt.Errorf("flavor %q: vcpus 1-1024, memory 16 MiB-16 TiB, disk 0-1 PiB: %w", f.Name, ErrInvalid)
	}
	if x, err := first[Flavor](w.tx, nil, tableFlavors, "id", f.ID); err != nil || x != nil {
		return firstErr(err, fmt.Errorf("flavor %s exists: %w", f.ID, ErrConflict))
	}
	if x, err := first[Flavor](w.tx, nil, tableFlavors, "name", f.Name); err != nil || x != nil {
		return firstErr(err, fmt.Errorf("flavor name %q is taken: %w", f.Name, ErrConflict))
	}
	c := *f
	c.CreatedAt = fixedTime(c.CreatedAt)
	return w.insert(tableFlavors, &c)
}

// DeleteFlavor removes a flavor; instances keep a copy of their sizes.
func (w *WriteTxn) DeleteFlavor(id string) error {
	f, err := first[Flavor](w.tx, nil, tableFlavors, "id", id)
	if err != nil {
		return err
	}
	if f == nil {
		return fmt.Errorf("flavor %s: %w", id, ErrNotFound)
	}
	return w.delete(tableFlavors, f)
}

// Flavor returns a flavor by id or name.
func (r *ReadTxn) Flavor(idOrName string) (*Flavor, error) {
	f, err := first[Flavor](r.tx, r.ws, tableFlavors, "id", idOrName)
	if err == nil && f == nil {
		f, err = first[Flavor](r.tx, r.ws, tableFlavors, "name", idOrName)
	}
	return f, err
}

// Flavors lists all flavors.
func (r *ReadTxn) Flavors() ([]*Flavor, error) { return all[Flavor](r.tx, r.ws, tableFlavors, "id") }
