package e2e

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// rngScript runs in the guest: which hwrng is current, how many bytes
// /dev/hwrng returns, what PCI functions the kernel found (sysfs, as lspci
// would read it), which interrupts virtio uses, and a bounded throughput
// read.
const rngScript = `read cur </sys/class/misc/hw_random/rng_current; echo "RNG current=$cur"
echo "RNG bytes=$(head -c 64 /dev/hwrng | wc -c)"
for d in /sys/bus/pci/devices/*; do read v <$d/vendor; read id <$d/device; read c <$d/class; read r <$d/revision; echo "PCIDEV ${d##*/} $v $id $c $r"; done
grep virtio /proc/interrupts | sed 's/^/IRQ /'
read a _ </proc/uptime; dd if=/dev/hwrng of=/dev/null bs=64 count=4096 2>/dev/null; read b _ </proc/uptime; echo "RNG 256KiB uptime $a $b"`

var (
	rngCurrent = regexp.MustCompile(`RNG current=(\S+)`)
	rngBytes   = regexp.MustCompile(`RNG bytes=\s*(\d+)`)
	pciDev     = regexp.MustCompile(`PCIDEV (\S+) (0x[0-9a-f]{4}) (0x[0-9a-f]{4}) (0x[0-9a-f]{6}) (0x[0-9a-f]{2})`)
	rngIRQ     = regexp.MustCompile(`IRQ\s+\d+:\s+(\d+)\s.*PCI-MSIX?-0000:00:01\.0.*virtio0-input`)
	rngSpeed   = regexp.MustCompile(`RNG 256KiB uptime (\d+\.\d+) (\d+\.\d+)`)
)

// TestRngKit boots the kit kernel with --rng: the guest's virtio_pci finds
// a modern virtio function at 00:01.0 behind the host bridge, virtio_rng
// becomes the current hw_random, and reading /dev/hwrng returns bytes with
// the device's interrupts arriving through MSI-X.
func TestRngKit(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd)
	r := runVMM(t, bootTimeout, append(kitArgs(1, "128M", kitRun(rngScript)), "--rng")...)
	if r.status != exitPowerOff || !strings.Contains(r.console, "KIT EXIT 0") {
		t.Fatalf("status %d (want %d and KIT EXIT 0)\nconsole:\n%s\nstderr:\n%s", r.status, exitPowerOff, tail(r.console), r.stderr)
	}
	if m := rngCurrent.FindStringSubmatch(r.console); m == nil || !strings.HasPrefix(m[1], "virtio_rng") {
		t.Errorf("current hw_random %v, want virtio_rng.N\nconsole:\n%s", m, tail(r.console))
	}
	if m := rngBytes.FindStringSubmatch(r.console); m == nil || m[1] != "64" {
		t.Errorf("/dev/hwrng gave %v bytes, want 64", m)
	}
	devs := map[string][]string{}
	for _, m := range pciDev.FindAllStringSubmatch(r.console, -1) {
		devs[m[1]] = m[2:]
	}
	want := map[string][]string{
		"0000:00:00.0": {"0x1b36", "0x0008", "0x060000", "0x00"},
		"0000:00:01.0": {"0x1af4", "0x1044", "0xff0000", "0x01"},
	}
	for addr, w := range want {
		if got := devs[addr]; strings.Join(got, " ") != strings.Join(w, " ") {
			t.Errorf("PCI %s: vendor/device/class/revision %v, want %v", addr, got, w)
		}
	}
	if len(devs) != len(want) {
		t.Errorf("guest sees PCI functions %v, want exactly %v", devs, want)
	}
	m := rngIRQ.FindStringSubmatch(r.console)
	if m == nil {
		t.Errorf("no MSI-X interrupt for virtio0-input in /proc/interrupts\nconsole:\n%s", tail(r.console))
	} else if n, _ := strconv.Atoi(m[1]); n == 0 {
		t.Errorf("virtio0-input MSI-X vector never fired")
	}
	if m := rngSpeed.FindStringSubmatch(r.console); m != nil {
		a, _ := strconv.ParseFloat(m[1], 64)
		b, _ := strconv.ParseFloat(m[2], 64)
		if b > a {
			t.Logf("guest read 256 KiB from /dev/hwrng in 64-byte requests in %.2f s (%.0f KiB/s)", b-a, 256/(b-a))
		}
	}
	t.Logf("boot with --rng to power-off in %v", r.elapsed.Round(time.Millisecond))
}
