package server

import (
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/state"
)

// TestConcurrentPortAllocation creates many instances with NICs at once
// through all three servers of a cluster: addresses are allocated in the
// FSM, so no two ports may ever share an address or a MAC, exactly the pool
// size may succeed, and every other request must fail cleanly with a 409.
// Deletions race the creations to exercise address reuse.
func TestConcurrentPortAllocation(t *testing.T) {
	ctx := context.Background()
	s1 := startServer(t, t.TempDir(), nil, "")
	admin := login(t, s1.HTTPAddr())
	s2 := startServer(t, t.TempDir(), []string{s1.HTTPAddr()}, admin.Token)
	s3 := startServer(t, t.TempDir(), []string{s1.HTTPAddr()}, admin.Token)
	servers := []*Server{s1, s2, s3}
	waitFor(t, "three voters", 30*time.Second, func() bool {
		ms, err := s1.Node().Members()
		return err == nil && len(ms) == 3
	})
	if _, err := admin.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: "nano", VCPUs: 1, MemoryMB: 64}, nil); err != nil {
		t.Fatal(err)
	}
	// A /27 has 32 addresses: network, gateway, DHCP and broadcast leave 28.
	netw, err := admin.CreateNetwork(ctx, "race", "10.77.0.0/27")
	if err != nil {
		t.Fatal(err)
	}
	const pool, early, creators = 28, 6, 60

	// A few instances exist first and are deleted while the others race.
	var first []api.InstanceView
	if _, err := admin.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: "early", Flavor: "nano", Count: early, Networks: []string{"race"}}, &first); err != nil {
		t.Fatal(err)
	}

	var (
		wg                 sync.WaitGroup
		mu                 sync.Mutex
		created, exhausted int
		unexpected         []error
	)
	start := make(chan struct{})
	for i := range creators {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client.New(servers[i%3].HTTPAddr(), admin.Token)
			<-start
			var out []api.InstanceView
			_, err := c.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: fmt.Sprintf("vm%d", i), Flavor: "nano", Networks: []string{netw.ID}}, &out)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && len(out) == 1 && len(out[0].Ports) == 1:
				created++
			case client.IsStatus(err, http.StatusConflict) && strings.Contains(err.Error(), "addresses are in use"):
				exhausted++
			default:
				unexpected = append(unexpected, fmt.Errorf("creator %d: %v (%d instances)", i, err, len(out)))
			}
		}()
	}
	for i, in := range first {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			c := client.New(servers[(i+1)%3].HTTPAddr(), admin.Token)
			if _, err := c.Do(ctx, http.MethodDelete, "/v1/instances/"+in.ID, nil, nil, nil); err != nil {
				mu.Lock()
				unexpected = append(unexpected, fmt.Errorf("delete %s: %w", in.ID, err))
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	for _, err := range unexpected {
		t.Error(err)
	}
	// Which creations win depends on how they interleave with the deletions,
	// but never more than the pool, and all the pool once the dust settles.
	if created+exhausted != creators || created < pool-early || created > pool {
		t.Fatalf("created %d, exhausted %d of %d (pool %d, %d freed concurrently)", created, exhausted, creators, pool, early)
	}
	t.Logf("%d creations raced %d deletions: %d got an address, %d were refused (pool exhausted)", creators, early, created, exhausted)
	top := pool - created
	for i := range top {
		if _, err := admin.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: fmt.Sprintf("top%d", i), Flavor: "nano", Networks: []string{"race"}}, nil); err != nil {
			t.Fatalf("address %d of the %d freed ones: %v", i+1, top, err)
		}
	}
	if _, err := admin.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: "over", Flavor: "nano", Networks: []string{"race"}}, nil); !client.IsStatus(err, http.StatusConflict) {
		t.Fatalf("full pool: %v", err)
	}

	// Every replica holds the same ports: pool of them, all distinct.
	var leaderIdx uint64
	for _, s := range servers {
		leaderIdx = max(leaderIdx, s.fsm.AppliedIndex())
	}
	var want []*state.Port
	for _, s := range servers {
		waitFor(t, "replica caught up", 30*time.Second, func() bool { return s.fsm.AppliedIndex() >= leaderIdx })
		ports, err := s.Store().Read(nil).Ports(state.PortFilter{NetworkID: netw.ID})
		if err != nil {
			t.Fatal(err)
		}
		if len(ports) != pool {
			t.Fatalf("server %s has %d ports, want %d", s.ID(), len(ports), pool)
		}
		ips, macs := map[string]bool{}, map[string]bool{}
		for _, p := range ports {
			if ips[p.IP] || macs[p.MAC] {
				t.Fatalf("duplicate address or MAC on %s: %+v", s.ID(), p)
			}
			ips[p.IP], macs[p.MAC] = true, true
		}
		if want == nil {
			want = ports
		} else if !reflect.DeepEqual(want, ports) {
			t.Fatalf("replicas disagree on ports")
		}
	}
}
