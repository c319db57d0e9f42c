package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	kitRootfs       = filepath.Join(kitDir, "rootfs.ext4")
	kitInitrdDebian = filepath.Join(kitDir, "initrd-debian.img")
	// e2fsprogs on the host side: the disk tests make fresh ext4 images and
	// read files back out of them after vmm exits (no loop devices in the
	// test host). TestMain packs these into the test host.
	mke2fsBin  = "/usr/sbin/mke2fs"
	debugfsBin = "/usr/sbin/debugfs"
	e2fsckBin  = "/usr/sbin/e2fsck"
	// diskHostFiles are what the disk tests need in the test host.
	diskHostFiles = []string{kitRootfs, kitInitrdDebian, mke2fsBin, debugfsBin, e2fsckBin, "/etc/mke2fs.conf"}
)

// needE2fsprogs skips when the host tools the disk tests use are missing.
func needE2fsprogs(t *testing.T) {
	t.Helper()
	for _, f := range []string{mke2fsBin, debugfsBin, e2fsckBin} {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("%s missing (apt-get install e2fsprogs): %v", f, err)
		}
	}
}

// newExt4 makes an empty ext4 image of size MiB. The inode tables and
// journal are initialised here, so the guest kernel has no lazy-init work.
func newExt4(t *testing.T, name string, mib int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, int64(mib)<<20); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(mke2fsBin, "-q", "-F", "-t", "ext4", "-L", name,
		"-E", "lazy_itable_init=0,lazy_journal_init=0", p).CombinedOutput()
	if err != nil {
		t.Fatalf("mke2fs: %v\n%s", err, out)
	}
	return p
}

// copyImage copies src to a temporary file the guest may write.
func copyImage(t *testing.T, src string) string {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	p := filepath.Join(t.TempDir(), filepath.Base(src))
	out, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return p
}

// debugfsCat returns a file's contents out of an ext4 image.
func debugfsCat(t *testing.T, img, path string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "dump")
	cmd := exec.Command(debugfsBin, "-R", fmt.Sprintf("dump -p %s %s", path, out), img)
	msg, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("debugfs dump %s: %v\n%s", path, err, msg)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatalf("debugfs dump %s: %v\n%s", path, err, msg)
	}
	return b
}

// fsck checks an image read-only and fails the test if it is not clean.
func fsck(t *testing.T, img string) {
	t.Helper()
	if out, err := exec.Command(e2fsckBin, "-f", "-n", img).CombinedOutput(); err != nil {
		t.Errorf("e2fsck -fn %s: %v\n%s", filepath.Base(img), err, out)
	}
}

