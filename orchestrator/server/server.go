package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/blob"
	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/identity"
	"kvmstack/orchestrator/metrics"
	"kvmstack/orchestrator/raftnode"
	"kvmstack/orchestrator/scheduler"
	"kvmstack/orchestrator/state"
)

// Config configures a server.
type Config struct {
	// DataDir holds the node id, Raft log, snapshots and blobs.
	DataDir string
	// RaftBind and HTTPBind are listen addresses ("127.0.0.1:0" picks a port).
	RaftBind, HTTPBind string
	// BootstrapExpect is the intended number of servers. A server started
	// without Join forms the cluster; autopilot never shrinks it below this.
	BootstrapExpect int
	// Join lists HTTP addresses of existing servers to join through.
	Join []string
	// JoinToken is an admin token used to authenticate the join.
	JoinToken string
	// DeadServerTimeout removes servers the leader cannot reach for this
	// long (0 disables).
	DeadServerTimeout time.Duration
	// HostTTL: a host without heartbeat for this long is down.
	HostTTL time.Duration
	// HostCheckInterval is how often the leader looks for hosts past
	// HostTTL (0 = HostTTL/10, between 100 ms and 5 s).
	HostCheckInterval time.Duration
	// Clock tells the time to the API, the scheduler and the host failure
	// detector (nil = the system clock; tests substitute a fake one).
	Clock Clock
	// Strategy is the scheduler weigher (spread or pack).
	Strategy scheduler.Strategy
	// BootstrapPasswordFile, if set, holds the bootstrap admin password;
	// otherwise one is generated and printed once to PasswordOut.
	BootstrapPasswordFile string
	// PasswordOut receives the generated admin password (default stderr).
	PasswordOut io.Writer
	// SnapshotThreshold, TrailingLogs, SnapshotInterval tune Raft compaction.
	SnapshotThreshold, TrailingLogs uint64
	SnapshotInterval                time.Duration
	// RaftTimeoutScale multiplies Raft's timeouts (0 = 2).
	RaftTimeoutScale int
	// BcryptCost for password hashes (0 = default).
	BcryptCost int
	// MaxImageBytes bounds uploads (0 = 8 GiB).
	MaxImageBytes int64
	// TokenTTL is the lifetime of issued tokens (0 = 1h).
	TokenTTL time.Duration
	// SchedulerBatch bounds placements per Raft entry (0 = 1000).
	SchedulerBatch int
	// SchedulerPipeline is how many placement entries are in flight (0 = 4).
	SchedulerPipeline int
	// Logger and RaftLogOutput receive logs (defaults: slog.Default, stderr).
	Logger        *slog.Logger
	RaftLogOutput io.Writer
}

// Server is a running cluster server.
type Server struct {
	cfg     Config
	id      string
	log     *slog.Logger
	store   *state.Store
	fsm     *fsm.FSM
	node    *raftnode.Node
	blobs   *blob.Store
	metrics *metrics.Metrics
	api     *api.Server
	http    *http.Server
	httpLn  net.Listener
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	fetchMu sync.Mutex
	fetches map[string]*sync.Mutex
	closed  sync.Once
}

