package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"

	"kvmstack/orchestrator/agent"
	"kvmstack/orchestrator/hostnet"
	"kvmstack/orchestrator/state"
)

// newHostNetwork builds the host network plumbing for an agent (netns ""
// is the agent's own namespace, a name is one under /var/run/netns). Nil
// means this build plumbs nothing and the TAPs must exist already. The
// plumbing owns every kbr-/kvx-/ktp- link of that namespace: give each agent
// a namespace of its own.
var newHostNetwork = func(netns string, log *slog.Logger) (agent.Network, error) {
	return hostnet.New(netns, log)
}

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run the host agent: register this host, run its instances' vmm processes",
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "servers", Usage: "cluster servers' HTTP addresses, comma-separated (default: --addr)", EnvVars: []string{"KVMSTACK_SERVERS"}},
			&cli.StringFlag{Name: "data-dir", Usage: "image cache and instance directories (required)"},
			&cli.StringFlag{Name: "netns", Usage: "network namespace to plumb bridges, TAPs and VXLAN in (default: the agent's)"},
			&cli.StringFlag{Name: "underlay-ip", Usage: "address other hosts send this host's VXLAN traffic to"},
			&cli.StringFlag{Name: "vmm", Usage: "vmm binary (default: vmm beside this executable, else from PATH)"},
			&cli.StringFlag{Name: "host-name", Usage: "the host's name in the cluster (default: the hostname)"},
			&cli.StringFlag{Name: "user", Usage: "log in as this system admin (password from KVMSTACK_PASSWORD) instead of using a token; the agent logs in again when the token expires"},
			&cli.IntFlag{Name: "vcpus", Usage: "vCPUs offered (default: the CPUs this process may run on)"},
			&cli.IntFlag{Name: "memory", Usage: "memory offered in MiB (default: MemTotal)"},
			&cli.IntFlag{Name: "disk", Usage: "disk offered in GiB (default: the data directory's filesystem size)"},
			&cli.Int64Flag{Name: "console-max-bytes", Usage: "rotate a serial console log past this size", Value: 1 << 20},
			&cli.IntFlag{Name: "console-files", Usage: "rotated console logs kept per instance", Value: 3},
			&cli.StringFlag{Name: "console-listen", Usage: "serve instance consoles to the cluster's servers here (signed requests only; \"\" serves none)", Value: ":8482"},
			&cli.StringFlag{Name: "console-addr", Usage: "console address servers dial (default: the listen address, else --underlay-ip, else this machine's first private IPv4, with the listen port)"},
			&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error", Value: "info"},
		},
		Action: runAgent,
	}
}

func runAgent(c *cli.Context) error {
	if c.String("data-dir") == "" {
		return fmt.Errorf("--data-dir is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	var servers []string
	for _, s := range c.StringSlice("servers") {
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				servers = append(servers, p)
			}
		}
	}
	cl := apiClient(c)
	if len(servers) == 0 {
		servers = []string{cl.Addr}
	}
	cfg := agent.Config{Servers: servers, DataDir: c.String("data-dir"), HostName: c.String("host-name"),
		UnderlayIP: c.String("underlay-ip"), VMMPath: c.String("vmm"), ConsoleMaxBytes: c.Int64("console-max-bytes"),
		ConsoleFiles: c.Int("console-files"), ConsoleListen: c.String("console-listen"), ConsoleAddr: c.String("console-addr"), Logger: log}
	if u := c.String("user"); u != "" {
		cfg.User, cfg.Password, cfg.Project = u, os.Getenv("KVMSTACK_PASSWORD"), "admin"
		if cfg.Password == "" {
			return fmt.Errorf("--user needs the password in KVMSTACK_PASSWORD")
		}
	} else {
		cfg.Token = cl.Token
		if cfg.Token == "" {
			return fmt.Errorf("no token: set KVMSTACK_TOKEN, log in first, or use --user")
		}
	}
	if cfg.VMMPath == "" {
		if exe, err := os.Executable(); err == nil {
			if p := filepath.Join(filepath.Dir(exe), "vmm"); isExecutable(p) {
				cfg.VMMPath = p
			}
		}
	}
	if c.Int("vcpus") > 0 || c.Int("memory") > 0 || c.Int("disk") > 0 {
		m, err := agent.MachineCapacity(cfg.DataDir)
		if err != nil {
			return err
		}
		cfg.Capacity = &state.Resources{VCPUs: positiveOr(c.Int("vcpus"), m.VCPUs), MemoryMB: positiveOr(c.Int("memory"), m.MemoryMB), DiskGB: positiveOr(c.Int("disk"), m.DiskGB)}
	}
	if newHostNetwork != nil {
		n, err := newHostNetwork(c.String("netns"), log)
		if err != nil {
			return err
		}
		if cl, ok := n.(io.Closer); ok {
			// Stops the DHCP servers only: links and guests stay for the
			// next agent.
			defer cl.Close()
		}
		cfg.Network = n
		cfg.Netns = netnsPath(c.String("netns"))
	} else {
		log.Warn("this build plumbs no host networking: instance TAPs must exist already")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// On SIGTERM the agent returns and its guests keep running: the next
	// agent on this data directory adopts them.
	return agent.Run(ctx, cfg)
}

// netnsPath is the namespace file for a --netns value: a name under
// /var/run/netns, or a path as given.
func netnsPath(netns string) string {
	if netns == "" || strings.ContainsRune(netns, '/') {
		return netns
	}
	return filepath.Join(hostnet.NetnsDir, netns)
}

func positiveOr(v, d int) int {
	if v > 0 {
		return v
	}
	return d
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0
}
