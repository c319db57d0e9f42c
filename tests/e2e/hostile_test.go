package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Slots as vmm assigns them: disks, then nets, then the rng.
const (
	hostileGood = "0000:00:01.0" // vda: must keep working
	hostileDisk = "0000:00:02.0" // vdb: attacked
	hostileRng  = "0000:00:03.0" // rng: attacked
)

// hostileAttacks are ringpoke's re-initialising attacks (firmware/kit/tools/ringpoke.c),
// in the order it runs them, each with what vmm's log must give as the
// reason: rings outside RAM, a queue size that is not a power of two, and
// ring contents with a head index beyond the table, a NEXT loop, an avail
// index far ahead of the device and a buffer outside RAM.
var hostileAttacks = []struct{ name, reason string }{
	{"outside", "descriptor table: guest address out of range"},
	{"size3", "queue size 3 is not a power of two"},
	{"head", "available ring entry 0 names descriptor 13 of 8"},
	{"loop", "chain 0: loop"},
	{"idx", "available index 1000 is 1000 entries ahead"},
	{"bufaddr", "descriptor buffer: guest address out of range"},
}

// hostileScript writes a file on vda, has ringpoke scribble over the live
// queue configuration of vdb and the rng (the device must ignore it and
// keep serving the kernel's driver), then runs every corrupting attack on
// vdb and one on the rng, and finally writes and re-reads a second file on
// vda.
var hostileScript = `mount -t ext4 /dev/vda /mnt || exit 10
w() { dd if=/dev/urandom of=/mnt/$1 bs=1M count=4 2>/dev/null && sync && set -- $1 $(sha256sum /mnt/$1) && echo "HOSTILE WROTE $1 $2"; }
w before
ringpoke ` + hostileDisk + ` live
ringpoke ` + hostileRng + ` live
echo 3 >/proc/sys/vm/drop_caches
echo "HOSTILE VDB READ $(dd if=/dev/vdb bs=64k count=4 2>/dev/null | wc -c)"
echo "HOSTILE RNG READ $(head -c 16 /dev/hwrng | wc -c)"
for a in ` + attackNames() + `; do ringpoke ` + hostileDisk + ` $a; done
ringpoke ` + hostileRng + ` loop
ringpoke ` + hostileDisk + ` status
w after
echo 3 >/proc/sys/vm/drop_caches
for f in before after; do set -- $(sha256sum /mnt/$f); echo "HOSTILE REREAD $f $1"; done
umount /mnt`

var (
	ringpokeLine  = regexp.MustCompile(`RINGPOKE (\S+) (\S+) status=0x([0-9a-f]+) needs_reset=(\d)(?: (\S+))?`)
	hostileWrote  = regexp.MustCompile(`HOSTILE WROTE (\S+) ([0-9a-f]{64})`)
	hostileReread = regexp.MustCompile(`HOSTILE REREAD (\S+) ([0-9a-f]{64})`)
	misuseLog     = regexp.MustCompile(`msg="guest misused the device; DEVICE_NEEDS_RESET set" virtio=(\w+) err="([^"]*)"`)
)

