package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/state"
)

// Config configures an agent.
type Config struct {
	// Servers are HTTP addresses of cluster servers; requests go to one
	// and move to the next when it cannot be reached.
	Servers []string
	// Token is a system admin token. Alternatively User, Password and
	// Project log in (and log in again when the token expires).
	Token                   string
	User, Password, Project string
	// DataDir holds the image cache and the instance directories.
	DataDir string
	// HostName is the host's name in the cluster (default: os.Hostname).
	HostName string
	// UnderlayIP is where other hosts send this host's VXLAN traffic.
	UnderlayIP string
	// VMMPath is the vmm binary (default: "vmm" from PATH).
	VMMPath string
	// VMMEnv is added to the environment vmm runs with.
	VMMEnv []string
	// Netns is the path of the network namespace the Network plumbs TAPs
	// in ("" = the agent's own); vmm opens its TAPs there.
	Netns string
	// Network plumbs instance networking; nil plumbs nothing (the TAPs
	// must exist already).
	Network Network
	// Capacity overrides what MachineCapacity measures.
	Capacity *state.Resources
	// HeartbeatInterval is how often the host reports itself alive (5s).
	HeartbeatInterval time.Duration
	// WatchWait is the blocking queries' wait (30s).
	WatchWait time.Duration
	// StopTimeout is how long a guest gets to power off after the ACPI
	// power button before its vmm is killed (30s).
	StopTimeout time.Duration
	// StartTimeout is how long a new vmm gets to answer on its socket (30s).
	StartTimeout time.Duration
	// NetworkTimeout bounds the wait for an instance's ports to be plumbed (2m).
	NetworkTimeout time.Duration
	// RestartBackoff is the first delay before a restart under the
	// instance's restart policy; it doubles per failure up to a minute (1s).
	RestartBackoff time.Duration
	// ConsoleMaxBytes and ConsoleFiles rotate each serial console log:
	// past ConsoleMaxBytes (1 MiB) it moves to console.log.1, keeping
	// ConsoleFiles (3) old files. RotateInterval is how often sizes are
	// checked (5s).
	ConsoleMaxBytes int64
	ConsoleFiles    int
	RotateInterval  time.Duration
	// ConsoleListen is where the console endpoint (console.go) listens
	// for the servers' signed requests ("" serves none); ConsoleAddr is
	// the address registered for servers to dial (default: derived from
	// the listener, see advertisedAddr).
	ConsoleListen string
	ConsoleAddr   string
	// Logger receives the agent's log (default slog.Default).
	Logger *slog.Logger
}

func (c *Config) setDefaults() error {
	if len(c.Servers) == 0 {
		return errors.New("agent: no servers")
	}
	if c.DataDir == "" {
		return errors.New("agent: no data directory")
	}
	if c.HostName == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("agent: host name: %w", err)
		}
		c.HostName = h
	}
	if c.VMMPath == "" {
		c.VMMPath = "vmm"
	}
	if filepath.Base(c.VMMPath) == c.VMMPath {
		p, err := exec.LookPath(c.VMMPath)
		if err != nil {
			return fmt.Errorf("agent: vmm binary: %w", err)
		}
		c.VMMPath = p
	}
	abs, err := filepath.Abs(c.VMMPath)
	if err != nil {
		return fmt.Errorf("agent: vmm binary: %w", err)
	}
	c.VMMPath = abs
	c.HeartbeatInterval = cmp.Or(c.HeartbeatInterval, 5*time.Second)
	c.WatchWait = cmp.Or(c.WatchWait, 30*time.Second)
	c.StopTimeout = cmp.Or(c.StopTimeout, 30*time.Second)
	c.StartTimeout = cmp.Or(c.StartTimeout, 30*time.Second)
	c.NetworkTimeout = cmp.Or(c.NetworkTimeout, 2*time.Minute)
	c.RestartBackoff = cmp.Or(c.RestartBackoff, time.Second)
	c.ConsoleMaxBytes = cmp.Or(c.ConsoleMaxBytes, 1<<20)
	c.ConsoleFiles = cmp.Or(c.ConsoleFiles, 3)
	c.RotateInterval = cmp.Or(c.RotateInterval, 5*time.Second)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// hostAgent is one run of the agent (see Run).
type hostAgent struct {
	cfg      Config
	log      *slog.Logger
	instDir  string
	images   *imageCache
	hostID   atomic.Pointer[string]
	clientMu sync.Mutex
	clients  []*client.Client
	cur      int

	mu      sync.Mutex
	insts   map[string]*instance
	adopted map[string]*vmmProcess
	lost    map[string]string // instance id → status of a vmm found dead at start
	wg      sync.WaitGroup

	// netView is the newest host networking view that Network plumbed,
	// seenView the newest one fetched (plumbed or not).
	netMu      sync.Mutex
	netIndex   uint64
	netView    *state.HostNetworking
	seenIndex  uint64
	seenView   *state.HostNetworking
	netErr     error
	netChanged chan struct{}

	// console is the console endpoint registration advertises (nil: none).
	console *consoleEndpoint
}

