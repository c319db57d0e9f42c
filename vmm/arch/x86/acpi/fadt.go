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

// sciInterrupt is the conventional PC SCI. A hardware-reduced platform has
// no SCI events; Linux ignores the field there, and the value keeps the
// table valid for parsers that check it.
const sciInterrupt = 9

// fadt is a hardware-reduced FADT revision 6: no PM1/PM2/timer/GPE blocks,
// the sleep control and status registers and the reset register on the
// layout's ports, and the DSDT through X_DSDT only.
func fadt(dsdtAddr uint64) []byte {
	b := sdt("FACP", 6)
	b = append(b, make([]byte, fadtSize-headerSize)...)
	binary.LittleEndian.PutUint16(b[46:], sciInterrupt)
	binary.LittleEndian.PutUint16(b[109:], bootArch)
	binary.LittleEndian.PutUint32(b[112:], fadtWBINVD|fadtPowerButton|fadtSleepButton|fadtResetRegSup|fadtHWReducedACPI)
	copy(b[116:128], gas(x86.ResetPort))
	b[128] = x86.ResetValue
	b[131] = 0 // FADT minor version: 6.0
	binary.LittleEndian.PutUint64(b[140:], dsdtAddr)
	copy(b[244:256], gas(x86.SleepControlPort))
	copy(b[256:268], gas(x86.SleepStatusPort))
	return finish(b)
}
