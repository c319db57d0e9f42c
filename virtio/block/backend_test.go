package block

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

func TestFileVectored(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, size, err := OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if size != 1<<20 {
		t.Fatalf("size %d", size)
	}
	// More buffers than one preadv/pwritev call takes, of varied sizes.
	data := pattern(3000*100, 11)
	var bufs [][]byte
	for off := 0; off < len(data); off += 100 {
		bufs = append(bufs, data[off:off+100])
	}
	bufs = append(bufs, nil)
	if err := f.WriteAt(bufs, 4096); err != nil {
		t.Fatal(err)
	}
	back := make([]byte, len(data))
	var rbufs [][]byte
	for off := 0; off < len(back); off += 73 {
		rbufs = append(rbufs, back[off:min(off+73, len(back))])
	}
	if err := f.ReadAt(rbufs, 4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, data) {
		t.Error("vectored round trip differs")
	}
	// Past the end of the file reads as zeros.
	tail := bytes.Repeat([]byte{0xff}, 8192)
	if err := f.ReadAt([][]byte{tail}, 1<<20-4096); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tail, make([]byte, 8192)) {
		t.Error("bytes past the end of the file are not zero")
	}
}

func TestFileWriteZeroesFallback(t *testing.T) {
	path := filepath.Join(t.TempDir(), "img")
	img := pattern(64<<10, 1)
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	f, _, err := OpenFile(path, false)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// As on a filesystem without fallocate modes: zeros are written.
	f.zeroRange, f.punch = false, false
	if err := f.WriteZeroes(4096, 8192, true); err != nil {
		t.Fatal(err)
	}
	if err := f.Discard(0, 4096); err != nil {
		t.Fatal(err)
	}
	out, _ := os.ReadFile(path)
	if !bytes.Equal(out[4096:12288], make([]byte, 8192)) || !bytes.Equal(out[:4096], img[:4096]) || !bytes.Equal(out[12288:], img[12288:]) {
		t.Error("fallback write-zeroes wrong")
	}
}

// TestHostIOErrors drives the device over host files that fail: writes to
// /dev/full (ENOSPC, as on a full filesystem) and reads from a directory
// (EISDIR). The guest gets IOERR; the device stays usable.
func TestHostIOErrors(t *testing.T) {
	mem := newMemory(t)
	b := &chainBuilder{mem: mem, next: 0x10000}
	status := func(c *virtio.Chain) uint8 {
		last := c.Descs[len(c.Descs)-1]
		s, _ := mem.Slice(last.Addr+memory.GuestAddr(last.Len-1), 1)
		return s[0]
	}
	tests := []struct {
		name     string
		path     string
		readOnly bool
		readable [][]byte
		writable []uint32
		want     uint8
	}{
		{"write to a full device", "/dev/full", false, [][]byte{header(TypeOut, 0), make([]byte, 4096)}, []uint32{1}, StatusIOErr},
		{"read from a full device", "/dev/full", false, [][]byte{header(TypeIn, 0)}, []uint32{4096, 1}, StatusOK},
		{"read from a directory", t.TempDir(), true, [][]byte{header(TypeIn, 0)}, []uint32{4096, 1}, StatusIOErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, _, err := OpenFile(tt.path, tt.readOnly)
			if err != nil {
				t.Skipf("cannot open %s: %v", tt.path, err)
			}
			d, err := NewWithBackend(Config{Path: tt.path, ReadOnly: tt.readOnly}, f, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			c := b.chain(t, tt.readable, tt.writable)
			n, err := d.handle(virtio.Activation{Memory: mem}, c, testLimits(tt.readOnly, d.Features()))
			if err != nil {
				t.Fatal(err)
			}
			if got := status(c); got != tt.want {
				t.Errorf("status %d, want %d", got, tt.want)
			}
			if tt.want != StatusOK && n != 1 {
				t.Errorf("used length %d for a failed request, want 1", n)
			}
		})
	}
}
