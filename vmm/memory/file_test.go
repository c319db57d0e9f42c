package memory

import (
	"os"
	"path/filepath"
	"testing"
)

func TestNewFromFile(t *testing.T) {
	const size = MinSize
	path := filepath.Join(t.TempDir(), "memory")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("page one"), 4096); err != nil {
		t.Fatal(err)
	}
	m, err := NewFromFile(f, size)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	got := make([]byte, 8)
	if err := m.ReadAt(got, 4096); err != nil || string(got) != "page one" {
		t.Fatalf("ReadAt = %q, %v", got, err)
	}
	// Guest writes stay private to the mapping.
	if err := m.WriteAt([]byte("changed!"), 4096); err != nil {
		t.Fatal(err)
	}
	onDisk := make([]byte, 8)
	if _, err := f.ReadAt(onDisk, 4096); err != nil || string(onDisk) != "page one" {
		t.Fatalf("file changed under a private mapping: %q, %v", onDisk, err)
	}
	if _, err := NewFromFile(f, 2*size); err == nil {
		t.Fatal("NewFromFile accepted a file shorter than the RAM size")
	}
}
