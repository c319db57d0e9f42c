package cloud

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/state"
)

// vmmPID reads the pid the agent recorded for the guest's vmm.
func (g *guest) vmmPID(t *testing.T) int {
	t.Helper()
	d, _ := g.dir(t)
	raw, err := os.ReadFile(filepath.Join(d, "vmm.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// alive has the guest print a token on its console: it runs and reads its
// console input.
func (g *guest) answers(t *testing.T, token string) {
	t.Helper()
	g.send(t, "a "+token)
	g.waitConsole(t, regexp.MustCompile(`GUEST ALIVE `+regexp.QuoteMeta(token)), time.Minute)
}

// cleanup deletes the guests and the network once the test is over.
func (c *cloud) cleanup(t *testing.T, netID string, guests ...*guest) {
	t.Helper()
	for _, g := range guests {
		g.delete(t)
	}
	if netID == "" {
		return
	}
	if err := waitUntil(time.Minute, "network deleted", func() error {
		return c.api.DeleteNetwork(context.Background(), netID)
	}); err != nil {
		t.Fatal(err)
	}
}

// TestAgentKillReadopt kills an agent with SIGKILL while its guest runs:
// the guest keeps running and serving (console, network) while the host is
// marked down, and the agent started again adopts the same vmm without a reboot and drives it (a
// pause and a resume through the adopted vmm's API); the adopted vmm's
// death is reported too. An instance deleted while its agent is dead is
// cleared by the next agent.
func TestAgentKillReadopt(t *testing.T) {
	c := getCloud(t)
	start := time.Now()
	n := c.newNetwork(t, "net-readopt", "10.62.0.0/24")
	group := c.antiAffinity(t, "spread-readopt")
	g1 := c.createGuest(t, "readopt-1", group, n.ID)
	g2 := c.createGuest(t, "readopt-2", group, n.ID)
	for _, g := range []*guest{g1, g2} {
		g.waitState(t, state.InstanceRunning, guestBoot, nil)
		g.waitAddress(t, guestBoot)
	}
	if !g1.pingUntil(t, g2.ip, 3) {
		t.Fatal("guests cannot ping each other before the agent is killed")
	}
	_, h := g1.dir(t)
	pid := g1.vmmPID(t)
	before, _ := g1.view()
	t.Logf("guests up after %v; killing %s's agent (pid %d), its vmm is pid %d", time.Since(start).Round(100*time.Millisecond), h.name, h.agent.pid(), pid)
	killed := time.Now()
	h.agent.kill()

	if !alive(pid) {
		t.Fatalf("vmm pid %d died with its agent", pid)
	}
	g1.answers(t, "without-agent")
	if !g2.pingUntil(t, g1.ip, 2) {
		t.Fatal("the guest of the killed agent no longer answers pings")
	}
	// Without heartbeats the host goes down, its guest with it as far as
	// the cluster knows; the guest itself runs on.
	if err := c.waitDown(h); err != nil {
		t.Fatal(err)
	}
	g1.waitState(t, state.InstanceHostDown, time.Minute, nil)
	t.Logf("%s marked down %v after its agent's kill", h.name, time.Since(killed).Round(100*time.Millisecond))
	if !alive(pid) {
		t.Fatalf("vmm pid %d died while its host was marked down", pid)
	}

	if err := c.startAgent(h, nil); err != nil {
		t.Fatal(err)
	}
	adopted := regexp.MustCompile(fmt.Sprintf(`msg="adopted vmm" .*instance=%s pid=%d\b`, g1.id, pid))
	if err := waitUntil(time.Minute, "the new agent adopting the vmm", func() error {
		if !adopted.MatchString(h.agent.tail(200)) {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\nagent log:\n%s", err, h.agent.tail(40))
	}
	t.Logf("agent restarted and adopted pid %d after %v", pid, time.Since(start).Round(100*time.Millisecond))
	// The host is back: the instance returns to running, not rebooted.
	g1.waitState(t, state.InstanceRunning, time.Minute, nil)
	if _, err := c.api.InstanceAction(context.Background(), g1.id, state.ActionPause); err != nil {
		t.Fatal(err)
	}
	g1.waitState(t, state.InstancePaused, time.Minute, nil)
	if _, err := c.api.InstanceAction(context.Background(), g1.id, state.ActionResume); err != nil {
		t.Fatal(err)
	}
	after := g1.waitState(t, state.InstanceRunning, time.Minute, func(in *state.Instance) bool {
		return len(in.History) > len(before.History)
	})
	if got := g1.vmmPID(t); got != pid {
		t.Fatalf("vmm pid changed from %d to %d: the guest was restarted, not adopted", pid, got)
	}
	for _, tr := range after.History[len(before.History):] {
		if tr.State == state.InstanceError || tr.State == state.InstanceBuilding {
			t.Errorf("after the agent restart the instance went %s (%s)", tr.State, tr.Reason)
		}
	}
	if n := strings.Count(g1.console(t), "KIT READY"); n != 1 {
		t.Errorf("the guest booted %d times", n)
	}
	g1.answers(t, "after-readoption")
	// The new agent runs the host's DHCP server again.
	g1.renewLease(t)
	if !g1.pingUntil(t, g2.ip, 2) {
		t.Fatal("the adopted guest cannot ping its peer after pause and resume")
	}
	// The adopted vmm is not the new agent's child: its death is still
	// seen (through its pidfd) and reported.
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	in := g1.waitState(t, state.InstanceError, time.Minute, nil)
	if r, want := lastReason(in), fmt.Sprintf("vmm pid %d exited: ", pid); !strings.Contains(r, want) {
		t.Errorf("reason %q, want it to say %q", r, want)
	}

	// An instance deleted while its agent is dead: the next agent finds
	// its vmm and directory, which the cluster no longer has on the host,
	// and removes them with the TAP and the network's links.
	d2, h2 := g2.dir(t)
	pid2 := g2.vmmPID(t)
	h2.agent.kill()
	g2.delete(t)
	if err := c.startAgent(h2, nil); err != nil {
		t.Fatal(err)
	}
	if err := waitUntil(time.Minute, h2.name+" cleared of the deleted instance", func() error {
		if alive(pid2) {
			return fmt.Errorf("vmm pid %d still runs", pid2)
		}
		return cleared(h2)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d2); err == nil {
		t.Errorf("%s is still there", d2)
	}
	c.cleanup(t, n.ID, g1)
	t.Logf("done after %v", time.Since(start).Round(100*time.Millisecond))
}

// TestVMMKilled kills a guest's vmm: the instance turns to error with the
// exit status in its reason. A guest with the on-failure restart policy
// comes back instead, booted by a new vmm, and leases its address again.
func TestVMMKilled(t *testing.T) {
	c := getCloud(t)
	n := c.newNetwork(t, "net-restart", "10.64.0.0/24")
	g := c.createGuest(t, "victim", "")
	r := c.create(t, api.InstanceRequest{Name: "phoenix", Networks: []string{n.ID}, RestartPolicy: state.RestartOnFailure})
	g.waitState(t, state.InstanceRunning, guestBoot, nil)
	g.waitConsole(t, regexp.MustCompile(`KIT READY`), guestBoot)
	r.waitState(t, state.InstanceRunning, guestBoot, nil)
	r.waitAddress(t, guestBoot)
	pid, rpid := g.vmmPID(t), r.vmmPID(t)
	d, _ := g.dir(t)
	for _, p := range []int{pid, rpid} {
		if err := syscall.Kill(p, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}
	in := g.waitState(t, state.InstanceError, time.Minute, nil)
	want := fmt.Sprintf("vmm pid %d exited: signal: killed", pid)
	if r := lastReason(in); !strings.Contains(r, want) {
		t.Fatalf("reason %q, want it to say %q", r, want)
	}
	if b, err := os.ReadFile(filepath.Join(d, "exit-status")); err != nil || strings.TrimSpace(string(b)) != "signal: killed" {
		t.Errorf("exit-status file: %q, %v", b, err)
	}

	rwant := fmt.Sprintf("vmm pid %d exited: signal: killed", rpid)
	r.waitState(t, state.InstanceRunning, guestBoot, func(in *state.Instance) bool {
		for _, tr := range in.History {
			if tr.State == state.InstanceError && strings.Contains(tr.Reason, rwant) {
				return true
			}
		}
		return false
	})
	if np := r.vmmPID(t); np == rpid {
		t.Fatalf("phoenix runs with the killed vmm's pid %d", np)
	}
	r.waitConsole(t, regexp.MustCompile(`(?s)GUEST ADDR `+regexp.QuoteMeta(r.ip)+`\r?\n.*KIT READY.*GUEST ADDR `+regexp.QuoteMeta(r.ip)+`\r?\n`), guestBoot)

	c.cleanup(t, n.ID, g, r)
	if err := waitUntil(time.Minute, "the instance directory removed", func() error {
		if _, err := os.Stat(d); err == nil {
			return errNotYet
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestDiskFull runs a fourth host whose agent's data directory is a small
// tmpfs: the kit's kernel and initrd fit, a disk image fits in the image
// cache, but the instance's copy of it does not. The instance turns to
// error with the reason and nothing half-made stays behind.
func TestDiskFull(t *testing.T) {
	c := getCloud(t)
	ctx := context.Background()
	img := make([]byte, 4<<20)
	rand.Read(img)
	imgPath := filepath.Join(c.dir, "disk-4m.raw")
	if err := os.WriteFile(imgPath, img, 0o600); err != nil {
		t.Fatal(err)
	}
	disk, err := c.uploadFile(ctx, "random-4m", state.ImageDisk, imgPath)
	if err != nil {
		t.Fatal(err)
	}
	h, err := c.addHost(4)
	if err != nil {
		t.Fatal(err)
	}
	defer c.removeHost(t, h)
	// The kit's vmlinux (16.0 MiB) and initrd (1.9 MiB) leave 6 MiB of
	// 24: the 4 MiB image fits in the cache, the instance's copy of it
	// does not.
	if err := syscall.Mount("tmpfs", h.dataDir, "tmpfs", 0, "size=24m,mode=0700"); err != nil {
		t.Skipf("tmpfs: %v", err)
	}
	// After removeHost (deferred above) has ended the agent using it.
	t.Cleanup(func() { _ = syscall.Unmount(h.dataDir, syscall.MNT_DETACH) })
	if err := c.startAgent(h, []string{c.hosts[0].httpAddr()}); err != nil {
		t.Fatal(err)
	}
	if err := c.waitHostsUp(4); err != nil {
		t.Fatal(err)
	}
	// Only the full host may take the instance.
	for _, o := range c.hosts[:3] {
		c.setEnabled(t, o, false)
		defer c.setEnabled(t, o, true)
	}
	g := c.create(t, api.InstanceRequest{Name: "full", Image: disk.ID})
	in := g.waitState(t, state.InstanceError, 2*time.Minute, nil)
	if on, err := c.hostOf(in); err != nil || on != h {
		t.Fatalf("instance placed on %v (%v), not the full host", on, err)
	}
	if r := lastReason(in); !strings.Contains(r, "no space left on device") {
		t.Fatalf("reason %q does not say the disk is full", r)
	}
	t.Logf("reason: %s", lastReason(in))
	var left []string
	_ = filepath.Walk(h.dataDir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return nil
		}
		rel, _ := filepath.Rel(h.dataDir, p)
		switch {
		case strings.HasPrefix(rel, "instances/") || strings.HasPrefix(rel, "images/tmp/"):
			left = append(left, rel)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("left behind in the data directory: %v", left)
	}
	pids, _ := namespacePIDs(h)
	for _, pid := range pids {
		if pid != h.agent.pid() {
			exe, _ := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
			t.Errorf("process %d (%s) runs on the full host", pid, exe)
		}
	}
	c.cleanup(t, "", g)
}

func (c *cloud) setEnabled(t *testing.T, h *host, on bool) {
	t.Helper()
	hv, err := c.hostView(h)
	if err != nil {
		t.Fatal(err)
	}
	verb := "disable"
	if on {
		verb = "enable"
	}
	if _, err := c.api.Do(context.Background(), http.MethodPost, "/v1/hosts/"+hv.ID+"/"+verb, nil, nil, nil); err != nil {
		t.Fatalf("%s %s: %v", verb, h.name, err)
	}
}

// removeHost ends an extra host: its processes, its registration, its
// namespace.
func (c *cloud) removeHost(t *testing.T, h *host) {
	if t.Failed() && h.agent != nil {
		t.Logf("---- %s log tail:\n%s", h.agent.name, h.agent.tail(60))
	}
	if h.agent != nil {
		h.agent.kill()
	}
	killNamespaceProcs(h)
	if hv, err := c.hostView(h); err == nil {
		if _, err := c.api.Do(context.Background(), http.MethodDelete, "/v1/hosts/"+hv.ID, nil, nil, nil); err != nil {
			t.Logf("delete host %s: %v", h.name, err)
		}
	}
	h.ns.Close()
	for i, o := range c.hosts {
		if o == h {
			c.hosts = append(c.hosts[:i], c.hosts[i+1:]...)
			break
		}
	}
}

// TestHostDownEvacuate kills every process of a host (server, agent, vmm):
// the cluster marks the host down within its TTL, evacuation rebuilds its
// instance on another host, where it leases the same address and its peer
// reaches it again. The host then comes back and its agent clears what
// the evacuated instance left there.
func TestHostDownEvacuate(t *testing.T) {
	c := getCloud(t)
	ctx := context.Background()
	start := time.Now()
	n := c.newNetwork(t, "net-evac", "10.63.0.0/24")
	group := c.antiAffinity(t, "spread-evac")
	g1 := c.createGuest(t, "evac-1", group, n.ID)
	g2 := c.createGuest(t, "evac-2", group, n.ID)
	for _, g := range []*guest{g1, g2} {
		g.waitState(t, state.InstanceRunning, guestBoot, nil)
		g.waitAddress(t, guestBoot)
	}
	// The test's API client talks to host1's server: the victim is the
	// other guest's host.
	victim, peer := g1, g2
	if _, h := g1.dir(t); h == c.hosts[0] {
		victim, peer = g2, g1
	}
	oldDir, vh := victim.dir(t)
	if !peer.pingUntil(t, victim.ip, 3) {
		t.Fatal("guests cannot ping each other before the host dies")
	}
	t.Logf("guests up after %v; killing every process of %s", time.Since(start).Round(100*time.Millisecond), vh.name)
	killed := time.Now()
	pids := killNamespaceProcs(vh)
	vh.agent.kill()
	vh.server.kill()
	if len(pids) < 3 {
		t.Errorf("killed %d processes on %s, want its server, agent and vmm", len(pids), vh.name)
	}
	if err := c.waitDown(vh); err != nil {
		t.Fatal(err)
	}
	down := time.Since(killed)
	t.Logf("%s marked down %v after the kill (TTL %v)", vh.name, down.Round(100*time.Millisecond), hostTTL)
	if down > hostTTL+20*time.Second {
		t.Errorf("host marked down %v after its death, TTL is %v", down, hostTTL)
	}
	victim.waitState(t, state.InstanceHostDown, time.Minute, nil)
	if _, err := c.api.EvacuateHost(ctx, vh.name); err != nil {
		t.Fatal(err)
	}
	in := victim.waitState(t, state.InstanceRunning, guestBoot, func(in *state.Instance) bool {
		h, err := c.hostOf(in)
		return err == nil && h != vh
	})
	nh, _ := c.hostOf(in)
	victim.waitAddress(t, guestBoot)
	t.Logf("%s rebuilt on %s with its address %s after %v", victim.name, nh.name, victim.ip, time.Since(start).Round(100*time.Millisecond))
	if !peer.pingUntil(t, victim.ip, 3) {
		t.Fatal("the peer cannot reach the evacuated guest")
	}

	// The host comes back: its agent must clear the evacuated instance's
	// directory and links.
	if err := vh.server.start(); err != nil {
		t.Fatal(err)
	}
	if err := c.startAgent(vh, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.waitHostsUp(len(c.hosts)); err != nil {
		t.Fatal(err)
	}
	// Nothing runs there any more: its agent removes the old instance's
	// directory, TAP, bridge and VXLAN.
	if err := waitUntil(time.Minute, vh.name+" cleared", func() error {
		if _, err := os.Stat(oldDir); err == nil {
			return fmt.Errorf("%s still there", oldDir)
		}
		return cleared(vh)
	}); err != nil {
		t.Fatal(err)
	}
	// The returning agent must not report anything about the instance
	// that moved away.
	now, err := victim.view()
	if err != nil {
		t.Fatal(err)
	}
	if on, _ := c.hostOf(now.Instance); now.State != state.InstanceRunning || on != nh || len(now.History) != len(in.History) {
		t.Errorf("after %s came back, %s is %s on %v; transitions since the rebuild: %+v", vh.name, victim.name, now.State, on, now.History[min(len(in.History), len(now.History)):])
	}
	c.cleanup(t, n.ID, g1, g2)
	if err := waitUntil(time.Minute, "every host clean", c.checkClean); err != nil {
		t.Fatal(err)
	}
	t.Logf("done after %v", time.Since(start).Round(100*time.Millisecond))
}

// waitDown waits until the cluster marks h down.
func (c *cloud) waitDown(h *host) error {
	return waitUntil(hostTTL+time.Minute, h.name+" down", func() error {
		hv, err := c.hostView(h)
		if err != nil {
			return err
		}
		if !hv.Down {
			return fmt.Errorf("%s is %s", h.name, hv.Status)
		}
		return nil
	})
}
