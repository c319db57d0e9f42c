package agent

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/state"
)

// TestReadoption stops an agent while its guest runs (as kill -9 would:
// nothing is cleaned up), starts a new agent on the same data directory
// and checks that it adopts the running vmm (same pid, never restarted),
// that it still drives it, and that the vmm's later death is reported with
// the exit status the first agent's reaper recorded.
func TestReadoption(t *testing.T) {
	c := newCluster(t, 1)
	data := t.TempDir()
	stop1 := c.startAgent(data, nil)
	id := c.create("db", api.InstanceRequest{Image: c.disk.ID})
	c.waitState(id, state.InstanceRunning, nil)
	dir := filepath.Join(data, "instances", id)
	pid := readPID(t, dir)
	// A second agent on the same directory is refused while the first runs.
	exe, _ := os.Executable()
	err := Run(t.Context(), Config{Servers: []string{c.srv.HTTPAddr()}, DataDir: data, VMMPath: exe, Logger: testLogger(t)})
	if !errors.Is(err, ErrDataDirInUse) {
		t.Fatalf("second agent on the same data directory: %v", err)
	}
	stop1()
	if !alive(pid) {
		t.Fatalf("vmm %d died with its agent", pid)
	}

	c.startAgent(data, nil)
	// Proof of adoption: the new agent pauses the same process.
	c.action(id, state.ActionPause)
	c.waitState(id, state.InstancePaused, nil)
	if p := readPID(t, dir); p != pid || !alive(pid) {
		t.Fatalf("after re-adoption pid %d (alive %v), want %d", p, alive(pid), pid)
	}
	console, _ := os.ReadFile(filepath.Join(dir, fileConsole))
	if n := bytes.Count(console, []byte("booted")); n != 1 {
		t.Fatalf("the guest booted %d times, want once", n)
	}
	// The console input still reaches the adopted guest.
	writeConsole(t, dir, "still there")
	info, err := NewVMMClient(filepath.Join(dir, fileSocket)).Info(t.Context())
	if err != nil || info.State != "paused" {
		t.Fatalf("vmm state %v %v, want paused", info, err)
	}

	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	in := c.waitState(id, state.InstanceError, nil)
	if r := lastReason(in); !strings.Contains(r, "exited: signal: killed") {
		t.Errorf("reason %q does not give the exit status", r)
	}
}

// TestAdoptionRefusesStrangers checks that a pid file naming a process
// that is not this instance's vmm is not adopted and the instance is
// reported failed instead.
func TestAdoptionRefusesStrangers(t *testing.T) {
	c := newCluster(t, 1)
	data := t.TempDir()
	stop1 := c.startAgent(data, nil)
	id := c.create("x", api.InstanceRequest{Image: c.disk.ID})
	c.waitState(id, state.InstanceRunning, nil)
	dir := filepath.Join(data, "instances", id)
	pid := readPID(t, dir)
	stop1()
	// The vmm dies while no agent runs; its pid file now names the test
	// process itself, alive but no vmm.
	syscall.Kill(pid, syscall.SIGKILL)
	waitFor(t, "the first agent's reaper", 5*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(dir, fileExitStatus))
		return err == nil
	})
	os.Remove(filepath.Join(dir, fileExitStatus))
	if err := os.WriteFile(filepath.Join(dir, filePID), []byte(itoa(os.Getpid())), 0o600); err != nil {
		t.Fatal(err)
	}
	c.startAgent(data, nil)
	in := c.waitState(id, state.InstanceError, nil)
	if r := lastReason(in); !strings.Contains(r, "not running after an agent restart: "+statusUnknown) {
		t.Errorf("reason %q", r)
	}
}

// TestVMMDeath kills a running vmm and checks the report and the restart
// policy.
func TestVMMDeath(t *testing.T) {
	tests := []struct {
		policy  string
		restart bool
	}{
		{"", false},
		{state.RestartNever, false},
		{state.RestartOnFailure, true},
		{state.RestartAlways, true},
	}
	c := newCluster(t, 1)
	data := t.TempDir()
	c.startAgent(data, nil)
	for _, tc := range tests {
		t.Run("policy="+tc.policy, func(t *testing.T) {
			c := c.with(t)
			id := c.create("p"+strings.ReplaceAll(tc.policy, "-", ""), api.InstanceRequest{Image: c.disk.ID, RestartPolicy: tc.policy})
			c.waitState(id, state.InstanceRunning, nil)
			dir := filepath.Join(data, "instances", id)
			pid := readPID(t, dir)
			syscall.Kill(pid, syscall.SIGKILL)
			if !tc.restart {
				in := c.waitState(id, state.InstanceError, nil)
				if r := lastReason(in); !strings.Contains(r, "exited: signal: killed") {
					t.Errorf("reason %q", r)
				}
				time.Sleep(300 * time.Millisecond)
				if in := c.instance(id); in.State != state.InstanceError {
					t.Errorf("restarted without a restart policy: %s", in.State)
				}
				return
			}
			in := c.waitState(id, state.InstanceRunning, func(in *state.Instance) bool { return len(in.History) >= 7 })
			var states []string
			for _, h := range in.History[3:] {
				states = append(states, h.State)
			}
			if got := strings.Join(states, " "); got != "running error building running" {
				t.Errorf("states after the first start: %s", got)
			}
			if r := in.History[4].Reason; !strings.Contains(r, "exited: signal: killed") {
				t.Errorf("error reason %q", r)
			}
			if p := readPID(t, dir); p == pid || !alive(p) {
				t.Errorf("restarted vmm pid %d (old %d)", p, pid)
			}
		})
	}
}

