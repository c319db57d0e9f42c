package vmm

import (
	"encoding/json"
	"errors"
	"sync"
	"testing"
)

var allStates = []State{StateCreated, StateRunning, StatePaused, StateStopped}
var allOps = []string{OpStart, OpPause, OpResume, OpShutdown, OpSnapshot, OpStop, OpRestore}

// TestNextEveryPair lists the expected outcome of every (state, op) pair
// by hand, independently of the transitions table.
func TestNextEveryPair(t *testing.T) {
	const refused = State(-1)
	want := map[State]map[string]State{
		StateCreated: {OpStart: StateRunning, OpPause: refused, OpResume: refused, OpShutdown: refused, OpSnapshot: refused, OpStop: StateStopped, OpRestore: StatePaused},
		StateRunning: {OpStart: refused, OpPause: StatePaused, OpResume: refused, OpShutdown: StateRunning, OpSnapshot: refused, OpStop: StateStopped, OpRestore: refused},
		StatePaused:  {OpStart: StatePaused, OpPause: refused, OpResume: StateRunning, OpShutdown: refused, OpSnapshot: StatePaused, OpStop: StateStopped, OpRestore: refused},
		StateStopped: {OpStart: refused, OpPause: refused, OpResume: refused, OpShutdown: refused, OpSnapshot: refused, OpStop: refused, OpRestore: refused},
	}
	n := 0
	for _, from := range allStates {
		for _, op := range allOps {
			n++
			t.Run(from.String()+"/"+op, func(t *testing.T) {
				w, ok := want[from][op]
				if !ok {
					t.Fatalf("test table misses (%v, %s)", from, op)
				}
				got, err := Next(from, op)
				if w == refused {
					var te *TransitionError
					if !errors.As(err, &te) {
						t.Fatalf("Next(%v, %s) = %v, %v; want a *TransitionError", from, op, got, err)
					}
					if te.Op != op || te.From != from {
						t.Errorf("error = %+v, want Op %s From %v", te, op, from)
					}
					if got != from {
						t.Errorf("refused transition returned state %v, want %v", got, from)
					}
					return
				}
				if err != nil || got != w {
					t.Errorf("Next(%v, %s) = %v, %v; want %v", from, op, got, err, w)
				}
			})
		}
	}
	if n != len(allStates)*len(allOps) {
		t.Fatalf("covered %d pairs", n)
	}
}

func TestNextUnknown(t *testing.T) {
	for _, tc := range []struct {
		from State
		op   string
	}{
		{StateRunning, "reboot"},
		{StateRunning, ""},
		{State(42), OpStop},
		{State(-3), OpStart},
	} {
		if _, err := Next(tc.from, tc.op); err == nil {
			t.Errorf("Next(%v, %q) succeeded", tc.from, tc.op)
		}
	}
}

func TestTransitionErrorMessage(t *testing.T) {
	for _, tc := range []struct {
		from State
		op   string
		want string
	}{
		{StateStopped, OpPause, "cannot pause a stopped vm"},
		{StateCreated, OpResume, "cannot resume a created vm"},
		{StateRunning, OpSnapshot, "cannot snapshot a running vm"},
		{StatePaused, OpShutdown, "cannot shutdown a paused vm"},
	} {
		_, err := Next(tc.from, tc.op)
		if err == nil || err.Error() != tc.want {
			t.Errorf("Next(%v, %s) error = %v, want %q", tc.from, tc.op, err, tc.want)
		}
	}
}

func TestStateNames(t *testing.T) {
	for _, tc := range []struct {
		s    State
		want string
	}{
		{StateCreated, "created"}, {StateRunning, "running"}, {StatePaused, "paused"}, {StateStopped, "stopped"}, {State(9), "State(9)"},
	} {
		if got := tc.s.String(); got != tc.want {
			t.Errorf("%d.String() = %q, want %q", int(tc.s), got, tc.want)
		}
	}
	b, err := json.Marshal(struct{ S State }{StatePaused})
	if err != nil || string(b) != `{"S":"paused"}` {
		t.Errorf("JSON = %s, %v", b, err)
	}
}

// TestLifecycleSequences drives a Lifecycle through whole runs.
func TestLifecycleSequences(t *testing.T) {
	type step struct {
		op      string
		ok      bool
		after   State
		wasFrom State
	}
	for _, tc := range []struct {
		name  string
		start State
		steps []step
	}{
		{"boot pause resume poweroff", StateCreated, []step{
			{OpStart, true, StateRunning, StateCreated},
			{OpPause, true, StatePaused, StateRunning},
			{OpPause, false, StatePaused, StatePaused},
			{OpSnapshot, true, StatePaused, StatePaused},
			{OpResume, true, StateRunning, StatePaused},
			{OpShutdown, true, StateRunning, StateRunning},
			{OpStop, true, StateStopped, StateRunning},
			{OpResume, false, StateStopped, StateStopped},
			{OpStop, false, StateStopped, StateStopped},
		}},
		{"restored", StateCreated, []step{
			{OpRestore, true, StatePaused, StateCreated},
			{OpRestore, false, StatePaused, StatePaused},
			{OpStart, true, StatePaused, StatePaused},
			{OpResume, true, StateRunning, StatePaused},
			{OpStart, false, StateRunning, StateRunning},
		}},
		{"killed before start", StateCreated, []step{
			{OpStop, true, StateStopped, StateCreated},
			{OpStart, false, StateStopped, StateStopped},
		}},
		{"killed while paused", StateCreated, []step{
			{OpStart, true, StateRunning, StateCreated},
			{OpPause, true, StatePaused, StateRunning},
			{OpStop, true, StateStopped, StatePaused},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := NewLifecycle(tc.start)
			for i, s := range tc.steps {
				if err := l.Check(s.op); (err == nil) != s.ok {
					t.Fatalf("step %d: Check(%s) = %v", i, s.op, err)
				}
				from, err := l.Apply(s.op)
				if (err == nil) != s.ok {
					t.Fatalf("step %d: Apply(%s) = %v, want ok=%v", i, s.op, err, s.ok)
				}
				if from != s.wasFrom || l.State() != s.after {
					t.Fatalf("step %d: %s from %v to %v, want from %v to %v", i, s.op, from, l.State(), s.wasFrom, s.after)
				}
			}
		})
	}
}

// TestLifecycleConcurrent: racing pauses let exactly one through per
// running period, and a stop wins over everything after it.
func TestLifecycleConcurrent(t *testing.T) {
	var l Lifecycle
	if _, err := l.Apply(OpStart); err != nil {
		t.Fatal(err)
	}
	for round := 0; round < 50; round++ {
		var wg sync.WaitGroup
		var mu sync.Mutex
		wins := 0
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := l.Apply(OpPause); err == nil {
					mu.Lock()
					wins++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		if wins != 1 {
			t.Fatalf("round %d: %d pauses succeeded, want 1", round, wins)
		}
		if _, err := l.Apply(OpResume); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.Apply(OpStop); err != nil {
		t.Fatal(err)
	}
	if l.State() != StateStopped {
		t.Fatalf("state %v", l.State())
	}
}
