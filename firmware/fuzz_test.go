package firmware

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/memory"
)

const fuzzMemSize = 64 << 20

var (
	fuzzMemOnce sync.Once
	fuzzMem     *memory.Memory
	fuzzMemErr  error
	zeroBlock   = make([]byte, 64<<10)
)

// isZero reports whether b is all zero bytes.
func isZero(b []byte) bool {
	for len(b) > 0 {
		n := min(len(b), len(zeroBlock))
		if !bytes.Equal(b[:n], zeroBlock[:n]) {
			return false
		}
		b = b[n:]
	}
	return true
}

// fuzzSeeds are valid kernels of every shape and a few damaged ones.
func fuzzSeeds(t testing.TB) [][]byte {
	elf := linuxLikeELF().bytes()
	seeds := [][]byte{elf, elf[:len(elf)/2], elf[:100]}
	for _, comp := range []string{compGzip, compZstd, compXZ, compLZMA, compLZ4} {
		seeds = append(seeds, defaultBzImage(compressPayload(t, comp, elf)).bytes())
	}
	for _, tp := range toolPayloads {
		if p, err := os.ReadFile(filepath.Join("testdata", tp.file)); err == nil {
			seeds = append(seeds, defaultBzImage(p).bytes())
		}
	}
	bz := seeds[len(seeds)-1]
	seeds = append(seeds, bz[:0x300], bz[:len(bz)-100])
	return seeds
}

// FuzzLoadKernel feeds arbitrary bytes to the loader as a kernel file into a
// 64 MiB guest: it must never panic, and it may write guest RAM only inside
// the span it reports, above the boot structures — nothing at all when it
// fails.
func FuzzLoadKernel(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s, false, false)
		f.Add(s, true, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, decompress, pvh bool) {
		fuzzMemOnce.Do(func() { fuzzMem, fuzzMemErr = memory.New(fuzzMemSize) })
		if fuzzMemErr != nil {
			t.Fatal(fuzzMemErr)
		}
		m := fuzzMem
		all, err := m.Slice(0, fuzzMemSize)
		if err != nil {
			t.Fatal(err)
		}
		k, err := loadKernelBytes(m, data, LoadOptions{DecompressBzImage: decompress, PreferPVH: pvh})
		if err != nil {
			if !isZero(all) {
				t.Fatalf("failed load (%v) wrote guest memory", err)
			}
			return
		}
		if k.Start < x86.HighMemStart || k.End > fuzzMemSize || k.Start >= k.End {
			t.Fatalf("span [%#x, %#x) outside [1 MiB, RAM end)", k.Start, k.End)
		}
		if k.Entry < k.Start || k.Entry >= k.End {
			t.Fatalf("entry %#x outside [%#x, %#x)", k.Entry, k.Start, k.End)
		}
		if k.Mode == EntryPVH && k.Entry > 0xffffffff {
			t.Fatalf("PVH entry %#x above 4 GiB", k.Entry)
		}
		if !isZero(all[:k.Start]) || !isZero(all[k.End:]) {
			t.Fatalf("load wrote outside its span [%#x, %#x)", k.Start, k.End)
		}
		clear(all[k.Start:k.End])
	})
}

// FuzzDecompress feeds arbitrary payloads to the host-side decompressor with
// a 1 MiB limit: no panic, and success means exactly the declared size.
func FuzzDecompress(f *testing.F) {
	plain := linuxLikeELF().bytes()
	for _, comp := range []string{compGzip, compZstd, compXZ, compLZMA, compLZ4} {
		f.Add(compressPayload(f, comp, plain))
	}
	for _, tp := range toolPayloads {
		if p, err := os.ReadFile(filepath.Join("testdata", tp.file)); err == nil {
			f.Add(p)
		}
	}
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0, 0, 0, 0x10, 0})
	f.Fuzz(func(t *testing.T, payload []byte) {
		const limit = 1 << 20
		out, _, err := decompressKernel(payload, limit)
		if err != nil {
			return
		}
		want := binary.LittleEndian.Uint32(payload[len(payload)-4:])
		if uint64(len(out)) != uint64(want) || len(out) > limit {
			t.Fatalf("%d bytes out, trailer says %d, limit %d", len(out), want, limit)
		}
	})
}