func fileSHA256(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// allocated is how many bytes of a (sparse) image the host stores.
func allocated(t *testing.T, p string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

func kitSucceeded(t *testing.T, r result) {
	t.Helper()
	if r.status != exitPowerOff || !strings.Contains(r.console, "KIT EXIT 0") {
		t.Fatalf("status %d (want %d and KIT EXIT 0)\nconsole:\n%s\nstderr:\n%s", r.status, exitPowerOff, tail(r.console), r.stderr)
	}
}

// diskWriteScript times with /proc/uptime (centiseconds): busybox date
// has no %N. It writes 16 MiB of random data to an ext4 file system on
// vda, syncs, prints the checksum, and re-reads the file from the disk
// (caches dropped) to check the read path too.
const diskWriteScript = `mkdir -p /mnt && mount -t ext4 /dev/vda /mnt || exit 10
ns() { read u _ </proc/uptime; echo $(( ${u%.*}${u#*.} * 10000000 )); }
s=$(ns)
dd if=/dev/urandom of=/mnt/data bs=1M count=16 2>/dev/null || exit 11
sync
e=$(ns)
set -- $(sha256sum /mnt/data); echo "DISK WROTE $1 ns=$((e-s))"
echo 3 >/proc/sys/vm/drop_caches
s=$(ns)
set -- $(sha256sum /mnt/data); e=$(ns); echo "DISK REREAD $1 ns=$((e-s))"
umount /mnt || exit 12`

var (
	diskWrote  = regexp.MustCompile(`DISK WROTE ([0-9a-f]{64}) ns=(\d+)`)
	diskReread = regexp.MustCompile(`DISK REREAD ([0-9a-f]{64}) ns=(\d+)`)
)

// TestDiskWriteChecksum: the kit guest mounts a fresh ext4 disk, writes
// 16 MiB, syncs and powers off; the checksum the guest computed matches the
// file read out of the image on the host, and the file system is clean.
func TestDiskWriteChecksum(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd)
	needE2fsprogs(t)
	img := newExt4(t, "data.ext4", 64)
	r := runVMM(t, bootTimeout, append(kitArgs(1, "256M", kitRun(diskWriteScript)), "--disk", "path="+img)...)
	kitSucceeded(t, r)
	w, rr := diskWrote.FindStringSubmatch(r.console), diskReread.FindStringSubmatch(r.console)
	if w == nil || rr == nil {
		t.Fatalf("no checksum lines\n%s", tail(r.console))
	}
	if w[1] != rr[1] {
		t.Errorf("guest read back %s after dropping caches, wrote %s", rr[1], w[1])
	}
	got := debugfsCat(t, img, "/data")
	sum := sha256.Sum256(got)
	if len(got) != 16<<20 || hex.EncodeToString(sum[:]) != w[1] {
		t.Errorf("image holds %d bytes with sha256 %x; guest wrote 16 MiB with %s", len(got), sum, w[1])
	}
	fsck(t, img)
	wns, _ := strconv.ParseFloat(w[2], 64)
	rns, _ := strconv.ParseFloat(rr[2], 64)
	t.Logf("guest: 16 MiB written+synced in %v (%.1f MB/s), re-read in %v (%.1f MB/s); run %v",
		time.Duration(wns), 16*1.048576/(wns/1e9), time.Duration(rns), 16*1.048576/(rns/1e9), r.elapsed.Round(time.Millisecond))
}

// twoDiskScript: vda is a fresh read-write disk, vdb a read-only copy of
// the kit's root file system. It reports what the guest sees (read-only
// flag, size, serial from GET_ID), writes and trims on vda, and tries to
// write to vdb both through the file system and the raw device.
const twoDiskScript = `for d in vda vdb; do read ro </sys/block/$d/ro; read sz </sys/block/$d/size; read ser </sys/block/$d/serial; echo "DISK $d ro=$ro size=$sz serial=$ser"; done
mkdir -p /a /b
mount -t ext4 /dev/vda /a || exit 10
echo kvmstack-two-disks >/a/hello
dd if=/dev/urandom of=/a/junk bs=1M count=8 2>/dev/null || exit 11
sync; rm /a/junk; sync
fstrim -v /a || echo "DISK FSTRIM FAILED"
mount -t ext4 -o ro /dev/vdb /b || exit 12
[ -x /b/init ] && echo "DISK B READ OK"
if touch /b/x 2>/dev/null; then echo "DISK B TOUCH WROTE"; else echo "DISK B TOUCH REFUSED"; fi
umount /b
if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 conv=fsync 2>/dev/null; then echo "DISK B DD WROTE"; else echo "DISK B DD REFUSED"; fi
umount /a || exit 13`

var (
	diskSeen  = regexp.MustCompile(`DISK (vd[ab]) ro=(\d) size=(\d+) serial=(\S*)`)
	diskTrim  = regexp.MustCompile(`(\d+) bytes trimmed`)
	rootfsMiB = 64
)

// TestDiskTwoReadOnly attaches two disks at once, the second read-only: the
// guest sees both with their IDs, the read-only one refuses writes (and its
// image is unchanged), and discard (fstrim) reaches the host as freed space.
func TestDiskTwoReadOnly(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd, kitRootfs)
	needE2fsprogs(t)
	a := newExt4(t, "a.ext4", 64)
	b := copyImage(t, kitRootfs)
	bSum := fileSHA256(t, b)
	aBefore := allocated(t, a)
	r := runVMM(t, bootTimeout, append(kitArgs(1, "256M", kitRun(twoDiskScript)),
		"--disk", "path="+a+",id=kvmstack-data", "--disk", "path="+b+",readonly=on,id=kvmstack-root")...)
	kitSucceeded(t, r)
	seen := map[string][]string{}
	for _, m := range diskSeen.FindAllStringSubmatch(r.console, -1) {
		seen[m[1]] = m[2:]
	}
	bSize := fmt.Sprint(rootfsMiB << 11)
	if st, err := os.Stat(b); err == nil {
		bSize = fmt.Sprint(st.Size() >> 9)
	}
	want := map[string][]string{
		"vda": {"0", fmt.Sprint(64 << 11), "kvmstack-data"},
		"vdb": {"1", bSize, "kvmstack-root"},
	}
	for d, w := range want {
		if strings.Join(seen[d], " ") != strings.Join(w, " ") {
			t.Errorf("guest sees %s as ro/size/serial %v, want %v", d, seen[d], w)
		}
	}
	for _, line := range []string{"DISK B READ OK", "DISK B TOUCH REFUSED", "DISK B DD REFUSED"} {
		if !strings.Contains(r.console, line) {
			t.Errorf("console lacks %q\n%s", line, tail(r.console))
		}
	}
	if s := fileSHA256(t, b); s != bSum {
		t.Errorf("read-only image changed: sha256 %s, was %s", s, bSum)
	}
	if got := string(debugfsCat(t, a, "/hello")); got != "kvmstack-two-disks\n" {
		t.Errorf("/hello on disk a: %q", got)
	}
	fsck(t, a)
	m := diskTrim.FindStringSubmatch(r.console)
	if m == nil {
		t.Errorf("fstrim printed nothing\n%s", tail(r.console))
	} else if n, _ := strconv.ParseInt(m[1], 10, 64); n < 8<<20 {
		t.Errorf("fstrim trimmed %d bytes, want at least the 8 MiB freed", n)
	}
	// The 8 MiB file was written and synced, then deleted and trimmed: the
	// host must not still hold it.
	aAfter := allocated(t, a)
	if aAfter-aBefore >= 6<<20 {
		t.Errorf("image a grew from %d to %d allocated bytes: discard did not free the trimmed 8 MiB", aBefore, aAfter)
	}
	t.Logf("image a allocated %d -> %d bytes; run %v", aBefore, aAfter, r.elapsed.Round(time.Millisecond))
}

