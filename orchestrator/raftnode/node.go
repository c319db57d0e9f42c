package raftnode

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/metrics"
)

// Errors callers branch on.
var (
	// ErrNotLeader means the command was not accepted and must be sent to
	// the leader; retrying is safe.
	ErrNotLeader = errors.New("not the raft leader")
	// ErrUnknownOutcome means leadership was lost after the command was
	// proposed: it may or may not be committed, so a blind retry is unsafe.
	ErrUnknownOutcome = errors.New("leadership lost; outcome unknown")
)

// Config configures a node.
type Config struct {
	// ID is the stable Raft server id.
	ID string
	// DataDir holds raft.db and the snapshots directory.
	DataDir string
	// Bind is the TCP address of the Raft transport; Advertise (if set) is the
	// address peers use.
	Bind, Advertise string
	// Bootstrap forms a one-server cluster if there is no existing state.
	Bootstrap bool
	// SnapshotThreshold and TrailingLogs tune log compaction (0 = defaults).
	SnapshotThreshold, TrailingLogs uint64
	// SnapshotInterval is how often Raft checks the threshold (0 = default).
	SnapshotInterval time.Duration
	// TimeoutScale multiplies Raft's heartbeat, election and lease timeouts
	// (like Consul's raft_multiplier): larger values tolerate busy or slow
	// machines at the cost of slower failure detection. 0 means 1.
	TimeoutScale int
	// LogOutput receives Raft's own log (nil = stderr).
	LogOutput io.Writer
	// Logger is for this package's messages.
	Logger *slog.Logger
	// Metrics, if set, records apply latency.
	Metrics *metrics.Metrics
}

// Node is a running Raft server.
type Node struct {
	cfg    Config
	raft   *raft.Raft
	trans  *raft.NetworkTransport
	store  *raftboltdb.BoltStore
	fsm    *fsm.FSM
	notify chan bool
	obsCh  chan raft.Observation
	obs    *raft.Observer

	done chan struct{}

	mu       sync.Mutex
	failing  map[raft.ServerID]time.Time
	leaderCh chan bool
}

// Open starts the node.
func Open(cfg Config, f *fsm.FSM) (*Node, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.LogOutput == nil {
		cfg.LogOutput = os.Stderr
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("raftnode: data dir: %w", err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft", Output: cfg.LogOutput, Level: hclog.Info})
	if cfg.TimeoutScale > 1 {
		m := time.Duration(cfg.TimeoutScale)
		rc.HeartbeatTimeout *= m
		rc.ElectionTimeout *= m
		rc.LeaderLeaseTimeout *= m
	}
	if cfg.SnapshotThreshold > 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if cfg.SnapshotInterval > 0 {
		rc.SnapshotInterval = cfg.SnapshotInterval
	}
	n := &Node{cfg: cfg, fsm: f, done: make(chan struct{}), notify: make(chan bool, 16), failing: map[raft.ServerID]time.Time{}, leaderCh: make(chan bool, 16)}
	rc.NotifyCh = n.notify

	// Without an explicit advertise address the transport advertises its
	// listener's address, which also resolves a ":0" bind to the real port.
	var advAddr net.Addr
	var err error
	if cfg.Advertise != "" {
		if advAddr, err = net.ResolveTCPAddr("tcp", cfg.Advertise); err != nil {
			return nil, fmt.Errorf("raftnode: advertise address: %w", err)
		}
	}
	n.trans, err = raft.NewTCPTransport(cfg.Bind, advAddr, 5, 10*time.Second, cfg.LogOutput)
	if err != nil {
		return nil, fmt.Errorf("raftnode: transport: %w", err)
	}
	n.store, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(cfg.DataDir, "raft.db")})
	if err != nil {
		n.trans.Close()
		return nil, fmt.Errorf("raftnode: bolt store: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStore(cfg.DataDir, 2, cfg.LogOutput)
	if err != nil {
		n.close()
		return nil, fmt.Errorf("raftnode: snapshot store: %w", err)
	}
	existing, err := raft.HasExistingState(n.store, n.store, snaps)
	if err != nil {
		n.close()
		return nil, fmt.Errorf("raftnode: inspect state: %w", err)
	}
	n.raft, err = raft.NewRaft(rc, f, n.store, n.store, snaps, n.trans)
	if err != nil {
		n.close()
		return nil, fmt.Errorf("raftnode: start raft: %w", err)
	}
	if cfg.Bootstrap && !existing {
		err := n.raft.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: n.trans.LocalAddr()}}}).Error()
		if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
			n.Shutdown()
			return nil, fmt.Errorf("raftnode: bootstrap: %w", err)
		}
	}
	n.obsCh = make(chan raft.Observation, 64)
	n.obs = raft.NewObserver(n.obsCh, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.PeerObservation:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(n.obs)
	go n.watch()
	return n, nil
}

