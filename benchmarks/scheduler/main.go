// Command scheduler measures the kvmstack control plane on a 3-server
// cluster running in this process on 127.0.0.1: placements per second for
// a burst of instances against 1,000 and 10,000 registered hosts, the number
// of over-committed hosts afterwards (must be 0), and Raft write latency.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/raftnode"
	"kvmstack/orchestrator/server"
	"kvmstack/orchestrator/state"
)

func main() {
	hostsFlag := flag.String("hosts", "1000,10000", "comma-separated host counts")
	instances := flag.Int("instances", 10000, "instances to place per run")
	writes := flag.Int("writes", 1000, "sequential Raft writes for the latency measurement")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fail(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fail(err)
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Printf("kvmstack scheduler benchmark: 3 servers on 127.0.0.1, %d instances per run\n\n", *instances)
	// A small unreported run first, so the first measured run does not pay
	// for cold caches and page faults.
	if _, err := run(100, 1000, 10); err != nil {
		fail(fmt.Errorf("warm-up: %w", err))
	}
	fmt.Printf("%-7s %-10s %-8s %-14s %-9s %-22s %-11s\n", "hosts", "instances", "placed", "placements/s", "seconds", "placement-only/s", "overcommit")
	var lat []time.Duration
	for _, f := range strings.Split(*hostsFlag, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			fail(fmt.Errorf("-hosts: %w", err))
		}
		r, err := run(n, *instances, *writes)
		if err != nil {
			fail(err)
		}
		fmt.Printf("%-7d %-10d %-8d %-14.0f %-9.2f %-22.0f %-11d\n", n, *instances, r.placed, float64(r.placed)/r.elapsed.Seconds(), r.elapsed.Seconds(),
			float64(r.placed)/(r.elapsed-r.created).Seconds(), r.overcommitted)
		lat = append(lat, r.latencies...)
		if r.overcommitted != 0 {
			fail(fmt.Errorf("%d hosts over-committed", r.overcommitted))
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	if len(lat) > 0 {
		fmt.Printf("\nraft write latency (%d sequential writes on the leader): p50 %s  p99 %s\n",
			len(lat), lat[len(lat)/2].Round(time.Microsecond), lat[len(lat)*99/100].Round(time.Microsecond))
	}
	fmt.Println("placements/s counts from the first create request to the last placement; placement-only/s from the")
	fmt.Println("last acknowledged create. All three servers' FSMs share this machine's cores.")
	fmt.Println("reference: Nomad C1M 3,750 placements/s with 5 servers; target >= 5,000/s")
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "benchmark:", err)
	os.Exit(1)
}

type result struct {
	placed, overcommitted int
	elapsed, created      time.Duration
	latencies             []time.Duration
}

var (
	batch    = flag.Int("batch", 1000, "placements per Raft entry")
	pipeline = flag.Int("pipeline", 4, "placement entries in flight")
)

func run(hosts, instances, writes int) (*result, error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "kvmstack-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("benchmark-password"), 0o600); err != nil {
		return nil, err
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := func(i int, join []string, token string) server.Config {
		return server.Config{DataDir: filepath.Join(dir, fmt.Sprint(i)), RaftBind: "127.0.0.1:0", HTTPBind: "127.0.0.1:0",
			Join: join, JoinToken: token, BootstrapPasswordFile: pw, BcryptCost: 4, HostTTL: time.Hour,
			Logger: quiet, RaftLogOutput: io.Discard, SnapshotThreshold: 1 << 20, TrailingLogs: 1 << 20, SchedulerBatch: *batch, SchedulerPipeline: *pipeline, RaftTimeoutScale: 5}
	}
	s0, err := server.Start(ctx, cfg(0, nil, ""))
	if err != nil {
		return nil, err
	}
	servers := []*server.Server{s0}
	defer func() {
		for _, s := range servers {
			s.Close()
		}
	}()
	adm := client.New(s0.HTTPAddr(), "")
	if err := retry(30*time.Second, func() error {
		_, err := adm.Login(ctx, "admin", "benchmark-password", "admin")
		return err
	}); err != nil {
		return nil, err
	}
	for i := 1; i < 3; i++ {
		s, err := server.Start(ctx, cfg(i, []string{s0.HTTPAddr()}, adm.Token))
		if err != nil {
			return nil, err
		}
		servers = append(servers, s)
	}
	if err := retry(30*time.Second, func() error {
		ms, err := s0.Node().Members()
		if err != nil || len(ms) != 3 {
			return fmt.Errorf("members: %v", err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if _, err := adm.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: "b1", VCPUs: 1, MemoryMB: 1024, DiskGB: 10}, nil); err != nil {
		return nil, err
	}
	// Register the hosts through all three servers in parallel.
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for w := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := client.New(servers[w%3].HTTPAddr(), adm.Token)
			for h := w; h < hosts; h += 32 {
				if _, err := cl.Do(ctx, http.MethodPost, "/v1/hosts", nil, api.HostRequest{Name: fmt.Sprintf("host-%05d", h),
					VCPUs: 32, MemoryMB: 131072, DiskGB: 2000, CPURatio: 4, RAMRatio: 1, DiskRatio: 1}, nil); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	leader := leaderOf(servers)

	// The measured burst: creates through all servers, placed by the leader.
	start := time.Now()
	per := 1000
	for w := 0; w*per < instances; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl := client.New(servers[w%3].HTTPAddr(), adm.Token)
			cnt := min(per, instances-w*per)
			if _, err := cl.Do(ctx, http.MethodPost, "/v1/instances", nil, api.InstanceRequest{Name: fmt.Sprintf("b%d", w), Flavor: "b1", Count: cnt}, nil); err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}()
	}
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	created := time.Since(start)
	for {
		r := leader.Store().Read(nil)
		pending, _ := r.Instances(state.InstanceFilter{State: state.InstancePending})
		if len(pending) == 0 {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return nil, fmt.Errorf("%d instances still pending after 10 minutes", len(pending))
		}
		time.Sleep(20 * time.Millisecond)
	}
	res := &result{elapsed: time.Since(start), created: created}
	r := leader.Store().Read(nil)
	placed, _ := r.Instances(state.InstanceFilter{State: state.InstanceScheduled})
	res.placed = len(placed)
	hs, _ := r.Hosts()
	for _, h := range hs {
		if h.Overcommitted() {
			res.overcommitted++
		}
	}
	// Every follower must agree on every host's usage.
	if err := retry(60*time.Second, func() error {
		for _, s := range servers {
			fr := s.Store().Read(nil)
			for _, h := range hs {
				fh, _ := fr.Host(h.ID)
				if fh == nil || fh.UsedVCPUs != h.UsedVCPUs {
					return fmt.Errorf("server %s disagrees on host %s", s.ID(), h.Name)
				}
			}
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if len(hs) > 0 {
		hid := hs[0].ID
		for range writes {
			t0 := time.Now()
			if _, _, err := leader.Node().Apply(ctx, &fsm.HostHeartbeat{Header: fsm.Header{At: time.Now().UTC()}, ID: hid}); err != nil {
				if !errors.Is(err, raftnode.ErrNotLeader) {
					return nil, err
				}
				leader = leaderOf(servers) // leadership moved: measure on the new leader
				continue
			}
			res.latencies = append(res.latencies, time.Since(t0))
		}
	}
	return res, nil
}

func leaderOf(servers []*server.Server) *server.Server {
	for {
		for _, s := range servers {
			if s.Node().IsLeader() {
				return s
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func retry(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}