// Run registers the host and runs the agent until ctx ends. It returns nil
// then, leaving every vmm running for the next agent to adopt; it returns an
// error only if it cannot start (bad configuration, data directory,
// refused registration).
func Run(ctx context.Context, cfg Config) error {
	// Lock first: setting up the image cache empties its tmp directory,
	// which a running agent may be downloading into.
	lock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return err
	}
	defer lock.Close()
	a, err := newAgent(cfg)
	if err != nil {
		return err
	}
	// The console endpoint listens first: registration advertises it.
	stopConsole, err := a.startConsole(ctx)
	if err != nil {
		return err
	}
	defer stopConsole()
	if err := a.register(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	a.adoptAll(ctx)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, f := range []func(context.Context){a.heartbeat, a.rotateConsoles, a.watchNetwork} {
		wg.Add(1)
		go func() { defer wg.Done(); f(ctx) }()
	}
	a.watchInstances(ctx)
	cancel()
	wg.Wait()
	a.wg.Wait()
	return nil
}

// ErrDataDirInUse means another agent runs on the data directory.
var ErrDataDirInUse = errors.New("agent: another agent uses this data directory")

// lockDataDir takes an exclusive lock on DATA/agent.lock for the run: two
// agents driving the same vmm processes would fight over them. The
// descriptor is close-on-exec, so vmm processes do not inherit the lock.
func lockDataDir(dir string) (*os.File, error) {
	if dir == "" {
		return nil, errors.New("agent: no data directory")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "agent.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrDataDirInUse, dir)
		}
		return nil, fmt.Errorf("agent: lock %s: %w", dir, err)
	}
	return f, nil
}

func newAgent(cfg Config) (*hostAgent, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	a := &hostAgent{cfg: cfg, log: cfg.Logger.With("host", cfg.HostName), instDir: filepath.Join(cfg.DataDir, "instances"),
		insts: map[string]*instance{}, adopted: map[string]*vmmProcess{}, lost: map[string]string{}, netChanged: make(chan struct{})}
	if err := os.MkdirAll(a.instDir, 0o700); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	for _, s := range cfg.Servers {
		c := client.New(s, cfg.Token)
		a.clients = append(a.clients, c)
	}
	images, err := newImageCache(filepath.Join(cfg.DataDir, "images"), func(ctx context.Context, id string, w io.Writer) error {
		return a.withClient(ctx, func(c *client.Client) error { return c.DownloadImage(ctx, id, w) })
	})
	if err != nil {
		return nil, err
	}
	a.images = images
	return a, nil
}

// host is the host's id in the cluster.
func (a *hostAgent) host() string { return *a.hostID.Load() }

// withClient runs f against the current server, moving on to the next one
// when a server cannot be reached and logging in again when the token was
// refused (if the agent has a password).
func (a *hostAgent) withClient(ctx context.Context, f func(*client.Client) error) error {
	var err error
	relogged := false
	for range len(a.clients) + 1 {
		err = nil
		a.clientMu.Lock()
		c := a.clients[a.cur]
		a.clientMu.Unlock()
		if c.Token == "" && a.cfg.Password != "" {
			var nc *client.Client
			if nc, err = a.login(ctx, c); err == nil {
				c = nc
			}
		}
		if err == nil {
			err = f(c)
		}
		var ae *client.APIError
		switch {
		case err == nil || ctx.Err() != nil:
			return err
		case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized && a.cfg.Password != "" && !relogged:
			relogged = true
			if _, lerr := a.login(ctx, c); lerr != nil {
				return lerr
			}
		case errors.As(err, &ae):
			return err
		default:
			// Unreachable: try the next server.
			a.clientMu.Lock()
			if a.clients[a.cur] == c {
				a.cur = (a.cur + 1) % len(a.clients)
			}
			a.clientMu.Unlock()
		}
	}
	return err
}

// login gets a new token from old's server and installs a client with it
// in old's place (clients are shared between goroutines, so a token is
// never changed in place).
func (a *hostAgent) login(ctx context.Context, old *client.Client) (*client.Client, error) {
	c := client.New(old.Addr, "")
	if _, err := c.Login(ctx, a.cfg.User, a.cfg.Password, cmp.Or(a.cfg.Project, "admin")); err != nil {
		return nil, fmt.Errorf("agent: login as %s: %w", a.cfg.User, err)
	}
	a.clientMu.Lock()
	defer a.clientMu.Unlock()
	for i := range a.clients {
		if a.clients[i] == old {
			a.clients[i] = c
		}
	}
	return c, nil
}

