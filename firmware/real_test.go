package firmware

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// kitFile finds a guest-kit file: in $KVMSTACK_KIT_DIR if set, else in the
// build/kit directory `make kit` fills. Tests that need one skip, saying why,
// when it has not been built.
func kitFile(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("KVMSTACK_KIT_DIR")
	if dir == "" {
		dir = filepath.Join("..", "build", "kit")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s not present (build it with `make kit`, or point KVMSTACK_KIT_DIR at a directory holding it): %v", p, err)
	}
	return p
}

// TestRealDebianBzImage loads Debian's unmodified cloud kernel both ways and
// checks the host-decompressed load against the bzImage's own header.
func TestRealDebianBzImage(t *testing.T) {
	path := kitFile(t, "vmlinuz-debian")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := parseBzImage(raw)
	if err != nil {
		t.Fatal(err)
	}
	comp, err := detectCompressor(b.pm[b.payloadOffset:])
	if err != nil {
		t.Fatal(err)
	}

	m := newMemory(t, 256<<20)
	k, err := LoadKernel(m, path, LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if k.Format != FormatBzImage || k.Entry != 0x100200 || uint64(k.End) != b.runStart()+b.initSize {
		t.Fatalf("compressed load: %s entry %#x end %#x", k.Format, k.Entry, k.End)
	}

	for _, pvh := range []bool{false, true} {
		m := newMemory(t, 256<<20)
		start := time.Now()
		k, err := LoadKernel(m, path, LoadOptions{DecompressBzImage: true, PreferPVH: pvh})
		if err != nil {
			t.Fatal(err)
		}
		elapsed := time.Since(start)
		t.Logf("%s: %s payload of %d bytes, decompressed and loaded in %v: %s entry %#x (%v), span [%#x, %#x)",
			filepath.Base(path), comp, b.payloadLength, elapsed, k.Format, k.Entry, k.Mode, k.Start, k.End)
		if k.Format != FormatBzImageDecompressed {
			t.Fatalf("format %s", k.Format)
		}
		// Linux is linked at pref_address (LOAD_PHYSICAL_ADDR).
		if uint64(k.Start) != b.prefAddress || k.Entry < k.Start || k.Entry >= k.End {
			t.Fatalf("start %#x (pref_address %#x), entry %#x", k.Start, b.prefAddress, k.Entry)
		}
		wantMode := Entry64
		if pvh {
			wantMode = EntryPVH // Debian builds CONFIG_PVH
		}
		if k.Mode != wantMode {
			t.Fatalf("mode %v, want %v", k.Mode, wantMode)
		}
		// startup_64 of the decompressed kernel: the ELF entry is the
		// first byte of .head.text, which begins with "lea" or a jump.
		first, err := m.Slice(k.Entry, 4)
		if err != nil {
			t.Fatal(err)
		}
		if binary.LittleEndian.Uint32(first) == 0 {
			t.Fatalf("entry %#x holds zeros", k.Entry)
		}
	}
}

// TestRealKitVmlinux loads the kit's ELF kernel both ways.
func TestRealKitVmlinux(t *testing.T) {
	path := kitFile(t, "vmlinux")
	for _, pvh := range []bool{false, true} {
		m := newMemory(t, 256<<20)
		k, err := LoadKernel(m, path, LoadOptions{PreferPVH: pvh})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: entry %#x (%v), span [%#x, %#x)", path, k.Entry, k.Mode, k.Start, k.End)
		if k.Format != FormatELF || k.Entry < k.Start || k.Entry >= k.End || k.Start < 0x100000 {
			t.Fatalf("kernel %s entry %#x span [%#x, %#x)", k.Format, k.Entry, k.Start, k.End)
		}
		if pvh && k.Mode != EntryPVH {
			t.Fatal("the kit kernel has CONFIG_PVH, but no PVH note was found")
		}
	}
}

// BenchmarkLoadDebianBzImage measures decompressing and loading Debian's
// kernel on the host, the work the guest's decompressor would otherwise do
// emulated.
func BenchmarkLoadDebianBzImage(b *testing.B) {
	path := kitFile(b, "vmlinuz-debian")
	m := newMemory(b, 256<<20)
	for b.Loop() {
		if _, err := LoadKernel(m, path, LoadOptions{DecompressBzImage: true}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecompressDebianPayload measures the decompression alone.
func BenchmarkDecompressDebianPayload(b *testing.B) {
	raw, err := os.ReadFile(kitFile(b, "vmlinuz-debian"))
	if err != nil {
		b.Fatal(err)
	}
	img, err := parseBzImage(raw)
	if err != nil {
		b.Fatal(err)
	}
	payload := img.pm[img.payloadOffset : img.payloadOffset+img.payloadLength]
	b.SetBytes(int64(binary.LittleEndian.Uint32(payload[len(payload)-4:])))
	for b.Loop() {
		if _, _, err := decompressKernel(payload, MaxDecompressedSize); err != nil {
			b.Fatal(err)
		}
	}
}
