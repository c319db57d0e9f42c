package devices

import "sync"

// ACPI hardware-reduced fixed registers (FADT sleep control, sleep status
// and reset registers), laid out as three consecutive I/O ports starting at
// the base the ACPI tables advertise.
const (
	ACPIPMPorts = 3

	acpiSleepControl = 0
	acpiSleepStatus  = 1
	acpiReset        = 2

	// Sleep control register: SLP_TYPx in bits 2-4, SLP_EN in bit 5.
	sleepTypeShift = 2
	sleepTypeMask  = 0x7
	sleepEnable    = 0x20
	// wakeStatus in the sleep status register says a sleep ended.
	wakeStatus = 0x80
)

// ACPIPM turns the guest's ACPI power-off (SLP_TYP=S5 with SLP_EN) and
// reset-register writes into host events.
type ACPIPM struct {
	mu         sync.Mutex
	s5         uint8
	resetValue uint8
	powerOff   func()
	reset      func()
	status     uint8
}

// NewACPIPM returns the register block. s5 is the SLP_TYP value the DSDT's
// \_S5_ object names; resetValue is the FADT RESET_VALUE.
func NewACPIPM(s5, resetValue uint8, powerOff, reset func()) *ACPIPM {
	return &ACPIPM{s5: s5, resetValue: resetValue, powerOff: powerOff, reset: reset}
}

// Read implements Device.
func (a *ACPIPM) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if len(data) == 1 && offset == acpiSleepStatus {
		a.mu.Lock()
		data[0] = a.status
		a.mu.Unlock()
	}
}

// Write implements Device.
func (a *ACPIPM) Write(offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	v := data[0]
	switch offset {
	case acpiSleepControl:
		if v&sleepEnable != 0 && (v>>sleepTypeShift)&sleepTypeMask == a.s5 && a.powerOff != nil {
			a.powerOff()
		}
	case acpiSleepStatus:
		// Write-one-to-clear.
		a.mu.Lock()
		a.status &^= v & wakeStatus
		a.mu.Unlock()
	case acpiReset:
		if v == a.resetValue && a.reset != nil {
			a.reset()
		}
	}
}
