package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/server"
	"kvmstack/orchestrator/state"
)

const testPassword = "agent-test-password"

// cluster is a one-server cluster in the test process with a flavor, a
// kernel image and a disk image.
type cluster struct {
	t       *testing.T
	srv     *server.Server
	dir     string
	admin   *client.Client
	kernel  *state.Image
	disk    *state.Image
	diskRaw []byte
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("KVMSTACK_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newCluster starts the server and uploads a 64 KiB kernel and a disk
// image of diskMiB MiB whose middle third is zeros.
func newCluster(t *testing.T, diskMiB int) *cluster {
	t.Helper()
	dir := t.TempDir()
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte(testPassword), 0o600)
	var logOut io.Writer = io.Discard
	if os.Getenv("KVMSTACK_TEST_LOG") != "" {
		logOut = os.Stderr
	}
	srv, err := server.Start(context.Background(), server.Config{DataDir: dir, RaftBind: "127.0.0.1:0", HTTPBind: "127.0.0.1:0",
		BootstrapExpect: 1, BootstrapPasswordFile: pw, BcryptCost: 4, HostTTL: time.Minute,
		Logger: slog.New(slog.NewTextHandler(logOut, nil)), RaftLogOutput: logOut})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	c := &cluster{t: t, srv: srv, dir: dir, admin: client.New(srv.HTTPAddr(), "")}
	waitFor(t, "admin login", 30*time.Second, func() bool {
		_, err := c.admin.Login(context.Background(), "admin", testPassword, "admin")
		return err == nil
	})
	if _, err := c.admin.Do(context.Background(), http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: "tiny", VCPUs: 1, MemoryMB: 64, DiskGB: 1}, nil); err != nil {
		t.Fatal(err)
	}
	kernel := make([]byte, 64<<10)
	rand.Read(kernel)
	c.kernel = c.upload("vmlinux", state.ImageKernel, kernel)
	third := diskMiB << 20 / 3
	c.diskRaw = make([]byte, diskMiB<<20)
	rand.Read(c.diskRaw[:third])
	rand.Read(c.diskRaw[2*third:])
	c.disk = c.upload("rootfs", state.ImageDisk, c.diskRaw)
	return c
}

func (c *cluster) upload(name, kind string, b []byte) *state.Image {
	c.t.Helper()
	sum := sha256.Sum256(b)
	img, err := c.admin.UploadImage(context.Background(), name, kind, "", hex.EncodeToString(sum[:]), bytes.NewReader(b), int64(len(b)), nil)
	if err != nil {
		c.t.Fatal(err)
	}
	return img
}

// with returns the cluster for use in subtest t.
func (c *cluster) with(t *testing.T) *cluster {
	cc := *c
	cc.t = t
	return &cc
}

// startAgent runs an agent on dataDir until the returned stop is called
// (or the test ends); stop waits for Run to return.
func (c *cluster) startAgent(dataDir string, mod func(*Config)) (stop func()) {
	c.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := Config{Servers: []string{c.srv.HTTPAddr()}, User: "admin", Password: testPassword, Project: "admin",
		DataDir: dataDir, HostName: "node1", UnderlayIP: "192.0.2.1", VMMPath: exe, VMMEnv: []string{fakeVMMEnv + "=1"},
		Capacity: &state.Resources{VCPUs: 8, MemoryMB: 8192, DiskGB: 100}, HeartbeatInterval: 200 * time.Millisecond,
		WatchWait: 2 * time.Second, StopTimeout: 5 * time.Second, StartTimeout: 10 * time.Second, NetworkTimeout: 10 * time.Second,
		RestartBackoff: 50 * time.Millisecond, RotateInterval: 50 * time.Millisecond, Logger: testLogger(c.t)}
	if mod != nil {
		mod(&cfg)
	}
	// Guests outlive their agent by design: end the fake vmm processes
	// once the test is over (this cleanup runs after stop's).
	c.t.Cleanup(func() { killVMMs(dataDir) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				c.t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			c.t.Fatalf("Run did not return after cancel")
		}
	}
	c.t.Cleanup(stop)
	waitFor(c.t, "host registered", 30*time.Second, func() bool {
		var hosts []api.HostView
		c.admin.Do(context.Background(), http.MethodGet, "/v1/hosts", nil, nil, &hosts)
		return len(hosts) == 1 && hosts[0].Status == "up"
	})
	return stop
}

// create makes an instance and returns its id.
func (c *cluster) create(name string, req api.InstanceRequest) string {
	c.t.Helper()
	req.Name, req.Flavor = name, "tiny"
	if req.Kernel == "" {
		req.Kernel = c.kernel.ID
	}
	var out []api.InstanceView
	if _, err := c.admin.Do(context.Background(), http.MethodPost, "/v1/instances", nil, req, &out); err != nil {
		c.t.Fatal(err)
	}
	return out[0].ID
}

func (c *cluster) instance(id string) *state.Instance {
	c.t.Helper()
	var in api.InstanceView
	if _, err := c.admin.Do(context.Background(), http.MethodGet, "/v1/instances/"+id, nil, nil, &in); err != nil {
		c.t.Fatal(err)
	}
	return in.Instance
}

// waitState waits until the instance is in st (and, with pred, pred holds)
// and returns it; another final state first fails the test.
func (c *cluster) waitState(id, st string, pred func(*state.Instance) bool) *state.Instance {
	c.t.Helper()
	var in *state.Instance
	deadline := time.Now().Add(30 * time.Second)
	for {
		in = c.instance(id)
		if in.State == st && (pred == nil || pred(in)) {
			return in
		}
		if time.Now().After(deadline) || in.State == state.InstanceError && st != state.InstanceError && (in.RestartPolicy == "" || in.RestartPolicy == state.RestartNever) {
			c.t.Fatalf("instance %s is %s, want %s; history %+v", id, in.State, st, in.History)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *cluster) action(id, action string) {
	c.t.Helper()
	if _, err := c.admin.Do(context.Background(), http.MethodPost, "/v1/instances/"+id+"/action", nil, api.ActionRequest{Action: action}, nil); err != nil {
		c.t.Fatalf("%s: %v", action, err)
	}
}

func lastReason(in *state.Instance) string { return in.History[len(in.History)-1].Reason }

func readPID(t *testing.T, dir string) int {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, filePID))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z' && s[i+2] != 'X'
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killVMMs kills the vmm processes whose pid files are under dataDir, if
// they still serve a socket there.
func killVMMs(dataDir string) {
	pids, _ := filepath.Glob(filepath.Join(dataDir, "instances", "*", filePID))
	for _, pf := range pids {
		raw, err := os.ReadFile(pf)
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
		if err != nil {
			continue
		}
		cmdline, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
		if bytes.Contains(cmdline, []byte(filepath.Join(filepath.Dir(pf), fileSocket))) {
			syscall.Kill(pid, syscall.SIGKILL)
			// Let the reaper (this process is every fake's parent) write
			// its exit-status file before the directory is removed.
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if _, err := os.Stat(filepath.Join(filepath.Dir(pf), fileExitStatus)); err == nil {
					break
				}
			}
		}
	}
}
