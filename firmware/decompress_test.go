package firmware

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files and the tool-compressed payloads in testdata/")

// toolPayloads are compressed by the real command-line tools exactly as the
// kernel's build compresses vmlinux.bin (scripts/Makefile.lib, xz_wrap.sh),
// so the decoders are tested on the streams a real bzImage carries: xz with
// the x86 BCJ filter and a CRC32 check, lz4's legacy frames, bzip2 (which has
// no Go encoder), zstd at --ultra -22.
var toolPayloads = []struct {
	comp string
	file string
	cmd  []string
}{
	{compGzip, "payload.gz", []string{"gzip", "-n", "-9", "-c"}},
	{compBzip2, "payload.bz2", []string{"bzip2", "-9", "-c"}},
	{compLZMA, "payload.lzma", []string{"lzma", "-9", "-c"}},
	{compXZ, "payload.xz", []string{"xz", "--check=crc32", "--x86", "--lzma2=dict=32MiB", "-c"}},
	{compLZ4, "payload.lz4", []string{"lz4", "-l", "-9", "-c"}},
	{compZstd, "payload.zst", []string{"zstd", "-22", "--ultra", "-c", "-q"}},
}

// toolPayload returns testdata's payload (with the size appended), and with
// -update first regenerates it with the tool.
func toolPayload(t *testing.T, file string, cmd []string, plain []byte) []byte {
	t.Helper()
	path := filepath.Join("testdata", file)
	if *update {
		c := exec.Command(cmd[0], cmd[1:]...)
		c.Stdin = bytes.NewReader(plain)
		out, err := c.Output()
		if err != nil {
			t.Fatalf("%v: %v", cmd, err)
		}
		out = binary.LittleEndian.AppendUint32(out, uint32(len(plain)))
		if err := os.WriteFile(path, out, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update with the tools installed)", err)
	}
	return data
}

func TestDecompressToolPayloads(t *testing.T) {
	plain := linuxLikeELF().bytes()
	for _, tp := range toolPayloads {
		t.Run(tp.comp, func(t *testing.T) {
			payload := toolPayload(t, tp.file, tp.cmd, plain)
			out, comp, err := decompressKernel(payload, MaxDecompressedSize)
			if err != nil {
				t.Fatal(err)
			}
			if comp != tp.comp {
				t.Fatalf("detected %s, want %s", comp, tp.comp)
			}
			if !bytes.Equal(out, plain) {
				t.Fatalf("decompressed %d bytes differ from the %d-byte original", len(out), len(plain))
			}
			// The whole bzImage path on the same stream.
			m := newMemory(t, 64<<20)
			k, err := LoadKernel(m, writeTemp(t, "bzImage", defaultBzImage(payload).bytes()), LoadOptions{DecompressBzImage: true})
			if err != nil {
				t.Fatal(err)
			}
			if k.Entry != 0x1000000 {
				t.Fatalf("entry %#x", k.Entry)
			}
		})
	}
}

func TestDecompressCorruptToolPayloads(t *testing.T) {
	plain := linuxLikeELF().bytes()
	for _, tp := range toolPayloads {
		payload := toolPayload(t, tp.file, tp.cmd, plain)
		stream := payload[:len(payload)-4]
		cases := map[string][]byte{
			// Cut in the middle, size trailer kept.
			"truncated": append(bytes.Clone(stream[:len(stream)/2]), payload[len(payload)-4:]...),
			// A flipped byte in the middle of the compressed data.
			"flipped": func() []byte { p := bytes.Clone(payload); p[len(stream)/2] ^= 0x55; return p }(),
			// The trailer claims one byte less.
			"shortTrailer": func() []byte {
				p := bytes.Clone(payload)
				binary.LittleEndian.PutUint32(p[len(p)-4:], uint32(len(plain)-1))
				return p
			}(),
		}
		for name, p := range cases {
			t.Run(tp.comp+"/"+name, func(t *testing.T) {
				out, _, err := decompressKernel(p, MaxDecompressedSize)
				if name == "flipped" && tp.comp == compLZ4 {
					// Legacy lz4 frames carry no checksum: a flipped
					// literal decodes to different bytes, which the
					// kernel's own decompressor would not notice either.
					if err == nil && bytes.Equal(out, plain) {
						t.Fatal("a flipped byte decoded to the original")
					}
					return
				}
				if err == nil {
					t.Fatalf("no error; %d bytes out", len(out))
				}
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTruncated) {
					t.Fatalf("error %v is neither ErrCorrupt nor ErrTruncated", err)
				}
			})
		}
	}
}

func TestDecompressLimits(t *testing.T) {
	plain := bytes.Repeat([]byte{0}, 1<<20)
	for _, comp := range []string{compGzip, compZstd, compXZ, compLZMA, compLZ4} {
		t.Run(comp, func(t *testing.T) {
			p := compressPayload(t, comp, plain)
			if _, _, err := decompressKernel(p, 1<<20-1); !errors.Is(err, ErrTooLarge) {
				t.Fatalf("limit below the declared size: error = %v", err)
			}
			// A trailer that understates the size must not let the
			// decoder write past it.
			binary.LittleEndian.PutUint32(p[len(p)-4:], 4096)
			if _, _, err := decompressKernel(p, 1<<20); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("understated size: error = %v", err)
			}
		})
	}
}

func TestUnBCJx86(t *testing.T) {
	tests := []struct {
		name  string
		start uint32
		in    []byte
		want  []byte
	}{
		// call +0x1000 at 0: the encoder stored 0x1000+5.
		{"forward", 0, []byte{0xe8, 0x05, 0x10, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90},
			[]byte{0xe8, 0x00, 0x10, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90}},
		// The start offset from the filter properties shifts positions.
		{"startOffset", 0x100, []byte{0xe9, 0x05, 0x11, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90},
			[]byte{0xe9, 0x00, 0x10, 0x00, 0x00, 0x90, 0x90, 0x90, 0x90}},
		// A backward jump (-0x20) sign-extends through bit 24.
		{"backward", 0, []byte{0x90, 0x90, 0x90, 0xe8, 0xe8, 0xff, 0xff, 0xff, 0x90, 0x90, 0x90, 0x90},
			[]byte{0x90, 0x90, 0x90, 0xe8, 0xe0, 0xff, 0xff, 0xff, 0x90, 0x90, 0x90, 0x90}},
		// An operand whose top byte is neither 00 nor ff was left alone.
		{"notConverted", 0, []byte{0xe8, 0x05, 0x10, 0x00, 0x12, 0x90, 0x90, 0x90, 0x90},
			[]byte{0xe8, 0x05, 0x10, 0x00, 0x12, 0x90, 0x90, 0x90, 0x90}},
		// The last four bytes are never converted.
		{"tail", 0, []byte{0x90, 0xe8, 0x05, 0x10, 0x00},
			[]byte{0x90, 0xe8, 0x05, 0x10, 0x00}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := bytes.Clone(tt.in)
			unBCJx86(b, tt.start)
			if !bytes.Equal(b, tt.want) {
				t.Fatalf("got % x, want % x", b, tt.want)
			}
		})
	}
}
