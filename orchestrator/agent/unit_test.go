package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"kvmstack/orchestrator/state"
)

func TestPrepareDisk(t *testing.T) {
	chunk := func(fill byte) []byte { return bytes.Repeat([]byte{fill}, copyChunk) }
	tests := []struct {
		name      string
		layout    [][]byte // image chunks; nil = a hole
		size      int64
		wantErr   error
		maxBlocks int64 // bytes allocated in the copy at most
	}{
		{"dense", [][]byte{chunk(1), chunk(2)}, 8 << 20, nil, 2 * copyChunk},
		{"hole in the middle", [][]byte{chunk(1), nil, chunk(3)}, 8 << 20, nil, 2 * copyChunk},
		{"explicit zeros skipped", [][]byte{chunk(1), chunk(0), chunk(0), chunk(4)}, 8 << 20, nil, 2 * copyChunk},
		{"trailing hole", [][]byte{chunk(1), nil, nil}, 8 << 20, nil, copyChunk},
		{"keep size", [][]byte{chunk(5)}, 0, nil, copyChunk},
		{"too small", [][]byte{chunk(1), chunk(2)}, copyChunk, ErrDiskTooSmall, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			src := filepath.Join(dir, "image")
			f, err := os.Create(src)
			if err != nil {
				t.Fatal(err)
			}
			var want []byte
			for i, c := range tc.layout {
				if c != nil {
					f.WriteAt(c, int64(i)*copyChunk)
					want = append(want, c...)
				} else {
					want = append(want, make([]byte, copyChunk)...)
				}
			}
			f.Truncate(int64(len(tc.layout)) * copyChunk)
			f.Close()
			dst := filepath.Join(dir, "disk")
			_, err = prepareDisk(context.Background(), src, dst, tc.size)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("got %v, want %v", err, tc.wantErr)
			}
			if _, serr := os.Stat(dst + ".tmp"); !errors.Is(serr, os.ErrNotExist) {
				t.Errorf("temporary file left: %v", serr)
			}
			if tc.wantErr != nil {
				if _, serr := os.Stat(dst); !errors.Is(serr, os.ErrNotExist) {
					t.Errorf("disk created despite the error")
				}
				return
			}
			st, _ := os.Stat(dst)
			wantSize := tc.size
			if wantSize == 0 {
				wantSize = int64(len(want))
			}
			if st.Size() != wantSize {
				t.Errorf("size %d, want %d", st.Size(), wantSize)
			}
			got, _ := os.ReadFile(dst)
			if !bytes.Equal(got[:len(want)], want) || !bytes.Equal(got[len(want):], make([]byte, len(got)-len(want))) {
				t.Errorf("content differs from the image")
			}
			if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > tc.maxBlocks+64<<10 {
				t.Errorf("copy allocates %d bytes, want at most %d", used, tc.maxBlocks)
			}
		})
	}
}

func TestPrepareDiskCancelled(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "image")
	b := make([]byte, 4*copyChunk)
	rand.Read(b)
	os.WriteFile(src, b, 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// A reflink would not look at ctx; tmpfs and ext4 without reflink
	// copy, and a cancelled copy leaves nothing.
	if cloned, err := prepareDisk(ctx, src, filepath.Join(dir, "disk"), 0); err == nil && !cloned {
		t.Fatal("cancelled copy succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "disk.tmp")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary file left: %v", err)
	}
}

func TestRotateConsole(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, fileConsole)
	// An O_APPEND writer, as vmm's stdout is.
	w, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for round := range 5 {
		fmt.Fprintf(w, "%s\n", strings.Repeat(string(rune('a'+round)), 99))
		if err := rotateConsole(path, 50, 3); err != nil {
			t.Fatal(err)
		}
	}
	fmt.Fprintf(w, "tail\n")
	cur, _ := os.ReadFile(path)
	if string(cur) != "tail\n" {
		t.Errorf("current log %q: the writer did not continue at the start", cur)
	}
	for i, want := range map[int]string{1: "e", 2: "d", 3: "c"} {
		b, err := os.ReadFile(fmt.Sprintf("%s.%d", path, i))
		if err != nil || !strings.HasPrefix(string(b), strings.Repeat(want, 99)) {
			t.Errorf("console.log.%d = %.10q %v, want %s...", i, b, err, want)
		}
	}
	if _, err := os.Stat(path + ".4"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("more than 3 old files kept")
	}
	// Under the limit nothing moves.
	if err := rotateConsole(path, 50, 3); err != nil {
		t.Fatal(err)
	}
	if cur, _ := os.ReadFile(path); string(cur) != "tail\n" {
		t.Errorf("rotated a small log")
	}
}

