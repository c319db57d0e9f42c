package devices

// ACPIPMState is the register block's guest-visible state, for snapshots:
// the sleep status register and the PM1 event and control registers.
type ACPIPMState struct {
	SleepStatus uint8  `json:"sleep_status"`
	PM1Status   uint16 `json:"pm1_status,omitempty"`
	PM1Enable   uint16 `json:"pm1_enable,omitempty"`
	PM1Control  uint16 `json:"pm1_control,omitempty"`
}

// State returns the registers.
func (a *ACPIPM) State() ACPIPMState {
	a.mu.Lock()
	defer a.mu.Unlock()
	return ACPIPMState{SleepStatus: a.status, PM1Status: a.pm1Status, PM1Enable: a.pm1Enable, PM1Control: a.pm1Control}
}

// SetState puts the registers back into st and drives the SCI to match:
// a pending, enabled event (a power button press the guest has not
// handled) holds the level-triggered line high in the new VM as well.
func (a *ACPIPM) SetState(st ACPIPMState) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.status = st.SleepStatus
	a.pm1Status = st.PM1Status & (pm1PowerButton | pm1WakeStatus)
	a.pm1Enable = st.PM1Enable & pm1EnableKept
	a.pm1Control = st.PM1Control & pm1ControlKept
	a.updateSCILocked()
}
