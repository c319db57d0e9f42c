package blob

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"time"
)

// Errors callers branch on.
var (
	// ErrDigestMismatch means the bytes do not hash to the declared sha256.
	ErrDigestMismatch = errors.New("sha256 mismatch")
	// ErrTooLarge means the content exceeded the size limit.
	ErrTooLarge = errors.New("content exceeds the size limit")
	// ErrNotFound means no blob with that digest is stored.
	ErrNotFound = errors.New("blob not found")
	// ErrBadDigest means the digest is not 64 lowercase hex digits.
	ErrBadDigest = errors.New("malformed sha256")
)

var digestPattern = regexp.MustCompile(`^[0-9a-f]{64}$`)

// Store keeps blobs in dir/sha256/<digest>.
type Store struct {
	dir string
}

// Open creates the directories if needed and removes leftovers of
// interrupted writes.
func Open(dir string) (*Store, error) {
	s := &Store{dir: dir}
	for _, d := range []string{s.blobDir(), s.tmpDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("blob: create %s: %w", d, err)
		}
	}
	old, _ := filepath.Glob(filepath.Join(s.tmpDir(), "*"))
	for _, f := range old {
		_ = os.Remove(f)
	}
	return s, nil
}

func (s *Store) blobDir() string { return filepath.Join(s.dir, "sha256") }
func (s *Store) tmpDir() string  { return filepath.Join(s.dir, "tmp") }

func (s *Store) path(digest string) (string, error) {
	if !digestPattern.MatchString(digest) {
		return "", ErrBadDigest
	}
	return filepath.Join(s.blobDir(), digest), nil
}

// Put streams r into the store, accepting it only if it is at most limit
// bytes and hashes to want. It returns the size.
func (s *Store) Put(r io.Reader, want string, limit int64) (int64, error) {
	final, err := s.path(want)
	if err != nil {
		return 0, err
	}
	tmp, err := os.CreateTemp(s.tmpDir(), "upload-*")
	if err != nil {
		return 0, fmt.Errorf("blob: temp file: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(tmp, h), io.LimitReader(r, limit+1))
	if err != nil {
		return 0, fmt.Errorf("blob: receive: %w", err)
	}
	if n > limit {
		return 0, fmt.Errorf("blob: more than %d bytes: %w", limit, ErrTooLarge)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return 0, fmt.Errorf("blob: content hashes to %s, declared %s: %w", got, want, ErrDigestMismatch)
	}
	if err := tmp.Sync(); err != nil {
		return 0, fmt.Errorf("blob: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return 0, fmt.Errorf("blob: close: %w", err)
	}
	if err := os.Rename(tmp.Name(), final); err != nil {
		return 0, fmt.Errorf("blob: commit: %w", err)
	}
	ok = true
	return n, nil
}

// Open returns the blob for reading.
func (s *Store) Open(digest string) (*os.File, error) {
	p, err := s.path(digest)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("blob %s: %w", digest, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("blob: open: %w", err)
	}
	return f, nil
}

// Has reports whether the blob is stored.
func (s *Store) Has(digest string) bool {
	p, err := s.path(digest)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// Entry is a stored blob.
type Entry struct {
	Digest  string
	ModTime time.Time
}

// List returns every stored blob.
func (s *Store) List() ([]Entry, error) {
	ents, err := os.ReadDir(s.blobDir())
	if err != nil {
		return nil, fmt.Errorf("blob: list: %w", err)
	}
	var out []Entry
	for _, e := range ents {
		if !digestPattern.MatchString(e.Name()) {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		out = append(out, Entry{Digest: e.Name(), ModTime: info.ModTime()})
	}
	return out, nil
}

// Delete removes a blob; deleting a missing blob is not an error.
func (s *Store) Delete(digest string) error {
	p, err := s.path(digest)
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("blob: delete: %w", err)
	}
	return nil
}
