package cloud

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"kvmstack/netdev"
	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/state"
)

const (
	adminPassword = "cloud-test-admin-pw"
	// underlayNet is the hosts' underlay: host i has .i, on a bridge in a
	// namespace of its own. Nothing of it exists outside the namespaces.
	underlayPrefix = "10.99.0."
	underlayBridge = "ubr0"
	serverHTTPPort = "8480"
	serverRaftPort = "8481"
	// hostTTL is the servers' --host-ttl: short, so that a dead host is
	// declared down well within a test's budget.
	hostTTL = 12 * time.Second
	flavor  = "kit"
)

// proc is one kvmstack process (server or agent) run inside a host's
// namespace, so that killing it is a real process kill.
type proc struct {
	name string
	ns   *netdev.Namespace
	args []string
	env  []string
	log  string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

func (p *proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	fmt.Fprintf(f, "==== start %s %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(kvmstackBin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), p.env...)
	if err := p.ns.Start(cmd); err != nil {
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

// kill ends the process with SIGKILL and waits for it.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// host is one compute host: a namespace with a veth on the underlay, a
// server and an agent.
type host struct {
	name    string
	ip      string
	ns      *netdev.Namespace
	dir     string
	dataDir string // the agent's
	server  *proc  // nil for an agent-only host
	agent   *proc
}

func (h *host) httpAddr() string { return net.JoinHostPort(h.ip, serverHTTPPort) }

// netnsID names the host's namespace as /proc/PID/ns/net does.
func (h *host) netnsID() (string, error) {
	var id string
	err := h.ns.Do(func() error {
		var err error
		id, err = os.Readlink("/proc/thread-self/ns/net")
		return err
	})
	return id, err
}

// cloud is the three-host cluster the tests share.
type cloud struct {
	dir      string
	underlay *netdev.Namespace
	hosts    []*host
	api      *client.Client
	kernel   *state.Image
	initrd   *state.Image
	// broken makes the next test build a fresh cloud: a failed test may
	// have left it in any state.
	broken bool
}

var (
	sharedMu sync.Mutex
	shared   *cloud
)

// getCloud returns the shared cloud, building it first if there is none or
// the last one was left broken. A test that fails marks it broken.
func getCloud(t *testing.T) *cloud {
	t.Helper()
	needKit(t)
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil && shared.broken {
		shared.close()
		shared = nil
	}
	if shared == nil {
		start := time.Now()
		c, err := newCloud(3)
		if err != nil {
			if c != nil {
				c.dumpLogs(t)
				c.close()
			}
			t.Fatalf("building the cloud: %v", err)
		}
		t.Logf("cloud of %d hosts up in %v", len(c.hosts), time.Since(start).Round(100*time.Millisecond))
		shared = c
	}
	c := shared
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs(t)
			c.broken = true
		} else if os.Getenv(envLogs) != "" {
			c.dumpWarnings(t)
		}
	})
	return c
}

func closeShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.close()
		shared = nil
	}
}