func (a *hostAgent) call(ctx context.Context, method, path string, q url.Values, in, out any) (uint64, error) {
	var idx uint64
	err := a.withClient(ctx, func(c *client.Client) error {
		var err error
		idx, err = c.Do(ctx, method, path, q, in, out)
		return err
	})
	return idx, err
}

// register announces the host with its measured capacity, retrying while
// no server answers; a refusal (4xx) is returned.
func (a *hostAgent) register(ctx context.Context) error {
	capa := a.cfg.Capacity
	if capa == nil {
		m, err := MachineCapacity(a.cfg.DataDir)
		if err != nil {
			return err
		}
		capa = &m
	}
	req := api.HostRequest{Name: a.cfg.HostName, UnderlayIP: a.cfg.UnderlayIP, VCPUs: capa.VCPUs, MemoryMB: capa.MemoryMB, DiskGB: capa.DiskGB}
	if a.console != nil {
		req.ConsoleAddr, req.ConsoleKey = a.console.addr, a.console.key
	}
	for delay := 200 * time.Millisecond; ; delay = min(2*delay, 5*time.Second) {
		var hv api.HostView
		_, err := a.call(ctx, http.MethodPost, "/v1/hosts", nil, req, &hv)
		if err == nil {
			a.hostID.Store(&hv.ID)
			a.log.Info("registered", "id", hv.ID, "vcpus", req.VCPUs, "memory_mb", req.MemoryMB, "disk_gb", req.DiskGB, "underlay_ip", req.UnderlayIP)
			return nil
		}
		var ae *client.APIError
		if errors.As(err, &ae) && ae.Status < 500 {
			return fmt.Errorf("agent: register host %s: %w", a.cfg.HostName, err)
		}
		a.log.Warn("register", "err", err)
		if !sleepCtx(ctx, delay) {
			return ctx.Err()
		}
	}
}

func (a *hostAgent) heartbeat(ctx context.Context) {
	t := time.NewTicker(a.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := a.call(ctx, http.MethodPost, "/v1/hosts/"+a.host()+"/heartbeat", nil, nil, nil)
		if client.IsStatus(err, http.StatusNotFound) {
			// The host was deleted: announce it again (same name, new id).
			a.log.Warn("host unknown to the cluster; registering again")
			err = a.register(ctx)
		}
		if err != nil && ctx.Err() == nil {
			a.log.Warn("heartbeat", "err", err)
		}
	}
}

// rotateConsoles keeps every instance's console log within its size.
func (a *hostAgent) rotateConsoles(ctx context.Context) {
	t := time.NewTicker(a.cfg.RotateInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ents, _ := os.ReadDir(a.instDir)
		for _, e := range ents {
			if err := rotateConsole(filepath.Join(a.instDir, e.Name(), fileConsole), a.cfg.ConsoleMaxBytes, a.cfg.ConsoleFiles); err != nil {
				a.log.Warn("rotate console", "instance", e.Name(), "err", err)
			}
		}
	}
}

// adoptAll looks at every instance directory left by an earlier agent and
// keeps the vmm processes still running there.
func (a *hostAgent) adoptAll(ctx context.Context) {
	ents, _ := os.ReadDir(a.instDir)
	for _, e := range ents {
		if !e.IsDir() {
			continue
		}
		dir := filepath.Join(a.instDir, e.Name())
		if _, err := os.Stat(filepath.Join(dir, filePID)); err != nil {
			continue
		}
		p, err := adoptVMM(ctx, a.cfg.VMMPath, dir)
		if err == nil {
			a.adopted[e.Name()] = p
			a.log.Info("adopted vmm", "instance", e.Name(), "pid", p.pid)
			continue
		}
		st := statusUnknown
		if raw, rerr := os.ReadFile(filepath.Join(dir, fileExitStatus)); rerr == nil && len(trimSpace(raw)) > 0 {
			st = string(trimSpace(raw))
		}
		a.lost[e.Name()] = st
		os.Remove(filepath.Join(dir, filePID))
		a.log.Warn("vmm of a previous agent is gone", "instance", e.Name(), "status", st, "why", err)
	}
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == ' ') {
		b = b[:len(b)-1]
	}
	return b
}

// watchInstances follows the instances placed on this host with blocking
// queries and hands every change to the instance's supervisor.
func (a *hostAgent) watchInstances(ctx context.Context) {
	var idx uint64
	first := true
	for delay := 200 * time.Millisecond; ctx.Err() == nil; {
		q := url.Values{"host": {a.host()}}
		if idx > 0 {
			q.Set("index", strconv.FormatUint(idx, 10))
			q.Set("wait", a.cfg.WatchWait.String())
		}
		var list []*state.Instance
		n, err := a.call(ctx, http.MethodGet, "/v1/instances", q, nil, &list)
		if err != nil {
			if ctx.Err() == nil {
				a.log.Warn("watch instances", "err", err)
				sleepCtx(ctx, delay)
				delay = min(2*delay, 5*time.Second)
			}
			continue
		}
		delay = 200 * time.Millisecond
		a.dispatch(ctx, list, n, first)
		first, idx = false, n
	}
}

