package devices

import "sync"

// ACPI fixed hardware registers as one block of I/O ports from the base the
// ACPI tables advertise (x86.SleepControlPort):
//
//	+0      sleep control register (hardware-reduced FADT)
//	+1      sleep status register (hardware-reduced FADT)
//	+2      reset register
//	+4..+5  PM1a status  (full-ACPI FADT PM1a_EVT_BLK)
//	+6..+7  PM1a enable
//	+8..+9  PM1a control (full-ACPI FADT PM1a_CNT_BLK)
//
// Both FADT flavours are served at once, so the tables alone decide which
// one the guest uses.
const (
	ACPIPMPorts = 10

	acpiSleepControl = 0
	acpiSleepStatus  = 1
	acpiReset        = 2
	acpiPM1Status    = 4
	acpiPM1Enable    = 6
	acpiPM1Control   = 8

	// Sleep control register: SLP_TYPx in bits 2-4, SLP_EN in bit 5.
	// The PM1 control register's high byte has the same layout (its bits
	// 10-12 and 13).
	sleepTypeShift = 2
	sleepTypeMask  = 0x7
	sleepEnable    = 0x20
	// wakeStatus in the sleep status register says a sleep ended.
	wakeStatus = 0x80

	// PM1 status and enable bits vmm implements: the fixed-feature power
	// button. Other enable bits do not stick, which tells the OS the
	// event does not exist.
	pm1PowerButton = 1 << 8
	// GBL_EN sticks although GBL_STS is never set: a full-ACPI platform
	// has the global lock (FACS), and ACPICA logs two errors at every boot
	// when the bit reads back clear. No firmware ever holds the lock, so
	// the guest never waits for its release event.
	pm1GlobalLock = 1 << 5
	// pm1EnableKept are the enable bits that read back as written.
	pm1EnableKept = pm1PowerButton | pm1GlobalLock
	// PM1 status WAK_STS.
	pm1WakeStatus = 1 << 15
	// PM1 control SCI_EN: always set, the platform is always in ACPI
	// mode (the FADT has no SMI_CMD).
	pm1SCIEnable = 1 << 0
	// PM1 control bits that read back as written (BM_RLD, GBL_RLS is
	// write-only, SLP_TYP); SLP_EN is write-only.
	pm1ControlKept = 1<<1 | sleepTypeMask<<(8+sleepTypeShift)
)

// ACPIPM turns the guest's ACPI power-off (SLP_TYP=S5 with SLP_EN, in the
// sleep control register or PM1 control) and reset-register writes into
// host events, and presses the fixed-feature power button: PWRBTN_STS,
// which raises the SCI while PWRBTN_EN is set.
type ACPIPM struct {
	mu         sync.Mutex
	s5         uint8
	resetValue uint8
	powerOff   func()
	reset      func()
	sci        func(level bool)
	status     uint8 // sleep status register

	pm1Status  uint16
	pm1Enable  uint16
	pm1Control uint16
	sciLevel   bool
}

// NewACPIPM returns the register block. s5 is the SLP_TYP value the DSDT's
// \_S5_ object names; resetValue is the FADT RESET_VALUE.
func NewACPIPM(s5, resetValue uint8, powerOff, reset func()) *ACPIPM {
	return &ACPIPM{s5: s5, resetValue: resetValue, powerOff: powerOff, reset: reset}
}

// SetSCI connects the SCI line: sci(true) asserts it, sci(false) releases
// it. It is level-triggered: asserted while an enabled PM1 status bit is
// set. Call before the guest runs.
func (a *ACPIPM) SetSCI(sci func(level bool)) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.sci = sci
}

// PressPowerButton sets PWRBTN_STS, as a momentary press of the power
// button does, and raises the SCI if the guest enabled the event. It
// reports whether PWRBTN_EN was set: if not, the status stays latched but
// no interrupt tells the guest (no ACPI button driver, or not loaded yet).
func (a *ACPIPM) PressPowerButton() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.pm1Status |= pm1PowerButton
	a.updateSCILocked()
	return a.pm1Enable&pm1PowerButton != 0
}

