package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
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

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
)

const adminPassword = "cluster-test-admin-pw"

var (
	binary  string
	workDir string
)

func TestMain(m *testing.M) {
	var err error
	workDir, err = os.MkdirTemp("", "kvmstack-cluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(workDir, "kvmstack")
	build := exec.Command("go", "build", "-o", binary, "kvmstack/cmd/kvmstack")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building cmd/kvmstack:", err)
		os.Exit(1)
	}
	code := m.Run()
	stopShared()
	if code == 0 {
		os.RemoveAll(workDir)
	} else {
		fmt.Fprintln(os.Stderr, "server logs kept in", workDir)
	}
	os.Exit(code)
}

var (
	portsMu sync.Mutex
	ports   = map[int]bool{}
)

// freePort picks a port for a server that is stopped and restarted on the
// same address. It comes from below Linux's ephemeral range (32768 and up
// by default): a port the kernel hands out for :0 can be taken, while its
// server is down, as the local port of any outgoing connection, and the
// restart then fails with "address already in use".
func freePort(t testing.TB) string {
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := 20000 + rand.IntN(12000)
		if ports[p] {
			continue
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p)
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		ports[p] = true
		return addr
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// proc is one server process.
type proc struct {
	name, dir, raft, http string
	args                  []string
	env                   []string
	cmd                   *exec.Cmd
	log                   *os.File
	done                  chan struct{}
}

func (p *proc) start(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(p.dir, "server.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	p.log = f
	fmt.Fprintf(f, "==== start %s %s\n", p.name, time.Now().Format(time.RFC3339Nano))
	args := append([]string{"server", "--data-dir", filepath.Join(p.dir, "data"), "--bind", p.raft, "--http", p.http}, p.args...)
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	p.cmd.Env = append(os.Environ(), p.env...)
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.done = make(chan struct{})
	go func(c *exec.Cmd, d chan struct{}) { c.Wait(); close(d) }(p.cmd, p.done)
}

// kill stops the process abruptly, like a crash: it stays a Raft member.
func (p *proc) kill() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.log.Close()
	p.cmd = nil
}

// stop asks the process to leave gracefully, killing it if it hangs.
func (p *proc) stop() {
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	p.log.Close()
	p.cmd = nil
}

func (p *proc) logText() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "server.log"))
	return string(b)
}

// testCluster is three (or more) server processes.
type testCluster struct {
	t       testing.TB
	procs   []*proc
	token   string
	extra   []string
	nextIdx int
}

// newCluster starts n servers: the first bootstraps, the others join it.
func newCluster(t testing.TB, name string, n int, extra ...string) *testCluster {
	t.Helper()
	c := &testCluster{t: t, extra: extra}
	pw := filepath.Join(workDir, name+"-pw")
	if err := os.WriteFile(pw, []byte(adminPassword), 0o600); err != nil {
		t.Fatal(err)
	}
	c.extra = append(c.extra, "--bootstrap-password-file", pw, "--bcrypt-cost", "4", "--log-level", "warn")
	first := c.add(name, nil)
	first.start(t)
	adm := c.clientFor(0)
	waitFor(t, "bootstrap admin login", 60*time.Second, func() bool {
		_, err := adm.Login(context.Background(), "admin", adminPassword, "admin")
		return err == nil
	})
	c.token = adm.Token
	for i := 1; i < n; i++ {
		c.addServer(name)
	}
	c.waitMembers(n)
	return c
}

func (c *testCluster) add(name string, join []string) *proc {
	dir := filepath.Join(workDir, fmt.Sprintf("%s-%d", name, c.nextIdx))
	c.nextIdx++
	if err := os.MkdirAll(dir, 0o700); err != nil {
		c.t.Fatal(err)
	}
	p := &proc{name: filepath.Base(dir), dir: dir, raft: freePort(c.t), http: freePort(c.t), args: append([]string{}, c.extra...)}
	for _, j := range join {
		p.args = append(p.args, "--join", j)
	}
	c.procs = append(c.procs, p)
	return p
}