// Start opens the data directory, starts Raft and the HTTP API, and returns
// once the server is listening; joining and leader duties continue in the
// background until Close or Leave.
func Start(ctx context.Context, cfg Config) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.HostTTL == 0 {
		cfg.HostTTL = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = systemClock{}
	}
	if cfg.HostCheckInterval <= 0 {
		cfg.HostCheckInterval = min(max(cfg.HostTTL/10, 100*time.Millisecond), 5*time.Second)
	}
	if cfg.Strategy == "" {
		cfg.Strategy = scheduler.Spread
	}
	if cfg.PasswordOut == nil {
		cfg.PasswordOut = os.Stderr
	}
	if cfg.RaftTimeoutScale == 0 {
		cfg.RaftTimeoutScale = 2
	}
	if cfg.MaxImageBytes == 0 {
		cfg.MaxImageBytes = 8 << 30
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("server: data dir: %w", err)
	}
	id, err := nodeID(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, id: id, log: cfg.Logger.With("server", id), fetches: map[string]*sync.Mutex{}}
	s.store = state.New()
	s.fsm = fsm.New(s.store, s.log)
	if s.blobs, err = blob.Open(filepath.Join(cfg.DataDir, "blobs")); err != nil {
		return nil, err
	}
	if s.httpLn, err = net.Listen("tcp", cfg.HTTPBind); err != nil {
		return nil, fmt.Errorf("server: http listen: %w", err)
	}
	s.metrics = metrics.New(func() map[string]float64 {
		if s.node == nil {
			return nil
		}
		return s.node.NumericStats()
	})
	s.node, err = raftnode.Open(raftnode.Config{
		ID: id, DataDir: filepath.Join(cfg.DataDir, "raft"), Bind: cfg.RaftBind,
		Bootstrap:         len(cfg.Join) == 0,
		SnapshotThreshold: cfg.SnapshotThreshold, TrailingLogs: cfg.TrailingLogs, SnapshotInterval: cfg.SnapshotInterval,
		TimeoutScale: cfg.RaftTimeoutScale, LogOutput: cfg.RaftLogOutput, Logger: s.log, Metrics: s.metrics,
	}, s.fsm)
	if err != nil {
		s.httpLn.Close()
		return nil, err
	}
	s.api = &api.Server{
		Config: api.Config{MaxImageBytes: cfg.MaxImageBytes, TokenTTL: cfg.TokenTTL, BcryptCost: cfg.BcryptCost, HostTTL: cfg.HostTTL, Strategy: cfg.Strategy},
		Now:    cfg.Clock.Now,
		Store:  s.store, Node: s.node, Blobs: s.blobs, Metrics: s.metrics, Log: s.log, SelfHTTP: s.HTTPAddr(), FetchBlob: s.fetchBlob,
	}
	s.http = &http.Server{Handler: s.api.Handler(), ReadHeaderTimeout: 10 * time.Second}
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.cancel = cancel
	s.goRun(func() {
		if err := s.http.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	})
	s.goRun(func() { s.leadership(runCtx) })
	s.goRun(func() { s.replicateBlobs(runCtx) })
	if len(cfg.Join) > 0 {
		s.goRun(func() { s.joinCluster(runCtx) })
	}
	s.log.Info("server started", "http", s.HTTPAddr(), "raft", s.node.RaftAddr())
	return s, nil
}

func (s *Server) goRun(f func()) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
}