// TestHostileRings boots the kit with two disks and the rng and lets
// ringpoke, a driver of its own in guest userspace that maps the devices'
// BARs through sysfs, corrupt their queues. vmm must keep running, ignore
// queue configuration written under a live driver, mark the attacked
// device DEVICE_NEEDS_RESET after every corruption (and log it), and keep
// serving the other disk: files written on vda before and after the attacks
// read back with the checksums the guest computed, in the guest and in the
// image on the host. The guest then powers off with status 0.
func TestHostileRings(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd, kitRootfs)
	needE2fsprogs(t)
	good := newExt4(t, "good.ext4", 32)
	victim := copyImage(t, kitRootfs)
	r := runVMM(t, bootTimeout, append(kitArgs(1, "256M", kitRun(hostileScript)),
		"--disk", "path="+good, "--disk", "path="+victim, "--rng")...)
	kitSucceeded(t, r)

	type poke struct{ status, needsReset, result string }
	pokes := map[string]poke{}
	for _, m := range ringpokeLine.FindAllStringSubmatch(r.console, -1) {
		pokes[m[1]+" "+m[2]] = poke{m[3], m[4], m[5]}
	}
	for _, dev := range []string{hostileDisk, hostileRng} {
		p, ok := pokes[dev+" live"]
		if !ok || p.needsReset != "0" || p.result != "ignored" {
			t.Errorf("ringpoke %s live: %+v (ran %v); want the live queue unchanged and no NEEDS_RESET", dev, p, ok)
		}
	}
	if !strings.Contains(r.console, "HOSTILE VDB READ 262144") {
		t.Errorf("vdb did not serve 256 KiB after the live scribbling\n%s", tail(r.console))
	}
	if !strings.Contains(r.console, "HOSTILE RNG READ 16") {
		t.Errorf("the rng did not serve 16 bytes after the live scribbling\n%s", tail(r.console))
	}
	for _, a := range hostileAttacks {
		p, ok := pokes[hostileDisk+" "+a.name]
		if !ok || p.needsReset != "1" || p.result != "broken" {
			t.Errorf("ringpoke %s %s: %+v (ran %v); want DEVICE_NEEDS_RESET", hostileDisk, a.name, p, ok)
		}
	}
	if p := pokes[hostileRng+" loop"]; p.needsReset != "1" || p.result != "broken" {
		t.Errorf("ringpoke %s loop: %+v; want DEVICE_NEEDS_RESET", hostileRng, p)
	}
	// The last attack leaves vdb broken; its status byte says so.
	if p := pokes[hostileDisk+" status"]; p.needsReset != "1" || p.status != "4f" {
		t.Errorf("vdb status after the attacks: %+v; want 0x4f (DRIVER_OK|FEATURES_OK|DRIVER|ACK + NEEDS_RESET)", p)
	}

	// vmm logged each corruption once per device activation.
	// Each for the reason the attack was built to trip, in order.
	logged := map[string][]string{}
	for _, m := range misuseLog.FindAllStringSubmatch(r.stderr, -1) {
		logged[m[1]] = append(logged[m[1]], m[2])
	}
	if len(logged["block"]) != len(hostileAttacks) || len(logged["rng"]) != 1 {
		t.Errorf("vmm logged misuse %d times for block, %d for rng; want %d and 1\nstderr:\n%s",
			len(logged["block"]), len(logged["rng"]), len(hostileAttacks), r.stderr)
	} else {
		for i, a := range hostileAttacks {
			if !strings.Contains(logged["block"][i], a.reason) {
				t.Errorf("attack %s logged %q, want the reason %q", a.name, logged["block"][i], a.reason)
			}
		}
		if !strings.Contains(logged["rng"][0], "chain 0: loop") {
			t.Errorf("rng loop logged %q", logged["rng"][0])
		}
	}

	// The good disk: the guest's checksums before and after the attacks,
	// re-read from the disk, and the files in the image on the host.
	wrote := map[string]string{}
	for _, m := range hostileWrote.FindAllStringSubmatch(r.console, -1) {
		wrote[m[1]] = m[2]
	}
	reread := map[string]string{}
	for _, m := range hostileReread.FindAllStringSubmatch(r.console, -1) {
		reread[m[1]] = m[2]
	}
	for _, f := range []string{"before", "after"} {
		if wrote[f] == "" || reread[f] != wrote[f] {
			t.Errorf("vda /%s: wrote %q, re-read %q\n%s", f, wrote[f], reread[f], tail(r.console))
			continue
		}
		b := debugfsCat(t, good, "/"+f)
		sum := sha256.Sum256(b)
		if len(b) != 4<<20 || hex.EncodeToString(sum[:]) != wrote[f] {
			t.Errorf("image holds /%s as %d bytes with sha256 %x; the guest wrote 4 MiB with %s", f, len(b), sum, wrote[f])
		}
	}
	fsck(t, good)
	t.Logf("%d corruptions on vdb and 1 on the rng survived; vda intact; run %v", len(hostileAttacks), r.elapsed.Round(time.Millisecond))
}

func attackNames() string {
	var ns []string
	for _, a := range hostileAttacks {
		ns = append(ns, a.name)
	}
	return strings.Join(ns, " ")
}