// TestGuestPowerOff checks that a guest that powers itself off leaves the
// instance stopped (not error), and restarted only under policy always.
func TestGuestPowerOff(t *testing.T) {
	c := newCluster(t, 1)
	data := t.TempDir()
	c.startAgent(data, nil)
	for _, policy := range []string{state.RestartOnFailure, state.RestartAlways} {
		t.Run(policy, func(t *testing.T) {
			c := c.with(t)
			id := c.create("off"+strings.ReplaceAll(policy, "-", ""), api.InstanceRequest{Image: c.disk.ID, RestartPolicy: policy})
			c.waitState(id, state.InstanceRunning, nil)
			dir := filepath.Join(data, "instances", id)
			pid := readPID(t, dir)
			// What the guest's poweroff looks like from outside: vmm exits 0.
			if err := NewVMMClient(filepath.Join(dir, fileSocket)).Shutdown(t.Context()); err != nil {
				t.Fatal(err)
			}
			var in *state.Instance
			if policy == state.RestartAlways {
				// stopped, then running again (too briefly stopped to poll).
				in = c.waitState(id, state.InstanceRunning, func(in *state.Instance) bool { return len(in.History) > 5 })
				if p := readPID(t, dir); p == pid {
					t.Errorf("not restarted")
				}
			} else {
				c.waitState(id, state.InstanceStopped, nil)
				time.Sleep(300 * time.Millisecond)
				if in = c.instance(id); in.State != state.InstanceStopped {
					t.Errorf("state %s after power-off with policy %s", in.State, policy)
				}
			}
			if h := in.History[4]; h.State != state.InstanceStopped || h.Reason != "guest powered off (vmm exit status 0)" {
				t.Errorf("after the power-off: %+v", h)
			}
		})
	}
}

// TestVMMFailsAtStart checks that a vmm that exits during start makes the
// instance error with its status and log line, and leaves no disk.
func TestVMMFailsAtStart(t *testing.T) {
	c := newCluster(t, 1)
	data := t.TempDir()
	c.startAgent(data, func(cfg *Config) { cfg.VMMEnv = append(cfg.VMMEnv, fakeExitOnStart+"=2") })
	id := c.create("bad", api.InstanceRequest{Image: c.disk.ID})
	in := c.waitState(id, state.InstanceError, nil)
	if r := lastReason(in); !strings.Contains(r, "vmm exited during start: exit status 2") || !strings.Contains(r, "fake failure at start") {
		t.Errorf("reason %q", r)
	}
	// Only the logs stay: they tell why.
	ents, _ := os.ReadDir(filepath.Join(data, "instances", id))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "console.log vmm.log" {
		t.Errorf("left in the instance directory: %s", got)
	}
}

// writeConsole writes a line to the instance's console input and waits for
// the fake's echo in the console log.
func writeConsole(t *testing.T, dir, line string) {
	t.Helper()
	if !echoConsole(t, dir, line) {
		t.Fatalf("timed out waiting for console echo of %s", line)
	}
}

