package vmm

import "fmt"

// Outcome is how a guest run ended.
type Outcome int

// Outcomes, in the order cmd/vmm documents their exit statuses.
const (
	// OutcomeNone means the machine has not stopped.
	OutcomeNone Outcome = iota
	// OutcomePowerOff: the guest powered off through ACPI (S5).
	OutcomePowerOff
	// OutcomeReset: the guest asked for a reset (i8042, ACPI reset
	// register, or a KVM system-reset event).
	OutcomeReset
	// OutcomeCrash: the guest crashed (triple fault, or a kernel panic
	// reported through pvpanic).
	OutcomeCrash
	// OutcomeStopped: the host stopped the guest (signal, Stop, context).
	OutcomeStopped
	// OutcomeError: the VMM could not go on (an ioctl failed, an
	// instruction the host's KVM cannot emulate); Run's error says why.
	OutcomeError
)

// String names the outcome as logs and cmd/vmm print it.
func (o Outcome) String() string {
	switch o {
	case OutcomeNone:
		return "none"
	case OutcomePowerOff:
		return "power-off"
	case OutcomeReset:
		return "reset"
	case OutcomeCrash:
		return "crash"
	case OutcomeStopped:
		return "stopped"
	case OutcomeError:
		return "error"
	}
	return fmt.Sprintf("Outcome(%d)", int(o))
}
