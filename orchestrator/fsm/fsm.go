package fsm

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"

	"github.com/hashicorp/raft"

	"kvmstack/orchestrator/state"
)

// Result is what Apply returns for every log entry: a value for commands that
// produce one, the validation error otherwise.
type Result struct {
	// Value is command specific: the stored *state.Host for HostRegister,
	// the stored *state.Network for NetworkCreate,
	// []error (one per placement) for InstancePlace, nil otherwise.
	Value any
	// Err is the reason the command was rejected; the state is unchanged then.
	Err error
}

// FSM applies committed commands to a state.Store.
type FSM struct {
	store    *state.Store
	log      *slog.Logger
	restores atomic.Uint64
	applied  atomic.Uint64
}

// New returns an FSM over store.
func New(store *state.Store, log *slog.Logger) *FSM {
	if log == nil {
		log = slog.Default()
	}
	return &FSM{store: store, log: log}
}

// Store returns the state the FSM writes to.
func (f *FSM) Store() *state.Store { return f.store }

// Restores counts snapshot restores (local at start-up and installed from the leader).
func (f *FSM) Restores() uint64 { return f.restores.Load() }

// AppliedIndex is the index of the last log entry applied.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// Apply implements raft.FSM.
func (f *FSM) Apply(l *raft.Log) any {
	defer f.applied.Store(l.Index)
	if l.Type != raft.LogCommand {
		return nil
	}
	c, err := Decode(l.Data)
	if err != nil {
		f.log.Warn("rejected undecodable log entry", "index", l.Index, "err", err)
		return &Result{Err: err}
	}
	return f.ApplyCommand(l.Index, c)
}

// ApplyCommand validates and applies one decoded command at index. It is
// exported for tests and benchmarks that drive the state without Raft.
func (f *FSM) ApplyCommand(index uint64, c Command) *Result {
	res := &Result{}
	at := c.Time()
	res.Err = f.store.Write(index, func(w *state.WriteTxn) error {
		switch c := c.(type) {
		case *Bootstrap:
			if err := w.Bootstrap(&c.Project, &c.User); err != nil {
				return err
			}
			return w.RotateKey(&c.Key, at.AddDate(-100, 0, 0))
		case *ProjectCreate:
			return w.CreateProject(&c.Project)
		case *ProjectDelete:
			return w.DeleteProject(c.ID)
		case *UserCreate:
			return w.CreateUser(&c.User)
		case *UserDelete:
			return w.DeleteUser(c.ID)
		case *RoleAssign:
			return w.AssignRole(&c.Assignment)
		case *RoleUnassign:
			return w.UnassignRole(c.UserID, c.ProjectID)
		case *KeyRotate:
			return w.RotateKey(&c.Key, c.RetireBefore)
		case *TokenRevoke:
			return w.RevokeToken(&c.Token, at)
		case *ImageCreate:
			return w.CreateImage(&c.Image)
		case *ImageDelete:
			return w.DeleteImage(c.ID)
		case *FlavorCreate:
			return w.CreateFlavor(&c.Flavor)
		case *FlavorDelete:
			return w.DeleteFlavor(c.ID)
		case *QuotaSet:
			return w.SetQuota(&c.Quota)
		case *GroupCreate:
			return w.CreateServerGroup(&c.Group)
		case *GroupDelete:
			return w.DeleteServerGroup(c.ID)
		case *HostRegister:
			h, err := w.RegisterHost(&c.Host, at)
			res.Value = h
			return err
		case *HostHeartbeat:
			return w.Heartbeat(c.ID, at)
		case *HostEnable:
			return w.SetHostEnabled(c.ID, c.Enabled)
		case *HostDelete:
			return w.DeleteHost(c.ID)
		case *InstanceCreate:
			if len(c.Ports) > len(c.Instances)*state.MaxPortsPerInstance {
				return fmt.Errorf("at most %d ports per instance: %w", state.MaxPortsPerInstance, state.ErrInvalid)
			}
			created := make(map[string]bool, len(c.Instances))
			for _, in := range c.Instances {
				if in != nil {
					created[in.ID] = true
				}
			}
			for _, p := range c.Ports {
				// Ports are created with their instance, never added later.
				if p == nil || !created[p.InstanceID] {
					return fmt.Errorf("every port must belong to an instance of the same command: %w", state.ErrInvalid)
				}
			}
			if err := w.CreateInstances(c.Instances, at); err != nil {
				return err
			}
			return w.CreatePorts(c.Ports, at)
		case *InstancePlace:
			if len(c.Placements) > 5000 {
				return fmt.Errorf("at most 5000 placements per batch: %w", state.ErrInvalid)
			}
			// Individual rejections do not abort the batch: the accepted
			// placements commit, the rejected ones stay pending.
			res.Value = w.PlaceInstances(c.Placements, c.Rules, at)
			return nil
		case *InstanceState:
			return w.SetInstanceState(c.ID, c.State, c.Reason, at)
		case *InstanceAction:
			return w.RequestInstanceAction(c.ID, c.Action, at)
		case *HostDown:
			return w.MarkHostDown(c.ID, c.TTL, at)
		case *InstanceEvacuate:
			return w.EvacuateInstances(c.Placements, c.Rules, at)
		case *ServerUpsert:
			return w.UpsertServer(&c.Server)
		case *ServerDelete:
			return w.DeleteServer(c.ID)
		case *NetworkCreate:
			n, err := w.CreateNetwork(&c.Network, at)
			res.Value = n
			return err
		case *NetworkDelete:
			return w.DeleteNetwork(c.ID)
		}
		return fmt.Errorf("fsm: no handler for %T: %w", c, ErrDecode)
	})
	return res
}

// Snapshot implements raft.FSM. It freezes the state at the last applied
// index (memdb snapshots are O(1)); Persist serialises it in the background.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	return &snapshot{view: f.store.View()}, nil
}

// Restore implements raft.FSM.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.store.Restore(bufio.NewReader(rc)); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	f.restores.Add(1)
	f.log.Info("state restored from snapshot")
	return nil
}

type snapshot struct{ view *state.View }

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	bw := bufio.NewWriter(sink)
	if err := s.view.Encode(bw); err != nil {
		_ = sink.Cancel()
		return err
	}
	if err := bw.Flush(); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("fsm: flush snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() {}