var ext4Mounted = regexp.MustCompile(`EXT4-fs \(vda\): mounted filesystem [0-9a-f-]+ (r/w|ro)`)

// TestDiskDebianRoot boots Debian's stock kernel with the kit's root disk.
// Its virtio_blk is a module (CONFIG_VIRTIO_BLK=m), so it cannot open
// root=/dev/vda by itself: initrd-debian.img loads Debian's own virtio_blk
// module and mounts /dev/vda (kit.root=). The kernel must find the disk
// and log the ext4 mount; where guest system calls work (not kvm_pvm),
// userspace on the disk then reaches KIT READY.
func TestDiskDebianRoot(t *testing.T) {
	needKit(t, kitDebian, kitInitrdDebian, kitRootfs)
	root := copyImage(t, kitRootfs)
	args := []string{"--kernel", kitDebian, "--initrd", kitInitrdDebian, "--cpus", "1", "--memory", "512M",
		"--cmdline", "console=ttyS0 reboot=k panic=-1 root=/dev/vda kit.root=/dev/vda",
		"--disk", "path=" + root + ",id=debian-root"}
	r := runVMM(t, bootTimeout, args...)
	if emulatingHost() {
		// Userspace (and so the module loader in /init) cannot run here.
		if !strings.Contains(r.console, "Run /init as init process") {
			t.Fatalf("stock kernel did not reach init (status %d)\n%s\n%s", r.status, tail(r.console), r.stderr)
		}
		t.Skipf("kvm_pvm host: the stock kernel's userspace cannot load virtio_blk here (DESIGN.md); reached init in %v", r.elapsed)
	}
	if !regexp.MustCompile(`virtio_blk virtio\d+: \[vda\] \d+ 512-byte logical blocks`).MatchString(r.console) {
		t.Errorf("stock kernel did not find vda\n%s", tail(r.console))
	}
	if m := ext4Mounted.FindStringSubmatch(r.console); m == nil || m[1] != "r/w" {
		t.Fatalf("no read-write ext4 mount of vda logged (status %d)\n%s\n%s", r.status, tail(r.console), r.stderr)
	}
	if !kitReady.MatchString(r.console) || r.status != exitPowerOff {
		t.Fatalf("no KIT READY from the root disk or status %d != 0\n%s\n%s", r.status, tail(r.console), r.stderr)
	}
	t.Logf("stock kernel: ext4 root on virtio-blk, KIT READY and power-off in %v", r.elapsed.Round(time.Millisecond))
}