// nodeID reads the server's persistent id, creating it on first start.
func nodeID(dir string) (string, error) {
	p := filepath.Join(dir, "node-id")
	b, err := os.ReadFile(p)
	if err == nil && len(bytes.TrimSpace(b)) > 0 {
		return string(bytes.TrimSpace(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("server: read node id: %w", err)
	}
	id := identity.NewID()[:16]
	if err := os.WriteFile(p, []byte(id+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("server: write node id: %w", err)
	}
	return id, nil
}

// ID returns the Raft server id.
func (s *Server) ID() string { return s.id }

// HTTPAddr returns the address the API listens on.
func (s *Server) HTTPAddr() string { return s.httpLn.Addr().String() }

// RaftAddr returns the Raft transport address.
func (s *Server) RaftAddr() string { return s.node.RaftAddr() }

// Node returns the Raft node.
func (s *Server) Node() *raftnode.Node { return s.node }

// Store returns the local replica of the state.
func (s *Server) Store() *state.Store { return s.store }

// leadership runs the leader duties for as long as this server leads.
func (s *Server) leadership(ctx context.Context) {
	var stop context.CancelFunc
	defer func() {
		if stop != nil {
			stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-s.node.LeaderCh():
			if stop != nil {
				stop()
				stop = nil
			}
			if leader {
				stop = s.startLeaderDuties(ctx)
			}
		}
	}
}

// startLeaderDuties runs leaderDuties until the returned function is called.
func (s *Server) startLeaderDuties(ctx context.Context) context.CancelFunc {
	lctx, cancel := context.WithCancel(ctx)
	go s.leaderDuties(lctx)
	return cancel
}

func (s *Server) leaderDuties(ctx context.Context) {
	s.log.Info("became leader")
	// Everything committed by earlier leaders must be applied before we
	// decide whether bootstrap is still needed.
	for ctx.Err() == nil {
		if err := s.node.Barrier(ctx); err == nil {
			break
		}
		sleep(ctx, 200*time.Millisecond)
	}
	for ctx.Err() == nil {
		if err := s.establish(ctx); err != nil {
			s.log.Warn("leader setup failed, retrying", "err", err)
			sleep(ctx, time.Second)
			continue
		}
		break
	}
	loop := &scheduler.Loop{Store: s.store, Options: scheduler.Options{Strategy: s.cfg.Strategy, HostTTL: s.cfg.HostTTL},
		BatchSize: s.cfg.SchedulerBatch, Pipeline: s.cfg.SchedulerPipeline, Metrics: s.metrics, Log: s.log, Now: s.cfg.Clock.Now,
		Propose: func(ctx context.Context, c fsm.Command) (*fsm.Result, error) {
			res, _, err := s.node.Apply(ctx, c)
			return res, err
		}}
	go loop.Run(ctx)
	go s.watchHosts(ctx)
	if s.cfg.DeadServerTimeout > 0 {
		go s.autopilot(ctx)
	}
}

// establish records this server's addresses and bootstraps identity once.
func (s *Server) establish(ctx context.Context) error {
	r := s.store.Read(nil)
	self := state.Server{ID: s.id, RaftAddr: s.node.RaftAddr(), HTTPAddr: s.HTTPAddr()}
	if cur, _ := r.Server(s.id); cur == nil || *cur != self {
		if err := s.propose(ctx, &fsm.ServerUpsert{Header: hdr(), Server: self}); err != nil {
			return err
		}
	}
	if r.AdminProject() != "" {
		return nil
	}
	pw, generated, err := s.bootstrapPassword()
	if err != nil {
		return err
	}
	hash, err := identity.HashPassword(pw, s.cfg.BcryptCost)
	if err != nil {
		return fmt.Errorf("server: bootstrap password: %w", err)
	}
	now := time.Now().UTC()
	err = s.propose(ctx, &fsm.Bootstrap{Header: hdr(),
		Project: state.Project{ID: identity.NewID(), Name: "admin", Description: "cluster administration", CreatedAt: now},
		User:    state.User{ID: identity.NewID(), Name: "admin", PasswordHash: hash, CreatedAt: now},
		Key:     state.SigningKey{ID: identity.NewID(), Secret: identity.NewSecret(), CreatedAt: now}})
	if errors.Is(err, state.ErrConflict) {
		return nil
	}
	if err != nil {
		return err
	}
	if generated {
		fmt.Fprintf(s.cfg.PasswordOut, "kvmstack: bootstrap admin created: user admin, project admin, password %s (shown only once)\n", pw)
	}
	s.log.Info("cluster bootstrapped", "admin_user", "admin")
	return nil
}

func (s *Server) bootstrapPassword() (pw string, generated bool, err error) {
	if s.cfg.BootstrapPasswordFile != "" {
		b, err := os.ReadFile(s.cfg.BootstrapPasswordFile)
		if err != nil {
			return "", false, fmt.Errorf("server: bootstrap password file: %w", err)
		}
		return strings.TrimSpace(string(b)), false, nil
	}
	b := make([]byte, 18)
	if _, err := rand.Read(b); err != nil {
		return "", false, fmt.Errorf("server: random password: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), true, nil
}

func (s *Server) propose(ctx context.Context, c fsm.Command) error {
	res, _, err := s.node.Apply(ctx, c)
	if err != nil {
		return err
	}
	return res.Err
}

func hdr() fsm.Header { return fsm.Header{At: time.Now().UTC()} }

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// autopilot removes servers that have been unreachable for longer than
// DeadServerTimeout.
func (s *Server) autopilot(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for _, id := range s.node.DeadServers(s.cfg.DeadServerTimeout, s.cfg.BootstrapExpect) {
			s.log.Warn("removing dead server", "id", id, "unreachable_for_more_than", s.cfg.DeadServerTimeout)
			if err := s.node.RemoveServer(id); err != nil {
				s.log.Warn("remove dead server", "id", id, "err", err)
				continue
			}
			if err := s.propose(ctx, &fsm.ServerDelete{Header: hdr(), ID: id}); err != nil {
				s.log.Warn("forget dead server", "id", id, "err", err)
			}
		}
	}
}

// joinCluster asks the existing servers to add this one until one accepts,
// unless the Raft configuration already contains it (a restart).
func (s *Server) joinCluster(ctx context.Context) {
	if ms, err := s.node.Members(); err == nil {
		for _, m := range ms {
			if m.ID == s.id {
				return
			}
		}
	}
	body, _ := json.Marshal(api.JoinRequest{ID: s.id, RaftAddr: s.node.RaftAddr(), HTTPAddr: s.HTTPAddr()})
	for attempt := 0; ctx.Err() == nil; attempt++ {
		for _, addr := range s.cfg.Join {
			err := s.call(ctx, http.MethodPost, addr, "/v1/cluster/join", s.cfg.JoinToken, body)
			if err == nil {
				s.log.Info("joined cluster", "via", addr)
				return
			}
			if attempt%10 == 0 {
				s.log.Warn("join failed, retrying", "via", addr, "err", err)
			}
		}
		sleep(ctx, time.Second)
	}
}

func (s *Server) call(ctx context.Context, method, addr, path, token string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(api.HeaderToken, token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(msg))
	}
	return nil
}

// serviceToken mints a short-lived token for server-to-server calls.
func (s *Server) serviceToken() (string, error) {
	keys, err := s.store.Read(nil).SigningKeys()
	if err != nil || len(keys) == 0 {
		return "", fmt.Errorf("server: no signing key yet")
	}
	k := keys[len(keys)-1]
	now := time.Now().UTC()
	return identity.Sign(identity.Claims{ID: identity.NewID(), UserID: "server:" + s.id, IssuedAt: now, ExpiresAt: now.Add(5 * time.Minute), Service: true},
		identity.Key{ID: k.ID, Secret: k.Secret})
}

// Close stops the server without leaving the cluster (as after a crash, the
// server is still a member and catches up when restarted).
func (s *Server) Close() error {
	var err error
	s.closed.Do(func() {
		s.cancel()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if s.http.Shutdown(ctx) != nil {
			// Blocking queries may still be waiting: cut them off.
			_ = s.http.Close()
		}
		err = s.node.Shutdown()
		s.wg.Wait()
	})
	return err
}

// Leave removes this server from the cluster (handing leadership over
// first if it leads) and then closes it.
func (s *Server) Leave(ctx context.Context) error {
	ms, err := s.node.Members()
	if err == nil && len(ms) > 1 {
		if s.node.IsLeader() {
			if err := s.node.TransferLeadership(); err != nil {
				s.log.Warn("leadership transfer failed", "err", err)
			}
		}
		if err := s.leave(ctx); err != nil {
			s.log.Warn("graceful leave failed", "err", err)
		}
	} else {
		s.log.Warn("not part of a multi-server configuration yet: stopping without leaving")
	}
	return s.Close()
}

func (s *Server) leave(ctx context.Context) error {
	tok, err := s.serviceToken()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if s.node.IsLeader() {
			if err := s.node.RemoveServer(s.id); err == nil {
				return nil
			}
		} else if _, lid := s.node.Leader(); lid != "" {
			if srv, _ := s.store.Read(nil).Server(lid); srv != nil {
				if err := s.call(ctx, http.MethodDelete, srv.HTTPAddr, "/v1/cluster/members/"+s.id, tok, nil); err == nil {
					s.log.Info("left the cluster")
					return nil
				}
			}
		}
		sleep(ctx, 300*time.Millisecond)
	}
	return ctx.Err()
}
