package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// apiClient talks to one vmm's control API socket.
type apiClient struct {
	t    *testing.T
	sock string
	http *http.Client
}

func newAPIClient(t *testing.T, sock string) *apiClient {
	return &apiClient{t: t, sock: sock, http: &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}}
}

// waitSocket waits until vmm accepts on the socket (or exits).
func (c *apiClient) waitSocket(p *vmmProc) {
	c.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		if conn, err := net.Dial("unix", c.sock); err == nil {
			conn.Close()
			return
		}
		select {
		case <-p.done:
			c.t.Fatalf("vmm exited before its API socket was up\nstderr:\n%s", p.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			c.t.Fatal("no API socket after a minute")
		}
	}
}

// do sends one request and returns the status and body.
func (c *apiClient) do(method, path, body string) (int, string) {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://vmm"+path, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resp.StatusCode, string(b)
}

// must sends a request that has to succeed with want.
func (c *apiClient) must(method, path, body string, want int) string {
	c.t.Helper()
	code, b := c.do(method, path, body)
	if code != want {
		c.t.Fatalf("%s %s %s: status %d, want %d: %s", method, path, body, code, want, b)
	}
	return b
}

// vmInfo is the part of GET /vm the tests read.
type vmInfo struct {
	State       string  `json:"state"`
	Uptime      float64 `json:"uptime_seconds"`
	VCPUs       int     `json:"vcpu_count"`
	MemoryBytes uint64  `json:"memory_bytes"`
}

func (c *apiClient) info() vmInfo {
	c.t.Helper()
	var v vmInfo
	if err := json.Unmarshal([]byte(c.must("GET", "/vm", "", 200)), &v); err != nil {
		c.t.Fatalf("GET /vm: %v", err)
	}
	return v
}

var kitReadyLine = regexp.MustCompile(`KIT READY`)

// startWithAPI boots the kit with --api-socket; the guest runs script
// after KIT READY. It returns once the guest is up.
func startWithAPI(t *testing.T, script string) (*vmmProc, *apiClient) {
	t.Helper()
	needKit(t, kitVmlinux, kitInitrd)
	sock := filepath.Join(t.TempDir(), "vmm.sock")
	p := startVMM(t, bootTimeout, append(kitArgs(1, "128M", kitRun(script)), "--api-socket", sock)...)
	c := newAPIClient(t, sock)
	c.waitSocket(p)
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("API socket: %v, mode %v; want 0600", err, st.Mode())
	}
	if !p.waitFor(t, kitReadyLine) {
		r := p.wait(t)
		t.Fatalf("no KIT READY (status %d)\nconsole:\n%s\nstderr:\n%s", r.status, tail(r.console), r.stderr)
	}
	return p, c
}

// TestAPIKill boots the kit with --api-socket: GET /vm reports a running
// 1-vCPU 128 MiB guest, /metrics counts its exits, and POST /vm/kill ends
// vmm with the stopped status and removes the socket.
func TestAPIKill(t *testing.T) {
	p, c := startWithAPI(t, "sleep 600")
	if v := c.info(); v.State != "running" || v.VCPUs != 1 || v.MemoryBytes != 128<<20 || v.Uptime <= 0 {
		t.Fatalf("GET /vm: %+v", v)
	}
	m := c.must("GET", "/metrics", "", 200)
	if !regexp.MustCompile(`(?m)^vmm_exits_total\{reason="io"\} [1-9]`).MatchString(m) || !strings.Contains(m, `vmm_state{state="running"} 1`) {
		t.Fatalf("metrics:\n%s", m)
	}
	c.must("POST", "/vm/kill", "", 204)
	r := p.wait(t)
	if r.status != exitStopped {
		t.Fatalf("status %d after POST /vm/kill, want %d\nstderr:\n%s", r.status, exitStopped, r.stderr)
	}
	if _, err := os.Stat(c.sock); !os.IsNotExist(err) {
		t.Errorf("API socket left after exit: %v", err)
	}
}

