package state

import (
	"fmt"
	"regexp"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

const tableImages = "images"

// Image kinds an instance can reference.
const (
	ImageKernel = "kernel"
	ImageInitrd = "initrd"
	ImageDisk   = "disk"
)

// Image visibilities: private images are seen by their project only.
const (
	VisibilityPrivate = "private"
	VisibilityPublic  = "public"
)

var sha256Pattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Image is uploaded content addressed by sha256; the bytes live in every
// server's blob store, only this metadata is replicated through Raft.
type Image struct {
	ID         string    `json:"id"`
	ProjectID  string    `json:"project_id"`
	Name       string    `json:"name"`
	Kind       string    `json:"kind"`
	SHA256     string    `json:"sha256"`
	Size       int64     `json:"size"`
	Visibility string    `json:"visibility"`
	CreatedAt  time.Time `json:"created_at"`
}

// VisibleTo reports whether a project may see and use the image.
func (i *Image) VisibleTo(projectID string) bool {
	return i.Visibility == VisibilityPublic || i.ProjectID == projectID
}

func init() {
	register(&memdb.TableSchema{Name: tableImages, Indexes: map[string]*memdb.IndexSchema{
		"id": idIndex("ID"), "project": strIndex("project", "ProjectID", false), "sha256": strIndex("sha256", "SHA256", false),
	}}, func() any { return &Image{} })
}

// ValidSHA256 reports whether s is a lowercase hex sha256 digest.
func ValidSHA256(s string) bool { return sha256Pattern.MatchString(s) }

// CreateImage records an image whose bytes have already been stored and verified.
func (w *WriteTxn) CreateImage(img *Image) error {
	if err := checkID("image", img.ID); err != nil {
		return err
	}
	if err := checkName("image", img.Name); err != nil {
		return err
	}
	switch img.Kind {
	case ImageKernel, ImageInitrd, ImageDisk:
	default:
		return fmt.Errorf("image kind %q is not kernel, initrd or disk: %w", img.Kind, ErrInvalid)
	}
	if img.Visibility != VisibilityPrivate && img.Visibility != VisibilityPublic {
		return fmt.Errorf("image visibility %q is not private or public: %w", img.Visibility, ErrInvalid)
	}
	if !ValidSHA256(img.SHA256) || img.Size < 0 {
		return fmt.Errorf("image needs a sha256 and a size: %w", ErrInvalid)
	}
	if p, err := first[Project](w.tx, nil, tableProjects, "id", img.ProjectID); err != nil || p == nil {
		return firstErr(err, fmt.Errorf("project %s: %w", img.ProjectID, ErrNotFound))
	}
	if x, err := first[Image](w.tx, nil, tableImages, "id", img.ID); err != nil || x != nil {
		return firstErr(err, fmt.Errorf("image %s exists: %w", img.ID, ErrConflict))
	}
	c := *img
	c.CreatedAt = fixedTime(c.CreatedAt)
	return w.insert(tableImages, &c)
}

// DeleteImage removes an image that no live instance uses.
func (w *WriteTxn) DeleteImage(id string) error {
	img, err := first[Image](w.tx, nil, tableImages, "id", id)
	if err != nil {
		return err
	}
	if img == nil {
		return fmt.Errorf("image %s: %w", id, ErrNotFound)
	}
	insts, err := w.read().Instances(InstanceFilter{})
	if err != nil {
		return err
	}
	for _, in := range insts {
		if in.ImageID == id || in.KernelID == id || in.InitrdID == id {
			return fmt.Errorf("image %s is used by instance %s: %w", id, in.ID, ErrConflict)
		}
	}
	return w.delete(tableImages, img)
}

// Image returns an image by id.
func (r *ReadTxn) Image(id string) (*Image, error) {
	return first[Image](r.tx, r.ws, tableImages, "id", id)
}

// Images lists images visible to a project ("" lists all).
func (r *ReadTxn) Images(projectID string) ([]*Image, error) {
	imgs, err := all[Image](r.tx, r.ws, tableImages, "id")
	if err != nil || projectID == "" {
		return imgs, err
	}
	out := imgs[:0:0]
	for _, i := range imgs {
		if i.VisibleTo(projectID) {
			out = append(out, i)
		}
	}
	return out, nil
}

// ImageBySHA reports whether any image references the digest.
func (r *ReadTxn) ImageBySHA(sha string) (*Image, error) {
	return first[Image](r.tx, r.ws, tableImages, "sha256", sha)
}