// updateSCILocked drives the SCI to match status and enable.
func (a *ACPIPM) updateSCILocked() {
	level := a.pm1Status&a.pm1Enable != 0
	if level == a.sciLevel {
		return
	}
	a.sciLevel = level
	if a.sci != nil {
		a.sci(level)
	}
}

// readByteLocked reads one byte of the block: the PM1 registers are 16
// bits wide, but a guest may access them a byte at a time.
func (a *ACPIPM) readByteLocked(off uint64) byte {
	switch off {
	case acpiSleepStatus:
		return a.status
	case acpiPM1Status, acpiPM1Status + 1:
		return byte(a.pm1Status >> (8 * (off - acpiPM1Status)))
	case acpiPM1Enable, acpiPM1Enable + 1:
		return byte(a.pm1Enable >> (8 * (off - acpiPM1Enable)))
	case acpiPM1Control, acpiPM1Control + 1:
		return byte((a.pm1Control | pm1SCIEnable) >> (8 * (off - acpiPM1Control)))
	}
	return 0
}

// Read implements Device. Accesses of 1, 2 or 4 bytes read consecutive
// registers' bytes; the sleep control and reset registers read as zero.
func (a *ACPIPM) Read(offset uint64, data []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := range data {
		data[i] = a.readByteLocked(offset + uint64(i))
	}
}

// Write implements Device. A wide access applies to each byte it covers,
// low byte first, so a 16-bit PM1 write sets SLP_TYP before SLP_EN acts.
func (a *ACPIPM) Write(offset uint64, data []byte) {
	var powerOff, reset bool
	a.mu.Lock()
	for i, v := range data {
		off := offset + uint64(i)
		if off < acpiPM1Status && len(data) != 1 {
			// The hardware-reduced registers are byte registers: a wider
			// access is a guest bug, ignored as before the PM1 block.
			continue
		}
		switch off {
		case acpiSleepControl:
			powerOff = powerOff || a.sleepRequest(v)
		case acpiSleepStatus:
			// Write-one-to-clear.
			a.status &^= v & wakeStatus
		case acpiReset:
			reset = reset || v == a.resetValue
		case acpiPM1Status, acpiPM1Status + 1:
			// Write-one-to-clear; clearing PWRBTN_STS ends the SCI.
			a.pm1Status &^= uint16(v) << (8 * (off - acpiPM1Status)) & (pm1PowerButton | pm1WakeStatus)
			a.updateSCILocked()
		case acpiPM1Enable, acpiPM1Enable + 1:
			shift := 8 * (off - acpiPM1Enable)
			a.pm1Enable = a.pm1Enable&^(0xff<<shift) | uint16(v)<<shift&pm1EnableKept
			a.updateSCILocked()
		case acpiPM1Control:
			a.pm1Control = a.pm1Control&0xff00 | uint16(v)&pm1ControlKept
		case acpiPM1Control + 1:
			a.pm1Control = a.pm1Control&0x00ff | uint16(v)<<8&pm1ControlKept
			powerOff = powerOff || a.sleepRequest(v)
		}
	}
	a.mu.Unlock()
	// The callbacks stop the machine; they run without the lock, which
	// snapshot and SCI paths also take.
	if powerOff && a.powerOff != nil {
		a.powerOff()
	}
	if reset && a.reset != nil {
		a.reset()
	}
}

// sleepRequest decodes a sleep control byte (or PM1 control's high byte):
// SLP_EN with SLP_TYP = S5 is a power-off. Other sleep states are not
// offered (the DSDT names only \_S5) and are ignored.
func (a *ACPIPM) sleepRequest(v byte) bool {
	return v&sleepEnable != 0 && (v>>sleepTypeShift)&sleepTypeMask == a.s5
}
