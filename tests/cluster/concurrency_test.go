package cluster

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/state"
)

// newProjectUser creates a project and a user with the role on it and
// returns a client logged in as that user through server i.
func newProjectUser(t *testing.T, c *testCluster, i int, project, role string) *client.Client {
	t.Helper()
	ctx := context.Background()
	adm := c.clientFor(0)
	if _, err := adm.Do(ctx, http.MethodPost, "/v1/projects", nil, api.ProjectRequest{Name: project}, nil); err != nil && !client.IsStatus(err, http.StatusConflict) {
		t.Fatal(err)
	}
	user := project + "-" + role
	if _, err := adm.Do(ctx, http.MethodPost, "/v1/users", nil, api.UserRequest{Name: user, Password: "password-" + user, Project: project, Role: role}, nil); err != nil {
		t.Fatal(err)
	}
	cl := c.clientFor(i)
	cl.Token = ""
	if _, err := cl.Login(ctx, user, "password-"+user, project); err != nil {
		t.Fatal(err)
	}
	return cl
}

// TestConcurrentCreates sends 200 instance creates from 20 goroutines through
// all three servers against 20 hosts with room for 160: no host may end over
// capacity, anti-affinity must hold, and exactly the capacity is used.
func TestConcurrentCreates(t *testing.T) {
	c := sharedCluster(t)
	c.dumpLogsOnFailure(t)
	ctx := context.Background()
	adm := c.clientFor(0)
	if _, err := adm.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: "conc-small", VCPUs: 1, MemoryMB: 512, DiskGB: 1}, nil); err != nil {
		t.Fatal(err)
	}
	for h := range 20 {
		if _, err := c.clientFor(h%3).Do(ctx, http.MethodPost, "/v1/hosts", nil, api.HostRequest{Name: fmt.Sprintf("conc-h%02d", h),
			VCPUs: 8, MemoryMB: 4096, DiskGB: 100, CPURatio: 1, RAMRatio: 1, DiskRatio: 1}, nil); err != nil {
			t.Fatal(err)
		}
	}
	member := newProjectUser(t, c, 0, "conc", state.RoleMember)
	var group state.ServerGroup
	if _, err := member.Do(ctx, http.MethodPost, "/v1/server-groups", nil, api.GroupRequest{Name: "spread", Policy: state.PolicyAntiAffinity}, &group); err != nil {
		t.Fatal(err)
	}

	var wg sync.WaitGroup
	errs := make(chan error, 200)
	for g := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := client.New(c.procs[g%3].http, member.Token)
			for i := range 10 {
				req := api.InstanceRequest{Name: fmt.Sprintf("c%02d-%d", g, i), Flavor: "conc-small"}
				if i < 3 { // 60 anti-affinity members for 20 hosts
					req.ServerGroup = group.ID
				}
				if _, err := cl.Do(ctx, http.MethodPost, "/v1/instances", nil, req, nil); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	list, err := member.WaitInstances(wctx, nil, func(l []*state.Instance) bool {
		if len(l) != 200 {
			return false
		}
		for _, in := range l {
			if in.State == state.InstancePending {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatal(err)
	}
	placed := 0
	perHost := map[string]int{}
	groupHosts := map[string]string{}
	for _, in := range list {
		switch in.State {
		case state.InstanceScheduled:
			placed++
			perHost[in.HostID]++
			if in.ServerGroupID == group.ID {
				if other, dup := groupHosts[in.HostID]; dup {
					t.Fatalf("anti-affinity violated: %s and %s on host %s", other, in.ID, in.HostID)
				}
				groupHosts[in.HostID] = in.ID
			}
		case state.InstanceError:
			reason := in.History[len(in.History)-1].Reason
			if !strings.HasPrefix(reason, "no valid host") {
				t.Fatalf("instance %s failed without a scheduler reason: %q", in.ID, reason)
			}
		default:
			t.Fatalf("instance %s in state %s", in.ID, in.State)
		}
	}
	var hosts []api.HostView
	if _, err := adm.Do(ctx, http.MethodGet, "/v1/hosts", url.Values{"consistent": {""}}, nil, &hosts); err != nil {
		t.Fatal(err)
	}
	for _, h := range hosts {
		if !strings.HasPrefix(h.Name, "conc-") {
			continue
		}
		if h.Overcommitted() || h.UsedVCPUs > h.VCPUs || h.UsedMemoryMB > h.MemoryMB {
			t.Fatalf("host %s over capacity: %+v", h.Name, h.Host)
		}
		if h.Instances != perHost[h.ID] {
			t.Fatalf("host %s accounts %d instances, %d are placed on it", h.Name, h.Instances, perHost[h.ID])
		}
		// What an agent sees when it watches its host's assignments.
		var assigned []*state.Instance
		if _, err := adm.Do(ctx, http.MethodGet, "/v1/instances", url.Values{"host": {h.Name}}, nil, &assigned); err != nil {
			t.Fatal(err)
		}
		if len(assigned) != perHost[h.ID] {
			t.Fatalf("host %s: agent view lists %d instances, %d are placed", h.Name, len(assigned), perHost[h.ID])
		}
	}
	// 20 hosts × 8 slots: every slot is used and the rest failed with a reason.
	if placed != 160 {
		t.Fatalf("placed %d instances, want exactly the capacity 160", placed)
	}
	if len(groupHosts) > 20 {
		t.Fatalf("%d anti-affinity members placed on 20 hosts", len(groupHosts))
	}
}
