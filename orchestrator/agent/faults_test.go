package agent

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/state"
)

// TestCorruptImage damages the image on the server: the agent must refuse
// the bytes (digest mismatch), report it, and keep nothing of them.
func TestCorruptImage(t *testing.T) {
	c := newCluster(t, 1)
	blob := filepath.Join(c.dir, "blobs", "sha256", c.disk.SHA256)
	b, err := os.ReadFile(blob)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 0xff
	if err := os.WriteFile(blob, b, 0o600); err != nil {
		t.Fatal(err)
	}
	data := t.TempDir()
	c.startAgent(data, nil)
	id := c.create("bad", api.InstanceRequest{Image: c.disk.ID})
	in := c.waitState(id, state.InstanceError, nil)
	if r := lastReason(in); !strings.Contains(r, "image digest mismatch") || !strings.Contains(r, c.disk.SHA256) {
		t.Errorf("reason %q", r)
	}
	assertNoLeftovers(t, data, id, c.disk.SHA256)
}

// assertNoLeftovers checks that a failed build left no image under the
// digest, no temporary download and no instance files.
func assertNoLeftovers(t *testing.T, data, id, digest string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(data, "images", "sha256", digest)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("image %s kept: %v", digest, err)
	}
	if tmp, _ := os.ReadDir(filepath.Join(data, "images", "tmp")); len(tmp) != 0 {
		t.Errorf("images/tmp holds %d files", len(tmp))
	}
	if _, err := os.Stat(filepath.Join(data, "instances", id)); !errors.Is(err, os.ErrNotExist) {
		ents, _ := os.ReadDir(filepath.Join(data, "instances", id))
		t.Errorf("instance directory left behind (%v): %d entries", err, len(ents))
	}
}

// TestDiskFull runs the agent on a small tmpfs: the image download (2 MiB
// filesystem) or the disk copy (5 MiB) runs out of space. The instance
// must fail with the reason and leave no half-written file.
func TestDiskFull(t *testing.T) {
	tests := []struct {
		name, size string
		want       string // in the reason, besides ENOSPC
		imageKept  bool
	}{
		{"download", "2m", "download", false},
		{"disk copy", "5m", "disk: copy", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := t.TempDir()
			if err := unix.Mount("tmpfs", data, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+tc.size+",mode=0700"); err != nil {
				if errors.Is(err, syscall.EPERM) {
					t.Skip("cannot mount a tmpfs here (needs root): ", err)
				}
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Unmount(data, unix.MNT_DETACH) })
			c := newCluster(t, 4)
			c.startAgent(data, nil)
			id := c.create("full", api.InstanceRequest{Image: c.disk.ID})
			in := c.waitState(id, state.InstanceError, nil)
			if r := lastReason(in); !strings.Contains(r, "no space left on device") || !strings.Contains(r, tc.want) {
				t.Errorf("reason %q", r)
			}
			if tc.imageKept {
				// The verified image stays cached; only the instance's
				// files go.
				if _, err := os.Stat(filepath.Join(data, "images", "sha256", c.disk.SHA256)); err != nil {
					t.Errorf("image not cached: %v", err)
				}
				if tmp, _ := os.ReadDir(filepath.Join(data, "images", "tmp")); len(tmp) != 0 {
					t.Errorf("images/tmp holds %d files", len(tmp))
				}
				if _, err := os.Stat(filepath.Join(data, "instances", id)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("instance directory left behind: %v", err)
				}
				return
			}
			assertNoLeftovers(t, data, id, c.disk.SHA256)
		})
	}
}
