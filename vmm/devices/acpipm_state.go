package devices

// ACPIPMState is the register block's guest-visible state, for snapshots:
// only the sleep status register holds anything between accesses.
type ACPIPMState struct {
	SleepStatus uint8 `json:"sleep_status"`
}

// State returns the sleep status register.
func (a *ACPIPM) State() ACPIPMState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return ACPIPMState{SleepStatus: a.status}
}

// SetState puts the registers back into st.
func (a *ACPIPM) SetState(st ACPIPMState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status = st.SleepStatus
}
