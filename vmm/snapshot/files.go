package snapshot

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// pageSize is the unit of the memory file's holes and checksum.
const pageSize = 4096

// chunk is how much RAM is scanned, written or verified per step (and per
// context check).
const chunk = 2 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Snapshot is a decoded snapshot directory.
type Snapshot struct {
	Dir      string
	Manifest *Manifest
	State    *State
}

// MemoryPath is the memory file's path.
func (s *Snapshot) MemoryPath() string { return filepath.Join(s.Dir, MemoryFile) }

// Write stores a snapshot in dir (created if missing): the state, then RAM
// (regions in guest-physical order, the layout memory.NewFromFile maps),
// then the manifest, which it completes with the files' sizes and
// checksums. An earlier snapshot in dir is invalidated first, so a failed
// Write never leaves one that reads as valid.
func Write(ctx context.Context, dir string, m Manifest, st *State, ram [][]byte) (*Manifest, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("snapshot directory: %w", err)
	}
	if err := os.Remove(filepath.Join(dir, ManifestFile)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing the old manifest: %w", err)
	}
	b, err := EncodeState(st)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	if err := writeFile(filepath.Join(dir, StateFile), b); err != nil {
		return nil, err
	}
	mem, err := writeMemory(ctx, filepath.Join(dir, MemoryFile), ram)
	if err != nil {
		return nil, err
	}
	m.Magic, m.FormatVersion = Magic, FormatVersion
	m.MemoryBytes = uint64(mem.Size)
	m.Files = []FileInfo{{Name: StateFile, Size: int64(len(b)), Checksum: "sha256:" + hex.EncodeToString(sum[:])}, mem}
	mb, err := EncodeManifest(&m)
	if err != nil {
		return nil, err
	}
	tmp := filepath.Join(dir, ManifestFile+".tmp")
	if err := writeFile(tmp, mb); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, filepath.Join(dir, ManifestFile)); err != nil {
		return nil, fmt.Errorf("snapshot manifest: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	return &m, nil
}

func writeFile(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	_, werr := f.Write(b)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return fmt.Errorf("snapshot: writing %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	serr := d.Sync()
	if err := errors.Join(serr, d.Close()); err != nil {
		return fmt.Errorf("snapshot: syncing %s: %w", dir, err)
	}
	return nil
}

// pageSum feeds one page into the memory checksum: its index, then its
// bytes. Zero pages are left out, so the checksum does not depend on which
// of them the file system stores as holes.
type pageSum struct{ h hash.Hash32 }

func newPageSum() *pageSum { return &pageSum{h: crc32.New(castagnoli)} }

func (p *pageSum) add(index uint64, page []byte) {
	var idx [8]byte
	binary.LittleEndian.PutUint64(idx[:], index)
	p.h.Write(idx[:])
	p.h.Write(page)
}

func (p *pageSum) String() string { return fmt.Sprintf("crc32c-pages:%08x", p.h.Sum32()) }

func isZero(p []byte) bool {
	// Eight bytes at a time: this loop runs over all of RAM on every
	// snapshot.
	for len(p) >= 8 {
		if binary.LittleEndian.Uint64(p) != 0 {
			return false
		}
		p = p[8:]
	}
	for _, b := range p {
		if b != 0 {
			return false
		}
	}
	return true
}

// MemoryChecksum is the memory file's checksum: CRC-32C over (index, page)
// of every page that is not all zero. CRC-32C runs at memory speed (it must
// not eat the restore budget), and it is there to catch truncation and
// corruption, not tampering: whoever can write a snapshot can also write
// the guest's registers.
func MemoryChecksum(ram [][]byte) string {
	s := newPageSum()
	var index uint64
	for _, r := range ram {
		for off := 0; off < len(r); off += pageSize {
			if p := r[off:min(off+pageSize, len(r))]; !isZero(p) {
				s.add(index, p)
			}
			index++
		}
	}
	return s.String()
}

// writeMemory writes ram to path as a sparse file: runs of non-zero pages
// are written, zero pages are left as holes of the pre-sized file.
func writeMemory(ctx context.Context, path string, ram [][]byte) (FileInfo, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return FileInfo{}, fmt.Errorf("snapshot: %w", err)
	}
	info, werr := fillMemory(ctx, f, ram)
	serr := f.Sync()
	cerr := f.Close()
	if err := errors.Join(werr, serr, cerr); err != nil {
		return FileInfo{}, fmt.Errorf("snapshot: writing guest RAM to %s: %w", path, err)
	}
	return info, nil
}

func fillMemory(ctx context.Context, f *os.File, ram [][]byte) (FileInfo, error) {
	var total int64
	for _, r := range ram {
		if len(r)%pageSize != 0 {
			return FileInfo{}, fmt.Errorf("RAM region of %d bytes is not whole pages", len(r))
		}
		total += int64(len(r))
	}
	if err := f.Truncate(total); err != nil {
		return FileInfo{}, err
	}
	sum := newPageSum()
	var base int64
	var index uint64
	for _, r := range ram {
		for c := 0; c < len(r); c += chunk {
			if err := ctx.Err(); err != nil {
				return FileInfo{}, err
			}
			end := min(c+chunk, len(r))
			run := -1 // start of the current run of non-zero pages
			for off := c; off <= end; off += pageSize {
				nonZero := off < end && !isZero(r[off:off+pageSize])
				if nonZero {
					sum.add(index, r[off:off+pageSize])
					index++
					if run < 0 {
						run = off
					}
					continue
				}
				if off < end {
					index++
				}
				if run >= 0 {
					if _, err := f.WriteAt(r[run:off], base+int64(run)); err != nil {
						return FileInfo{}, err
					}
					run = -1
				}
			}
		}
		base += int64(len(r))
	}
	return FileInfo{Name: MemoryFile, Size: total, Checksum: sum.String()}, nil
}

// verifyMemory recomputes the memory checksum from the file, reading only
// its data extents (SEEK_DATA/SEEK_HOLE) since holes are zero pages.
func verifyMemory(ctx context.Context, path string, want FileInfo) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	if fi.Size() != want.Size {
		return fmt.Errorf("%w: %s is %d bytes, manifest says %d (truncated?)", ErrSnapshotCorrupt, MemoryFile, fi.Size(), want.Size)
	}
	sum := newPageSum()
	buf := make([]byte, chunk)
	fd := int(f.Fd())
	for pos := int64(0); pos < want.Size; {
		data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole from pos to the end
		}
		if err != nil {
			return fmt.Errorf("snapshot: seeking data in %s: %w", MemoryFile, err)
		}
		hole, err := unix.Seek(fd, data, unix.SEEK_HOLE)
		if err != nil {
			return fmt.Errorf("snapshot: seeking a hole in %s: %w", MemoryFile, err)
		}
		// Extents are file-system blocks; widen them to whole pages.
		start, end := data&^(pageSize-1), min((hole+pageSize-1)&^(pageSize-1), want.Size)
		for off := start; off < end; off += chunk {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := buf[:min(chunk, end-off)]
			if _, err := f.ReadAt(b, off); err != nil && !errors.Is(err, io.EOF) {
				return fmt.Errorf("snapshot: reading %s: %w", MemoryFile, err)
			}
			for p := 0; p < len(b); p += pageSize {
				if page := b[p:min(p+pageSize, len(b))]; !isZero(page) {
					sum.add(uint64(off+int64(p))/pageSize, page)
				}
			}
		}
		pos = end
	}
	if got := sum.String(); got != want.Checksum {
		return fmt.Errorf("%w: %s checksum %s, manifest says %s", ErrSnapshotCorrupt, MemoryFile, got, want.Checksum)
	}
	return nil
}

