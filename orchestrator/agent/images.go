package agent

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"kvmstack/orchestrator/state"
)

// ErrDigest means downloaded image bytes do not hash to the image's sha256;
// nothing of them is kept.
var ErrDigest = errors.New("image digest mismatch")

// downloadFunc writes an image's bytes to w.
type downloadFunc func(ctx context.Context, imageID string, w io.Writer) error

// imageCache keeps verified image files under dir/sha256/<digest>. A file
// appears there only by rename after its digest was checked and its bytes
// synced, so a crash or a full disk never leaves a half image under a
// digest's name; partial downloads live in dir/tmp, emptied at start.
type imageCache struct {
	dir      string
	download downloadFunc

	mu       sync.Mutex
	inflight map[string]*fetch
}

// fetch is one download that concurrent callers for the same digest share.
type fetch struct {
	done chan struct{}
	err  error
}

func newImageCache(dir string, download downloadFunc) (*imageCache, error) {
	for _, d := range []string{filepath.Join(dir, "sha256"), filepath.Join(dir, "tmp")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("agent: image cache: %w", err)
		}
	}
	// Leftovers of downloads an earlier agent did not finish.
	tmps, _ := os.ReadDir(filepath.Join(dir, "tmp"))
	for _, e := range tmps {
		os.Remove(filepath.Join(dir, "tmp", e.Name()))
	}
	return &imageCache{dir: dir, download: download, inflight: map[string]*fetch{}}, nil
}

// path is where a verified image with this digest lives.
func (c *imageCache) path(digest string) string { return filepath.Join(c.dir, "sha256", digest) }

// Get returns the path of img's verified bytes, downloading them first if
// they are not cached.
func (c *imageCache) Get(ctx context.Context, img *state.Image) (string, error) {
	if len(img.SHA256) != 64 || !isLowerHex(img.SHA256) {
		return "", fmt.Errorf("image %s: sha256 %q is not 64 hex digits", img.ID, img.SHA256)
	}
	p := c.path(img.SHA256)
	for {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		c.mu.Lock()
		f, ok := c.inflight[img.SHA256]
		if !ok {
			f = &fetch{done: make(chan struct{})}
			c.inflight[img.SHA256] = f
			c.mu.Unlock()
			f.err = c.fetch(ctx, img)
			c.mu.Lock()
			delete(c.inflight, img.SHA256)
			c.mu.Unlock()
			close(f.done)
			if f.err != nil {
				return "", f.err
			}
			return p, nil
		}
		c.mu.Unlock()
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-f.done:
		}
		if f.err != nil && !errors.Is(f.err, context.Canceled) {
			return "", f.err
		}
		// The other download succeeded (the file exists now) or was
		// cancelled by its caller: look again.
	}
}

// fetch downloads img into a temporary file, verifies size and digest,
// syncs it and renames it into place.
func (c *imageCache) fetch(ctx context.Context, img *state.Image) (err error) {
	var rnd [8]byte
	rand.Read(rnd[:])
	tmp := filepath.Join(c.dir, "tmp", img.SHA256+"."+hex.EncodeToString(rnd[:]))
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("image %s: %w", img.ID, err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	h := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, h)}
	if err := c.download(ctx, img.ID, cw); err != nil {
		return fmt.Errorf("image %s: download: %w", img.ID, err)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if got != img.SHA256 || (img.Size > 0 && cw.n != img.Size) {
		return fmt.Errorf("image %s: got %d bytes with sha256 %s, want %d bytes with sha256 %s: %w", img.ID, cw.n, got, img.Size, img.SHA256, ErrDigest)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("image %s: %w", img.ID, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("image %s: %w", img.ID, err)
	}
	if err := os.Rename(tmp, c.path(img.SHA256)); err != nil {
		return fmt.Errorf("image %s: %w", img.ID, err)
	}
	return syncDir(filepath.Join(c.dir, "sha256"))
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

func isLowerHex(s string) bool {
	for _, c := range []byte(s) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