func (n *Node) close() {
	if n.store != nil {
		n.store.Close()
	}
	if n.trans != nil {
		n.trans.Close()
	}
}

// watch tracks peers failing heartbeats and relays leadership changes.
func (n *Node) watch() {
	for {
		select {
		case <-n.done:
			return
		case o, ok := <-n.obsCh:
			if !ok {
				return
			}
			n.mu.Lock()
			switch d := o.Data.(type) {
			case raft.FailedHeartbeatObservation:
				if _, seen := n.failing[d.PeerID]; !seen {
					since := d.LastContact
					if since.IsZero() {
						since = time.Now()
					}
					n.failing[d.PeerID] = since
				}
			case raft.ResumedHeartbeatObservation:
				delete(n.failing, d.PeerID)
			case raft.PeerObservation:
				if d.Removed {
					delete(n.failing, d.Peer.ID)
				}
			}
			n.mu.Unlock()
		case l, ok := <-n.notify:
			if !ok {
				return
			}
			if !l {
				n.mu.Lock()
				n.failing = map[raft.ServerID]time.Time{}
				n.mu.Unlock()
			}
			select {
			case n.leaderCh <- l:
			default:
				n.cfg.Logger.Warn("leadership notification dropped")
			}
		}
	}
}

// LeaderCh delivers true on gaining and false on losing leadership.
func (n *Node) LeaderCh() <-chan bool { return n.leaderCh }

// ID returns the node's server id.
func (n *Node) ID() string { return n.cfg.ID }

// RaftAddr returns the advertised transport address.
func (n *Node) RaftAddr() string { return string(n.trans.LocalAddr()) }

// IsLeader reports whether this node is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's address and id ("" if unknown).
func (n *Node) Leader() (addr, id string) {
	a, i := n.raft.LeaderWithID()
	return string(a), string(i)
}

// Apply proposes a command and waits until it is applied on this (leader)
// node, returning the FSM result and the log index.
func (n *Node) Apply(ctx context.Context, c fsm.Command) (*fsm.Result, uint64, error) {
	b, err := fsm.Encode(c)
	if err != nil {
		return nil, 0, err
	}
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	start := time.Now()
	fut := n.raft.Apply(b, timeout)
	if err := fut.Error(); err != nil {
		n.observe("error", 0)
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipTransferInProgress) {
			return nil, 0, fmt.Errorf("raftnode: apply: %v: %w", err, ErrNotLeader)
		}
		if errors.Is(err, raft.ErrLeadershipLost) || errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, raft.ErrEnqueueTimeout) {
			return nil, 0, fmt.Errorf("raftnode: apply: %v: %w", err, ErrUnknownOutcome)
		}
		return nil, 0, fmt.Errorf("raftnode: apply: %w", err)
	}
	n.observe("ok", time.Since(start))
	res, _ := fut.Response().(*fsm.Result)
	if res == nil {
		res = &fsm.Result{}
	}
	return res, fut.Index(), nil
}

func (n *Node) observe(result string, d time.Duration) {
	if n.cfg.Metrics == nil {
		return
	}
	n.cfg.Metrics.RaftApplies.WithLabelValues(result).Inc()
	if d > 0 {
		n.cfg.Metrics.RaftApplyLatency.Observe(d.Seconds())
	}
}

