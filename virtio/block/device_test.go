package block

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"kvmstack/virtio"
	"kvmstack/vmm/memory"
)

var update = flag.Bool("update", false, "rewrite golden files in testdata/")

func pattern(n int, seed byte) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = seed + byte(i*7) + byte(i>>9)
	}
	return p
}

// TestConfigSpaceGolden pins the configuration space layout (virtio 1.2
// 5.2.4) of a 1 MiB disk byte for byte.
func TestConfigSpaceGolden(t *testing.T) {
	d, err := NewWithBackend(Config{}, newMemBackend(0), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, ConfigSize)
	d.ReadConfig(0, got)
	golden := filepath.Join("testdata", "config.golden")
	if *update {
		if err := os.WriteFile(golden, []byte(fmt.Sprintf("% x\n", got)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprintf("% x\n", got) != string(want) {
		t.Errorf("config space\n got % x\nwant %s", got, want)
	}
	if c := binary.LittleEndian.Uint64(got); c != 2048 {
		t.Errorf("capacity %d sectors, want 2048", c)
	}
	// Reads at an offset, straddling the end, and beyond it.
	part := make([]byte, 8)
	d.ReadConfig(ConfigSize-4, part)
	if !bytes.Equal(part, append(append([]byte(nil), got[ConfigSize-4:]...), 0, 0, 0, 0)) {
		t.Errorf("straddling read % x", part)
	}
	d.ReadConfig(1<<40, part)
	if !bytes.Equal(part, make([]byte, 8)) {
		t.Errorf("out-of-range read % x", part)
	}
	d.WriteConfig(0, []byte{1, 2, 3, 4})
	d.ReadConfig(0, part[:4])
	if !bytes.Equal(part[:4], got[:4]) {
		t.Errorf("config write changed capacity")
	}
}

func TestFeatures(t *testing.T) {
	rw, _ := NewWithBackend(Config{}, newMemBackend(0), 4096)
	ro, _ := NewWithBackend(Config{ReadOnly: true}, newMemBackend(0), 4096)
	for _, f := range []uint64{FeatureFlush, FeatureDiscard, FeatureWriteZeroes, FeatureSegMax, FeatureBlkSize} {
		if rw.Features()&f == 0 {
			t.Errorf("read-write disk does not offer %#x", f)
		}
	}
	if rw.Features()&FeatureRO != 0 {
		t.Error("read-write disk offers F_RO")
	}
	if ro.Features()&FeatureRO == 0 || ro.Features()&(FeatureDiscard|FeatureWriteZeroes) != 0 {
		t.Errorf("read-only disk features %#x", ro.Features())
	}
	if _, err := NewWithBackend(Config{ID: "123456789012345678901"}, newMemBackend(0), 0); !errors.Is(err, ErrConfig) {
		t.Errorf("21-byte ID: %v", err)
	}
}

func TestReadWrite(t *testing.T) {
	h := newHarness(t, false, 1<<20)
	data := pattern(12288, 3)
	// Written in three unequal buffers, read back in two different ones.
	_, n, st := h.do([][]byte{header(TypeOut, 16), data[:512], data[512:8704], data[8704:]}, []uint32{1})
	if st != StatusOK || n != 1 {
		t.Fatalf("write: status %d len %d", st, n)
	}
	if !bytes.Equal(h.backend.bytesAt(16*512, len(data)), data) {
		t.Fatal("backend does not hold the written data")
	}
	head, n, st := h.do([][]byte{header(TypeIn, 16)}, []uint32{4096, 8192, 1})
	if st != StatusOK || n != 12289 {
		t.Fatalf("read: status %d len %d", st, n)
	}
	if !bytes.Equal(h.written(head), data) {
		t.Error("read back different data")
	}
	// The status byte in the same buffer as the data.
	head, _, st = h.do([][]byte{header(TypeIn, 17)}, []uint32{513})
	if st != StatusOK || !bytes.Equal(h.written(head), data[512:1024]) {
		t.Errorf("read with shared status buffer: status %d", st)
	}
	if h.interrupts() == 0 {
		t.Error("no interrupt raised")
	}
}

func TestRequestStatuses(t *testing.T) {
	h := newHarness(t, false, 1<<20)
	tests := []struct {
		name     string
		readable [][]byte
		writable []uint32
		status   uint8
	}{
		{"read past the end", [][]byte{header(TypeIn, 2047)}, []uint32{1024, 1}, StatusIOErr},
		{"overflowing sector", [][]byte{header(TypeOut, 1<<62), make([]byte, 512)}, []uint32{1}, StatusIOErr},
		{"short header", [][]byte{make([]byte, 10)}, []uint32{1}, StatusIOErr},
		{"unknown type", [][]byte{header(7, 0)}, []uint32{1}, StatusUnsupp},
		{"discard with unmap", [][]byte{header(TypeDiscard, 0), segment(0, 1, 1)}, []uint32{1}, StatusUnsupp},
		{"flush", [][]byte{header(TypeFlush, 0)}, []uint32{1}, StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, n, st := h.do(tt.readable, tt.writable)
			if st != tt.status || n != 1 {
				t.Errorf("status %d len %d, want %d 1", st, n, tt.status)
			}
		})
	}
	if f, _, _ := h.backend.calls(); f != 1 {
		t.Errorf("%d flushes, want 1", f)
	}
	if errs := h.brokenErrs(); len(errs) != 0 {
		t.Errorf("device broken by bad requests with a status byte: %v", errs)
	}
}

func TestGetID(t *testing.T) {
	h := newHarness(t, false, 4096)
	head, n, st := h.do([][]byte{header(TypeGetID, 0)}, []uint32{IDSize, 1})
	want := append([]byte("disk-serial-0001"), 0, 0, 0, 0)
	if st != StatusOK || n != IDSize+1 || !bytes.Equal(h.written(head), want) {
		t.Errorf("GET_ID: status %d len %d id %q", st, n, h.written(head))
	}
	// A smaller buffer gets what fits.
	head, n, st = h.do([][]byte{header(TypeGetID, 0)}, []uint32{4, 1})
	if st != StatusOK || n != 5 || string(h.written(head)) != "disk" {
		t.Errorf("short GET_ID: status %d len %d id %q", st, n, h.written(head))
	}
}

func TestReadOnly(t *testing.T) {
	h := newHarness(t, true, 1<<20)
	copy(h.backend.data, pattern(4096, 9))
	tests := []struct {
		name     string
		readable [][]byte
		writable []uint32
		status   uint8
	}{
		{"write", [][]byte{header(TypeOut, 0), make([]byte, 512)}, []uint32{1}, StatusIOErr},
		{"discard", [][]byte{header(TypeDiscard, 0), segment(0, 8, 0)}, []uint32{1}, StatusIOErr},
		{"write zeroes", [][]byte{header(TypeWriteZeroes, 0), segment(0, 8, 0)}, []uint32{1}, StatusIOErr},
		{"flush", [][]byte{header(TypeFlush, 0)}, []uint32{1}, StatusOK},
		{"read", [][]byte{header(TypeIn, 0)}, []uint32{512, 1}, StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, st := h.do(tt.readable, tt.writable)
			if st != tt.status {
				t.Errorf("status %d, want %d", st, tt.status)
			}
		})
	}
	f, ds, zs := h.backend.calls()
	if !bytes.Equal(h.backend.bytesAt(0, 4096), pattern(4096, 9)) || len(ds)+len(zs) != 0 {
		t.Error("read-only disk changed")
	}
	if f != 0 {
		t.Error("read-only disk flushed its backend")
	}
}

func TestDiscardWriteZeroes(t *testing.T) {
	h := newHarness(t, false, 1<<20)
	copy(h.backend.data, pattern(1<<20, 1))
	_, _, st := h.do([][]byte{header(TypeDiscard, 0), cat(segment(8, 8, 0), segment(64, 16, 0))}, []uint32{1})
	if st != StatusOK {
		t.Fatalf("discard status %d", st)
	}
	_, _, st = h.do([][]byte{header(TypeWriteZeroes, 0), segment(200, 3, 1), segment(300, 1, 0)}, []uint32{1})
	if st != StatusOK {
		t.Fatalf("write zeroes status %d", st)
	}
	wantD := []Segment{{8 * 512, 8 * 512, false}, {64 * 512, 16 * 512, false}}
	wantZ := []Segment{{200 * 512, 3 * 512, true}, {300 * 512, 512, false}}
	_, ds, zs := h.backend.calls()
	if fmt.Sprint(ds) != fmt.Sprint(wantD) || fmt.Sprint(zs) != fmt.Sprint(wantZ) {
		t.Errorf("discards %v zeroes %v, want %v %v", ds, zs, wantD, wantZ)
	}
	// A request with one bad segment does nothing at all.
	_, _, st = h.do([][]byte{header(TypeDiscard, 0), cat(segment(500, 8, 0), segment(4096, 8, 0))}, []uint32{1})
	if _, ds, _ = h.backend.calls(); st != StatusIOErr || len(ds) != 2 {
		t.Errorf("discard with an out-of-range segment: status %d, %d discards", st, len(ds))
	}
}

func TestBackendErrors(t *testing.T) {
	h := newHarness(t, false, 1<<20)
	h.backend.setFail(errInjected)
	tests := []struct {
		name     string
		readable [][]byte
		writable []uint32
		len      uint32
	}{
		{"read", [][]byte{header(TypeIn, 0)}, []uint32{512, 1}, 1},
		{"write", [][]byte{header(TypeOut, 0), make([]byte, 512)}, []uint32{1}, 1},
		{"flush", [][]byte{header(TypeFlush, 0)}, []uint32{1}, 1},
		{"discard", [][]byte{header(TypeDiscard, 0), segment(0, 8, 0)}, []uint32{1}, 1},
		{"write zeroes", [][]byte{header(TypeWriteZeroes, 0), segment(0, 8, 0)}, []uint32{1}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, n, st := h.do(tt.readable, tt.writable)
			if st != StatusIOErr || n != tt.len {
				t.Errorf("status %d len %d, want IOERR %d", st, n, tt.len)
			}
		})
	}
	h.backend.setFail(nil)
	if _, _, st := h.do([][]byte{header(TypeIn, 0)}, []uint32{512, 1}); st != StatusOK {
		t.Errorf("after the backend recovered: status %d", st)
	}
	if errs := h.brokenErrs(); len(errs) != 0 {
		t.Errorf("host I/O errors broke the device: %v", errs)
	}
}