func newCloud(n int) (*cloud, error) {
	dir, err := os.MkdirTemp("", "kvmstack-cloud-")
	if err != nil {
		return nil, err
	}
	c := &cloud{dir: dir}
	if c.underlay, err = netdev.NewNamespace(); err != nil {
		return c, err
	}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: underlayBridge}}
	if err := c.underlay.Netlink().LinkAdd(br); err != nil {
		return c, fmt.Errorf("underlay bridge: %w", err)
	}
	if err := c.underlay.SetUp(underlayBridge); err != nil {
		return c, err
	}
	pw := filepath.Join(dir, "admin-pw")
	if err := os.WriteFile(pw, []byte(adminPassword), 0o600); err != nil {
		return c, err
	}
	for i := 1; i <= n; i++ {
		h, err := c.addHost(i)
		if err != nil {
			return c, err
		}
		h.server = &proc{name: h.name + "-server", ns: h.ns, log: filepath.Join(h.dir, "server.log"),
			args: []string{"server", "--data-dir", filepath.Join(h.dir, "server"),
				"--bind", net.JoinHostPort(h.ip, serverRaftPort), "--http", h.httpAddr(),
				"--bootstrap-password-file", pw, "--bcrypt-cost", "4", "--host-ttl", hostTTL.String(),
				"--log-level", "warn"}}
	}
	first := c.hosts[0]
	if err := first.server.start(); err != nil {
		return c, err
	}
	c.api = c.clientVia(first)
	if err := waitUntil(90*time.Second, "the bootstrap admin's login", func() error {
		_, err := c.api.Login(context.Background(), "admin", adminPassword, "admin")
		return err
	}); err != nil {
		return c, err
	}
	for _, h := range c.hosts[1:] {
		h.server.args = append(h.server.args, "--join", first.httpAddr())
		h.server.env = []string{"KVMSTACK_TOKEN=" + c.api.Token}
		if err := h.server.start(); err != nil {
			return c, err
		}
	}
	if err := waitUntil(90*time.Second, fmt.Sprintf("%d Raft members", n), func() error {
		var ms []api.MemberView
		if _, err := c.api.Do(context.Background(), http.MethodGet, "/v1/cluster/members", nil, nil, &ms); err != nil {
			return err
		}
		if len(ms) != n {
			return fmt.Errorf("%d members", len(ms))
		}
		return nil
	}); err != nil {
		return c, err
	}
	var servers []string
	for _, h := range c.hosts {
		servers = append(servers, h.httpAddr())
	}
	for i, h := range c.hosts {
		// Each agent asks its own host's server first.
		own := append(append([]string{}, servers[i:]...), servers[:i]...)
		if err := c.startAgent(h, own); err != nil {
			return c, err
		}
	}
	if err := c.waitHostsUp(len(c.hosts)); err != nil {
		return c, err
	}
	ctx := context.Background()
	if _, err := c.api.Do(ctx, http.MethodPost, "/v1/flavors", nil, api.FlavorRequest{Name: flavor, VCPUs: 1, MemoryMB: 128, DiskGB: 1}, nil); err != nil {
		return c, fmt.Errorf("flavor: %w", err)
	}
	if c.kernel, err = c.uploadFile(ctx, "kit-vmlinux", state.ImageKernel, kitVmlinux); err != nil {
		return c, err
	}
	if c.initrd, err = c.uploadFile(ctx, "kit-initrd", state.ImageInitrd, kitInitrd); err != nil {
		return c, err
	}
	return c, nil
}

// addHost makes host i's namespace and its veth to the underlay bridge.
func (c *cloud) addHost(i int) (*host, error) {
	h := &host{name: fmt.Sprintf("host%d", i), ip: underlayPrefix + strconv.Itoa(i)}
	h.dir = filepath.Join(c.dir, h.name)
	h.dataDir = filepath.Join(h.dir, "agent")
	if err := os.MkdirAll(h.dataDir, 0o700); err != nil {
		return nil, err
	}
	ns, err := netdev.NewNamespace()
	if err != nil {
		return nil, err
	}
	h.ns = ns
	c.hosts = append(c.hosts, h)
	peer := "u-" + h.name
	if err := ns.AddVeth("eth0", peer, c.underlay); err != nil {
		return nil, fmt.Errorf("%s: veth: %w", h.name, err)
	}
	nl := c.underlay.Netlink()
	l, err := nl.LinkByName(peer)
	if err != nil {
		return nil, err
	}
	br, err := nl.LinkByName(underlayBridge)
	if err != nil {
		return nil, err
	}
	if err := nl.LinkSetMaster(l, br); err != nil {
		return nil, fmt.Errorf("%s: attach to the underlay: %w", h.name, err)
	}
	if err := c.underlay.SetUp(peer); err != nil {
		return nil, err
	}
	if err := ns.AddAddress("eth0", h.ip+"/24"); err != nil {
		return nil, err
	}
	if err := ns.SetUp("eth0"); err != nil {
		return nil, err
	}
	return h, nil
}

// startAgent starts (or restarts) the host's agent.
func (c *cloud) startAgent(h *host, servers []string) error {
	if h.agent == nil {
		h.agent = &proc{name: h.name + "-agent", ns: h.ns, log: filepath.Join(h.dir, "agent.log"),
			args: []string{"agent", "--servers", strings.Join(servers, ","), "--data-dir", h.dataDir,
				"--underlay-ip", h.ip, "--vmm", vmmBin, "--host-name", h.name, "--user", "admin",
				"--vcpus", "8", "--memory", "2048", "--disk", "20", "--log-level", "debug"},
			env: []string{"KVMSTACK_PASSWORD=" + adminPassword}}
	}
	return h.agent.start()
}

