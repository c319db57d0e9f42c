package devices

import "sync"

// I8042 ports: data at 0x60, command/status at 0x64. Registered as one
// window of 5 ports so both fit one bus entry; 0x61..0x63 belong to the
// in-kernel PIT speaker port and never reach userspace.
const (
	I8042Base  = 0x60
	I8042Ports = 5
)

const (
	i8042Data    = 0
	i8042Command = 4

	i8042StatusOBF  = 0x01
	i8042StatusSys  = 0x04
	i8042StatusCmd  = 0x08
	i8042CmdReadCTR = 0x20
	i8042CmdWrCTR   = 0x60
	i8042CmdTest    = 0xaa
	i8042CmdPortTst = 0xab
	i8042CmdWrOut   = 0xd1
	i8042CmdReset   = 0xfe
)

// I8042 is as much of the PS/2 controller as a guest needs to reset the
// machine: the "pulse reset line" command (0xfe), the output-port write that
// clears the reset bit, and enough of the command set that probing drivers
// see a controller with no keyboard rather than a broken one.
type I8042 struct {
	mu      sync.Mutex
	reset   func()
	ctr     uint8
	out     uint8
	outFull bool
	pending uint8 // command awaiting its data byte
	status  uint8
}

// NewI8042 returns a controller that calls reset when the guest asks for a
// CPU reset.
func NewI8042(reset func()) *I8042 {
	return &I8042{reset: reset, ctr: 0x30, status: i8042StatusSys}
}

func (k *I8042) push(v uint8) { k.out, k.outFull = v, true }

// Read implements Device.
func (k *I8042) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if len(data) != 1 {
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	switch offset {
	case i8042Data:
		data[0] = k.out
		k.outFull = false
	case i8042Command:
		v := k.status
		if k.outFull {
			v |= i8042StatusOBF
		}
		data[0] = v
	}
}

// Write implements Device.
func (k *I8042) Write(offset uint64, data []byte) {
	if len(data) != 1 {
		return
	}
	v := data[0]
	k.mu.Lock()
	var doReset bool
	switch offset {
	case i8042Command:
		k.status |= i8042StatusCmd
		switch v {
		case i8042CmdReadCTR:
			k.push(k.ctr)
		case i8042CmdWrCTR, i8042CmdWrOut:
			k.pending = v
		case i8042CmdTest:
			k.push(0x55)
		case i8042CmdPortTst:
			k.push(0x00)
		case i8042CmdReset:
			doReset = true
		}
	case i8042Data:
		k.status &^= i8042StatusCmd
		switch k.pending {
		case i8042CmdWrCTR:
			k.ctr = v
		case i8042CmdWrOut:
			// Bit 0 of the output port is the CPU reset line, active low.
			doReset = v&0x01 == 0
		default:
			// A keyboard command with no keyboard: answer "resend" so
			// drivers give up quickly.
			k.push(0xfe)
		}
		k.pending = 0
	}
	k.mu.Unlock()
	if doReset && k.reset != nil {
		k.reset()
	}
}
