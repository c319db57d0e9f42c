package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"kvmstack/netdev"
	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/state"
)

// readyLine is what the kit's /init prints once userspace runs (docs/KIT.md).
const readyLine = "KIT READY"

func main() {
	kvmstackBin := flag.String("kvmstack", "build/bin/kvmstack", "kvmstack binary")
	vmmBin := flag.String("vmm", "build/bin/vmm", "vmm binary")
	kit := flag.String("kit", "build/kit", "guest kit directory")
	singles := flag.Int("singles", 5, "one-instance rounds for the single-instance median")
	concurrent := flag.Int("concurrent", 20, "instances created at once in the concurrent round")
	memory := flag.Int("memory", 128, "guest RAM in MiB")
	withNet := flag.Bool("network", true, "give every instance a NIC on one network (TAP, bridge, DHCP plumbed before vmm starts)")
	timeout := flag.Duration("timeout", 20*time.Minute, "the whole benchmark")
	addr := flag.String("http", "127.0.0.1:8495", "API address of the dev cloud it starts")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	b := &bench{kvmstack: *kvmstackBin, vmm: *vmmBin, kit: *kit, memory: *memory, network: *withNet, addr: *addr}
	if err := b.run(ctx, *singles, *concurrent); err != nil {
		fmt.Fprintln(os.Stderr, "cloudbench:", err)
		os.Exit(1)
	}
}

type bench struct {
	kvmstack, vmm, kit string
	memory             int
	network            bool
	addr               string

	data       string // kvmstack dev's data directory
	cl         *client.Client
	flavorID   string
	kernelID   string
	initrdID   string
	networkID  string
	roundCount int
}

// sample is one instance's way from the create call to its guest's
// userspace.
type sample struct {
	api     time.Duration // the create call's round trip
	running time.Duration // create → the agent reported running (vmm answers on its socket)
	ready   time.Duration // create → "KIT READY" on the console
}

func (b *bench) run(ctx context.Context, singles, concurrent int) error {
	var err error
	if b.data, err = os.MkdirTemp("", "cloudbench-"); err != nil {
		return err
	}
	defer os.RemoveAll(b.data)
	stop, err := b.startDev(ctx, concurrent)
	if err != nil {
		return err
	}
	defer stop()
	if err := b.setUp(ctx); err != nil {
		return err
	}
	// The first instance also downloads kernel and initrd into the agent's
	// cache: reported on its own.
	cold, _, err := b.round(ctx, 1)
	if err != nil {
		return fmt.Errorf("cold round: %w", err)
	}
	var single []sample
	for range singles {
		s, _, err := b.round(ctx, 1)
		if err != nil {
			return fmt.Errorf("single round: %w", err)
		}
		single = append(single, s...)
	}
	many, wall, err := b.round(ctx, concurrent)
	if err != nil {
		return fmt.Errorf("concurrent round: %w", err)
	}
	b.print(os.Stdout, cold[0], single, many, wall)
	return nil
}

var devPassword = regexp.MustCompile(`user admin, password (\S+)`)

