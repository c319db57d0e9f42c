package devices

// pvpanic event bits; the device sits at x86.PVPanicPort, declared in the
// DSDT as QEMU0001, where a guest kernel reports a panic before it reboots.
const (
	pvpanicPanicked = 0x01
	pvpanicCrashLd  = 0x02
	// pvpanicFeatures is what the device answers on read: both events.
	pvpanicFeatures = pvpanicPanicked | pvpanicCrashLd
)

// PVPanic reports guest kernel panics, so a crash is told apart from a
// reboot even when the guest's panic handler then resets the machine.
type PVPanic struct {
	panicked func()
}

// NewPVPanic returns the device; panicked is called for each panic event.
func NewPVPanic(panicked func()) *PVPanic { return &PVPanic{panicked: panicked} }

// Read implements Device: the supported-events bitmap.
func (p *PVPanic) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
	if len(data) == 1 {
		data[0] = pvpanicFeatures
	}
}

// Write implements Device.
func (p *PVPanic) Write(offset uint64, data []byte) {
	if len(data) == 1 && data[0]&pvpanicPanicked != 0 && p.panicked != nil {
		p.panicked()
	}
}

// Sink accepts writes and reads as zero: for ports a guest pokes without
// consequence, such as the POST code port 0x80, which Linux uses as an I/O
// delay, so that they do not show up as unhandled.
type Sink struct{}

// Read implements Device.
func (Sink) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = 0
	}
}

// Write implements Device.
func (Sink) Write(offset uint64, data []byte) {}
