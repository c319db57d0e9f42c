package raftnode

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"kvmstack/orchestrator/fsm"
	"kvmstack/orchestrator/state"
)

func open(t *testing.T, dir string, bootstrap bool) (*Node, *fsm.FSM) {
	t.Helper()
	f := fsm.New(state.New(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	n, err := Open(Config{ID: "n1", DataDir: dir, Bind: "127.0.0.1:0", Bootstrap: bootstrap, LogOutput: io.Discard,
		SnapshotThreshold: 8, TrailingLogs: 4, SnapshotInterval: 50 * time.Millisecond}, f)
	if err != nil {
		t.Fatal(err)
	}
	return n, f
}

func waitLeader(t *testing.T, n *Node) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !n.IsLeader() {
		if time.Now().After(deadline) {
			t.Fatal("no leadership")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestApplyRestartRecovers applies commands, forces a snapshot, restarts the
// node from its data directory and checks that the state is back.
func TestApplyRestartRecovers(t *testing.T) {
	dir := t.TempDir()
	n, _ := open(t, dir, true)
	waitLeader(t, n)
	ctx := context.Background()
	at := fsm.Header{At: time.Now().UTC()}
	for i, name := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l"} {
		res, idx, err := n.Apply(ctx, &fsm.ProjectCreate{Header: at, Project: state.Project{ID: "p" + name, Name: name}})
		if err != nil || res.Err != nil || idx == 0 {
			t.Fatalf("apply %d: %v %v", i, err, res.Err)
		}
	}
	res, _, err := n.Apply(ctx, &fsm.ProjectCreate{Header: at, Project: state.Project{ID: "dup", Name: "a"}})
	if err != nil || !errors.Is(res.Err, state.ErrConflict) {
		t.Fatalf("duplicate accepted: %v %v", err, res)
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := n.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if ms, err := n.Members(); err != nil || len(ms) != 1 || !ms[0].Leader {
		t.Fatalf("members %+v %v", ms, err)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}

	n2, f2 := open(t, dir, true) // bootstrap is ignored: state exists
	defer n2.Shutdown()
	waitLeader(t, n2)
	if err := n2.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	ps, _ := f2.Store().Read(nil).Projects()
	if len(ps) != 12 {
		t.Fatalf("%d projects after restart, want 12", len(ps))
	}
	if f2.Restores() == 0 {
		t.Fatal("restart did not restore the snapshot")
	}
	if s := n2.Stats(); s["fsm_restores"] == "" || s["last_snapshot_index"] == "0" {
		t.Fatalf("stats %v", s)
	}
}

func TestFollowerRejectsApply(t *testing.T) {
	n, _ := open(t, t.TempDir(), false) // not bootstrapped: never leader
	defer n.Shutdown()
	_, _, err := n.Apply(context.Background(), &fsm.ProjectCreate{Header: fsm.Header{At: time.Now()}, Project: state.Project{ID: "x", Name: "x"}})
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("got %v, want ErrNotLeader", err)
	}
	if got := n.DeadServers(time.Nanosecond, 1); got != nil {
		t.Fatalf("follower reported dead servers %v", got)
	}
}
