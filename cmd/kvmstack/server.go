package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/scheduler"
	"kvmstack/orchestrator/server"
)

func serverCommand() *cli.Command {
	return &cli.Command{
		Name:  "server",
		Usage: "run a cluster server, or manage cluster membership",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data-dir", Usage: "directory for the Raft log, snapshots and blobs (required to run a server)"},
			&cli.StringFlag{Name: "bind", Usage: "Raft TCP address", Value: "127.0.0.1:8481"},
			&cli.StringFlag{Name: "http", Usage: "HTTP API address", Value: "127.0.0.1:8480"},
			&cli.IntFlag{Name: "bootstrap-expect", Usage: "intended number of servers; a server without --join forms the cluster and autopilot keeps at least this many", Value: 1},
			&cli.StringSliceFlag{Name: "join", Usage: "HTTP address of a cluster server to join through (needs an admin token in KVMSTACK_TOKEN)"},
			&cli.DurationFlag{Name: "dead-server-timeout", Usage: "remove servers unreachable for this long (0 disables)", Value: 5 * time.Minute},
			&cli.DurationFlag{Name: "host-ttl", Usage: "a host without heartbeat for this long is down", Value: 30 * time.Second},
			&cli.StringFlag{Name: "scheduler", Usage: "weigher: spread or pack", Value: "spread"},
			&cli.StringFlag{Name: "bootstrap-password-file", Usage: "file holding the bootstrap admin password (default: generate and print once)"},
			&cli.Uint64Flag{Name: "snapshot-threshold", Usage: "log entries between Raft snapshots", Value: 8192},
			&cli.Uint64Flag{Name: "trailing-logs", Usage: "log entries kept after a snapshot", Value: 10240},
			&cli.DurationFlag{Name: "snapshot-interval", Usage: "how often Raft checks whether to snapshot", Value: 30 * time.Second},
			&cli.Int64Flag{Name: "max-image-size", Usage: "largest image upload in bytes", Value: 8 << 30},
			&cli.IntFlag{Name: "bcrypt-cost", Usage: "password hashing cost", Value: 10},
			&cli.DurationFlag{Name: "token-ttl", Usage: "lifetime of issued tokens", Value: time.Hour},
			&cli.IntFlag{Name: "scheduler-batch", Usage: "placements per Raft entry", Value: 1000},
			&cli.IntFlag{Name: "raft-multiplier", Usage: "scale Raft heartbeat/election timeouts (1 = 1s heartbeat)", Value: 2},
			&cli.StringFlag{Name: "log-level", Usage: "debug, info, warn or error", Value: "info"},
		},
		Action: runServer,
		Subcommands: []*cli.Command{
			{Name: "members", Usage: "list the Raft members", Action: func(c *cli.Context) error {
				var out []api.MemberView
				if _, err := apiClient(c).Do(ctxOf(c), http.MethodGet, "/v1/cluster/members", nil, nil, &out); err != nil {
					return err
				}
				return printResult(c, out, "id", "raft_addr", "http_addr", "suffrage", "leader", "failing_for")
			}},
			{Name: "remove", Usage: "remove a server from the cluster", ArgsUsage: "ID", Action: func(c *cli.Context) error {
				id, err := needArg(c, "server id")
				if err != nil {
					return err
				}
				_, err = apiClient(c).Do(ctxOf(c), http.MethodDelete, "/v1/cluster/members/"+id, nil, nil, nil)
				return err
			}},
			{Name: "join", Usage: "add a running server to the cluster", Flags: []cli.Flag{
				&cli.StringFlag{Name: "id", Required: true}, &cli.StringFlag{Name: "raft-addr", Required: true}, &cli.StringFlag{Name: "http-addr", Required: true},
			}, Action: func(c *cli.Context) error {
				_, err := apiClient(c).Do(ctxOf(c), http.MethodPost, "/v1/cluster/join", nil,
					api.JoinRequest{ID: c.String("id"), RaftAddr: c.String("raft-addr"), HTTPAddr: c.String("http-addr")}, nil)
				return err
			}},
			{Name: "status", Usage: "show the answering server's Raft status", Action: func(c *cli.Context) error {
				var out api.StatusView
				if _, err := apiClient(c).Do(ctxOf(c), http.MethodGet, "/v1/cluster/status", nil, nil, &out); err != nil {
					return err
				}
				return printResult(c, out)
			}},
		},
	}
}

func runServer(c *cli.Context) error {
	if c.String("data-dir") == "" {
		return fmt.Errorf("--data-dir is required to run a server")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	strategy := scheduler.Strategy(c.String("scheduler"))
	if strategy != scheduler.Spread && strategy != scheduler.Pack {
		return fmt.Errorf("--scheduler must be spread or pack")
	}
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	s, err := server.Start(ctx, server.Config{
		DataDir: c.String("data-dir"), RaftBind: c.String("bind"), HTTPBind: c.String("http"),
		BootstrapExpect: c.Int("bootstrap-expect"), Join: c.StringSlice("join"), JoinToken: os.Getenv("KVMSTACK_TOKEN"),
		DeadServerTimeout: c.Duration("dead-server-timeout"), HostTTL: c.Duration("host-ttl"), Strategy: strategy,
		BootstrapPasswordFile: c.String("bootstrap-password-file"),
		SnapshotThreshold:     c.Uint64("snapshot-threshold"), TrailingLogs: c.Uint64("trailing-logs"), SnapshotInterval: c.Duration("snapshot-interval"),
		MaxImageBytes: c.Int64("max-image-size"), BcryptCost: c.Int("bcrypt-cost"), TokenTTL: c.Duration("token-ttl"), SchedulerBatch: c.Int("scheduler-batch"), RaftTimeoutScale: c.Int("raft-multiplier"),
		Logger: log,
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "kvmstack server %s listening: http %s raft %s\n", s.ID(), s.HTTPAddr(), s.RaftAddr())
	<-ctx.Done()
	log.Info("shutting down: leaving the cluster")
	lctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.Leave(lctx)
}
