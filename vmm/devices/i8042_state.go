package devices

// I8042State is the controller's guest-visible state, for snapshots.
type I8042State struct {
	CTR     uint8 `json:"ctr"`
	Out     uint8 `json:"out"`
	OutFull bool  `json:"out_full,omitempty"`
	Pending uint8 `json:"pending,omitempty"`
	Status  uint8 `json:"status"`
}

// State returns the controller's registers.
func (k *I8042) State() I8042State {
	k.mu.Lock()
	defer k.mu.Unlock()
	return I8042State{CTR: k.ctr, Out: k.out, OutFull: k.outFull, Pending: k.pending, Status: k.status}
}

// SetState puts the controller back into st.
func (k *I8042) SetState(st I8042State) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.ctr, k.out, k.outFull, k.pending, k.status = st.CTR, st.Out, st.OutFull, st.Pending, st.Status
}
