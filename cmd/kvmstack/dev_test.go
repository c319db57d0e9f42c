package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"kvmstack/netdev"
	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
)

// lockedBuffer is the dev command's output, read while it runs.
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

var devAPI = regexp.MustCompile(`API http://(\S+?),`)

// runDevFor starts `kvmstack dev` and returns its API address and a stop
// function that ends it the way SIGTERM does and returns its error.
func runDevFor(t *testing.T, dir, netns string, extra ...string) (string, *lockedBuffer, func() error) {
	t.Helper()
	out := &lockedBuffer{}
	app := newApp()
	app.Writer, app.ErrWriter = out, out
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.RunContext(ctx, append([]string{"kvmstack", "dev", "--data-dir", dir, "--http", "127.0.0.1:0", "--bind", "127.0.0.1:0",
			"--netns", netns, "--vmm", "/bin/true", "--log-level", "error"}, extra...))
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !devAPI.MatchString(out.String()) {
		select {
		case err := <-done:
			cancel()
			t.Fatalf("dev ended: %v\n%s", err, out.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("dev did not start:\n%s", out.String())
		}
	}
	stop := func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return fmt.Errorf("dev did not stop")
		}
	}
	return devAPI.FindStringSubmatch(out.String())[1], out, stop
}

// TestDevCloud starts the one-machine cloud twice on one data directory:
// the first start prints the admin password, the agent registers the host
// "dev", and a second start keeps the password and the host.
func TestDevCloud(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("creates a network namespace: needs root")
	}
	netns := fmt.Sprintf("kvmstack-devtest-%d", os.Getpid())
	t.Cleanup(func() { netdev.DeleteNamedNamespace(netns) })
	dir := t.TempDir()

	// The capacity flags override what the agent measures.
	addr, out, stop := runDevFor(t, dir, netns, "--vcpus", "7", "--memory", "1234")
	m := regexp.MustCompile(`user admin, password (\S+)`).FindStringSubmatch(out.String())
	if m == nil {
		stop()
		t.Fatalf("no admin password printed on first start:\n%s", out.String())
	}
	// Once announced, the password works at once (no retry).
	if _, err := client.New(addr, "").Login(context.Background(), "admin", m[1], "admin"); err != nil {
		stop()
		t.Fatalf("login right after the start: %v", err)
	}
	if _, err := os.Stat(filepath.Join("/var/run/netns", netns)); err != nil {
		t.Errorf("namespace not created: %v", err)
	}
	if h := waitDevHost(t, addr, m[1]); h.VCPUs != 7 || h.MemoryMB != 1234 {
		t.Errorf("host capacity %d vCPUs %d MiB, want the flags' 7 and 1234", h.VCPUs, h.MemoryMB)
	} else if !strings.HasPrefix(h.ConsoleAddr, "127.0.0.1:") {
		t.Errorf("console endpoint %q, want one on the loopback", h.ConsoleAddr)
	}
	if err := stop(); err != nil {
		t.Fatalf("dev: %v\n%s", err, out.String())
	}
	if st, err := os.Stat(filepath.Join(dir, "admin-password")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("admin-password file: %v %v", st, err)
	}

	addr, out, stop = runDevFor(t, dir, netns)
	defer stop()
	if strings.Contains(out.String(), "password") && strings.Contains(out.String(), "first start") {
		t.Errorf("second start printed the password again:\n%s", out.String())
	}
	waitDevHost(t, addr, m[1])
}

// waitDevHost logs in as admin and waits for the agent's host.
func waitDevHost(t *testing.T, addr, password string) api.HostView {
	t.Helper()
	cl := client.New(addr, "")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var hosts []api.HostView
		_, err := cl.Login(context.Background(), "admin", password, "admin")
		if err == nil {
			_, err = cl.Do(context.Background(), http.MethodGet, "/v1/hosts", nil, nil, &hosts)
		}
		if err == nil && len(hosts) == 1 && hosts[0].Name == "dev" {
			return hosts[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("host dev not registered: %v %+v", err, hosts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
