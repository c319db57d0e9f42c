package acpi

import (
	"encoding/binary"

	"kvmstack/vmm/arch/x86"
)

// fadtSize is the ACPI 6.x FADT, up to the hypervisor vendor identity.
const fadtSize = 276

// FADT flags.
const (
	fadtWBINVD        = 1 << 0
	fadtPowerButton   = 1 << 4 // no fixed-feature power button
	fadtSleepButton   = 1 << 5 // no fixed-feature sleep button
	fadtResetRegSup   = 1 << 10
	fadtHWReducedACPI = 1 << 20
)

// IA-PC boot architecture flags. No VGA, no CMOS RTC (Linux then skips
// probing port 0x70, slow exits on an emulating host), OS must not manage
// ASPM. The 8042 flag is clear: Linux's i8042 driver then skips its probe
// (reset still works through port 0x64 and the FADT reset register).
const (
	bootArchNoVGA     = 1 << 2
	bootArchNoASPM    = 1 << 4
	bootArchNoCMOSRTC = 1 << 5
	bootArch          = bootArchNoVGA | bootArchNoASPM | bootArchNoCMOSRTC
)

// FADT field offsets used beyond the header.
const (
	fadtFirmwareCtrl = 36
	fadtSCIInt       = 46
	fadtPM1aEvtBlk   = 56
	fadtPM1aCntBlk   = 64
	fadtPM1EvtLen    = 88
	fadtPM1CntLen    = 89
	fadtBootArch     = 109
	fadtFlags        = 112
	fadtResetReg     = 116
	fadtResetValue   = 128
	fadtMinorVersion = 131
	fadtXDSDT        = 140
	fadtSleepControl = 244
	fadtSleepStatus  = 256
)

// PM1 block lengths in bytes: status and enable registers of 16 bits each,
// and a 16-bit control register.
const (
	pm1EvtLen = 4
	pm1CntLen = 2
)

// fadt is a FADT revision 6 with the reset register and the DSDT through
// X_DSDT only. Hardware-reduced (c.PowerButton false): no PM1/PM2/timer/GPE
// blocks, the sleep control and status registers instead, and no SCI (the
// SCI_INT field keeps the conventional 9 for parsers that check it). Full
// ACPI (c.PowerButton true): the PM1a event and control blocks, the FACS,
// the fixed-feature power button and the SCI on x86.SCIIRQ; SMI_CMD stays
// zero, which says the platform is always in ACPI mode. No PM timer (ACPI
// 5.0A made it optional) and no GPE blocks.
func fadt(c Config, dsdtAddr, facsAddr uint64) []byte {
	b := sdt("FACP", 6)
	b = append(b, make([]byte, fadtSize-headerSize)...)
	le := binary.LittleEndian
	le.PutUint16(b[fadtSCIInt:], uint16(x86.SCIIRQ))
	le.PutUint16(b[fadtBootArch:], bootArch)
	flags := uint32(fadtWBINVD | fadtSleepButton | fadtResetRegSup)
	if c.PowerButton {
		le.PutUint32(b[fadtFirmwareCtrl:], uint32(facsAddr))
		le.PutUint32(b[fadtPM1aEvtBlk:], uint32(x86.PM1EventPort))
		le.PutUint32(b[fadtPM1aCntBlk:], uint32(x86.PM1ControlPort))
		b[fadtPM1EvtLen] = pm1EvtLen
		b[fadtPM1CntLen] = pm1CntLen
	} else {
		flags |= fadtPowerButton | fadtHWReducedACPI
		copy(b[fadtSleepControl:fadtSleepControl+12], gas(x86.SleepControlPort))
		copy(b[fadtSleepStatus:fadtSleepStatus+12], gas(x86.SleepStatusPort))
	}
	le.PutUint32(b[fadtFlags:], flags)
	copy(b[fadtResetReg:fadtResetReg+12], gas(x86.ResetPort))
	b[fadtResetValue] = x86.ResetValue
	b[fadtMinorVersion] = 0 // FADT minor version: 6.0
	le.PutUint64(b[fadtXDSDT:], dsdtAddr)
	return finish(b)
}

// FACS layout (ACPI 6.0 5.2.10): 64 bytes, 64-byte aligned, no checksum.
const (
	facsSize    = 64
	facsAlign   = 64
	facsVersion = 2
)

// facs is the firmware ACPI control structure a full-ACPI platform must
// have. No waking vector (vmm offers no S3); the global lock in it is the
// guest's alone (no firmware takes it).
func facs() []byte {
	b := make([]byte, facsSize)
	copy(b[0:4], "FACS")
	binary.LittleEndian.PutUint32(b[4:], facsSize)
	b[32] = facsVersion
	return b
}
