package server

import (
	"context"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/state"
)

const testTTL = 30 * time.Second

func startClocked(t *testing.T, clock Clock, join []string, token string) *Server {
	t.Helper()
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte(testPassword), 0o600)
	s, err := Start(context.Background(), Config{
		DataDir: t.TempDir(), RaftBind: "127.0.0.1:0", HTTPBind: "127.0.0.1:0", Join: join, JoinToken: token,
		BootstrapPasswordFile: pwFile, BcryptCost: 4, HostTTL: testTTL, HostCheckInterval: 20 * time.Millisecond, Clock: clock,
		BootstrapExpect: 3, Logger: slog.New(slog.NewTextHandler(testLog(), nil)), RaftLogOutput: testLog(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustDo(t *testing.T, c *client.Client, method, path string, in, out any) {
	t.Helper()
	if _, err := c.Do(context.Background(), method, path, nil, in, out); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
}

func hostOf(t *testing.T, s *Server, name string) *state.Host {
	t.Helper()
	h, err := s.Store().Read(nil).Host(name)
	if err != nil || h == nil {
		t.Fatalf("host %s: %v", name, err)
	}
	return h
}

func instanceOf(t *testing.T, s *Server, id string) *state.Instance {
	t.Helper()
	in, err := s.Store().Read(nil).Instance(id)
	if err != nil || in == nil {
		t.Fatalf("instance %s: %v", id, err)
	}
	return in
}

// TestHostFailureAndEvacuation: a host that stops heartbeating is marked
// down once the TTL has passed on the leader's clock (not before), its
// instances become host-down, evacuation refuses up hosts and refuses (and
// changes nothing) when the survivors lack room, then moves the instances
// with their MAC and address, never over-committing the target.
func TestHostFailureAndEvacuation(t *testing.T) {
	ctx := context.Background()
	clock := NewManualClock(time.Now().UTC())
	s := startClocked(t, clock, nil, "")
	admin := login(t, s.HTTPAddr())
	mustDo(t, admin, http.MethodPost, "/v1/flavors", api.FlavorRequest{Name: "m1", VCPUs: 2, MemoryMB: 1024, DiskGB: 5}, nil)
	for _, n := range []string{"a", "b"} {
		mustDo(t, admin, http.MethodPost, "/v1/hosts", api.HostRequest{Name: n, VCPUs: 4, MemoryMB: 2048, DiskGB: 100, CPURatio: 1, RAMRatio: 1}, nil)
	}
	if _, err := admin.CreateNetwork(ctx, "net", "10.9.0.0/24"); err != nil {
		t.Fatal(err)
	}
	// Both vm-1 and vm-2 on a (b disabled meanwhile), then "other" on b.
	mustDo(t, admin, http.MethodPost, "/v1/hosts/b/disable", struct{}{}, nil)
	var vms []api.InstanceView
	mustDo(t, admin, http.MethodPost, "/v1/instances", api.InstanceRequest{Name: "vm", Flavor: "m1", Count: 2, Networks: []string{"net"}}, &vms)
	waitFor(t, "vms on a", 10*time.Second, func() bool {
		return instanceOf(t, s, vms[0].ID).HostID == hostOf(t, s, "a").ID && instanceOf(t, s, vms[1].ID).HostID == hostOf(t, s, "a").ID
	})
	mustDo(t, admin, http.MethodPost, "/v1/hosts/b/enable", struct{}{}, nil)
	var other []api.InstanceView
	mustDo(t, admin, http.MethodPost, "/v1/instances", api.InstanceRequest{Name: "other", Flavor: "m1"}, &other)
	waitFor(t, "other on b", 10*time.Second, func() bool { return instanceOf(t, s, other[0].ID).HostID == hostOf(t, s, "b").ID })
	portsBefore, err := admin.InstancePorts(ctx, vms[0].ID)
	if err != nil || len(portsBefore) != 1 {
		t.Fatalf("ports: %v %v", portsBefore, err)
	}

	// Nobody is down before the TTL has passed, even with no heartbeat.
	clock.Advance(testTTL - time.Second)
	mustDo(t, admin, http.MethodPost, "/v1/hosts/b/heartbeat", struct{}{}, nil)
	time.Sleep(300 * time.Millisecond)
	if hostOf(t, s, "a").Down {
		t.Fatal("a marked down before its TTL")
	}
	// Evacuating an instance of an up host, or an up host: 409.
	_, err = admin.EvacuateInstance(ctx, other[0].ID)
	if !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("evacuate on an up host: %v", err)
	}
	if _, err := admin.EvacuateHost(ctx, "a"); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("evacuate an up host: %v", err)
	}

	// a misses its heartbeats past the TTL (b keeps beating).
	clock.Advance(2 * time.Second)
	mustDo(t, admin, http.MethodPost, "/v1/hosts/b/heartbeat", struct{}{}, nil)
	waitFor(t, "a down", 5*time.Second, func() bool { return hostOf(t, s, "a").Down })
	for _, v := range vms {
		if in := instanceOf(t, s, v.ID); in.State != state.InstanceHostDown {
			t.Fatalf("%s is %s", in.Name, in.State)
		}
	}
	if hostOf(t, s, "b").Down || instanceOf(t, s, other[0].ID).State == state.InstanceHostDown {
		t.Fatal("the heartbeating host went down")
	}
	var hv api.HostView
	mustDo(t, admin, http.MethodGet, "/v1/hosts/a", nil, &hv)
	if hv.Status != "down" {
		t.Fatalf("host a status %q", hv.Status)
	}

	// b has room for one of the two: the host evacuation moves nothing.
	a0, b0 := *hostOf(t, s, "a"), *hostOf(t, s, "b")
	_, err = admin.EvacuateHost(ctx, "a")
	var ae *client.APIError
	if !client.IsStatus(err, http.StatusConflict) || !asAPIError(err, &ae) || ae.Code != api.CodeNoValidHost {
		t.Fatalf("evacuate without room: %v", err)
	}
	if a, b := hostOf(t, s, "a"), hostOf(t, s, "b"); a.UsedVCPUs != a0.UsedVCPUs || b.UsedVCPUs != b0.UsedVCPUs || a.Instances != 2 {
		t.Fatalf("a refused evacuation changed usage: a %+v b %+v", a, b)
	}
	for _, v := range vms {
		if in := instanceOf(t, s, v.ID); in.State != state.InstanceHostDown || in.HostID != a0.ID {
			t.Fatalf("%s moved by a refused evacuation: %s on %s", in.Name, in.State, in.HostID)
		}
	}

	// One instance fits.
	res, err := admin.EvacuateInstance(ctx, vms[0].ID)
	if err != nil || len(res.Instances) != 1 {
		t.Fatalf("evacuate vm-1: %v %+v", err, res)
	}
	in := instanceOf(t, s, vms[0].ID)
	if in.HostID != b0.ID || in.State != state.InstanceBuilding {
		t.Fatalf("vm-1 after evacuation: %s on %s", in.State, in.HostID)
	}
	portsAfter, err := admin.InstancePorts(ctx, vms[0].ID)
	if err != nil || !reflect.DeepEqual(portsBefore, portsAfter) {
		t.Fatalf("ports changed by evacuation:\n%+v\n%+v (%v)", portsBefore, portsAfter, err)
	}
	// b is full now: vm-2 fits nowhere, and b is not over-committed.
	if _, err := admin.EvacuateInstance(ctx, vms[1].ID); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("evacuate onto a full host: %v", err)
	}
	if b := hostOf(t, s, "b"); b.Overcommitted() || b.UsedVCPUs != 4 || b.Instances != 2 {
		t.Fatalf("b: %+v", b)
	}
	// Room is made; the host evacuation takes what is left.
	if _, err := admin.Do(ctx, http.MethodDelete, "/v1/instances/"+other[0].ID, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	res, err = admin.EvacuateHost(ctx, "a")
	if err != nil || len(res.Instances) != 1 || res.Instances[0].ID != vms[1].ID {
		t.Fatalf("host evacuate: %v %+v", err, res)
	}
	a, b := hostOf(t, s, "a"), hostOf(t, s, "b")
	if a.UsedVCPUs != 0 || a.UsedMemoryMB != 0 || a.Instances != 0 || b.UsedVCPUs != 4 || b.Instances != 2 || b.Overcommitted() {
		t.Fatalf("after evacuation: a %+v b %+v", a, b)
	}
	// a has nothing left to evacuate; when it comes back it has no instance.
	if res, err := admin.EvacuateHost(ctx, "a"); err != nil || len(res.Instances) != 0 {
		t.Fatalf("evacuate an empty down host: %v %+v", err, res)
	}
	mustDo(t, admin, http.MethodPost, "/v1/hosts/a/heartbeat", struct{}{}, nil)
	if a := hostOf(t, s, "a"); a.Down || a.Instances != 0 {
		t.Fatalf("a after its return: %+v", a)
	}
}

func asAPIError(err error, out **client.APIError) bool {
	e, ok := err.(*client.APIError)
	if ok {
		*out = e
	}
	return ok
}

// TestHostDownActionsSurviveLeaderChange: a stop and a delete asked for
// while the host is down are committed, survive the loss of the leader, and
// are there when the host returns.
func TestHostDownActionsSurviveLeaderChange(t *testing.T) {
	ctx := context.Background()
	clock := NewManualClock(time.Now().UTC())
	s1 := startClocked(t, clock, nil, "")
	admin := login(t, s1.HTTPAddr())
	s2 := startClocked(t, clock, []string{s1.HTTPAddr()}, admin.Token)
	s3 := startClocked(t, clock, []string{s1.HTTPAddr()}, admin.Token)
	servers := []*Server{s1, s2, s3}
	waitFor(t, "three voters", 30*time.Second, func() bool {
		ms, err := s1.Node().Members()
		return err == nil && len(ms) == 3
	})
	mustDo(t, admin, http.MethodPost, "/v1/flavors", api.FlavorRequest{Name: "m1", VCPUs: 1, MemoryMB: 256}, nil)
	mustDo(t, admin, http.MethodPost, "/v1/hosts", api.HostRequest{Name: "a", VCPUs: 4, MemoryMB: 2048, CPURatio: 1, RAMRatio: 1}, nil)
	var vms []api.InstanceView
	mustDo(t, admin, http.MethodPost, "/v1/instances", api.InstanceRequest{Name: "vm", Flavor: "m1", Count: 2}, &vms)
	waitFor(t, "placed", 10*time.Second, func() bool {
		return instanceOf(t, s1, vms[0].ID).State == state.InstanceScheduled && instanceOf(t, s1, vms[1].ID).State == state.InstanceScheduled
	})
	clock.Advance(testTTL + time.Second)
	waitFor(t, "a down", 5*time.Second, func() bool { return hostOf(t, s1, "a").Down })

	// Through a follower: forwarded to the leader and committed.
	f := client.New(s3.HTTPAddr(), admin.Token)
	mustDo(t, f, http.MethodPost, "/v1/instances/"+vms[0].ID+"/action", api.ActionRequest{Action: state.ActionStop}, nil)
	if _, err := f.Do(ctx, http.MethodDelete, "/v1/instances/"+vms[1].ID, nil, nil, nil); err != nil {
		t.Fatal(err)
	}

	var leader *Server
	for _, s := range servers {
		if s.Node().IsLeader() {
			leader = s
		}
	}
	if leader == nil {
		t.Fatal("no leader")
	}
	leader.Close()
	var rest []*Server
	for _, s := range servers {
		if s != leader {
			rest = append(rest, s)
		}
	}
	waitFor(t, "a new leader", 30*time.Second, func() bool { return rest[0].Node().IsLeader() || rest[1].Node().IsLeader() })
	c := client.New(rest[0].HTTPAddr(), admin.Token)
	c.RetryFor = 30 * time.Second
	var got state.Instance
	if _, err := c.Do(ctx, http.MethodGet, "/v1/instances/"+vms[0].ID, nil, nil, &got); err != nil {
		t.Fatal(err)
	}
	if got.State != state.InstanceHostDown || got.Action != state.ActionStop || got.ActionSeq != 1 {
		t.Fatalf("after the leader change: %s action %q seq %d", got.State, got.Action, got.ActionSeq)
	}
	// The host returns: the stop is waiting for its agent, the deleted
	// instance is gone from its list.
	mustDo(t, c, http.MethodPost, "/v1/hosts/a/heartbeat", struct{}{}, nil)
	var onHost []*state.Instance
	mustDo(t, c, http.MethodGet, "/v1/instances?host=a&all_projects", nil, &onHost)
	if len(onHost) != 1 || onHost[0].ID != vms[0].ID || onHost[0].State != state.InstanceScheduled || onHost[0].Action != state.ActionStop {
		t.Fatalf("instances on the returned host: %+v", onHost)
	}
	for _, s := range rest {
		waitFor(t, "replicas agree", 10*time.Second, func() bool {
			return instanceOf(t, s, vms[1].ID).State == state.InstanceDeleted && !hostOf(t, s, "a").Down
		})
	}
}
