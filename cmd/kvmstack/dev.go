package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"kvmstack/netdev"
	"kvmstack/orchestrator/agent"
	"kvmstack/orchestrator/client"
	"kvmstack/orchestrator/server"
	"kvmstack/orchestrator/state"
)

// devCommand is the whole cloud in one process on one machine: a
// single-server cluster and the host agent, which is where a new user
// starts.
func devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "run a one-machine cloud: a single-server cluster and this host's agent in one process",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Usage: "state of the server and the agent", Value: devDataDir()},
			&cli.StringFlag{Name: "http", Usage: "HTTP API address", Value: "127.0.0.1:8480"},
			&cli.StringFlag{Name: "bind", Usage: "Raft TCP address", Value: "127.0.0.1:8481"},
			&cli.StringFlag{Name: "netns", Usage: `network namespace for bridges, TAPs and guests' traffic (created if missing; "" = this process's own)`, Value: "kvmstack-dev"},
			&cli.StringFlag{Name: "vmm", Usage: "vmm binary (default: vmm beside this executable, else from PATH)"},
			&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error", Value: "warn"},
			&cli.StringFlag{Name: "console-listen", Usage: "where the agent serves instance consoles to the server (kvmstack instance console)", Value: "127.0.0.1:0"},
			&cli.IntFlag{Name: "vcpus", Usage: "vCPUs offered (default: the CPUs this process may run on)"},
			&cli.IntFlag{Name: "memory", Usage: "memory offered in MiB (default: MemTotal)"},
			&cli.IntFlag{Name: "disk", Usage: "disk offered in GiB (default: the data directory's filesystem size)"},
		},
		Action: runDev,
	}
}

// devDataDir is the user's state directory (XDG_STATE_HOME, else
// ~/.local/state), or /var/lib for a user without a home.
func devDataDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "kvmstack", "dev")
	}
	if h, err := os.UserHomeDir(); err == nil && h != "" && h != "/" {
		return filepath.Join(h, ".local", "state", "kvmstack", "dev")
	}
	return "/var/lib/kvmstack/dev"
}

func runDev(c *cli.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: level}))
	dir := c.String("data-dir")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	pwFile := filepath.Join(dir, "admin-password")
	pw, first, err := devPassword(pwFile)
	if err != nil {
		return err
	}
	netns := c.String("netns")
	if netns != "" {
		if err := ensureNetns(netns); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := server.Start(ctx, server.Config{
		DataDir: filepath.Join(dir, "server"), RaftBind: c.String("bind"), HTTPBind: c.String("http"),
		BootstrapExpect: 1, BootstrapPasswordFile: pwFile, HostTTL: 30 * time.Second, Logger: log,
		RaftLogOutput: io.Discard,
	})
	if err != nil {
		return err
	}
	defer srv.Close()
	// The admin is created once the server has become leader, after Start
	// returns: announce the cloud only when the password works.
	if err := devWaitLogin(ctx, srv.HTTPAddr(), pw, time.Minute); err != nil {
		return err
	}
	w := c.App.Writer
	fmt.Fprintf(w, "kvmstack dev: API http://%s, data in %s", srv.HTTPAddr(), dir)
	if netns != "" {
		fmt.Fprintf(w, ", guests' network in namespace %s", netns)
	}
	fmt.Fprintln(w)
	if first {
		fmt.Fprintf(w, "first start: user admin, password %s (also in %s)\n", pw, pwFile)
	}
	fmt.Fprintf(w, "  export KVMSTACK_ADDR=%s; kvmstack login --user admin --project admin\n", srv.HTTPAddr())

	cfg := agent.Config{Servers: []string{srv.HTTPAddr()}, User: "admin", Password: pw, Project: "admin",
		DataDir: filepath.Join(dir, "agent"), HostName: "dev", UnderlayIP: "127.0.0.1", VMMPath: c.String("vmm"),
		ConsoleListen: c.String("console-listen"), Logger: log}
	if cfg.VMMPath == "" {
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), "vmm"); isExecutable(p) {
				cfg.VMMPath = p
			}
		}
	}
	if c.Int("vcpus") > 0 || c.Int("memory") > 0 || c.Int("disk") > 0 {
		m, err := agent.MachineCapacity(dir)
		if err != nil {
			return err
		}
		cfg.Capacity = &state.Resources{VCPUs: positiveOr(c.Int("vcpus"), m.VCPUs), MemoryMB: positiveOr(c.Int("memory"), m.MemoryMB), DiskGB: positiveOr(c.Int("disk"), m.DiskGB)}
	}
	if newHostNetwork != nil {
		n, err := newHostNetwork(netns, log)
		if err != nil {
			return err
		}
		if cl, ok := n.(io.Closer); ok {
			defer cl.Close()
		}
		cfg.Network = n
		cfg.Netns = netnsPath(netns)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	// The agent returns when ctx ends; guests keep running and the next
	// `kvmstack dev` on this data directory adopts them.
	if err := agent.Run(ctx, cfg); err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("agent: %w", err)
	}
	return nil
}

// devWaitLogin waits until admin can log in with pw.
func devWaitLogin(ctx context.Context, addr, pw string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	cl := client.New(addr, "")
	for {
		_, err := cl.Login(ctx, "admin", pw, "admin")
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("admin cannot log in %s after the start: %w", timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// devPassword reads the admin password of this dev cloud, making one on the
// first start.
func devPassword(file string) (pw string, first bool, err error) {
	b, err := os.ReadFile(file)
	if err == nil {
		if pw = strings.TrimSpace(string(b)); pw == "" {
			return "", false, fmt.Errorf("%s is empty", file)
		}
		return pw, false, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", false, err
	}
	raw := make([]byte, 18)
	if _, err := rand.Read(raw); err != nil {
		return "", false, err
	}
	pw = base64.RawURLEncoding.EncodeToString(raw)
	if err := os.WriteFile(file, []byte(pw+"\n"), 0o600); err != nil {
		return "", false, fmt.Errorf("admin password: %w", err)
	}
	return pw, true, nil
}

// ensureNetns makes the named network namespace (under /var/run/netns)
// with its loopback up, unless it exists. It needs no iproute2: a test host
// or a minimal system may have only busybox.
func ensureNetns(name string) error {
	if strings.ContainsAny(name, "/ ") {
		return fmt.Errorf("--netns %q: not a namespace name", name)
	}
	ns, err := netdev.EnsureNamedNamespace(name)
	if err != nil {
		return fmt.Errorf("--netns: %w", err)
	}
	// The agent's plumbing opens it again by path; the pin keeps it.
	return ns.Close()
}