func TestIsOurVMM(t *testing.T) {
	const sock = "/data/instances/i1/vmm.sock"
	tests := []struct {
		cmdline string
		want    bool
	}{
		{"/usr/bin/vmm\x00--api-socket\x00" + sock + "\x00--kernel\x00k\x00", true},
		{"vmm\x00--kernel\x00k\x00--api-socket=" + sock + "\x00", true},
		{"/usr/bin/vmm\x00--api-socket\x00/data/instances/i2/vmm.sock\x00", false},
		{"/usr/bin/sleep\x00--api-socket\x00" + sock + "\x00", false},
		{"/usr/bin/vmm\x00" + sock + "\x00", false},
		{"/usr/bin/vmm\x00--api-socket\x00", false},
		{"", false},
	}
	for _, tc := range tests {
		if got := isOurVMM([]byte(tc.cmdline), "/opt/kvmstack/vmm", sock); got != tc.want {
			t.Errorf("isOurVMM(%q) = %v", tc.cmdline, got)
		}
	}
}

func TestMemTotal(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"MemTotal:       16318076 kB\nMemFree: 1 kB\n", 16318076, true},
		{"MemFree: 1 kB\nMemTotal: 2048 kB\n", 2048, true},
		{"MemFree: 1 kB\n", 0, false},
		{"MemTotal: lots kB\n", 0, false},
	}
	for _, tc := range tests {
		got, err := memTotalKB(strings.NewReader(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("memTotalKB(%q) = %d, %v", tc.in, got, err)
		}
	}
	r, err := MachineCapacity(t.TempDir())
	if err != nil || r.VCPUs < 1 || r.MemoryMB < 64 {
		t.Errorf("MachineCapacity = %+v, %v", r, err)
	}
}

func TestParseExitCode(t *testing.T) {
	for s, want := range map[string]int{"exit status 0": 0, "exit status 4": 4, "signal: killed": -1, statusUnknown: -1, "exit status x": -1} {
		if got := parseExitCode(s); got != want {
			t.Errorf("parseExitCode(%q) = %d, want %d", s, got, want)
		}
	}
}

// TestImageCache checks digest verification and that concurrent callers
// share one download.
func TestImageCache(t *testing.T) {
	good := []byte("kernel bytes")
	sum := sha256.Sum256(good)
	digest := hex.EncodeToString(sum[:])
	var downloads atomic.Int32
	serve := good
	dir := t.TempDir()
	cache, err := newImageCache(dir, func(ctx context.Context, id string, w io.Writer) error {
		downloads.Add(1)
		_, err := w.Write(serve)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	bad := append([]byte(nil), good...)
	bad[0] ^= 1
	serve = bad
	if _, err := cache.Get(context.Background(), &state.Image{ID: "k", SHA256: digest, Size: int64(len(good))}); !errors.Is(err, ErrDigest) {
		t.Fatalf("corrupt bytes: %v", err)
	}
	if _, err := cache.Get(context.Background(), &state.Image{ID: "k", SHA256: "nothex"}); err == nil {
		t.Fatal("accepted a malformed digest")
	}
	serve = good
	downloads.Store(0)
	var wg sync.WaitGroup
	paths := make([]string, 8)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, err := cache.Get(context.Background(), &state.Image{ID: "k", SHA256: digest, Size: int64(len(good))})
			if err != nil {
				t.Error(err)
			}
			paths[i] = p
		}()
	}
	wg.Wait()
	if n := downloads.Load(); n != 1 {
		t.Errorf("%d downloads for 8 concurrent callers", n)
	}
	if b, _ := os.ReadFile(paths[0]); !bytes.Equal(b, good) || paths[0] != paths[7] {
		t.Errorf("cached %q at %s", b, paths[0])
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp holds %d files", len(tmp))
	}
}

// TestVMMClient checks the client against the fake's handler on a unix
// socket, errors included.
func TestVMMClient(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "vmm.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	exits := make(chan int, 4)
	srv := &http.Server{Handler: newFakeVMM(func(c int) { exits <- c })}
	go srv.Serve(l)
	defer srv.Close()
	vc := NewVMMClient(sock)
	defer vc.Close()
	ctx := context.Background()
	if err := vc.SetState(ctx, "paused"); err != nil {
		t.Fatal(err)
	}
	if info, err := vc.Info(ctx); err != nil || info.State != "paused" {
		t.Fatalf("Info = %+v, %v", info, err)
	}
	var ve *VMMError
	if err := vc.SetState(ctx, "sideways"); !errors.As(err, &ve) || ve.Status != 400 || ve.Code != "bad_request" {
		t.Fatalf("bad state: %v", err)
	}
	if m, err := vc.Metrics(ctx); err != nil || !strings.Contains(m, "vmm_exits_total") {
		t.Fatalf("Metrics = %q, %v", m, err)
	}
	if err := vc.Kill(ctx); err != nil || <-exits != 5 {
		t.Fatalf("Kill: %v", err)
	}
	if err := vc.Shutdown(ctx); err != nil || <-exits != 0 {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := NewVMMClient(filepath.Join(t.TempDir(), "none.sock")).Info(ctx); err == nil {
		t.Fatal("Info on a missing socket succeeded")
	}
}
