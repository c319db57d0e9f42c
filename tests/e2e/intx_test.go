package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// intxScript writes and re-reads 4 MiB on vda and shows how the kernel
// wired the disk's interrupt.
const intxScript = `mount -t ext4 /dev/vda /mnt || exit 10
dd if=/dev/urandom of=/mnt/data bs=1M count=4 2>/dev/null && sync || exit 11
set -- $(sha256sum /mnt/data); echo "INTX WROTE $1"
echo 3 >/proc/sys/vm/drop_caches
set -- $(sha256sum /mnt/data); echo "INTX REREAD $1"
umount /mnt || exit 12
grep -E 'virtio|MSI' /proc/interrupts | sed 's/^/IRQ /'`

var (
	intxWrote  = regexp.MustCompile(`INTX WROTE ([0-9a-f]{64})`)
	intxReread = regexp.MustCompile(`INTX REREAD ([0-9a-f]{64})`)
	// 1 vCPU: one count column. The _PRT routes slot 1 INTA# to GSI 17,
	// level-triggered (fasteoi in the IOAPIC chip).
	intxIRQ = regexp.MustCompile(`IRQ\s+(\d+):\s+(\d+)\s+IO-APIC\s+(\d+)-fasteoi\s+virtio0`)
)

// TestINTxDisk boots the kit with pci=nomsi, so virtio_pci cannot use
// MSI-X and falls back to the legacy interrupt: the kernel must find INTA#
// of the disk in the DSDT's _PRT (GSI 17, level, shared), and the disk must
// work through it: 4 MiB written, synced and re-read with matching
// checksums in the guest and in the image, interrupts counted on the
// IOAPIC pin, no MSI-X vectors.
func TestINTxDisk(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd)
	needE2fsprogs(t)
	img := newExt4(t, "intx.ext4", 32)
	r := runVMM(t, bootTimeout, append(kitArgs(1, "128M", "pci=nomsi", kitRun(intxScript)), "--disk", "path="+img)...)
	kitSucceeded(t, r)
	if strings.Contains(r.console, "PCI-MSI") {
		t.Errorf("MSI in use despite pci=nomsi\n%s", tail(r.console))
	}
	m := intxIRQ.FindStringSubmatch(r.console)
	if m == nil {
		t.Fatalf("virtio0 not on a level-triggered IOAPIC pin\n%s", tail(r.console))
	}
	if m[3] != "17" {
		t.Errorf("virtio0 on IOAPIC pin %s, want 17 (slot 1 INTA# in the _PRT)", m[3])
	}
	if n, _ := strconv.Atoi(m[2]); n < 10 {
		t.Errorf("virtio0 took %d interrupts for 8 MiB of I/O", n)
	}
	w, rr := intxWrote.FindStringSubmatch(r.console), intxReread.FindStringSubmatch(r.console)
	if w == nil || rr == nil || w[1] != rr[1] {
		t.Fatalf("checksums written %v, re-read %v\n%s", w, rr, tail(r.console))
	}
	b := debugfsCat(t, img, "/data")
	sum := sha256.Sum256(b)
	if len(b) != 4<<20 || hex.EncodeToString(sum[:]) != w[1] {
		t.Errorf("image holds %d bytes with sha256 %x; the guest wrote 4 MiB with %s", len(b), sum, w[1])
	}
	fsck(t, img)
	t.Logf("disk over INTx (GSI %s): %s interrupts; run %v", m[3], m[2], r.elapsed.Round(time.Millisecond))
}
