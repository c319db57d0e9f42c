package devices

// DeviceAt returns the device registered over addr, so a snapshot can
// reach the state of a device the machine did not keep a handle on.
func (b *Bus) DeviceAt(addr uint64) (Device, bool) {
	d, _, ok := b.find(addr, 1)
	return d, ok
}
