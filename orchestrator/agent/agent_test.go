package agent

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/state"
)

// TestLifecycle runs the whole agent loop against the fake vmm: build
// (image fetched and verified, sparse disk of the flavor's size, vmm
// started), every power action, and delete.
func TestLifecycle(t *testing.T) {
	c := newCluster(t, 3)
	data := t.TempDir()
	c.startAgent(data, nil)
	id := c.create("web", api.InstanceRequest{Image: c.disk.ID, Metadata: map[string]string{"cmdline": "console=ttyS0"}})
	in := c.waitState(id, state.InstanceRunning, nil)
	t.Logf("created → running in %v (placement, 3 MiB image download, 1 GiB sparse disk, vmm start)", in.History[len(in.History)-1].At.Sub(in.History[0].At))
	if !strings.Contains(lastReason(in), "vmm pid") {
		t.Errorf("running reason %q", lastReason(in))
	}
	dir := filepath.Join(data, "instances", id)

	// The disk: the flavor's size, the image's bytes, and holes where the
	// image has zeros.
	disk := filepath.Join(dir, fileDisk)
	st, err := os.Stat(disk)
	if err != nil {
		t.Fatal(err)
	}
	if st.Size() != 1<<30 {
		t.Errorf("disk is %d bytes, want 1 GiB", st.Size())
	}
	if used := st.Sys().(*syscall.Stat_t).Blocks * 512; used > int64(len(c.diskRaw))*3/4 {
		t.Errorf("disk uses %d bytes on disk for a %d-byte image with a third of zeros: not sparse", used, len(c.diskRaw))
	}
	got := make([]byte, len(c.diskRaw))
	f, _ := os.Open(disk)
	f.ReadAt(got, 0)
	f.Close()
	if !bytes.Equal(got, c.diskRaw) {
		t.Errorf("disk does not start with the image's bytes")
	}
	// The image is cached by digest, nothing left in tmp.
	if _, err := os.Stat(filepath.Join(data, "images", "sha256", c.disk.SHA256)); err != nil {
		t.Errorf("image not cached: %v", err)
	}
	if tmp, _ := os.ReadDir(filepath.Join(data, "images", "tmp")); len(tmp) != 0 {
		t.Errorf("images/tmp holds %d files", len(tmp))
	}

	pid := readPID(t, dir)
	if !alive(pid) {
		t.Fatalf("vmm pid %d is not running", pid)
	}
	if sid, _ := unix.Getsid(pid); sid != pid {
		t.Errorf("vmm session %d: not a session leader of its own", sid)
	}
	cmdline, _ := os.ReadFile("/proc/" + itoa(pid) + "/cmdline")
	for _, want := range []string{"--api-socket\x00" + filepath.Join(dir, fileSocket), "--disk\x00path=" + disk + ",id=root", "--cpus\x001", "--memory\x0064M", "--cmdline\x00console=ttyS0"} {
		if !bytes.Contains(cmdline, []byte(want)) {
			t.Errorf("vmm command line %q lacks %q", cmdline, want)
		}
	}
	waitFor(t, "console line", 5*time.Second, func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, fileConsole))
		return bytes.Contains(b, []byte("fake vmm "+itoa(pid)+" booted"))
	})

	writeConsole(t, dir, "hello")
	vc := NewVMMClient(filepath.Join(dir, fileSocket))
	defer vc.Close()
	vmState := func() string {
		info, err := vc.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return info.State
	}

	c.action(id, state.ActionPause)
	c.waitState(id, state.InstancePaused, nil)
	if s := vmState(); s != "paused" {
		t.Errorf("vmm state %s after pause", s)
	}
	c.action(id, state.ActionResume)
	c.waitState(id, state.InstanceRunning, func(in *state.Instance) bool { return lastReason(in) == "resumed by user" })
	if s := vmState(); s != "running" {
		t.Errorf("vmm state %s after resume", s)
	}

	c.action(id, state.ActionReboot)
	c.waitState(id, state.InstanceRunning, func(in *state.Instance) bool { return strings.HasPrefix(lastReason(in), "rebooted by user") })
	pid2 := readPID(t, dir)
	if pid2 == pid || alive(pid) || !alive(pid2) {
		t.Errorf("reboot: old pid %d (alive %v), new pid %d (alive %v)", pid, alive(pid), pid2, alive(pid2))
	}

	c.action(id, state.ActionStop)
	in = c.waitState(id, state.InstanceStopped, nil)
	if r := lastReason(in); r != "stopped by user (guest powered off)" {
		t.Errorf("stop reason %q", r)
	}
	waitFor(t, "vmm exit", 5*time.Second, func() bool { return !alive(pid2) })
	c.action(id, state.ActionStart)
	c.waitState(id, state.InstanceRunning, func(in *state.Instance) bool { return strings.HasPrefix(lastReason(in), "started by user") })
	pid3 := readPID(t, dir)
	if !alive(pid3) {
		t.Fatalf("vmm pid %d not running after start", pid3)
	}

	if _, err := c.admin.Do(context.Background(), "DELETE", "/v1/instances/"+id, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "instance directory removed", 10*time.Second, func() bool {
		_, err := os.Stat(dir)
		return os.IsNotExist(err)
	})
	if alive(pid3) {
		t.Errorf("vmm pid %d still runs after delete", pid3)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
