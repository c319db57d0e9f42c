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
	"kvmstack/orchestrator/state"
)

// TestSnapshotInstallOnLaggingServer stops a follower, writes enough for the
// leader to snapshot and compact its log past the follower's position, and
// checks that the restarted follower installs the snapshot and catches up.
func TestSnapshotInstallOnLaggingServer(t *testing.T) {
	c := newCluster(t, "snap", 3, "--snapshot-threshold", "64", "--trailing-logs", "16", "--snapshot-interval", "200ms", "--dead-server-timeout", "0")
	defer c.stopAll()
	c.dumpLogsOnFailure(t)
	ctx := context.Background()
	leader := c.leader()
	lag := (leader + 1) % 3
	c.procs[lag].kill()
	before := strings.Count(c.procs[lag].logText(), "Installed remote snapshot")

	const flavors = 300
	adm := c.clientFor(leader)
	var wg sync.WaitGroup
	errs := make(chan error, flavors)
	for w := range 10 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < flavors; i += 10 {
				if _, err := adm.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: fmt.Sprintf("f%03d", i), VCPUs: 1, MemoryMB: 128}, nil); err != nil {
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
	waitFor(t, "leader snapshot past the lagging server", 30*time.Second, func() bool {
		st, err := c.status(leader)
		return err == nil && atoi(st.Raft["last_snapshot_index"]) > 200
	})

	c.procs[lag].start(t)
	c.waitConverged()
	waitFor(t, "snapshot install logged", 30*time.Second, func() bool {
		return strings.Count(c.procs[lag].logText(), "Installed remote snapshot") > before
	})
	var got []*state.Flavor
	if _, err := c.clientFor(lag).Do(ctx, http.MethodGet, "/v1/flavors", url.Values{"stale": {""}}, nil, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != flavors {
		t.Fatalf("lagging server has %d flavors after catch-up, want %d", len(got), flavors)
	}
	st, err := c.status(lag)
	if err != nil {
		t.Fatal(err)
	}
	if atoi(st.Raft["fsm_restores"]) == 0 {
		t.Fatal("lagging server never restored a snapshot")
	}
}