// echoConsole writes a line to the console input and reports whether its
// echo shows up in the console logs within 5 s.
func echoConsole(t *testing.T, dir, line string) bool {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(dir, fileConsoleIn), os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(line + "\n")
	f.Close()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		// The agent may have rotated the line out already.
		var all []byte
		for _, name := range []string{".3", ".2", ".1", ""} {
			b, _ := os.ReadFile(filepath.Join(dir, fileConsole+name))
			all = append(all, b...)
		}
		if bytes.Contains(all, []byte("input: "+line+"\n")) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TestConsoleRotation has the guest write more than the console limit and
// checks that the agent rotates the log while vmm keeps writing to it.
func TestConsoleRotation(t *testing.T) {
	c := newCluster(t, 1)
	data := t.TempDir()
	c.startAgent(data, func(cfg *Config) { cfg.ConsoleMaxBytes, cfg.ConsoleFiles = 4096, 2 })
	id := c.create("chatty", api.InstanceRequest{Image: c.disk.ID})
	c.waitState(id, state.InstanceRunning, nil)
	dir := filepath.Join(data, "instances", id)
	// Write until two rotations happened (how many lines that takes
	// depends on when the agent's checks fall).
	deadline := time.Now().Add(15 * time.Second)
	// Copy-and-truncate rotation can lose what vmm writes in the instant
	// between the agent's last read and its truncate (docs/AGENT.md), so
	// a lost echo is counted, not fatal; an echo path that loses most
	// lines is.
	lost, lines := 0, 0
	for i := 0; ; i++ {
		lines++
		if !echoConsole(t, dir, strings.Repeat("x", 400)+itoa(i)) {
			lost++
		}
		if _, err := os.Stat(filepath.Join(dir, fileConsole+".2")); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if lost > 0 {
		t.Logf("%d of %d echoed lines lost across rotations", lost, lines)
	}
	if lost > lines/2 {
		t.Errorf("%d of %d console echoes lost", lost, lines)
	}
	// The loop may stop in the middle of a rotation: .1 moved to .2 and
	// the new .1 not yet (fully) written. Give that rotation time to end.
	for _, name := range []string{fileConsole + ".1", fileConsole + ".2"} {
		waitFor(t, name+" kept, over the limit", 5*time.Second, func() bool {
			st, err := os.Stat(filepath.Join(dir, name))
			return err == nil && st.Size() > 4096
		})
	}
	if _, err := os.Stat(filepath.Join(dir, fileConsole+".3")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a third old log is kept")
	}
	waitFor(t, "rotation of the current log", 5*time.Second, func() bool {
		st, err := os.Stat(filepath.Join(dir, fileConsole))
		return err == nil && st.Size() <= 4096
	})
	// The writer continues in the rotated file, without a hole.
	writeConsole(t, dir, "after")
	b, _ := os.ReadFile(filepath.Join(dir, fileConsole))
	if bytes.IndexByte(b, 0) >= 0 {
		t.Errorf("the console log has a hole: vmm did not write at the end")
	}
}

// TestRestartKeepsTrying makes the restarts themselves fail for a while:
// the agent must keep retrying with backoff and recover once the vmm can
// start again.
func TestRestartKeepsTrying(t *testing.T) {
	c := newCluster(t, 1)
	data := t.TempDir()
	c.startAgent(data, nil)
	id := c.create("stubborn", api.InstanceRequest{Image: c.disk.ID, RestartPolicy: state.RestartOnFailure})
	c.waitState(id, state.InstanceRunning, nil)
	dir := filepath.Join(data, "instances", id)
	if err := os.WriteFile(filepath.Join(dir, fakeFailFile), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	syscall.Kill(readPID(t, dir), syscall.SIGKILL)
	failedRestarts := func(in *state.Instance) int {
		n := 0
		for _, h := range in.History {
			if h.State == state.InstanceError && strings.Contains(h.Reason, "fail-start file") {
				n++
			}
		}
		return n
	}
	waitFor(t, "two failed restarts", 20*time.Second, func() bool { return failedRestarts(c.instance(id)) >= 2 })
	os.Remove(filepath.Join(dir, fakeFailFile))
	in := c.waitState(id, state.InstanceRunning, func(in *state.Instance) bool { return failedRestarts(in) >= 2 })
	if !alive(readPID(t, dir)) {
		t.Errorf("running without a live vmm: %+v", in.History)
	}
}

// TestAdoptedExitStatus checks what an agent that adopted a vmm (and so
// cannot wait for it) reports when it ends: the status vmm wrote itself
// when it could (a guest power-off, a kill through the API), and "unknown"
// when nothing could write it (SIGKILL).
func TestAdoptedExitStatus(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		end  func(t *testing.T, sock string, pid int)
		code int
		want string
	}{
		{"power-off", func(t *testing.T, sock string, _ int) {
			if err := NewVMMClient(sock).Shutdown(t.Context()); err != nil {
				t.Fatal(err)
			}
		}, 0, "exit status 0"},
		{"api-kill", func(t *testing.T, sock string, _ int) {
			if err := NewVMMClient(sock).Kill(t.Context()); err != nil {
				t.Fatal(err)
			}
		}, 5, "exit status 5"},
		{"sigkill", func(t *testing.T, _ string, pid int) { syscall.Kill(pid, syscall.SIGKILL) }, -1, statusUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			kernel := filepath.Join(dir, "kernel")
			if err := os.WriteFile(kernel, []byte("k"), 0o600); err != nil {
				t.Fatal(err)
			}
			sock := filepath.Join(dir, fileSocket)
			// Started here, not by startVMM: no reaper writes the status.
			cmd := exec.Command(exe, "--api-socket", sock, "--exit-status-file", filepath.Join(dir, fileExitStatus), "--kernel", kernel)
			cmd.Env = append(os.Environ(), fakeVMMEnv+"=1")
			cmd.Dir = dir
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer cmd.Wait()
			defer cmd.Process.Kill()
			if err := os.WriteFile(filepath.Join(dir, filePID), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			var p *vmmProcess
			waitFor(t, "the vmm adopted", 10*time.Second, func() bool {
				p, err = adoptVMM(t.Context(), exe, dir)
				return err == nil
			})
			tt.end(t, sock, cmd.Process.Pid)
			select {
			case <-p.done:
			case <-time.After(15 * time.Second):
				t.Fatal("the adopted vmm's end was not noticed")
			}
			if p.code != tt.code || p.status != tt.want {
				t.Errorf("code %d, status %q; want %d, %q", p.code, p.status, tt.code, tt.want)
			}
		})
	}
}