// Barrier waits until every entry committed before the call is applied
// locally; on success the local state is linearizable with all writes
// acknowledged before the call.
func (n *Node) Barrier(ctx context.Context) error {
	timeout := 10 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return fmt.Errorf("raftnode: barrier: %v: %w", err, ErrNotLeader)
		}
		return fmt.Errorf("raftnode: barrier: %w", err)
	}
	return nil
}

// Member is one server in the Raft configuration.
type Member struct {
	ID       string `json:"id"`
	Address  string `json:"raft_addr"`
	Suffrage string `json:"suffrage"`
	Leader   bool   `json:"leader"`
	// FailingFor is how long the leader has failed to reach it (leader only).
	FailingFor string `json:"failing_for,omitempty"`
}

// Members returns the current configuration.
func (n *Node) Members() ([]Member, error) {
	fut := n.raft.GetConfiguration()
	if err := fut.Error(); err != nil {
		return nil, fmt.Errorf("raftnode: configuration: %w", err)
	}
	_, leader := n.raft.LeaderWithID()
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Member
	for _, s := range fut.Configuration().Servers {
		m := Member{ID: string(s.ID), Address: string(s.Address), Suffrage: s.Suffrage.String(), Leader: s.ID == leader}
		if since, ok := n.failing[s.ID]; ok {
			m.FailingFor = time.Since(since).Round(time.Millisecond).String()
		}
		out = append(out, m)
	}
	return out, nil
}

// AddVoter adds (or re-addresses) a voting server; leader only.
func (n *Node) AddVoter(id, addr string) error {
	if err := n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, 30*time.Second).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return fmt.Errorf("raftnode: add voter: %w", ErrNotLeader)
		}
		return fmt.Errorf("raftnode: add voter %s: %w", id, err)
	}
	return nil
}

// RemoveServer removes a server from the configuration; leader only.
func (n *Node) RemoveServer(id string) error {
	if err := n.raft.RemoveServer(raft.ServerID(id), 0, 30*time.Second).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return fmt.Errorf("raftnode: remove server: %w", ErrNotLeader)
		}
		return fmt.Errorf("raftnode: remove server %s: %w", id, err)
	}
	return nil
}

// TransferLeadership hands leadership to another voter.
func (n *Node) TransferLeadership() error {
	if err := n.raft.LeadershipTransfer().Error(); err != nil {
		return fmt.Errorf("raftnode: leadership transfer: %w", err)
	}
	return nil
}

// DeadServers returns voters the leader has failed to reach for longer than
// after, never more than would leave fewer than minVoters.
func (n *Node) DeadServers(after time.Duration, minVoters int) []string {
	if !n.IsLeader() {
		return nil
	}
	members, err := n.Members()
	if err != nil {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	voters := len(members)
	var dead []string
	for _, m := range members {
		since, ok := n.failing[raft.ServerID(m.ID)]
		if ok && time.Since(since) > after && voters-1 >= minVoters && voters-1 >= 1 {
			dead = append(dead, m.ID)
			voters--
		}
	}
	return dead
}

// Stats returns Raft's statistics plus FSM counters.
func (n *Node) Stats() map[string]string {
	s := n.raft.Stats()
	s["fsm_restores"] = strconv.FormatUint(n.fsm.Restores(), 10)
	return s
}

// NumericStats returns the subset of Stats that are numbers, for metrics.
func (n *Node) NumericStats() map[string]float64 {
	out := map[string]float64{"state": float64(n.raft.State())}
	for k, v := range n.Stats() {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			out[k] = f
		}
	}
	return out
}

// AppliedIndex is the last index applied to the FSM.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// Snapshot forces a snapshot (tests and operators).
func (n *Node) Snapshot() error {
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("raftnode: snapshot: %w", err)
	}
	return nil
}

// Shutdown stops Raft and closes the stores.
func (n *Node) Shutdown() error {
	var err error
	if n.raft != nil {
		if n.obs != nil {
			n.raft.DeregisterObserver(n.obs)
		}
		err = n.raft.Shutdown().Error()
		close(n.done)
	}
	n.close()
	if err != nil {
		return fmt.Errorf("raftnode: shutdown: %w", err)
	}
	return nil
}