// OpenOptions tune Open.
type OpenOptions struct {
	// SkipMemoryChecksum checks only the memory file's size, not its
	// contents: for a caller that verified it before or must restore
	// faster than reading the file allows.
	SkipMemoryChecksum bool
}

// Open reads and verifies the snapshot in dir. Errors wrap
// ErrSnapshotVersion or ErrSnapshotCorrupt where the snapshot is at fault.
func Open(ctx context.Context, dir string, opts OpenOptions) (*Snapshot, error) {
	mb, err := readBounded(filepath.Join(dir, ManifestFile), maxManifest)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%w: %s has no %s (not a snapshot, or its writer did not finish)", ErrSnapshotCorrupt, dir, ManifestFile)
		}
		return nil, err
	}
	m, err := DecodeManifest(mb)
	if err != nil {
		return nil, err
	}
	sf, _ := m.File(StateFile)
	sb, err := readBounded(filepath.Join(dir, StateFile), maxState)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
	}
	if int64(len(sb)) != sf.Size {
		return nil, fmt.Errorf("%w: %s is %d bytes, manifest says %d (truncated?)", ErrSnapshotCorrupt, StateFile, len(sb), sf.Size)
	}
	sum := sha256.Sum256(sb)
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != sf.Checksum {
		return nil, fmt.Errorf("%w: %s checksum %s, manifest says %s", ErrSnapshotCorrupt, StateFile, got, sf.Checksum)
	}
	st, err := DecodeState(sb)
	if err != nil {
		return nil, err
	}
	mf, _ := m.File(MemoryFile)
	fi, err := os.Stat(filepath.Join(dir, MemoryFile))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSnapshotCorrupt, err)
	}
	if fi.Size() != mf.Size {
		return nil, fmt.Errorf("%w: %s is %d bytes, manifest says %d (truncated?)", ErrSnapshotCorrupt, MemoryFile, fi.Size(), mf.Size)
	}
	s := &Snapshot{Dir: dir, Manifest: m, State: st}
	if !opts.SkipMemoryChecksum {
		if err := s.VerifyMemory(ctx); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// VerifyMemory checks the memory file against the manifest's checksum.
// Open does so unless told to skip it; a caller that skipped it can run it
// beside other work (Restore builds the machine meanwhile).
func (s *Snapshot) VerifyMemory(ctx context.Context) error {
	mf, _ := s.Manifest.File(MemoryFile)
	if !strings.HasPrefix(mf.Checksum, "crc32c-pages:") {
		return fmt.Errorf("%w: %s checksum %q of an unknown kind", ErrSnapshotCorrupt, MemoryFile, mf.Checksum)
	}
	return verifyMemory(ctx, s.MemoryPath(), mf)
}

// readBounded reads a whole file, refusing one larger than limit.
func readBounded(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("snapshot: reading %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrSnapshotCorrupt, path, limit)
	}
	return b, nil
}
