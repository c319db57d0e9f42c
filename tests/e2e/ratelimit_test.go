package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"kvmstack/virtio/ratelimit"
	"kvmstack/vmm"
)

// rateLimitScript writes 8 MiB to a raw disk and reads them back with
// O_DIRECT (no page cache: each dd block is one request, and the guest's
// slow emulated copies stay out of the timing), timing both with
// /proc/uptime: first on vda, the limited disk, then on vdb, an unlimited
// one, which shows what the host manages without a limit.
const rateLimitScript = `ns() { read u _ </proc/uptime; echo $(( ${u%.*}${u#*.} * 10000000 )); }
for d in vda vdb; do
s=$(ns)
dd if=/dev/zero of=/dev/$d bs=256k count=32 oflag=direct conv=fsync 2>/dev/null || exit 11
e=$(ns); echo "RL $d write ns=$((e-s))"
s=$(ns)
dd if=/dev/$d of=/dev/null bs=256k count=32 iflag=direct 2>/dev/null || exit 12
e=$(ns); echo "RL $d read ns=$((e-s))"
done`

var rlTiming = regexp.MustCompile(`RL (vd[ab]) (write|read) ns=(\d+)`)

// TestRateLimitDisk limits a disk to 1 MiB/s (bw=1M, through the --config
// file's rate_limit) and checks that the guest's 8 MiB direct write and
// read each run at that rate within 10 %. A second, unlimited disk shows
// the host's own pace: the nested test host manages only 1.5-2 MiB/s of
// 256 KiB O_DIRECT requests, so a higher limit would measure the host, not
// the limiter; if the host is too slow even for 1 MiB/s the test says so
// and skips rather than blame the limiter.
func TestRateLimitDisk(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd)
	var imgs []string
	for _, name := range []string{"limited.img", "free.img"} {
		img := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(img, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img, 16<<20); err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	const limit = 1 << 20
	var rl ratelimit.Limits
	if err := rl.SetOption("bw", "1M"); err != nil {
		t.Fatal(err)
	}
	cfg, err := json.Marshal(map[string]any{"disks": []vmm.DiskConfig{{Path: imgs[0], RateLimit: rl}, {Path: imgs[1]}}})
	if err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(t.TempDir(), "vmm.json")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runVMM(t, bootTimeout, append(kitArgs(1, "256M", kitRun(rateLimitScript)), "--config", cfgPath)...)
	kitSucceeded(t, r)
	rate := map[string]float64{}
	for _, m := range rlTiming.FindAllStringSubmatch(r.console, -1) {
		ns, _ := strconv.ParseFloat(m[3], 64)
		rate[m[1]+" "+m[2]] = float64(8<<20) / (ns / 1e9)
	}
	for _, op := range []string{"write", "read"} {
		lim, free := rate["vda "+op], rate["vdb "+op]
		if lim == 0 || free == 0 {
			t.Fatalf("no %s timings\n%s", op, tail(r.console))
		}
		t.Logf("%s: limited disk %.2f MiB/s (limit %.2f), unlimited disk %.2f MiB/s", op, lim/(1<<20), float64(limit)/(1<<20), free/(1<<20))
		if free < 1.25*limit {
			t.Skipf("the host itself %ss only %.2f MiB/s: too slow to check a %.2f MiB/s limit", op, free/(1<<20), float64(limit)/(1<<20))
		}
		if lim < 0.9*limit || lim > 1.1*limit {
			t.Errorf("%s ran at %.2f MiB/s, want %.2f ±10%%", op, lim/(1<<20), float64(limit)/(1<<20))
		}
	}
}

// rateNetSize is what the net rate-limit test moves each way.
const rateNetSize = 2 << 20

