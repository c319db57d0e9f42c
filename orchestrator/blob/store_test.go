package blob

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

func digest(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func TestPut(t *testing.T) {
	data := bytes.Repeat([]byte("kvmstack"), 1000)
	tests := []struct {
		name  string
		body  []byte
		want  string
		limit int64
		err   error
	}{
		{"ok", data, digest(data), 1 << 20, nil},
		{"exact limit", data, digest(data), int64(len(data)), nil},
		{"wrong digest", data, digest([]byte("other")), 1 << 20, ErrDigestMismatch},
		{"too large", data, digest(data), int64(len(data)) - 1, ErrTooLarge},
		{"bad digest", data, "ABC", 1 << 20, ErrBadDigest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Open(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			n, err := s.Put(bytes.NewReader(tc.body), tc.want, tc.limit)
			if !errors.Is(err, tc.err) {
				t.Fatalf("got %v, want %v", err, tc.err)
			}
			left, _ := os.ReadDir(s.tmpDir())
			if len(left) != 0 {
				t.Fatalf("temporary files left: %v", left)
			}
			list, _ := s.List()
			if tc.err != nil {
				if len(list) != 0 {
					t.Fatal("rejected upload was kept")
				}
				return
			}
			if n != int64(len(data)) || !s.Has(tc.want) {
				t.Fatal("blob not stored")
			}
			f, err := s.Open(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(f)
			f.Close()
			if !bytes.Equal(got, data) {
				t.Fatal("content differs")
			}
			if err := s.Delete(tc.want); err != nil || s.Has(tc.want) {
				t.Fatal("delete failed")
			}
			if _, err := s.Open(tc.want); !errors.Is(err, ErrNotFound) {
				t.Fatalf("open deleted: %v", err)
			}
		})
	}
}

func TestOpenCleansTemp(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "tmp", "upload-1")
	os.WriteFile(junk, []byte("x"), 0o600)
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(junk); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("interrupted upload not cleaned")
	}
}