// TestAPIConfigureAndStart starts vmm with only --api-socket, configures
// the kit through PUTs and starts it with InstanceStart, Firecracker's
// way; the guest runs its command and powers off, and vmm exits 0.
func TestAPIConfigureAndStart(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd)
	sock := filepath.Join(t.TempDir(), "vmm.sock")
	p := startVMM(t, bootTimeout, "--api-socket", sock)
	c := newAPIClient(t, sock)
	c.waitSocket(p)
	if v := c.info(); v.State != "not_started" {
		t.Fatalf("GET /vm before configuration: %+v", v)
	}
	// InstanceStart without a kernel is refused, and vmm waits on.
	c.must("PUT", "/actions", `{"action_type": "InstanceStart"}`, 400)
	boot, _ := json.Marshal(map[string]string{"kernel_image_path": kitVmlinux, "initrd_path": kitInitrd,
		"boot_args": "console=ttyS0 reboot=k panic=-1 " + kitRun("echo configured-through-api")})
	c.must("PUT", "/boot-source", string(boot), 204)
	c.must("PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 96}`, 204)
	c.must("PUT", "/rng", `{}`, 204)
	c.must("PUT", "/actions", `{"action_type": "InstanceStart"}`, 204)
	c.must("PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 64}`, 409)
	r := p.wait(t)
	if r.status != exitPowerOff || !strings.Contains(r.console, "configured-through-api") || !strings.Contains(r.console, "KIT EXIT 0") {
		t.Fatalf("status %d (want %d, the command's output and KIT EXIT 0)\nconsole:\n%s\nstderr:\n%s", r.status, exitPowerOff, tail(r.console), r.stderr)
	}
	// MemTotal is 70-100 % of the RAM (TestKitBoots); the default 128 MiB
	// would be above 96 MiB.
	m := kitReady.FindStringSubmatch(r.console)
	if m == nil {
		t.Fatal("no KIT READY line")
	}
	if kb, _ := strconv.ParseUint(m[2], 10, 64); kb*1024 > 96<<20 || kb*1024 < (96<<20)*7/10 {
		t.Errorf("guest MemTotal %s kB: want the 96 MiB given through the API", m[2])
	}
}

var tick = regexp.MustCompile(`TICK (\d+)`)

// lastTick is the highest TICK the guest has printed.
func lastTick(console string) int {
	n := 0
	for _, m := range tick.FindAllStringSubmatch(console, -1) {
		if v, _ := strconv.Atoi(m[1]); v > n {
			n = v
		}
	}
	return n
}

// TestAPIPauseResume: a paused guest prints nothing (its vCPUs do not
// run), a resumed one counts on from where it stopped, and the lifecycle's
// wrong states are 409s.
func TestAPIPauseResume(t *testing.T) {
	p, c := startWithAPI(t, `i=0; while :; do i=$((i+1)); echo "TICK $i"; sleep 1; done`)
	deadline := time.Now().Add(bootTimeout)
	for lastTick(p.console.String()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("guest does not count\nconsole:\n%s", tail(p.console.String()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.must("PUT", "/vm/state", `{"state":"running"}`, 409)
	c.must("PUT", "/vm/state", `{"state":"paused"}`, 204)
	atPause := p.console.String()
	if v := c.info(); v.State != "paused" {
		t.Fatalf("state after pause: %+v", v)
	}
	c.must("PUT", "/vm/state", `{"state":"paused"}`, 409)
	c.must("POST", "/vm/shutdown", "", 409)
	time.Sleep(3 * time.Second)
	if now := p.console.String(); now != atPause {
		t.Fatalf("the paused guest printed %q", now[len(atPause):])
	}
	paused := lastTick(atPause)
	c.must("PUT", "/vm/state", `{"state":"running"}`, 204)
	for lastTick(p.console.String()) <= paused {
		if time.Now().After(deadline) {
			t.Fatalf("no TICK after %d once resumed\nconsole:\n%s", paused, tail(p.console.String()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := c.info(); v.State != "running" {
		t.Fatalf("state after resume: %+v", v)
	}
	// Counting continues without repeats or gaps.
	var seen []int
	for _, m := range tick.FindAllStringSubmatch(p.console.String(), -1) {
		v, _ := strconv.Atoi(m[1])
		seen = append(seen, v)
	}
	for i, v := range seen {
		if v != i+1 {
			t.Fatalf("ticks %v: want 1, 2, 3, ...", seen)
		}
	}
	c.must("POST", "/vm/kill", "", 204)
	if r := p.wait(t); r.status != exitStopped {
		t.Fatalf("status %d after POST /vm/kill, want %d\nstderr:\n%s", r.status, exitStopped, r.stderr)
	}
}

// TestAPIShutdown: POST /vm/shutdown presses the ACPI power button; the
// kit's init sees it, says so and powers off, and vmm exits 0.
func TestAPIShutdown(t *testing.T) {
	p, c := startWithAPI(t, "sleep 600")
	c.must("POST", "/vm/shutdown", "", 204)
	r := p.wait(t)
	if r.status != exitPowerOff || !strings.Contains(r.console, "KIT POWER BUTTON") {
		t.Fatalf("status %d after POST /vm/shutdown (want %d and KIT POWER BUTTON)\nconsole:\n%s\nstderr:\n%s", r.status, exitPowerOff, tail(r.console), r.stderr)
	}
}

// TestAPISnapshotRestore snapshots a counting guest through the API, kills
// its vmm, and restores it into a vmm started with only --api-socket via
// POST /restore: the restored guest waits paused, and once resumed counts
// on with no repeat.
func TestAPISnapshotRestore(t *testing.T) {
	p, c := startWithAPI(t, `i=0; while :; do i=$((i+1)); echo "TICK $i"; sleep 1; done`)
	deadline := time.Now().Add(bootTimeout)
	for lastTick(p.console.String()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("guest does not count\nconsole:\n%s", tail(p.console.String()))
		}
		time.Sleep(100 * time.Millisecond)
	}
	snap := filepath.Join(t.TempDir(), "snap")
	body, _ := json.Marshal(map[string]string{"dir": snap})
	c.must("PUT", "/snapshot", string(body), 409) // running: refused
	c.must("PUT", "/vm/state", `{"state":"paused"}`, 204)
	c.must("PUT", "/snapshot", string(body), 204)
	atSnapshot := p.console.String()
	before := lastTick(atSnapshot)
	c.must("POST", "/vm/kill", "", 204)
	if r := p.wait(t); r.status != exitStopped {
		t.Fatalf("status %d after kill\nstderr:\n%s", r.status, r.stderr)
	}

	sock := filepath.Join(t.TempDir(), "restored.sock")
	q := startVMM(t, bootTimeout, "--api-socket", sock)
	rc := newAPIClient(t, sock)
	rc.waitSocket(q)
	rc.must("POST", "/restore", `{"dir": "/nonexistent/snapshot"}`, 400)
	rc.must("POST", "/restore", string(body), 204)
	if v := rc.info(); v.State != "paused" || v.VCPUs != 1 || v.MemoryBytes != 128<<20 {
		t.Fatalf("restored vm: %+v", v)
	}
	rc.must("POST", "/restore", string(body), 409)
	rc.must("PUT", "/vm/state", `{"state":"running"}`, 204)
	for lastTick(q.console.String()) <= before {
		if time.Now().After(deadline) {
			t.Fatalf("restored guest does not count past %d\nconsole:\n%s\nstderr:\n%s", before, tail(q.console.String()), q.stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The restored console starts where the snapshot was taken: the next
	// tick, never one printed before. A pause that fell inside a line
	// leaves that tick's number to the restored console, whose first
	// whole TICK line is then the one after.
	want := before + 1
	if !strings.HasSuffix(atSnapshot, "\n") {
		want = before + 2
	}
	first := tick.FindStringSubmatch(q.console.String())
	if n, _ := strconv.Atoi(first[1]); n != want && n != before+1 {
		t.Fatalf("restored guest's first whole tick %d, want %d (last before the snapshot %d)", n, want, before)
	}
	rc.must("POST", "/vm/kill", "", 204)
	if r := q.wait(t); r.status != exitStopped {
		t.Fatalf("restored vmm: status %d\nstderr:\n%s", r.status, r.stderr)
	}
}