// TestNoStatusBreaksDevice: a chain with no writable byte cannot be
// answered, so the device reports the guest and stops serving.
func TestNoStatusBreaksDevice(t *testing.T) {
	h := newHarness(t, false, 4096)
	h.add([][]byte{header(TypeOut, 0), make([]byte, 512)}, nil)
	h.notify()
	for range 500 {
		if len(h.brokenErrs()) > 0 {
			break
		}
		waitABit()
	}
	errs := h.brokenErrs()
	if len(errs) != 1 || !errors.Is(errs[0], ErrNoStatus) {
		t.Fatalf("broken with %v, want one ErrNoStatus", errs)
	}
	// Nothing is served afterwards, and Reset returns.
	h.add([][]byte{header(TypeIn, 0)}, []uint32{512, 1})
	h.notify()
	waitABit()
	if idx, _ := h.mem.Uint16(h.used + 2); idx != 0 {
		t.Errorf("used index %d after the device broke", idx)
	}
	h.dev.Reset()
}

// TestCorruptRingBreaksDevice: an available index far ahead of the queue
// is a queue error; the device is marked broken and Reset still works.
func TestCorruptRingBreaksDevice(t *testing.T) {
	h := newHarness(t, false, 4096)
	if err := h.mem.PutUint16(h.avail+2, 1000); err != nil {
		t.Fatal(err)
	}
	h.notify()
	for range 500 {
		if len(h.brokenErrs()) > 0 {
			break
		}
		waitABit()
	}
	if errs := h.brokenErrs(); len(errs) != 1 || !errors.Is(errs[0], virtio.ErrMalformed) {
		t.Fatalf("broken with %v, want one virtio.ErrMalformed", errs)
	}
	h.dev.Reset()
}

