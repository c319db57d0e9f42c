package vmm

import (
	"fmt"
	"sync"
)

// State is where a machine is in its lifecycle:
//
//	created ──start──▶ running ──pause──▶ paused ──resume──▶ running
//	   │                  │                  │
//	   └──────stop────────┴──────stop────────┴──▶ stopped
//
// A restored machine goes from created to paused (restore) before Run;
// start keeps it there (its vCPUs come up parked) and resume lets it run.
type State int

// The states, in lifecycle order.
const (
	// StateCreated: New built the machine; Run has not been called.
	StateCreated State = iota
	// StateRunning: vCPUs are running the guest.
	StateRunning
	// StatePaused: every vCPU is out of KVM_RUN and parked, and every
	// device worker is quiesced (no request in flight, no ring access).
	StatePaused
	// StateStopped: the run ended (the guest powered off, reset or
	// crashed, the host stopped or killed it, or an error). Final.
	StateStopped
)

// String is the state's name as the API and logs show it.
func (s State) String() string {
	switch s {
	case StateCreated:
		return "created"
	case StateRunning:
		return "running"
	case StatePaused:
		return "paused"
	case StateStopped:
		return "stopped"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// MarshalText makes a State appear by name in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Operations on the lifecycle. Each is a row of the transition table.
const (
	// OpStart is Run: created → running, or paused → paused for a
	// restored machine whose vCPUs start parked.
	OpStart = "start"
	// OpPause: running → paused.
	OpPause = "pause"
	// OpResume: paused → running.
	OpResume = "resume"
	// OpShutdown presses the ACPI power button: allowed while running
	// (a paused guest could not react), the state stays running until
	// the guest powers off.
	OpShutdown = "shutdown"
	// OpSnapshot reads the machine's state: allowed only while paused.
	OpSnapshot = "snapshot"
	// OpStop ends the run from any state but stopped.
	OpStop = "stop"
	// OpRestore marks a machine built from a snapshot: created → paused,
	// before Run.
	OpRestore = "restore"
)

// transitions is the whole state machine: for each operation, the state
// it leads to from each state it is allowed in. A missing entry is a
// refused transition.
var transitions = map[string]map[State]State{
	OpStart:    {StateCreated: StateRunning, StatePaused: StatePaused},
	OpPause:    {StateRunning: StatePaused},
	OpResume:   {StatePaused: StateRunning},
	OpShutdown: {StateRunning: StateRunning},
	OpSnapshot: {StatePaused: StatePaused},
	OpStop:     {StateCreated: StateStopped, StateRunning: StateStopped, StatePaused: StateStopped},
	OpRestore:  {StateCreated: StatePaused},
}

// TransitionError is an operation the machine's state does not allow.
type TransitionError struct {
	// Op is the refused operation (OpPause, ...).
	Op string
	// From is the state the machine was in.
	From State
}

func (e *TransitionError) Error() string {
	return fmt.Sprintf("cannot %s a %s vm", e.Op, e.From)
}

// Next is the transition function: the state op leads to from, or a
// *TransitionError. It is pure; Lifecycle applies it under a lock.
func Next(from State, op string) (State, error) {
	to, ok := transitions[op][from]
	if !ok {
		return from, &TransitionError{Op: op, From: from}
	}
	return to, nil
}

// Lifecycle holds one machine's state and applies transitions atomically.
// The zero value is a machine in StateCreated.
type Lifecycle struct {
	mu    sync.Mutex
	state State
}

// NewLifecycle starts a lifecycle in state s (StatePaused for a restored
// machine).
func NewLifecycle(s State) *Lifecycle { return &Lifecycle{state: s} }

// State is the current state.
func (l *Lifecycle) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// Check reports whether op is allowed now, without changing the state.
func (l *Lifecycle) Check(op string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err := Next(l.state, op)
	return err
}

// Apply performs op: it moves to the next state and returns the one it
// left, or returns a *TransitionError and leaves the state alone.
func (l *Lifecycle) Apply(op string) (from State, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	from = l.state
	to, err := Next(from, op)
	if err != nil {
		return from, err
	}
	l.state = to
	return from, nil
}
