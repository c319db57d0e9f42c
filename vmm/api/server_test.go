package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// testConfig is a configuration with one drive and one interface, as a
// vmm booted from flags would report it.
func testConfig() VMConfig {
	return VMConfig{
		BootSource:        &BootSource{KernelImagePath: "/vmlinux"},
		MachineConfig:     MachineConfig{VCPUCount: 2, MemSizeMiB: 256},
		Drives:            []Drive{{DriveID: "root", PathOnHost: "/root.img"}},
		NetworkInterfaces: []NetworkInterface{{IfaceID: "eth0", HostDevName: "tap0"}},
	}
}

// fixture builds a server in one of the states a vmm can be in.
func fixture(t *testing.T, state string) (*Server, *fakeLauncher, *fakeMachine) {
	t.Helper()
	l := &fakeLauncher{}
	switch state {
	case "fresh":
		return NewServer(Options{Launcher: l}), l, nil
	case "configured":
		s := NewServer(Options{Launcher: l})
		for _, req := range [][3]string{
			{"PUT", "/boot-source", `{"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"}`},
			{"PUT", "/drives/root", `{"drive_id": "root", "path_on_host": "/root.img"}`},
			{"PUT", "/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "tap0"}`},
		} {
			if rec := do(s, req[0], req[1], req[2]); rec.Code != http.StatusNoContent {
				t.Fatalf("%s %s: %d %s", req[0], req[1], rec.Code, rec.Body)
			}
		}
		return s, l, nil
	case "running", "paused", "stopped":
		s := NewServer(Options{Launcher: l})
		m := newFakeMachine(state)
		s.Attach(m, testConfig())
		return s, l, m
	case "flags":
		s := NewServer(Options{})
		m := newFakeMachine("running")
		s.Attach(m, testConfig())
		return s, nil, m
	}
	t.Fatalf("no fixture %q", state)
	return nil, nil, nil
}

func do(s *Server, method, path, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

// TestHandlers drives every endpoint in every relevant state and checks
// the status, the error code and what reached the machine.
func TestHandlers(t *testing.T) {
	const rl = `{"bandwidth": {"size": 1048576, "refill_time": 1000}, "ops": {"size": 100, "refill_time": 1000, "one_time_burst": 10}}`
	tests := []struct {
		name   string
		state  string
		method string
		path   string
		body   string
		status int
		code   string // error code, for 4xx and 5xx
		call   string // the last call the machine must have seen
	}{
		{"getVMFresh", "fresh", "GET", "/vm", "", 200, "", ""},
		{"getVMRunning", "running", "GET", "/vm", "", 200, "", ""},
		{"headVM", "running", "HEAD", "/vm", "", 200, "", ""},
		{"postVM", "running", "POST", "/vm", "{}", 405, CodeMethodNotAllowed, ""},
		{"unknownPath", "running", "GET", "/nope", "", 404, CodeNotFound, ""},

		{"pause", "running", "PUT", "/vm/state", `{"state": "paused"}`, 204, "", "pause"},
		{"resume", "paused", "PUT", "/vm/state", `{"state": "running"}`, 204, "", "resume"},
		{"pausePaused", "paused", "PUT", "/vm/state", `{"state": "paused"}`, 409, CodeWrongState, "pause"},
		{"resumeRunning", "running", "PUT", "/vm/state", `{"state": "running"}`, 409, CodeWrongState, "resume"},
		{"pauseStopped", "stopped", "PUT", "/vm/state", `{"state": "paused"}`, 409, CodeWrongState, "pause"},
		{"pauseNotStarted", "fresh", "PUT", "/vm/state", `{"state": "paused"}`, 409, CodeWrongState, ""},
		{"badState", "running", "PUT", "/vm/state", `{"state": "sleeping"}`, 400, CodeInvalid, ""},
		{"stateUnknownField", "running", "PUT", "/vm/state", `{"state": "paused", "force": true}`, 400, CodeBadRequest, ""},
		{"stateBadJSON", "running", "PUT", "/vm/state", `{"state": `, 400, CodeBadRequest, ""},
		{"stateWrongType", "running", "PUT", "/vm/state", `{"state": 1}`, 400, CodeBadRequest, ""},
		{"stateTrailing", "running", "PUT", "/vm/state", `{"state": "paused"} {}`, 400, CodeBadRequest, ""},
		{"stateEmpty", "running", "PUT", "/vm/state", ``, 400, CodeBadRequest, ""},
		{"stateArray", "running", "PUT", "/vm/state", `[]`, 400, CodeBadRequest, ""},
		{"stateTooLarge", "running", "PUT", "/vm/state", `{"state": "` + strings.Repeat("x", DefaultMaxBody) + `"}`, 413, CodeTooLarge, ""},
		{"stateGet", "running", "GET", "/vm/state", "", 405, CodeMethodNotAllowed, ""},

		{"shutdown", "running", "POST", "/vm/shutdown", "", 204, "", "shutdown"},
		{"shutdownEmptyObject", "running", "POST", "/vm/shutdown", "{}", 204, "", "shutdown"},
		{"shutdownPaused", "paused", "POST", "/vm/shutdown", "", 409, CodeWrongState, "shutdown"},
		{"shutdownNotStarted", "fresh", "POST", "/vm/shutdown", "", 409, CodeWrongState, ""},
		{"shutdownBody", "running", "POST", "/vm/shutdown", `{"now": true}`, 400, CodeBadRequest, ""},
		{"kill", "running", "POST", "/vm/kill", "", 204, "", "kill"},
		{"killPaused", "paused", "POST", "/vm/kill", "", 204, "", "kill"},
		{"killNotStarted", "fresh", "POST", "/vm/kill", "", 409, CodeWrongState, ""},
		{"killPut", "running", "PUT", "/vm/kill", "", 405, CodeMethodNotAllowed, ""},

		{"metrics", "running", "GET", "/metrics", "", 200, "", ""},
		{"metricsFresh", "fresh", "GET", "/metrics", "", 200, "", ""},
		{"metricsPost", "running", "POST", "/metrics", "", 405, CodeMethodNotAllowed, ""},

		{"snapshot", "paused", "PUT", "/snapshot", `{"dir": "/tmp/snap"}`, 204, "", "snapshot /tmp/snap"},
		{"snapshotRunning", "running", "PUT", "/snapshot", `{"dir": "/tmp/snap"}`, 409, CodeWrongState, "snapshot /tmp/snap"},
		{"snapshotNoDir", "paused", "PUT", "/snapshot", `{}`, 400, CodeInvalid, ""},
		{"snapshotNotStarted", "fresh", "PUT", "/snapshot", `{"dir": "/tmp/snap"}`, 409, CodeWrongState, ""},
		{"restore", "fresh", "POST", "/restore", `{"dir": "/tmp/snap"}`, 204, "", ""},
		{"restoreRunning", "running", "POST", "/restore", `{"dir": "/tmp/snap"}`, 409, CodeWrongState, ""},
		{"restoreConfigured", "configured", "POST", "/restore", `{"dir": "/tmp/snap"}`, 409, CodeWrongState, ""},
		{"restoreFlags", "flags", "POST", "/restore", `{"dir": "/tmp/snap"}`, 409, CodeWrongState, ""},
		{"restoreNoDir", "fresh", "POST", "/restore", `{"dir": ""}`, 400, CodeInvalid, ""},

		{"bootSource", "fresh", "PUT", "/boot-source", `{"kernel_image_path": "/k", "initrd_path": "/i", "boot_args": "quiet"}`, 204, "", ""},
		{"bootSourceNoKernel", "fresh", "PUT", "/boot-source", `{"boot_args": "quiet"}`, 400, CodeInvalid, ""},
		{"bootSourceRunning", "running", "PUT", "/boot-source", `{"kernel_image_path": "/k"}`, 409, CodeWrongState, ""},
		{"bootSourceTypo", "fresh", "PUT", "/boot-source", `{"kernel_path": "/k"}`, 400, CodeBadRequest, ""},
		{"machineConfig", "fresh", "PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 512}`, 204, "", ""},
		{"machineConfigZeroCPUs", "fresh", "PUT", "/machine-config", `{"vcpu_count": 0, "mem_size_mib": 512}`, 400, CodeInvalid, ""},
		{"machineConfigManyCPUs", "fresh", "PUT", "/machine-config", `{"vcpu_count": 100000, "mem_size_mib": 512}`, 400, CodeInvalid, ""},
		{"machineConfigNoMemory", "fresh", "PUT", "/machine-config", `{"vcpu_count": 1}`, 400, CodeInvalid, ""},
		{"machineConfigHugeMemory", "fresh", "PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 18446744073709551615}`, 400, CodeInvalid, ""},
		{"machineConfigNegative", "fresh", "PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": -1}`, 400, CodeBadRequest, ""},
		{"machineConfigRunning", "running", "PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 128}`, 409, CodeWrongState, ""},
		{"drive", "fresh", "PUT", "/drives/root", `{"drive_id": "root", "path_on_host": "/r.img", "is_read_only": true, "rate_limiter": ` + rl + `}`, 204, "", ""},
		{"driveIDMismatch", "fresh", "PUT", "/drives/root", `{"drive_id": "data", "path_on_host": "/r.img"}`, 400, CodeInvalid, ""},
		{"driveNoPath", "fresh", "PUT", "/drives/root", `{"drive_id": "root"}`, 400, CodeInvalid, ""},
		{"driveBadID", "fresh", "PUT", "/drives/a.b", `{"drive_id": "a.b", "path_on_host": "/r.img"}`, 400, CodeInvalid, ""},
		{"driveLongID", "fresh", "PUT", "/drives/" + strings.Repeat("a", 21), `{"drive_id": "x", "path_on_host": "/r.img"}`, 400, CodeInvalid, ""},
		{"driveHugeRefill", "fresh", "PUT", "/drives/root", `{"drive_id": "root", "path_on_host": "/r.img", "rate_limiter": {"ops": {"size": 1, "refill_time": 18446744073709551615}}}`, 400, CodeInvalid, ""},
		{"driveDayRefill", "fresh", "PUT", "/drives/root", `{"drive_id": "root", "path_on_host": "/r.img", "rate_limiter": {"ops": {"size": 1, "refill_time": 86400001}}}`, 400, CodeInvalid, ""},
		{"driveNoLimit", "fresh", "PUT", "/drives/root", `{"drive_id": "root", "path_on_host": "/r.img", "rate_limiter": {"ops": {"size": 0}}}`, 204, "", ""},
		{"driveZeroBucket", "fresh", "PUT", "/drives/root", `{"drive_id": "root", "path_on_host": "/r.img", "rate_limiter": {"ops": {"size": 0, "refill_time": 100}}}`, 400, CodeInvalid, ""},
		{"driveRunning", "running", "PUT", "/drives/data", `{"drive_id": "data", "path_on_host": "/d.img"}`, 409, CodeWrongState, ""},
		{"driveNoID", "fresh", "PUT", "/drives/", `{}`, 404, CodeNotFound, ""},
		{"net", "fresh", "PUT", "/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "52:54:00:12:34:56"}`, 204, "", ""},
		{"netBadMAC", "fresh", "PUT", "/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "01:00:5e:00:00:01"}`, 400, CodeInvalid, ""},
		{"netLongTap", "fresh", "PUT", "/network-interfaces/eth0", `{"iface_id": "eth0", "host_dev_name": "a-very-long-tap-name"}`, 400, CodeInvalid, ""},
		{"netNoTap", "fresh", "PUT", "/network-interfaces/eth0", `{"iface_id": "eth0"}`, 400, CodeInvalid, ""},
		{"rng", "fresh", "PUT", "/rng", `{}`, 204, "", ""},
		{"rngOff", "fresh", "PUT", "/rng", `{"enabled": false}`, 204, "", ""},
		{"rngRunning", "running", "PUT", "/rng", `{}`, 409, CodeWrongState, ""},
		{"rngGet", "fresh", "GET", "/rng", ``, 405, CodeMethodNotAllowed, ""},

		{"start", "configured", "PUT", "/actions", `{"action_type": "InstanceStart"}`, 204, "", ""},
		{"startNoBootSource", "fresh", "PUT", "/actions", `{"action_type": "InstanceStart"}`, 400, CodeInvalid, ""},
		{"startTwice", "running", "PUT", "/actions", `{"action_type": "InstanceStart"}`, 409, CodeWrongState, ""},
		{"startFlags", "flags", "PUT", "/actions", `{"action_type": "InstanceStart"}`, 409, CodeWrongState, ""},
		{"badAction", "configured", "PUT", "/actions", `{"action_type": "SendCtrlAltDel"}`, 400, CodeInvalid, ""},

		{"patchDrive", "running", "PATCH", "/drives/root", `{"drive_id": "root", "rate_limiter": ` + rl + `}`, 204, "", "ratelimit drive root 0"},
		{"patchDriveConfigured", "configured", "PATCH", "/drives/root", `{"drive_id": "root", "rate_limiter": ` + rl + `}`, 204, "", ""},
		{"patchDriveUnknown", "running", "PATCH", "/drives/data", `{"drive_id": "data", "rate_limiter": ` + rl + `}`, 404, CodeNotFound, ""},
		{"patchDrivePath", "running", "PATCH", "/drives/root", `{"drive_id": "root", "path_on_host": "/x", "rate_limiter": ` + rl + `}`, 400, CodeInvalid, ""},
		{"patchDriveNoLimiter", "running", "PATCH", "/drives/root", `{"drive_id": "root"}`, 400, CodeInvalid, ""},
		{"patchDriveBadBucket", "running", "PATCH", "/drives/root", `{"drive_id": "root", "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 0}}}`, 400, CodeInvalid, ""},
		{"patchNet", "running", "PATCH", "/network-interfaces/eth0", `{"iface_id": "eth0", "rate_limiter": ` + rl + `}`, 204, "", "ratelimit net eth0 0"},
		{"patchNetMAC", "running", "PATCH", "/network-interfaces/eth0", `{"iface_id": "eth0", "guest_mac": "52:54:00:12:34:56", "rate_limiter": ` + rl + `}`, 400, CodeInvalid, ""},
		{"patchNetUnknown", "running", "PATCH", "/network-interfaces/eth9", `{"iface_id": "eth9", "rate_limiter": ` + rl + `}`, 404, CodeNotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, m := fixture(t, tt.state)
			rec := do(s, tt.method, tt.path, tt.body)
			if rec.Code != tt.status {
				t.Fatalf("%s %s: status %d, want %d; body %s", tt.method, tt.path, rec.Code, tt.status, rec.Body)
			}
			if tt.status >= 400 {
				var e Error
				if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil {
					t.Fatalf("error body %q is not JSON: %v", rec.Body, err)
				}
				if e.Code != tt.code || e.Message == "" {
					t.Fatalf("error %+v, want code %q and a message", e, tt.code)
				}
				if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
			}
			if tt.status == 405 && rec.Header().Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
			last := ""
			if m != nil && len(m.calls) > 0 {
				last = m.calls[len(m.calls)-1]
			}
			if last != tt.call {
				t.Errorf("machine's last call %q, want %q", last, tt.call)
			}
		})
	}
}

// TestConfigureAndStart walks the Firecracker-style flow: PUTs, then
// InstanceStart; the launcher gets exactly the configuration given, and
// GET /vm reports it with the machine's state.
func TestConfigureAndStart(t *testing.T) {
	s, l, _ := fixture(t, "configured")
	for _, req := range [][3]string{
		{"PUT", "/machine-config", `{"vcpu_count": 2, "mem_size_mib": 256}`},
		{"PUT", "/drives/data", `{"drive_id": "data", "path_on_host": "/data.img", "is_read_only": true}`},
		// Replacing a drive keeps its slot.
		{"PUT", "/drives/root", `{"drive_id": "root", "path_on_host": "/root2.img"}`},
		{"PATCH", "/drives/data", `{"drive_id": "data", "rate_limiter": {"ops": {"size": 10, "refill_time": 100}}}`},
		{"PUT", "/rng", `{"enabled": true}`},
	} {
		if rec := do(s, req[0], req[1], req[2]); rec.Code != http.StatusNoContent {
			t.Fatalf("%s %s: %d %s", req[0], req[1], rec.Code, rec.Body)
		}
	}
	var info VMInfo
	rec := do(s, "GET", "/vm", "")
	if err := json.Unmarshal(rec.Body.Bytes(), &info); err != nil || info.State != StateNotStarted || info.VCPUs != 2 || info.MemoryBytes != 256<<20 {
		t.Fatalf("before start: %v %s", err, rec.Body)
	}
	if rec := do(s, "PUT", "/actions", `{"action_type": "InstanceStart"}`); rec.Code != http.StatusNoContent {
		t.Fatalf("InstanceStart: %d %s", rec.Code, rec.Body)
	}
	if len(l.started) != 1 {
		t.Fatalf("launcher started %d machines", len(l.started))
	}
	got := l.started[0].VMMConfig()
	if got.Kernel != "/vmlinux" || got.Cmdline != "console=ttyS0" || got.CPUs != 2 || got.MemoryBytes != 256<<20 || !got.RNG ||
		len(got.Disks) != 2 || got.Disks[0].Path != "/root2.img" || got.Disks[1].ID != "data" || !got.Disks[1].ReadOnly ||
		len(got.Nets) != 1 || got.Nets[0].Tap != "tap0" {
		t.Fatalf("launched with %+v", got)
	}
	if rl := got.Disks[1].RateLimit; rl.Ops.Size != 10 || rl.Ops.RefillTime != 100*time.Millisecond || rl.Bandwidth.Enabled() {
		t.Fatalf("pre-boot PATCH lost: %+v", got.Disks[1])
	}
	rec = do(s, "GET", "/vm", "")
	if err := json.Unmarshal(rec.Body.Bytes(), &info); err != nil || info.State != "running" || info.UptimeSeconds != 2 || len(info.Config.Drives) != 2 {
		t.Fatalf("after start: %v %s", err, rec.Body)
	}
	// The running machine is the launcher's: PATCH reaches it, by index.
	if rec := do(s, "PATCH", "/drives/data", `{"drive_id": "data", "rate_limiter": {"ops": {"size": 5, "refill_time": 100}}}`); rec.Code != http.StatusNoContent {
		t.Fatalf("PATCH: %d %s", rec.Code, rec.Body)
	}
	if _, ok := l.machine.limits[DeviceRef{Kind: KindDrive, ID: "data", Index: 1}]; !ok {
		t.Fatalf("limits %+v", l.machine.limits)
	}
}

// TestLauncherErrors: a failed start maps to the launcher's error class
// and leaves the vmm startable again.
func TestLauncherErrors(t *testing.T) {
	for _, tt := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("%w: kernel: no such file", ErrInvalid), 400, CodeInvalid},
		{fmt.Errorf("%w: no snapshots here", ErrUnsupported), 501, CodeUnsupported},
		{errors.New("KVM_CREATE_VM: EMFILE"), 500, CodeInternal},
	} {
		s, l, _ := fixture(t, "configured")
		l.startErr = tt.err
		rec := do(s, "PUT", "/actions", `{"action_type": "InstanceStart"}`)
		var e Error
		if rec.Code != tt.status || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Code != tt.code || !strings.Contains(e.Message, tt.err.Error()) {
			t.Errorf("start error %v: %d %s", tt.err, rec.Code, rec.Body)
		}
		l.startErr = nil
		if rec := do(s, "PUT", "/actions", `{"action_type": "InstanceStart"}`); rec.Code != http.StatusNoContent {
			t.Errorf("retry after %v: %d %s", tt.err, rec.Code, rec.Body)
		}

		s, l, _ = fixture(t, "fresh")
		l.restoreErr = tt.err
		if rec := do(s, "POST", "/restore", `{"dir": "/snap"}`); rec.Code != tt.status {
			t.Errorf("restore error %v: %d %s", tt.err, rec.Code, rec.Body)
		}
	}
}

// TestRestore: a restored vmm reports the snapshot's configuration and the
// machine's (paused) state, and takes no second start.
func TestRestore(t *testing.T) {
	s, l, _ := fixture(t, "fresh")
	if rec := do(s, "POST", "/restore", `{"dir": "/snap"}`); rec.Code != http.StatusNoContent {
		t.Fatalf("restore: %d %s", rec.Code, rec.Body)
	}
	var info VMInfo
	if err := json.Unmarshal(do(s, "GET", "/vm", "").Body.Bytes(), &info); err != nil || info.State != "paused" ||
		info.Config.BootSource == nil || info.Config.BootSource.KernelImagePath != "/restored/vmlinux" || l.restored[0] != "/snap" {
		t.Fatalf("after restore: %v %+v", err, info)
	}
	if rec := do(s, "PUT", "/vm/state", `{"state": "running"}`); rec.Code != http.StatusNoContent {
		t.Fatalf("resume: %d %s", rec.Code, rec.Body)
	}
	if rec := do(s, "PUT", "/boot-source", `{"kernel_image_path": "/k"}`); rec.Code != http.StatusConflict {
		t.Fatalf("configure after restore: %d", rec.Code)
	}
}

// TestMetrics checks the Prometheus exposition's names, labels and values.
func TestMetrics(t *testing.T) {
	s, _, _ := fixture(t, "running")
	rec := do(s, "GET", "/metrics", "")
	body := rec.Body.String()
	for _, want := range []string{
		`vmm_state{state="running"} 1`,
		`vmm_exits_total{reason="io"} 42`,
		`vmm_exits_total{reason="mmio"} 7`,
		`vmm_device_bytes_total{device="root",kind="drive"} 4096`,
		`vmm_device_ops_total{device="root",kind="drive"} 1`,
		`vmm_device_errors_total{device="root",kind="drive"} 0`,
		`vmm_vcpu_seconds_total{vcpu="0"} 1.5`,
		`vmm_uptime_seconds 2`,
		`vmm_vcpus 2`,
		`vmm_memory_bytes 2.68435456e+08`,
		`# TYPE vmm_exits_total counter`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q", ct)
	}
	s, _, _ = fixture(t, "fresh")
	body = do(s, "GET", "/metrics", "").Body.String()
	if !strings.Contains(body, `vmm_state{state="not_started"} 1`) || strings.Contains(body, "vmm_exits_total") {
		t.Errorf("metrics before start:\n%s", body)
	}
}

// blockingLauncher holds Start until released, so the test can look at
// the server while a start is under way.
type blockingLauncher struct {
	fakeLauncher
	entered, release chan struct{}
}

func (b *blockingLauncher) Start(ctx context.Context, cfg VMConfig) (Machine, error) {
	close(b.entered)
	<-b.release
	return b.fakeLauncher.Start(ctx, cfg)
}

// TestStarting: while InstanceStart builds the machine, GET /vm answers
// at once (starting), and configuration, a second start and a restore are
// refused.
func TestStarting(t *testing.T) {
	l := &blockingLauncher{entered: make(chan struct{}), release: make(chan struct{})}
	s := NewServer(Options{Launcher: l})
	if rec := do(s, "PUT", "/boot-source", `{"kernel_image_path": "/k"}`); rec.Code != http.StatusNoContent {
		t.Fatal(rec.Body)
	}
	done := make(chan *httptest.ResponseRecorder)
	go func() { done <- do(s, "PUT", "/actions", `{"action_type": "InstanceStart"}`) }()
	<-l.entered
	var info VMInfo
	if err := json.Unmarshal(do(s, "GET", "/vm", "").Body.Bytes(), &info); err != nil || info.State != StateStarting {
		t.Errorf("during start: %v %+v", err, info)
	}
	for _, req := range [][3]string{
		{"PUT", "/machine-config", `{"vcpu_count": 1, "mem_size_mib": 64}`},
		{"PUT", "/actions", `{"action_type": "InstanceStart"}`},
		{"PATCH", "/drives/x", `{"drive_id": "x", "rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}`},
		{"PUT", "/vm/state", `{"state": "paused"}`},
	} {
		if rec := do(s, req[0], req[1], req[2]); rec.Code != http.StatusConflict {
			t.Errorf("%s %s during start: %d %s", req[0], req[1], rec.Code, rec.Body)
		}
	}
	close(l.release)
	if rec := <-done; rec.Code != http.StatusNoContent {
		t.Fatalf("InstanceStart: %d %s", rec.Code, rec.Body)
	}
}

// panicMachine's every method panics: the server must answer 500, not die.
type panicMachine struct{ fakeMachine }

func (p *panicMachine) Shutdown() error { panic("boom") }

func TestHandlerPanicIsA500(t *testing.T) {
	s := NewServer(Options{})
	s.Attach(&panicMachine{*newFakeMachine("running")}, testConfig())
	rec := do(s, "POST", "/vm/shutdown", "")
	var e Error
	if rec.Code != 500 || json.Unmarshal(rec.Body.Bytes(), &e) != nil || e.Code != CodeInternal {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

func TestConfigFromVMM(t *testing.T) {
	c := testConfig()
	back := ConfigFromVMM(c.VMMConfig())
	if back.Drives[0].DriveID != "root" || back.NetworkInterfaces[0].IfaceID != "net0" || back.MachineConfig != c.MachineConfig {
		t.Fatalf("round trip %+v", back)
	}
	c.Drives[0].RateLimiter = &RateLimiter{Bandwidth: &TokenBucket{Size: 1 << 20, RefillTimeMs: 500, OneTimeBurst: 4096}}
	back = ConfigFromVMM(c.VMMConfig())
	if rl := back.Drives[0].RateLimiter; rl == nil || *rl.Bandwidth != *c.Drives[0].RateLimiter.Bandwidth || rl.Ops != nil {
		t.Fatalf("rate limiter round trip %+v", rl)
	}
	c.Drives[0].DriveID = ""
	if got := ConfigFromVMM(c.VMMConfig()).Drives[0].DriveID; got != "drive0" {
		t.Fatalf("unnamed drive is %q", got)
	}
}
