package e2e

import (
	"bytes"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tickLine is what the guest loop of TestPauseResume prints: its uptime.
var tickLine = regexp.MustCompile(`(?m)^TICK (\d+\.\d+)\r?$`)

// ticks returns the uptimes printed so far.
func ticks(console string) []float64 {
	var out []float64
	for _, m := range tickLine.FindAllStringSubmatch(console, -1) {
		v, err := strconv.ParseFloat(m[1], 64)
		if err == nil {
			out = append(out, v)
		}
	}
	return out
}

// waitTicks waits until the guest printed at least n ticks.
func waitTicks(t *testing.T, p *vmmProc, n int, timeout time.Duration) []float64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ts := ticks(p.console.String())
		if len(ts) >= n {
			return ts
		}
		select {
		case <-p.done:
			t.Fatalf("vmm exited with %d of %d ticks\nconsole:\n%s\nstderr:\n%s", len(ts), n, tail(p.console.String()), p.stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d ticks after %v\nconsole:\n%s", len(ts), n, timeout, tail(p.console.String()))
		}
	}
}

// TestPauseResume: a guest printing its /proc/uptime in a loop prints
// nothing while paused; after resume it goes on, and its clock skipped the
// pause (vmm saves and restores kvmclock). Wrong-state requests get 409.
func TestPauseResume(t *testing.T) {
	p, c := startWithAPI(t, `while :; do read -r up _ </proc/uptime; echo "TICK $up"; sleep 0.2; done`)
	before := waitTicks(t, p, 4, 2*time.Minute)
	gap := (before[len(before)-1] - before[0]) / float64(len(before)-1)

	c.must("PUT", "/vm/state", `{"state":"paused"}`, http.StatusNoContent)
	pausedAt := time.Now()
	if v := c.info(); v.State != "paused" {
		t.Fatalf("GET /vm after pause: state %q", v.State)
	}
	for _, req := range []struct{ method, path, body string }{
		{"PUT", "/vm/state", `{"state":"paused"}`},
		{"POST", "/vm/shutdown", ""},
	} {
		if code, body := c.do(req.method, req.path, req.body); code != http.StatusConflict {
			t.Errorf("%s %s %s while paused: %d %s, want 409", req.method, req.path, req.body, code, body)
		}
	}
	// A line the guest wrote just before it stopped may still be on its
	// way through the console pipe.
	time.Sleep(300 * time.Millisecond)
	frozen := p.console.String()
	const pause = 3 * time.Second
	time.Sleep(pause)
	if now := p.console.String(); now != frozen {
		t.Fatalf("the paused guest wrote to its console:\n%q", strings.TrimPrefix(now, frozen))
	}
	last := ticks(frozen)
	pausedFor := time.Since(pausedAt)

	c.must("PUT", "/vm/state", `{"state":"running"}`, http.StatusNoContent)
	if v := c.info(); v.State != "running" {
		t.Fatalf("GET /vm after resume: state %q", v.State)
	}
	after := waitTicks(t, p, len(last)+3, 2*time.Minute)
	prev, next := last[len(last)-1], after[len(last)]
	for i := 1; i < len(after); i++ {
		if after[i] < after[i-1] {
			t.Fatalf("guest uptime went back: %v", after)
		}
	}
	// Without the kvmclock restore the guest would see the whole pause.
	jump := next - prev
	t.Logf("ticks every %.2fs before the pause; paused %v; uptime %.2f → %.2f across it", gap, pausedFor.Round(time.Millisecond), prev, next)
	if jump >= pausedFor.Seconds() || jump > 3*gap+1 {
		t.Errorf("guest clock advanced %.2fs over a %v pause (ticks %.2fs apart): the pause is visible to guest time", jump, pausedFor, gap)
	}

	c.must("POST", "/vm/kill", "", http.StatusNoContent)
	if r := p.wait(t); r.status != exitStopped {
		t.Fatalf("status %d after kill, want %d\nstderr:\n%s", r.status, exitStopped, r.stderr)
	}
}

// kitHasPowerButton reports whether the kit kernel has the ACPI tiny power
// button driver (firmware/kit/kit.config): its driver name is in the image.
func kitHasPowerButton(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile(kitVmlinux)
	if err != nil {
		t.Fatalf("kit kernel: %v", err)
	}
	return bytes.Contains(b, []byte("tiny-power-button\x00"))
}

// TestShutdownPowersOff: POST /vm/shutdown presses the ACPI power button;
// the guest kernel signals its init, the kit prints its line, syncs and
// powers off through ACPI, and vmm exits with the power-off status.
func TestShutdownPowersOff(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd)
	if !kitHasPowerButton(t) {
		t.Fatal("the kit kernel predates CONFIG_ACPI_TINY_POWER_BUTTON: rebuild the kit (bash firmware/kit/build.sh)")
	}
	p, c := startWithAPI(t, "sleep 600; echo slept")
	pressed := time.Now()
	c.must("POST", "/vm/shutdown", "", http.StatusNoContent)
	r := p.wait(t)
	if r.status != exitPowerOff {
		t.Fatalf("status %d after POST /vm/shutdown, want %d (power-off)\nconsole:\n%s\nstderr:\n%s", r.status, exitPowerOff, tail(r.console), r.stderr)
	}
	if !strings.Contains(r.console, "KIT POWER BUTTON") {
		t.Fatalf("the kit did not report the power button\nconsole:\n%s", tail(r.console))
	}
	if strings.Contains(r.console, "slept") || strings.Contains(r.console, "KIT EXIT") {
		t.Fatalf("the guest ran its command to the end instead of powering off\nconsole:\n%s", tail(r.console))
	}
	t.Logf("power button to vmm exit: %v", time.Since(pressed).Round(time.Millisecond))
}