// clientVia is an API client of h's server whose connections are made
// inside h's namespace.
func (c *cloud) clientVia(h *host) *client.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return h.ns.Dial(network, addr)
	}, MaxIdleConnsPerHost: 4}
	cl := client.New(h.httpAddr(), "")
	cl.HTTP = &http.Client{Transport: tr, Timeout: time.Minute}
	return cl
}

func (c *cloud) uploadFile(ctx context.Context, name, kind, path string) (*state.Image, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(b)
	img, err := c.api.UploadImage(ctx, name, kind, "", hex.EncodeToString(sum[:]), bytes.NewReader(b), int64(len(b)), nil)
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", name, err)
	}
	return img, nil
}

func (c *cloud) hostViews() ([]api.HostView, error) {
	var hosts []api.HostView
	_, err := c.api.Do(context.Background(), http.MethodGet, "/v1/hosts", nil, nil, &hosts)
	return hosts, err
}

// hostView returns the cluster's view of h.
func (c *cloud) hostView(h *host) (*api.HostView, error) {
	hosts, err := c.hostViews()
	if err != nil {
		return nil, err
	}
	for i := range hosts {
		if hosts[i].Name == h.name {
			return &hosts[i], nil
		}
	}
	return nil, fmt.Errorf("host %s is not registered", h.name)
}

func (c *cloud) waitHostsUp(n int) error {
	return waitUntil(90*time.Second, fmt.Sprintf("%d hosts up", n), func() error {
		hosts, err := c.hostViews()
		if err != nil {
			return err
		}
		up := 0
		for _, h := range hosts {
			if h.Status == "up" {
				up++
			}
		}
		if up < n {
			return fmt.Errorf("%d of %d up", up, len(hosts))
		}
		return nil
	})
}

// hostOf returns the test host an instance is placed on.
func (c *cloud) hostOf(in *state.Instance) (*host, error) {
	hosts, err := c.hostViews()
	if err != nil {
		return nil, err
	}
	for _, hv := range hosts {
		if hv.ID != in.HostID {
			continue
		}
		for _, h := range c.hosts {
			if h.name == hv.Name {
				return h, nil
			}
		}
	}
	return nil, fmt.Errorf("instance %s is on host %q, none of ours", in.ID, in.HostID)
}

func (c *cloud) dumpLogs(t *testing.T) {
	for _, h := range c.hosts {
		for _, p := range []*proc{h.server, h.agent} {
			if p != nil {
				t.Logf("---- %s log tail:\n%s", p.name, p.tail(60))
			}
		}
	}
}

// dumpWarnings logs the warnings and errors of every log.
func (c *cloud) dumpWarnings(t *testing.T) {
	for _, h := range c.hosts {
		for _, p := range []*proc{h.server, h.agent} {
			if p == nil {
				continue
			}
			b, _ := os.ReadFile(p.log)
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Contains(l, "level=WARN") || strings.Contains(l, "level=ERROR") || strings.Contains(l, "[ERROR]") {
					t.Logf("%s: %s", p.name, l)
				}
			}
		}
	}
}

// close kills every process of every host (servers, agents, and the vmm
// processes that outlive their agent by design) and drops the namespaces.
func (c *cloud) close() {
	for _, h := range c.hosts {
		for _, p := range []*proc{h.agent, h.server} {
			if p != nil {
				p.kill()
			}
		}
		killNamespaceProcs(h)
		if h.ns != nil {
			h.ns.Close()
		}
	}
	if c.underlay != nil {
		c.underlay.Close()
	}
	os.RemoveAll(c.dir)
}

// namespacePIDs lists the processes running in h's namespace.
func namespacePIDs(h *host) ([]int, error) {
	id, err := h.netnsID()
	if err != nil {
		return nil, err
	}
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	self := os.Getpid()
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		if l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && l == id && alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// killNamespaceProcs SIGKILLs every process in h's namespace and waits for
// them to be gone: a host losing power, as far as its processes go.
func killNamespaceProcs(h *host) []int {
	pids, _ := namespacePIDs(h)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, pid := range pids {
		for alive(pid) && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
	}
	return pids
}

// alive reports whether pid is a live (not zombie) process.
func alive(pid int) bool {
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(raw)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && len(s) > i+2 && s[i+2] != 'Z' && s[i+2] != 'X'
}

// waitUntil polls cond until it returns nil, or fails with its last error.
func waitUntil(timeout time.Duration, what string, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %v waiting for %s: %w", timeout, what, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var errNotYet = errors.New("not yet")
