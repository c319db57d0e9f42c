package kvmhost

import (
	"bytes"
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readCPIO parses a newc archive back into names and contents.
func readCPIO(t *testing.T, b []byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	align := func(n int) int { return (n + 3) &^ 3 }
	for off := 0; ; {
		if off+110 > len(b) || string(b[off:off+6]) != "070701" {
			t.Fatalf("bad header at %d", off)
		}
		field := func(i int) int {
			v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
			if err != nil {
				t.Fatal(err)
			}
			return int(v)
		}
		size, nameLen := field(6), field(11)
		name := string(b[off+110 : off+110+nameLen-1])
		data := align(off + 110 + nameLen)
		if name == "TRAILER!!!" {
			return out
		}
		out[name] = string(b[data : data+size])
		off = align(data + size)
	}
}

func TestCPIORoundTrip(t *testing.T) {
	var buf bytes.Buffer
	c := newCPIOWriter(&buf)
	files := map[string]string{"/a/b/c.txt": "hello", "/a/d": "", "/e": "xyz1"}
	for _, k := range sortedKeys(files) {
		if err := c.addBytes(k, 0o644, []byte(files[k])); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	got := readCPIO(t, buf.Bytes())
	for k, v := range files {
		if got[strings.TrimPrefix(k, "/")] != v {
			t.Errorf("%s = %q, want %q", k, got[strings.TrimPrefix(k, "/")], v)
		}
	}
	if _, ok := got["a/b"]; !ok {
		t.Errorf("parent directory a/b missing: %v", got)
	}
}

// TestRunReportsStatusAndKVM boots the test host and checks that the
// command sees /dev/kvm and that its exit status comes back.
func TestRunReportsStatusAndKVM(t *testing.T) {
	dir, _ := filepath.Abs("../../build/kvmhost")
	if err := Available(dir); err != nil {
		t.Skipf("test host not prepared here: %v", err)
	}
	if testing.Short() {
		t.Skip("boots a QEMU test host (~15 s); skipped in -short")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	status, err := Run(ctx, Config{
		Dir:     dir,
		Args:    []string{"sh", "-c", "test -c /dev/kvm && echo have-kvm; echo \"$MARK\"; exit 7"},
		Env:     []string{"MARK=it's marked"},
		WorkDir: "/tmp/wd",
		Output:  &out,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, out.String())
	}
	if status != 7 {
		t.Errorf("status = %d, want 7", status)
	}
	for _, want := range []string{"have-kvm", "it's marked"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}
