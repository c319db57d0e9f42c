package devices

import "fmt"

// SerialState is the guest-visible state of a Serial, for snapshots: the
// registers, the receive bytes the guest has not read yet and the pending
// transmitter-empty condition. Interrupt edges already raised live in the
// interrupt controller's state, not here.
type SerialState struct {
	IER        uint8  `json:"ier"`
	LCR        uint8  `json:"lcr"`
	MCR        uint8  `json:"mcr"`
	SCR        uint8  `json:"scr"`
	FCR        uint8  `json:"fcr"`
	DLL        uint8  `json:"dll"`
	DLM        uint8  `json:"dlm"`
	MSR        uint8  `json:"msr"`
	RX         []byte `json:"rx,omitempty"`
	THRPending bool   `json:"thr_pending,omitempty"`
}

// State returns the UART's registers and unread input.
func (s *Serial) State() SerialState {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SerialState{
		IER: s.ier, LCR: s.lcr, MCR: s.mcr, SCR: s.scr, FCR: s.fcr, DLL: s.dll, DLM: s.dlm, MSR: s.msr,
		RX: append([]byte(nil), s.rx...), THRPending: s.thrPending,
	}
}

// SetState puts the UART back into st. It raises no interrupt: an edge the
// guest has not taken yet was saved with the interrupt controller.
func (s *Serial) SetState(st SerialState) error {
	if len(st.RX) > rxLimit {
		return fmt.Errorf("serial state: %d receive bytes, at most %d", len(st.RX), rxLimit)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ier, s.lcr, s.mcr, s.scr, s.fcr = st.IER&(ierRDI|ierTHRI|ierRLSI|ierMSI), st.LCR, st.MCR&0x1f, st.SCR, st.FCR
	s.dll, s.dlm, s.msr = st.DLL, st.DLM, st.MSR
	s.rx = nil
	if len(st.RX) > 0 {
		s.rx = append([]byte(nil), st.RX...)
	}
	s.thrPending = st.THRPending
	s.rxSpace.Broadcast()
	return nil
}