// startDev runs `kvmstack dev` on a fresh data directory and logs in as its
// admin. It offers one vCPU per concurrent instance (before the default
// 16× over-commit), so a test host with one CPU still takes all of them.
func (b *bench) startDev(ctx context.Context, concurrent int) (func(), error) {
	raft := strings.Replace(b.addr, ":8495", ":8496", 1)
	if raft == b.addr {
		raft = "127.0.0.1:0"
	}
	netns := fmt.Sprintf("cloudbench-%d", os.Getpid())
	cmd := exec.CommandContext(ctx, b.kvmstack, "dev", "--data-dir", b.data, "--http", b.addr, "--bind", raft,
		"--netns", netns, "--vmm", b.vmm, "--vcpus", fmt.Sprint(concurrent))
	var log lockedBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		// kvmstack dev keeps its namespace for the next start; this one
		// has none.
		if err := netdev.DeleteNamedNamespace(netns); err != nil {
			fmt.Fprintln(os.Stderr, "cloudbench:", err)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for devPassword.FindStringSubmatch(log.String()) == nil {
		select {
		case err := <-exited:
			return nil, fmt.Errorf("kvmstack dev ended (%v):\n%s", err, log.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return nil, fmt.Errorf("kvmstack dev did not start:\n%s", log.String())
		}
	}
	b.cl = client.New(b.addr, "")
	if _, err := b.cl.Login(ctx, "admin", devPassword.FindStringSubmatch(log.String())[1], "admin"); err != nil {
		stop()
		return nil, err
	}
	// The agent registers its host right after the server is up.
	for {
		var hosts []api.HostView
		if _, err := b.cl.Do(ctx, http.MethodGet, "/v1/hosts", nil, nil, &hosts); err == nil && len(hosts) == 1 && hosts[0].Status == "up" {
			return stop, nil
		}
		select {
		case <-ctx.Done():
			stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (b *bench) setUp(ctx context.Context) error {
	var err error
	if b.kernelID, err = b.upload(ctx, "bench-kernel", state.ImageKernel, filepath.Join(b.kit, "vmlinux")); err != nil {
		return err
	}
	if b.initrdID, err = b.upload(ctx, "bench-initrd", state.ImageInitrd, filepath.Join(b.kit, "initrd.img")); err != nil {
		return err
	}
	var f state.Flavor
	if _, err := b.cl.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: "bench", VCPUs: 1, MemoryMB: b.memory}, &f); err != nil {
		return fmt.Errorf("flavor: %w", err)
	}
	b.flavorID = f.ID
	if b.network {
		n, err := b.cl.CreateNetwork(ctx, "bench-net", "10.99.0.0/24")
		if err != nil {
			return fmt.Errorf("network: %w", err)
		}
		b.networkID = n.ID
	}
	return nil
}

func (b *bench) upload(ctx context.Context, name, kind, path string) (string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(raw)
	img, err := b.cl.UploadImage(ctx, name, kind, "", hex.EncodeToString(sum[:]), bytes.NewReader(raw), int64(len(raw)), nil)
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", path, err)
	}
	return img.ID, nil
}

// cmdline is vmmbench's boot command line plus a command that keeps the
// guest up (so a concurrent round really has all its guests running at
// once) until the round deletes it.
var cmdline = "console=ttyS0 reboot=k panic=-1 kit.run=" + base64.StdEncoding.EncodeToString([]byte("sleep 3600"))

// round creates n instances at once (n concurrent create calls), times each
// from its call to "KIT READY" on its console, then deletes them and waits
// until the agent has removed them. wall is from the first call to the last
// guest ready.
func (b *bench) round(ctx context.Context, n int) ([]sample, time.Duration, error) {
	b.roundCount++
	rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	type outcome struct {
		id  string
		s   sample
		err error
	}
	var (
		mu      sync.Mutex
		running = map[string]time.Time{}
	)
	// One watcher sees every state change through blocking queries.
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		b.cl.WaitInstances(rctx, nil, func(list []*state.Instance) bool {
			now := time.Now()
			mu.Lock()
			defer mu.Unlock()
			for _, in := range list {
				if _, seen := running[in.ID]; !seen && in.State == state.InstanceRunning {
					running[in.ID] = now
				}
			}
			return false
		})
	}()
	start := time.Now()
	out := make(chan outcome, n)
	for i := range n {
		go func() {
			req := api.InstanceRequest{Name: fmt.Sprintf("bench-%d-%d", b.roundCount, i), Flavor: b.flavorID,
				Kernel: b.kernelID, Initrd: b.initrdID, Metadata: map[string]string{"cmdline": cmdline}}
			if b.networkID != "" {
				req.Networks = []string{b.networkID}
			}
			t0 := time.Now()
			var created []api.InstanceView
			if _, err := b.cl.Do(rctx, http.MethodPost, "/v1/instances", nil, req, &created); err != nil {
				out <- outcome{err: fmt.Errorf("create: %w", err)}
				return
			}
			o := outcome{id: created[0].ID, s: sample{api: time.Since(t0)}}
			ready, err := b.waitReady(rctx, o.id)
			if err != nil {
				o.err = err
			} else {
				o.s.ready = ready.Sub(t0)
			}
			mu.Lock()
			if r, ok := running[o.id]; ok {
				o.s.running = r.Sub(t0)
			}
			mu.Unlock()
			out <- o
		}()
	}
	var (
		samples []sample
		ids     []string
		errs    []error
		last    time.Time
	)
	for range n {
		o := <-out
		if o.id != "" {
			ids = append(ids, o.id)
		}
		if o.err != nil {
			errs = append(errs, o.err)
			continue
		}
		samples = append(samples, o.s)
		if t := start.Add(o.s.ready); t.After(last) {
			last = t
		}
	}
	wall := last.Sub(start)
	cancel()
	<-watchDone
	if err := b.deleteAll(ctx, ids); err != nil {
		errs = append(errs, err)
	}
	return samples, wall, errors.Join(errs...)
}

// waitReady watches the instance's console log in the agent's data
// directory (this process runs on the host) until the guest prints the
// ready line, and returns when it was first seen. It polls every 20 ms,
// which bounds the error of each sample.
func (b *bench) waitReady(ctx context.Context, id string) (time.Time, error) {
	path := filepath.Join(b.data, "agent", "instances", id, "console.log")
	var off int64
	var tail []byte
	for {
		if f, err := os.Open(path); err == nil {
			f.Seek(off, io.SeekStart)
			chunk, _ := io.ReadAll(f)
			f.Close()
			off += int64(len(chunk))
			tail = append(tail, chunk...)
			if bytes.Contains(tail, []byte(readyLine)) {
				return time.Now(), nil
			}
			if len(tail) > len(readyLine) {
				tail = tail[len(tail)-len(readyLine):]
			}
		}
		select {
		case <-ctx.Done():
			in, _ := b.cl.Instance(context.Background(), id)
			if in != nil {
				return time.Time{}, fmt.Errorf("instance %s (%s): no %q: %w", id, in.State, readyLine, ctx.Err())
			}
			return time.Time{}, fmt.Errorf("instance %s: no %q: %w", id, readyLine, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// deleteAll deletes the instances and waits until the agent has stopped
// their vmm processes and removed their directories, so that the next round
// starts on an idle host.
func (b *bench) deleteAll(ctx context.Context, ids []string) error {
	for _, id := range ids {
		if _, err := b.cl.Do(ctx, http.MethodDelete, "/v1/instances/"+url.PathEscape(id), nil, nil, nil); err != nil {
			return fmt.Errorf("delete %s: %w", id, err)
		}
	}
	deadline := time.Now().Add(2 * time.Minute)
	for _, id := range ids {
		for {
			if _, err := os.Stat(filepath.Join(b.data, "agent", "instances", id)); errors.Is(err, os.ErrNotExist) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("instance %s: directory still there 2 minutes after delete", id)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// percentile is the nearest-rank percentile p (0..100) of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.999999) - 1
	if rank < 0 {
		rank = 0
	}
	if rank >= len(s) {
		rank = len(s) - 1
	}
	return s[rank]
}

func pick(ss []sample, f func(sample) time.Duration) []time.Duration {
	out := make([]time.Duration, len(ss))
	for i, s := range ss {
		out[i] = f(s)
	}
	return out
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func (b *bench) print(w io.Writer, cold sample, single, many []sample, wall time.Duration) {
	net := "no NIC"
	if b.network {
		net = "one NIC on a network (TAP + bridge + DHCP)"
	}
	fmt.Fprintf(w, "kvmstack dev: API create → %q on the guest console; kit kernel + initrd, 1 vCPU, %d MiB, %s\n\n", readyLine, b.memory, net)
	fmt.Fprintf(w, "| measure | 1 instance (%d rounds) | %d concurrent |\n|---|---|---|\n", len(single), len(many))
	rows := []struct {
		name string
		f    func(sample) time.Duration
	}{
		{"create → KIT READY", func(s sample) time.Duration { return s.ready }},
		{"create → running (vmm up)", func(s sample) time.Duration { return s.running }},
		{"create API call", func(s sample) time.Duration { return s.api }},
	}
	for _, r := range rows {
		a, c := pick(single, r.f), pick(many, r.f)
		fmt.Fprintf(w, "| %s, median / p95 | %s / %s | %s / %s |\n", r.name,
			secs(percentile(a, 50)), secs(percentile(a, 95)), secs(percentile(c, 50)), secs(percentile(c, 95)))
	}
	perSec := func(n int, d time.Duration) string {
		if d <= 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", float64(n)/d.Seconds())
	}
	fmt.Fprintf(w, "| instances started per second (to KIT READY) | %s | %s (%d in %s) |\n",
		perSec(1, percentile(pick(single, func(s sample) time.Duration { return s.ready }), 50)), perSec(len(many), wall), len(many), secs(wall))
	fmt.Fprintf(w, "\ncold start (first instance, images fetched into the agent's cache): create → KIT READY %s, → running %s\n",
		secs(cold.ready), secs(cold.running))
}

// lockedBuffer collects a child's output while it runs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