// dispatch starts a supervisor for each new instance, passes changes to
// the existing ones and tells those no longer listed (deleted) to clean up.
// On the first list, directories of instances the cluster no longer has
// are cleaned up too.
func (a *hostAgent) dispatch(ctx context.Context, list []*state.Instance, index uint64, first bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	seen := map[string]bool{}
	for _, rec := range list {
		if rec.State == state.InstanceDeleted || rec.HostID != a.host() {
			continue
		}
		seen[rec.ID] = true
		in := a.insts[rec.ID]
		if in == nil {
			in = a.newInstanceLocked(ctx, rec.ID)
		}
		in.push(update{rec: rec, index: index})
	}
	if first {
		ents, _ := os.ReadDir(a.instDir)
		for _, e := range ents {
			if e.IsDir() && !seen[e.Name()] && a.insts[e.Name()] == nil {
				a.newInstanceLocked(ctx, e.Name())
			}
		}
	}
	for id, in := range a.insts {
		if !seen[id] {
			in.push(update{})
		}
	}
}

// waitPorts returns the instance's ports (in NIC order) from a host
// networking view at least as new as index, once Network has plumbed it.
func (a *hostAgent) waitPorts(ctx context.Context, id string, index uint64) ([]state.HostPort, error) {
	timer := time.NewTimer(a.cfg.NetworkTimeout)
	defer timer.Stop()
	for {
		a.netMu.Lock()
		view, vidx, seen, sidx, nerr, changed := a.netView, a.netIndex, a.seenView, a.seenIndex, a.netErr, a.netChanged
		a.netMu.Unlock()
		if seen != nil && sidx >= index && len(portsOf(seen, id)) == 0 {
			// No NIC: nothing to wait for, even if plumbing fails.
			return nil, nil
		}
		if view != nil && vidx >= index {
			return portsOf(view, id), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		case <-timer.C:
			if nerr != nil {
				return nil, fmt.Errorf("network not ready after %s: %w", a.cfg.NetworkTimeout, nerr)
			}
			return nil, fmt.Errorf("network not ready after %s", a.cfg.NetworkTimeout)
		}
	}
}

// portsOf returns the instance's ports in a view, in NIC order.
func portsOf(view *state.HostNetworking, id string) []state.HostPort {
	var ports []state.HostPort
	for _, n := range view.Networks {
		for _, p := range n.Ports {
			if p.InstanceID == id {
				ports = append(ports, p)
			}
		}
	}
	slices.SortFunc(ports, func(x, y state.HostPort) int { return cmp.Compare(x.Index, y.Index) })
	return ports
}

// watchNetwork follows the host's networking view and has Network plumb
// each new one; instances wait for the view that contains their ports.
func (a *hostAgent) watchNetwork(ctx context.Context) {
	var idx uint64
	for delay := 200 * time.Millisecond; ctx.Err() == nil; {
		q := url.Values{"host": {a.host()}}
		if idx > 0 {
			q.Set("index", strconv.FormatUint(idx, 10))
			q.Set("wait", a.cfg.WatchWait.String())
		}
		var hn state.HostNetworking
		n, err := a.call(ctx, http.MethodGet, "/v1/ports", q, nil, &hn)
		if err == nil && n == idx {
			continue // the wait expired without a change
		}
		if err == nil {
			a.netMu.Lock()
			a.seenView, a.seenIndex = &hn, n
			close(a.netChanged)
			a.netChanged = make(chan struct{})
			a.netMu.Unlock()
			if a.cfg.Network != nil {
				err = a.cfg.Network.Reconcile(ctx, &hn)
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			a.log.Warn("host networking", "err", err)
			a.netMu.Lock()
			a.netErr = err
			a.netMu.Unlock()
			sleepCtx(ctx, delay)
			delay = min(2*delay, 5*time.Second)
			continue
		}
		delay = 200 * time.Millisecond
		a.netMu.Lock()
		a.netView, a.netIndex, a.netErr = &hn, n, nil
		close(a.netChanged)
		a.netChanged = make(chan struct{})
		a.netMu.Unlock()
		idx = n
	}
}

// image returns an image's metadata.
func (a *hostAgent) image(ctx context.Context, id string) (*state.Image, error) {
	var img state.Image
	if _, err := a.call(ctx, http.MethodGet, "/v1/images/"+url.PathEscape(id), nil, nil, &img); err != nil {
		return nil, fmt.Errorf("image %s: %w", id, err)
	}
	return &img, nil
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