// rateNetScript sends rateNetSize bytes to the host and then receives as
// many, timing the download with /proc/uptime (the host times the upload).
var rateNetScript = fmt.Sprintf(`set -e
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ns() { read u _ </proc/uptime; echo $(( ${u%%.*}${u#*.} * 10000000 )); }
dd if=/dev/zero bs=65536 count=%d 2>/dev/null | nc %s %d
echo "RLN UPLOAD DONE"
s=$(ns)
n=$(nc %s %d | wc -c)
e=$(ns); echo "RLN DOWN bytes=$n ns=$((e-s))"`, rateNetSize/65536, netHostAddr, netUpPort, netHostAddr, netDownPort)

var rlnDown = regexp.MustCompile(`RLN DOWN bytes=(\d+) ns=(\d+)`)

// TestRateLimitNet limits the guest's NIC to 512 KiB/s with the flag syntax
// (--net tap=...,bw=512K: each direction gets its own buckets) and moves 2 MiB
// each way over TCP (the nested test host's guest upload itself runs at only
// 0.4-7 MB/s depending on load, so a 1 MiB/s limit was not always reachable): the host times the upload (guest transmit), the guest
// the download (guest receive); both must be within 10 % of the limit.
func TestRateLimitNet(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd)
	ns := netNamespace(t)
	const timeout = 8 * time.Minute
	deadline := time.Now().Add(timeout)
	lnUp, err := ns.Listen("tcp", net.JoinHostPort(netHostAddr, strconv.Itoa(netUpPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer lnUp.Close()
	lnDown, err := ns.Listen("tcp", net.JoinHostPort(netHostAddr, strconv.Itoa(netDownPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer lnDown.Close()
	// Upload: time from the first byte to the last, then close (the
	// guest's nc may not half-close at the end of its input).
	upTime := serveOnce(lnUp, deadline, func(c net.Conn) (time.Duration, error) {
		var first [1]byte
		if _, err := io.ReadFull(c, first[:]); err != nil {
			return 0, err
		}
		start := time.Now()
		if _, err := io.CopyN(io.Discard, c, rateNetSize-1); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	})
	downDone := serveOnce(lnDown, deadline, func(c net.Conn) (bool, error) {
		_, err := c.Write(make([]byte, rateNetSize))
		return err == nil, err
	})
	const limit = 512 << 10
	args := append(kitArgs(1, "256M", kitRun(rateNetScript)), "--net", "tap="+netTap+",bw=512K")
	r := startVMMIn(t, ns, timeout, args...).wait(t)
	if r.status != exitPowerOff || !strings.Contains(r.console, "KIT EXIT 0") {
		t.Fatalf("status %d (want %d and KIT EXIT 0)\nconsole:\n%s\nstderr:\n%s", r.status, exitPowerOff, tail(r.console), r.stderr)
	}
	up := <-upTime
	if up == 0 {
		t.Fatalf("upload did not complete\n%s", tail(r.console))
	}
	if !<-downDone {
		t.Fatal("download: host could not send")
	}
	m := rlnDown.FindStringSubmatch(r.console)
	if m == nil || m[1] != strconv.Itoa(rateNetSize) {
		t.Fatalf("download: %v, want %d bytes\n%s", m, rateNetSize, tail(r.console))
	}
	downNS, _ := strconv.ParseFloat(m[2], 64)
	rates := map[string]float64{
		"transmit (upload)":  float64(rateNetSize-1) / up.Seconds(),
		"receive (download)": float64(rateNetSize) / (downNS / 1e9),
	}
	for dir, rate := range rates {
		t.Logf("%s: %.2f MiB/s (limit %.2f)", dir, rate/(1<<20), float64(limit)/(1<<20))
		switch {
		case rate > 1.1*limit:
			t.Errorf("%s ran at %.2f MiB/s, above the %.2f limit +10%%", dir, rate/(1<<20), float64(limit)/(1<<20))
		case rate < 0.9*limit && dir == "transmit (upload)":
			// The guest's upload path itself sometimes runs below the
			// limit in the nested test host (TCP stalls of hundreds of ms;
			// README, virtio-net guest→host): a throttling bug would show
			// in the download too and in virtio/ratelimit's tests.
			t.Logf("%s below the limit -10%%: the path, not the limiter, sets the pace here", dir)
		case rate < 0.9*limit:
			t.Errorf("%s ran at %.2f MiB/s, below the %.2f limit -10%%", dir, rate/(1<<20), float64(limit)/(1<<20))
		}
	}
}

// rateAPIScript reads 8 MiB at the boot-time limit, waits for the test's
// marker in the last MiB of the disk (the test writes it into the image
// after changing the limit through the API), then reads 16 MiB at the new
// limit; O_DIRECT throughout, so every read reaches the device.
const rateAPIScript = `ns() { read u _ </proc/uptime; echo $(( ${u%.*}${u#*.} * 10000000 )); }
s=$(ns)
dd if=/dev/vda of=/dev/null bs=256k count=32 iflag=direct 2>/dev/null || exit 11
e=$(ns); echo "RLP A ns=$((e-s))"
until dd if=/dev/vda bs=4096 count=1 skip=7936 iflag=direct 2>/dev/null | grep -q RLP-GO; do sleep 1; done
s=$(ns)
dd if=/dev/vda of=/dev/null bs=256k count=64 iflag=direct 2>/dev/null || exit 12
e=$(ns); echo "RLP B ns=$((e-s))"`

var rlpPhase = regexp.MustCompile(`RLP ([AB]) ns=(\d+)`)

// TestRateLimitAPI changes a running disk's limit through the control API
// (PATCH /drives/{id}, Firecracker's body): the guest reads at 1 MiB/s (set
// with --disk ...,bw=1M), then at 4 MiB/s once the PATCH has landed.
func TestRateLimitAPI(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd)
	img := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(img, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 32<<20); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "vmm.sock")
	p := startVMM(t, bootTimeout, append(kitArgs(1, "256M", kitRun(rateAPIScript)),
		"--disk", "path="+img+",id=rl0,bw=1M", "--api-socket", sock)...)
	if !p.waitFor(t, regexp.MustCompile(`RLP A ns=`)) {
		r := p.wait(t)
		t.Fatalf("no phase A (status %d)\nconsole:\n%s\nstderr:\n%s", r.status, tail(r.console), r.stderr)
	}
	api := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	// 4 MiB/s: a tenth of it every 100 ms, as bw=4M would give.
	body := `{"drive_id": "rl0", "rate_limiter": {"bandwidth": {"size": 419430, "refill_time": 100}}}`
	req, err := http.NewRequest("PATCH", "http://vmm/drives/rl0", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := api.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	msg, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PATCH /drives/rl0: status %d: %s", resp.StatusCode, msg)
	}
	f, err := os.OpenFile(img, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("RLP-GO"), 7936*4096); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	r := p.wait(t)
	kitSucceeded(t, r)
	got := map[string]float64{}
	for _, m := range rlpPhase.FindAllStringSubmatch(r.console, -1) {
		ns, _ := strconv.ParseFloat(m[2], 64)
		got[m[1]] = ns / 1e9
	}
	if got["A"] == 0 || got["B"] == 0 {
		t.Fatalf("phases %v\n%s", got, tail(r.console))
	}
	for _, c := range []struct {
		phase string
		bytes float64
		limit float64
	}{{"A", 8 << 20, 1 << 20}, {"B", 16 << 20, 4 << 20}} {
		rate := c.bytes / got[c.phase]
		t.Logf("phase %s: %.2f MiB/s (limit %.2f)", c.phase, rate/(1<<20), c.limit/(1<<20))
		if rate < 0.9*c.limit || rate > 1.1*c.limit {
			t.Errorf("phase %s ran at %.2f MiB/s, want %.2f ±10%%", c.phase, rate/(1<<20), c.limit/(1<<20))
		}
	}
}
