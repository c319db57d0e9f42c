package main

import (
	"strings"
	"testing"
	"time"

	"kvmstack/orchestrator/server"
	"kvmstack/orchestrator/state"
)

// TestEvacuateCLI: host a stops heartbeating on the server's (fake) clock,
// `instance evacuate NAME` moves its instance to b, `host evacuate` of an
// up host fails with the server's 409.
func TestEvacuateCLI(t *testing.T) {
	clock := server.NewManualClock(time.Now().UTC())
	run, _, s := cliServerWith(t, func(c *server.Config) {
		c.HostTTL, c.HostCheckInterval, c.Clock = 30*time.Second, 20*time.Millisecond, clock
	})
	// b is registered after web is placed, so web is on a.
	for _, cmd := range []string{
		"flavor create m1 --vcpus 1 --memory 256",
		"host create a --vcpus 2 --memory 1024",
		"instance create web --flavor m1 --wait 10s",
		"host create b --vcpus 2 --memory 1024",
	} {
		if _, err := run(cmd); err != nil {
			t.Fatalf("%s: %v", cmd, err)
		}
	}
	clock.Advance(31 * time.Second)
	if _, err := run("host heartbeat b"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if h, _ := s.Store().Read(nil).Host("a"); h != nil && h.Down {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("host a not marked down")
		}
	}
	if _, err := run("host evacuate b"); err == nil || !strings.Contains(err.Error(), "409") {
		t.Fatalf("evacuate an up host: %v", err)
	}
	out, err := run("instance evacuate web")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Store().Read(nil).Host("b")
	if !strings.Contains(out, state.InstanceBuilding) || !strings.Contains(out, b.ID) {
		t.Fatalf("evacuate output:\n%s", out)
	}
	out, err = run("-o json host evacuate a")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Fatalf("evacuating the emptied host: %v %q", err, out)
	}
}
