package snapshot

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// benchRAM is size bytes of RAM laid out like a freshly booted kit guest
// (measured: 21 MiB of non-zero pages in 256 MiB): the kernel image in one
// run, the initramfs in another, and a few thousand scattered pages
// (page tables, slab, stacks).
func benchRAM(size int) [][]byte {
	r := make([]byte, size)
	fill := func(off, n int) {
		for p := off; p < off+n; p += pageSize {
			r[p] = byte(p >> 12)
			r[p+pageSize-1] = 1
		}
	}
	fill(16<<20, 14<<20)      // kernel text and data
	fill(size-(8<<20), 2<<20) // initramfs near the top
	for i := range 1280 {     // 5 MiB scattered
		fill((32<<20+i*37*pageSize)%(size-(16<<20)), pageSize)
	}
	return [][]byte{r}
}

// BenchmarkWrite is the format's share of a snapshot: scanning RAM for
// zero pages, writing the rest sparse, checksumming, fsync.
func BenchmarkWrite(b *testing.B) {
	for _, size := range []int{256 << 20, 1 << 30} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			ram, st, dir := benchRAM(size), sampleState(), b.TempDir()
			b.SetBytes(int64(size))
			for i := range b.N {
				if _, err := Write(context.Background(), filepath.Join(dir, fmt.Sprint(i)), sampleManifest(), st, ram); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkOpen is the format's share of a restore: reading and checking
// the manifest and state, and verifying the memory checksum (or not).
func BenchmarkOpen(b *testing.B) {
	for _, size := range []int{256 << 20, 1 << 30} {
		dir := filepath.Join(b.TempDir(), "snap")
		if _, err := Write(context.Background(), dir, sampleManifest(), sampleState(), benchRAM(size)); err != nil {
			b.Fatal(err)
		}
		for _, skip := range []bool{false, true} {
			b.Run(fmt.Sprintf("%dMiB/skip-checksum=%v", size>>20, skip), func(b *testing.B) {
				for range b.N {
					if _, err := Open(context.Background(), dir, OpenOptions{SkipMemoryChecksum: skip}); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