// TestBatch submits many requests before one kick: all are served, with
// fewer interrupts than requests.
func TestBatch(t *testing.T) {
	h := newHarness(t, false, 1<<20)
	const n = 20
	for i := range n {
		h.add([][]byte{header(TypeOut, uint64(i)), pattern(512, byte(i))}, []uint32{1})
	}
	h.notify()
	used := h.waitUsed(n)
	for _, u := range used {
		if h.status(u.head) != StatusOK {
			t.Errorf("chain %d status %d", u.head, h.status(u.head))
		}
	}
	for i := range n {
		if !bytes.Equal(h.backend.bytesAt(i*512, 512), pattern(512, byte(i))) {
			t.Errorf("sector %d wrong", i)
		}
	}
	if irqs := h.interrupts(); irqs == 0 || irqs >= n {
		t.Errorf("%d interrupts for %d requests in one batch", irqs, n)
	}
}

func TestCloseFlushesAndCloses(t *testing.T) {
	b := newMemBackend(4096)
	d, err := NewWithBackend(Config{}, b, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if b.flushes != 1 || !b.closed {
		t.Errorf("flushes %d closed %v", b.flushes, b.closed)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	mem := newMemory(t)
	if err := d.Activate(virtio.Activation{Memory: mem, Queues: []*virtio.Queue{nil}, Kicks: []<-chan struct{}{nil}}); err == nil {
		t.Error("Activate after Close succeeded")
	}
}

// TestFileDevice runs requests against a real image file through New.
func TestFileDevice(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.img")
	img := pattern(1<<20+100, 5) // a tail past the last whole sector
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Path: path, ID: "f"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Capacity() != 2048 {
		t.Errorf("capacity %d, want 2048", d.Capacity())
	}
	mem := newMemory(t)
	b := &chainBuilder{mem: mem, next: 0x10000}
	lim := testLimits(false, d.Features())
	run := func(readable [][]byte, writable []uint32) (*virtio.Chain, uint8) {
		t.Helper()
		c := b.chain(t, readable, writable)
		if _, err := d.handle(virtio.Activation{Memory: mem}, c, lim); err != nil {
			t.Fatal(err)
		}
		last := c.Descs[len(c.Descs)-1]
		s, _ := mem.Slice(last.Addr+memory.GuestAddr(last.Len-1), 1)
		return c, s[0]
	}
	data := pattern(8192, 77)
	if _, st := run([][]byte{header(TypeOut, 100), data[:4096], data[4096:]}, []uint32{1}); st != StatusOK {
		t.Fatalf("write status %d", st)
	}
	c, st := run([][]byte{header(TypeIn, 100)}, []uint32{1000 + 24, 7168, 1})
	got := make([]byte, 8192)
	_ = mem.ReadAt(got[:1024], c.Descs[1].Addr)
	_ = mem.ReadAt(got[1024:], c.Descs[2].Addr)
	if st != StatusOK || !bytes.Equal(got, data) {
		t.Errorf("read back: status %d, equal %v", st, bytes.Equal(got, data))
	}
	if _, st := run([][]byte{header(TypeWriteZeroes, 0), segment(100, 8, 0), segment(108, 8, 1)}, []uint32{1}); st != StatusOK {
		t.Fatalf("write zeroes status %d", st)
	}
	if _, st := run([][]byte{header(TypeDiscard, 0), segment(0, 16, 0)}, []uint32{1}); st != StatusOK {
		t.Fatalf("discard status %d", st)
	}
	if _, st := run([][]byte{header(TypeFlush, 0)}, []uint32{1}); st != StatusOK {
		t.Fatalf("flush status %d", st)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(out) != len(img) {
		t.Fatalf("image size changed to %d", len(out))
	}
	if !bytes.Equal(out[100*512:116*512], make([]byte, 8192)) {
		t.Error("write-zeroes left data")
	}
	if !bytes.Equal(out[16*512:100*512], img[16*512:100*512]) || !bytes.Equal(out[2048*512:], img[2048*512:]) {
		t.Error("data outside the requests changed")
	}
	// A discard may drop data; on filesystems that punch holes it reads
	// back as zeros, elsewhere unchanged.
	if !bytes.Equal(out[:16*512], make([]byte, 16*512)) && !bytes.Equal(out[:16*512], img[:16*512]) {
		t.Error("discarded range holds neither zeros nor the old data")
	}
}

func TestOpenFileReadOnly(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.img")
	if err := os.WriteFile(path, make([]byte, 4096), 0o444); err != nil {
		t.Fatal(err)
	}
	d, err := New(Config{Path: path, ReadOnly: true})
	if err != nil {
		t.Fatalf("open a read-only file read-only: %v", err)
	}
	if err := d.Close(); err != nil {
		t.Error(err)
	}
	if _, err := New(Config{Path: filepath.Join(t.TempDir(), "missing")}); err == nil {
		t.Error("missing image opened")
	}
}
