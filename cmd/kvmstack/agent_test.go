package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"kvmstack/orchestrator/agent"
	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/server"
)

func TestAgentFlags(t *testing.T) {
	t.Setenv("KVMSTACK_TOKEN", "")
	t.Setenv("KVMSTACK_PASSWORD", "")
	t.Setenv("KVMSTACK_CONFIG_DIR", t.TempDir())
	tests := []struct {
		args, want string
	}{
		{"kvmstack agent", "--data-dir is required"},
		{"kvmstack agent --data-dir D --log-level loud", "--log-level"},
		{"kvmstack agent --data-dir D --user admin", "KVMSTACK_PASSWORD"},
		{"kvmstack agent --data-dir D", "no token"},
	}
	for _, tc := range tests {
		app := newApp()
		app.Writer, app.ErrWriter = io.Discard, io.Discard
		args := strings.Fields(strings.ReplaceAll(tc.args, " D", " "+t.TempDir()))
		err := app.Run(args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error about %s", tc.args, err, tc.want)
		}
	}
}

// TestAgentCommand runs `kvmstack agent` against an in-process server until
// its host is registered with the given capacity and underlay address,
// then stops it the way SIGTERM does (its context ends).
func TestAgentCommand(t *testing.T) {
	pw := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pw, []byte("agent-cli-password"), 0o600)
	srv, err := server.Start(context.Background(), server.Config{DataDir: t.TempDir(), RaftBind: "127.0.0.1:0", HTTPBind: "127.0.0.1:0",
		BootstrapExpect: 1, BootstrapPasswordFile: pw, BcryptCost: 4, HostTTL: time.Minute,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RaftLogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	admin := client.New(srv.HTTPAddr(), "")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := admin.Login(context.Background(), "admin", "agent-cli-password", "admin"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Setenv("KVMSTACK_PASSWORD", "agent-cli-password")
	// No --netns: real plumbing would own the kbr-/kvx-/ktp- links of the
	// test's own namespace; this test is about registration only.
	saved := newHostNetwork
	newHostNetwork = func(string, *slog.Logger) (agent.Network, error) { return agent.NoNetwork{}, nil }
	t.Cleanup(func() { newHostNetwork = saved })
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- app.RunContext(ctx, []string{"kvmstack", "agent", "--servers", "127.0.0.1:1," + srv.HTTPAddr(), "--data-dir", t.TempDir(),
			"--user", "admin", "--vmm", "/bin/true", "--host-name", "cli-host", "--underlay-ip", "192.0.2.7", "--vcpus", "3", "--log-level", "error",
			"--console-listen", "127.0.0.1:0"})
	}()
	var hosts []api.HostView
	for {
		hosts = nil
		admin.Do(context.Background(), http.MethodGet, "/v1/hosts", nil, nil, &hosts)
		if len(hosts) == 1 {
			break
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("host not registered: %v", <-done)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if h := hosts[0]; h.Name != "cli-host" || h.UnderlayIP != "192.0.2.7" || h.VCPUs != 3 || h.MemoryMB < 64 ||
		!strings.HasPrefix(h.ConsoleAddr, "127.0.0.1:") || h.ConsoleAddr == "127.0.0.1:0" {
		t.Errorf("registered %+v", h.Host)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("agent: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop")
	}
}
