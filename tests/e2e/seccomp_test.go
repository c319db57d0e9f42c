package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// seccompScript exercises every device under the filter: serial (the
// console itself), rng (/dev/hwrng), disk (raw write, flush, cache drop,
// read back), net (a TCP upload to the host, which needs frames both
// ways). It then waits for the test to pause and resume it through the API
// (the host opens port %[3]d once it has) and uses the disk and the network
// once more.
var seccompScript = fmt.Sprintf(`set -e
echo "SC RNG $(head -c 4096 /dev/hwrng | wc -c)"
dd if=/dev/urandom of=/tmp/blk bs=64k count=16 2>/dev/null
dd if=/tmp/blk of=/dev/vda bs=64k conv=fsync 2>/dev/null
echo 3 >/proc/sys/vm/drop_caches
a=$(sha256sum </tmp/blk); b=$(dd if=/dev/vda bs=64k count=16 2>/dev/null | sha256sum)
[ "$a" = "$b" ] && echo "SC DISK OK"
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
echo seccomp-net-1 | nc %[1]s %[2]d && echo "SC NET OK"
echo "SC PHASE1"
until nc %[1]s %[3]d </dev/null >/dev/null 2>&1; do sleep 1; done
dd if=/dev/vda bs=64k count=16 2>/dev/null | sha256sum >/dev/null && echo "SC DISK2 OK"
echo seccomp-net-2 | nc %[1]s %[2]d && echo "SC NET2 OK"`, netHostAddr, netUpPort, seccompGoPort)

// seccompGoPort is where the guest waits for the test to be done with the
// API.
const seccompGoPort = 5003

// TestSeccompKit boots the kit with vmm's seccomp filter on (cmd/vmm
// installs it after setup): the filter must be in place on every thread,
// and the guest must use its disk, NIC, rng and console, be paused and
// resumed and inspected through the API, and power off cleanly. A call
// missing from the allow-list kills vmm with SIGSYS, so this is the test
// of the list's completeness.
func TestSeccompKit(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd)
	ns := netNamespace(t)
	const timeout = 8 * time.Minute
	deadline := time.Now().Add(timeout)
	ln, err := ns.Listen("tcp", net.JoinHostPort(netHostAddr, strconv.Itoa(netUpPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan string, 2)
	go func() {
		for range 2 {
			text := serveOnce(ln, deadline, func(c net.Conn) (string, error) {
				b, err := io.ReadAll(c)
				return string(b), err
			})
			got <- <-text
		}
	}()
	img := filepath.Join(t.TempDir(), "raw.img")
	if err := os.WriteFile(img, make([]byte, 4<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "vmm.sock")
	args := append(kitArgs(1, "256M", kitRun(seccompScript)), "--disk", "path="+img, "--net", "tap="+netTap,
		"--rng", "--api-socket", sock)
	p := startVMMIn(t, ns, timeout, args...)

	if !p.waitFor(t, regexp.MustCompile(`SC PHASE1`)) {
		r := p.wait(t)
		t.Fatalf("guest did not reach phase 1 (status %d%s)\nconsole:\n%s\nstderr:\n%s", r.status, sigsys(p), tail(r.console), r.stderr)
	}
	// The filter is on, in filter mode, for every thread.
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", p.cmd.Process.Pid))
	if err != nil || len(tasks) == 0 {
		t.Fatalf("no tasks of vmm: %v", err)
	}
	for _, task := range tasks {
		st, err := os.ReadFile(task)
		if err != nil {
			t.Fatal(err)
		}
		if !regexp.MustCompile(`(?m)^Seccomp:\s+2$`).Match(st) || !regexp.MustCompile(`(?m)^NoNewPrivs:\s+1$`).Match(st) {
			t.Fatalf("%s: seccomp filter not installed:\n%s", task, st)
		}
	}
	t.Logf("filter on all %d threads of vmm", len(tasks))

	api := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}}}
	call := func(method, path, body string, want int) string {
		t.Helper()
		req, err := http.NewRequest(method, "http://vmm"+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := api.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v%s", method, path, err, sigsys(p))
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, b)
		}
		return string(b)
	}
	call("GET", "/vm", "", 200)
	call("PUT", "/vm/state", `{"state":"paused"}`, 204)
	if v := call("GET", "/vm", "", 200); !strings.Contains(v, `"paused"`) {
		t.Errorf("GET /vm after pause: %s", v)
	}
	call("PUT", "/vm/state", `{"state":"running"}`, 204)
	call("GET", "/metrics", "", 200)
	goLn, err := ns.Listen("tcp", net.JoinHostPort(netHostAddr, strconv.Itoa(seccompGoPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer goLn.Close()
	serveOnce(goLn, deadline, func(c net.Conn) (bool, error) { return true, nil })

	r := p.wait(t)
	if r.status != exitPowerOff || !strings.Contains(r.console, "KIT EXIT 0") {
		t.Fatalf("status %d%s (want %d and KIT EXIT 0)\nconsole:\n%s\nstderr:\n%s", r.status, sigsys(p), exitPowerOff, tail(r.console), r.stderr)
	}
	for _, line := range []string{"SC RNG 4096", "SC DISK OK", "SC NET OK", "SC DISK2 OK", "SC NET2 OK"} {
		if !strings.Contains(r.console, line) {
			t.Errorf("console lacks %q\n%s", line, tail(r.console))
		}
	}
	for i, want := range []string{"seccomp-net-1\n", "seccomp-net-2\n"} {
		select {
		case s := <-got:
			if s != want {
				t.Errorf("upload %d: host got %q, want %q", i+1, s, want)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("upload %d never arrived", i+1)
		}
	}
	t.Logf("devices and API worked under the filter; run %v", r.elapsed.Round(time.Millisecond))
}

// sigsys names the SIGSYS death that a missing allow-list entry causes.
func sigsys(p *vmmProc) string {
	select {
	case <-p.done:
	default:
		return ""
	}
	if ws, ok := p.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGSYS {
		return ", KILLED BY SIGSYS: a system call is missing from vmm/seccomp's list (find it with seccomp.InstallLog and dmesg)"
	}
	return ""
}