// addServer starts one more server that joins through the first.
func (c *testCluster) addServer(name string) *proc {
	p := c.add(name, []string{c.procs[0].http})
	p.env = []string{"KVMSTACK_TOKEN=" + c.token}
	p.start(c.t)
	return p
}

func (c *testCluster) clientFor(i int) *client.Client {
	cl := client.New(c.procs[i].http, c.token)
	cl.HTTP = &http.Client{Timeout: 30 * time.Second}
	return cl
}

func (c *testCluster) status(i int) (*api.StatusView, error) {
	if c.procs[i].cmd == nil {
		return nil, fmt.Errorf("server %d is down", i)
	}
	var st api.StatusView
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cl := c.clientFor(i)
	cl.RetryFor = -1
	_, err := cl.Do(ctx, http.MethodGet, "/v1/cluster/status", nil, nil, &st)
	return &st, err
}

// leader returns the index of the live server that is leader, waiting for one.
func (c *testCluster) leader() int {
	c.t.Helper()
	idx := -1
	waitFor(c.t, "a leader", 60*time.Second, func() bool {
		for i := range c.procs {
			if st, err := c.status(i); err == nil && st.IsLeader {
				idx = i
				return true
			}
		}
		return false
	})
	return idx
}

func (c *testCluster) waitMembers(n int) {
	c.t.Helper()
	waitFor(c.t, fmt.Sprintf("%d raft members", n), 60*time.Second, func() bool {
		var ms []api.MemberView
		cl := c.clientFor(c.leader())
		if _, err := cl.Do(context.Background(), http.MethodGet, "/v1/cluster/members", nil, nil, &ms); err != nil {
			return false
		}
		return len(ms) == n
	})
}

// waitConverged waits until every live server applied the leader's last index.
func (c *testCluster) waitConverged() {
	c.t.Helper()
	waitFor(c.t, "servers to converge", 60*time.Second, func() bool {
		st, err := c.status(c.leader())
		if err != nil {
			return false
		}
		target := st.Raft["applied_index"]
		for i := range c.procs {
			if c.procs[i].cmd == nil {
				continue
			}
			s, err := c.status(i)
			if err != nil || atoi(s.Raft["applied_index"]) < atoi(target) {
				return false
			}
		}
		return true
	})
}

func atoi(s string) uint64 { n, _ := strconv.ParseUint(s, 10, 64); return n }

func (c *testCluster) stopAll() {
	var wg sync.WaitGroup
	for _, p := range c.procs {
		wg.Add(1)
		go func() { defer wg.Done(); p.kill() }()
	}
	wg.Wait()
}

func (c *testCluster) dumpLogsOnFailure(t testing.TB) {
	t.Cleanup(func() {
		if t.Failed() {
			for _, p := range c.procs {
				lines := strings.Split(p.logText(), "\n")
				if len(lines) > 40 {
					lines = lines[len(lines)-40:]
				}
				t.Logf("---- %s log tail:\n%s", p.name, strings.Join(lines, "\n"))
			}
		}
	})
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

var (
	sharedOnce sync.Once
	shared     *testCluster
)

// sharedCluster is one 3-server cluster reused by the tests that do not
// kill servers (concurrency, security, CLI).
func sharedCluster(t *testing.T) *testCluster {
	sharedOnce.Do(func() {
		// A generous Raft multiplier: these tests do not kill servers, and a
		// loaded CI machine must not cause leadership changes mid-test.
		shared = newCluster(t, "shared", 3, "--max-image-size", "1048576", "--host-ttl", "10m", "--raft-multiplier", "5")
	})
	if shared == nil {
		t.Fatal("shared cluster failed to start")
	}
	shared.t = t
	return shared
}

func stopShared() {
	if shared != nil {
		shared.stopAll()
	}
}
