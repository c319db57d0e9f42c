package firmware

import (
	"fmt"
	"strings"

	"kvmstack/vmm/arch/x86"
	"kvmstack/vmm/memory"
)

// checkCmdline verifies the command line fits both the room at
// x86.CmdlineAddr and what the kernel accepts (its header's cmdline_size).
// Linux would silently truncate an overlong line, dropping whatever the VMM
// appended last (the console, the host profile), so it is an error here.
func checkCmdline(cmdline string, k *Kernel) error {
	if strings.IndexByte(cmdline, 0) >= 0 {
		return fmt.Errorf("%w: contains a NUL byte", ErrCmdline)
	}
	limit := uint64(x86.CmdlineMax - 1)
	if k != nil && k.CmdlineSize != 0 {
		limit = min(limit, uint64(k.CmdlineSize))
	}
	if uint64(len(cmdline)) > limit {
		return fmt.Errorf("%w: %d bytes, the kernel accepts at most %d", ErrCmdline, len(cmdline), limit)
	}
	return nil
}

// writeCmdline stores the NUL-terminated command line at x86.CmdlineAddr.
func writeCmdline(m *memory.Memory, cmdline string) error {
	b := make([]byte, len(cmdline)+1)
	copy(b, cmdline)
	if err := m.WriteAt(b, x86.CmdlineAddr); err != nil {
		return fmt.Errorf("kernel command line at %#x: %w", uint64(x86.CmdlineAddr), err)
	}
	return nil
}
