// Command apibench measures vmm's control API: request latency against the
// real server (vmm/api on a unix socket) with an in-process machine, over
// kept-alive and fresh connections; against a real vmm running the kit
// guest when --kit is given (in a KVM host); and vmm start → API socket
// ready in CPU milliseconds (Firecracker's published target: 8 ms), for a
// vmm started with only --api-socket, which touches no KVM until
// InstanceStart.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"kvmstack/vmm/api"
)

func main() {
	vmmBin := flag.String("vmm", "build/bin/vmm", "vmm binary")
	kit := flag.String("kit", "", "guest kit directory: also measure latency against a real vmm running the kit (needs KVM)")
	n := flag.Int("n", 5000, "requests per latency row")
	starts := flag.Int("starts", 20, "vmm starts for the startup row")
	floor := flag.String("floor", "", "benchmarks/api/floor binary: the start-up floor of a Go program that listens")
	flag.Parse()
	if err := run(*vmmBin, *kit, *floor, *n, *starts); err != nil {
		fmt.Fprintln(os.Stderr, "apibench:", err)
		os.Exit(1)
	}
}

func run(vmmBin, kit, floorBin string, n, starts int) error {
	dir, err := os.MkdirTemp("", "apibench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	fmt.Println("API request latency, vmm/api server on a unix socket, in-process machine")
	sock := filepath.Join(dir, "inproc.sock")
	l, err := api.Listen(sock)
	if err != nil {
		return err
	}
	srv := api.NewServer(api.Options{})
	srv.Attach(&benchMachine{state: "running"}, api.VMConfig{MachineConfig: api.DefaultMachineConfig})
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, l) }()
	printHeader()
	for _, r := range requests(true) {
		for _, fresh := range []bool{false, true} {
			lat, err := measure(sock, r, n, fresh)
			if err != nil {
				cancel()
				return err
			}
			printRow(r.name, fresh, lat)
		}
	}
	cancel()
	if err := <-served; err != nil {
		return err
	}

	if kit != "" {
		if err := realVMM(vmmBin, kit, dir, n); err != nil {
			return err
		}
	}

	fmt.Printf("\nvmm start → API socket accepting (vmm --api-socket only; %d starts)\n", starts)
	var sched, rusage, wall, floor []time.Duration
	for i := 0; i < starts; i++ {
		sock := filepath.Join(dir, fmt.Sprintf("start%d.sock", i))
		s, r, w, err := startup(exec.Command(vmmBin, "--api-socket", sock, "--serial", "none"), sock)
		if err != nil {
			return err
		}
		sched, rusage, wall = append(sched, s), append(rusage, r), append(wall, w)
		if floorBin != "" {
			sock = filepath.Join(dir, fmt.Sprintf("floor%d.sock", i))
			if s, _, _, err = startup(exec.Command(floorBin, sock), sock); err != nil {
				return err
			}
			floor = append(floor, s)
		}
	}
	fmt.Printf("%-44s %10s %10s %10s\n", "measure", "p50", "min", "max")
	for _, row := range []struct {
		name string
		d    []time.Duration
	}{
		{"CPU time at first accept (schedstat, ms)", sched},
		{"CPU time incl. exit (getrusage, ms)", rusage},
		{"wall time to first accept (ms)", wall},
		{"floor: Go program that only listens (CPU ms)", floor},
	} {
		if len(row.d) == 0 {
			continue
		}
		slices.Sort(row.d)
		fmt.Printf("%-44s %10.2f %10.2f %10.2f\n", row.name, ms(row.d[len(row.d)/2]), ms(row.d[0]), ms(row.d[len(row.d)-1]))
	}
	fmt.Println("Firecracker's target for the same step: 8 CPU ms. The floor row is this host's cost of starting any Go\n" +
		"program to a listening socket; vmm's share is the difference.")
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// request is one kind of API call; for a state change it alternates
// between two bodies so every call does work.
type request struct {
	name, method, path string
	bodies             []string
}

func requests(withState bool) []request {
	r := []request{
		{"GET /vm", "GET", "/vm", []string{""}},
		{"GET /metrics", "GET", "/metrics", []string{""}},
	}
	if withState {
		r = append(r, request{"PUT /vm/state (pause, resume)", "PUT", "/vm/state",
			[]string{`{"state":"paused"}`, `{"state":"running"}`}})
	}
	r = append(r, request{"PUT /vm/state bad JSON (400)", "PUT", "/vm/state", []string{`{"state":`}})
	return r
}

func client(sock string, fresh bool) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: fresh,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
}

// measure sends n requests one after another and returns each latency.
func measure(sock string, r request, n int, fresh bool) ([]time.Duration, error) {
	c := client(sock, fresh)
	defer c.CloseIdleConnections()
	lat := make([]time.Duration, 0, n)
	for i := 0; i < n; i++ {
		body := r.bodies[i%len(r.bodies)]
		req, err := http.NewRequest(r.method, "http://vmm"+r.path, strings.NewReader(body))
		if err != nil {
			return nil, err
		}
		t0 := time.Now()
		resp, err := c.Do(req)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r.name, err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		lat = append(lat, time.Since(t0))
		if err != nil {
			return nil, err
		}
		if resp.StatusCode >= 500 {
			return nil, fmt.Errorf("%s: status %d", r.name, resp.StatusCode)
		}
	}
	return lat, nil
}

func printHeader() {
	fmt.Printf("%-32s %-10s %8s %8s %8s %8s\n", "request", "conn", "n", "p50 µs", "p99 µs", "mean µs")
}

func printRow(name string, fresh bool, lat []time.Duration) {
	conn := "kept"
	if fresh {
		conn = "fresh"
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	fmt.Printf("%-32s %-10s %8d %8.1f %8.1f %8.1f\n", name, conn, len(lat), us(lat[len(lat)/2]), us(lat[len(lat)*99/100]), us(sum/time.Duration(len(lat))))
}

// realVMM boots the kit under vmm with --api-socket and measures the same
// requests against it while the guest runs (pause/resume are left out:
// the nested test host makes each one a KVM round trip of its own).
func realVMM(vmmBin, kit, dir string, n int) error {
	sock := filepath.Join(dir, "real.sock")
	cmd := exec.Command(vmmBin, "--kernel", filepath.Join(kit, "vmlinux"), "--initrd", filepath.Join(kit, "initrd.img"),
		"--memory", "128M", "--serial", "none", "--cmdline", "console=ttyS0 reboot=k panic=-1 kit.run="+b64("sleep 3600"),
		"--api-socket", sock)
	if err := cmd.Start(); err != nil {
		return err
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	if _, err := waitAccept(sock, cmd.Process.Pid, 2*time.Minute); err != nil {
		return err
	}
	fmt.Println("\nAPI request latency, real vmm running the kit guest (1 vCPU, 128 MiB)")
	printHeader()
	for _, r := range requests(false) {
		lat, err := measure(sock, r, n, false)
		if err != nil {
			return err
		}
		printRow(r.name, false, lat)
	}
	return nil
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// startup starts cmd (vmm --api-socket, or the floor program) and measures, at the moment the socket
// first accepts a connection, the CPU time of all its threads (from
// /proc/PID/task/*/schedstat, in ns); then it kills it and also reports
// getrusage's CPU time of the whole life (a little past ready).
func startup(cmd *exec.Cmd, sock string) (sched, rusage, wall time.Duration, err error) {
	t0 := time.Now()
	if err := cmd.Start(); err != nil {
		return 0, 0, 0, err
	}
	sched, err = waitAccept(sock, cmd.Process.Pid, 10*time.Second)
	wall = time.Since(t0)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	_ = cmd.Wait()
	if err != nil {
		return 0, 0, 0, err
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		return 0, 0, 0, errors.New("no rusage")
	}
	rusage = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return sched, rusage, wall, nil
}

// waitAccept polls until sock accepts, then returns pid's CPU time so far.
func waitAccept(sock string, pid int, timeout time.Duration) (time.Duration, error) {
	deadline := time.Now().Add(timeout)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			cpu := cpuTime(pid)
			c.Close()
			return cpu, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%s: not accepting after %v", sock, timeout)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

var schedMu sync.Mutex

// cpuTime sums the run time of every thread of pid (the first field of
// schedstat, in nanoseconds; finer than the clock ticks of /proc/PID/stat).
func cpuTime(pid int) time.Duration {
	schedMu.Lock()
	defer schedMu.Unlock()
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0
	}
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err == nil {
			total += time.Duration(ns)
		}
	}
	return total
}

// benchMachine is the in-process machine: state changes only, so the
// rows measure the API itself.
type benchMachine struct {
	mu    sync.Mutex
	state string
}

func (b *benchMachine) Status() api.Status {
	b.mu.Lock()
	defer b.mu.Unlock()
	return api.Status{State: b.state, VCPUs: 1, MemoryBytes: 128 << 20}
}

func (b *benchMachine) set(from, to string) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != from {
		return fmt.Errorf("%w: %s", api.ErrWrongState, b.state)
	}
	b.state = to
	return nil
}

func (b *benchMachine) Pause(context.Context) error { return b.set("running", "paused") }
func (b *benchMachine) Resume() error               { return b.set("paused", "running") }
func (b *benchMachine) Shutdown() error             { return nil }
func (b *benchMachine) Kill()                       {}
func (b *benchMachine) Metrics() api.Metrics {
	return api.Metrics{Exits: map[string]uint64{"io": 1000, "mmio": 100, "hlt": 10},
		Devices:  []api.DeviceMetrics{{Name: "root", Kind: "drive", Bytes: 1 << 20, Ops: 256}},
		VCPUTime: []time.Duration{time.Second}}
}
func (b *benchMachine) Snapshot(context.Context, string) error { return nil }
func (b *benchMachine) SetRateLimit(api.DeviceRef, api.RateLimiter) error {
	return nil
}
