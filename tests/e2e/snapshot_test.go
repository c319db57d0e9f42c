package e2e

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// countScript prints "count N" once a second, N from 1 up, forever.
const countScript = `i=0; while :; do i=$((i+1)); echo "count $i"; sleep 1; done`

var countLine = regexp.MustCompile(`(?m)^count (\d+)\r?$`)

// counts returns the numbers of the complete count lines in console.
func counts(console string) []int {
	var out []int
	for _, m := range countLine.FindAllStringSubmatch(console, -1) {
		n, _ := strconv.Atoi(m[1])
		out = append(out, n)
	}
	return out
}

// waitCount waits until the console shows count n or later.
func waitCount(t *testing.T, p *vmmProc, n int) {
	t.Helper()
	re := regexp.MustCompile(fmt.Sprintf(`(?m)^count %d\r?$`, n))
	if !p.waitFor(t, re) {
		r := p.wait(t)
		t.Fatalf("no \"count %d\" (status %d)\nconsole:\n%s\nstderr:\n%s", n, r.status, tail(r.console), r.stderr)
	}
}

// bootCounter boots the kit counting on its console, with the control API.
func bootCounter(t *testing.T, memory string, extra ...string) (*vmmProc, *apiClient) {
	t.Helper()
	return bootScript(t, memory, countScript, extra...)
}

// bootScript boots the kit running script, with the control API.
func bootScript(t *testing.T, memory, script string, extra ...string) (*vmmProc, *apiClient) {
	t.Helper()
	return bootScriptCPUs(t, 1, memory, script, extra...)
}

func bootScriptCPUs(t *testing.T, cpus int, memory, script string, extra ...string) (*vmmProc, *apiClient) {
	t.Helper()
	needKit(t, kitVmlinux, kitInitrd)
	sock := filepath.Join(t.TempDir(), "vmm.sock")
	args := append(kitArgs(cpus, memory, kitRun(script)), "--api-socket", sock)
	p := startVMM(t, bootTimeout, append(args, extra...)...)
	c := newAPIClient(t, sock)
	c.waitSocket(p)
	return p, c
}

// pauseAndSnapshot pauses the guest through the API and snapshots it into
// dir, returning how long the snapshot request took.
func pauseAndSnapshot(t *testing.T, p *vmmProc, c *apiClient, dir string) (snapshotTook time.Duration) {
	t.Helper()
	c.must("PUT", "/vm/state", `{"state": "paused"}`, 204)
	body, _ := json.Marshal(map[string]string{"dir": dir})
	start := time.Now()
	c.must("PUT", "/snapshot", string(body), 204)
	return time.Since(start)
}

// snapshotPaused snapshots an already paused guest into dir.
func snapshotPaused(t *testing.T, c *apiClient, dir string) {
	t.Helper()
	body, _ := json.Marshal(map[string]string{"dir": dir})
	c.must("PUT", "/snapshot", string(body), 204)
}

// kill ends vmm with SIGKILL, as a crashed host process would end.
func (p *vmmProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-p.done
}

// TestSnapshotRestoreContinuesCount: a guest counting to its console is
// paused and snapshotted, its vmm is killed, and `vmm --restore` resumes
// it: the count goes on from where it stopped, no number repeated and
// none skipped, so CPU, timer, interrupt and UART state all came back. The
// restored machine is snapshotted and restored once more.
func TestSnapshotRestoreContinuesCount(t *testing.T) {
	p, c := bootCounter(t, "256M")
	waitCount(t, p, 3)
	snap := filepath.Join(t.TempDir(), "snap")
	pauseAndSnapshot(t, p, c, snap)
	paused := p.console.String()
	time.Sleep(2 * time.Second)
	if now := p.console.String(); now != paused {
		t.Fatalf("console grew while paused: %q", now[len(paused):])
	}
	p.kill(t)
	before := counts(paused)
	last := before[len(before)-1]

	// The restored machine is snapshotted in turn (its RAM is mapped from
	// the first snapshot, which it may not overwrite), and that second
	// snapshot restored: the count still runs on.
	sock2 := filepath.Join(t.TempDir(), "vmm2.sock")
	q := startVMM(t, bootTimeout, "--restore", snap, "--api-socket", sock2)
	c2 := newAPIClient(t, sock2)
	c2.waitSocket(q)
	waitCount(t, q, last+2)
	c2.must("PUT", "/vm/state", `{"state": "paused"}`, 204)
	same, _ := json.Marshal(map[string]string{"dir": snap})
	if code, body := c2.do("PUT", "/snapshot", string(same)); code/100 != 4 {
		t.Fatalf("snapshot into the directory the RAM is mapped from: status %d %s, want 4xx", code, body)
	}
	snap2 := filepath.Join(t.TempDir(), "snap2")
	snapshotPaused(t, c2, snap2)
	q.kill(t)
	second := q.console.String()
	mid := counts(paused + second)
	r := startVMM(t, bootTimeout, "--restore", snap2)
	waitCount(t, r, mid[len(mid)-1]+2)
	r.kill(t)
	// The restored UART continues the very byte stream: a line cut by a
	// snapshot is completed by the restored guest.
	all := counts(paused + second + r.console.String())
	for i, n := range all {
		if n != i+1 {
			t.Fatalf("count sequence broken at position %d: %d (want %d); last before the snapshots %d and %d\nbefore:\n%s\nfirst restore:\n%s\nsecond restore:\n%s",
				i, n, i+1, last, mid[len(mid)-1], tail(paused), second, r.console.String())
		}
	}
	if len(all) < mid[len(mid)-1]+2 {
		t.Fatalf("only %d counts", len(all))
	}
	t.Logf("counted to %d before the first snapshot, %d before the second, on to %d after restoring it", last, mid[len(mid)-1], all[len(all)-1])
}

// virtioCountScript counts only while an rng read and an O_DIRECT disk
// read both succeed, so a virtio queue that does not come back stops (or
// breaks) the count.
const virtioCountScript = `i=0; while :; do i=$((i+1)); ` +
	`[ "$(head -c 32 /dev/hwrng | wc -c)" = 32 ] && ` +
	`dd if=/dev/vda of=/dev/null bs=4096 count=1 skip=$((i % 4096)) iflag=direct 2>/dev/null && ` +
	`echo "count $i"; sleep 1; done`

// TestSnapshotRestoreVirtio: the same with virtio-rng and a read-only
// virtio-blk disk in use on every count: their queues (ring positions,
// MSI-X vectors, notify addresses) come back with the machine.
func TestSnapshotRestoreVirtio(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd, kitRootfs)
	p, c := bootScript(t, "256M", virtioCountScript, "--rng", "--disk", "path="+kitRootfs+",readonly=on")
	last, end := snapshotKillRestore(t, p, c)
	t.Logf("counted to %d with rng and disk reads, on to %d after restore", last, end)
}

// TestSnapshotRestoreTwoVCPUs: the count with two vCPUs, each busy (a
// shell loop pinned to neither), so both vCPUs' state (the second one
// started through INIT/SIPI) and their TSCs come back consistent.
func TestSnapshotRestoreTwoVCPUs(t *testing.T) {
	p, c := bootScriptCPUs(t, 2, "256M", `(while :; do :; done) & `+countScript)
	last, end := snapshotKillRestore(t, p, c)
	t.Logf("2 vCPUs: counted to %d, on to %d after restore", last, end)
}

// snapshotKillRestore lets the counting guest p reach 3, snapshots it,
// kills its vmm, restores the snapshot in a new vmm and checks that the
// count goes on with no repeat and no gap. It returns the last count
// before the snapshot and the last one seen after the restore.
func snapshotKillRestore(t *testing.T, p *vmmProc, c *apiClient) (last, end int) {
	t.Helper()
	waitCount(t, p, 3)
	snap := filepath.Join(t.TempDir(), "snap")
	pauseAndSnapshot(t, p, c, snap)
	p.kill(t)
	paused := p.console.String()
	before := counts(paused)
	last = before[len(before)-1]
	q := startVMM(t, bootTimeout, "--restore", snap)
	waitCount(t, q, last+3)
	q.kill(t)
	all := counts(paused + q.console.String())
	for i, n := range all {
		if n != i+1 {
			t.Fatalf("count sequence broken at position %d: %d (want %d)\nbefore:\n%s\nafter restore:\n%s",
				i, n, i+1, tail(paused), q.console.String())
		}
	}
	return last, all[len(all)-1]
}

// TestRestoreRefusesDamagedSnapshot: a snapshot with a flipped byte, a
// truncated memory file, or a format version this vmm does not read is
// refused with exit status 2 and one line saying why.
func TestRestoreRefusesDamagedSnapshot(t *testing.T) {
	p, c := bootCounter(t, "128M")
	waitCount(t, p, 1)
	snap := filepath.Join(t.TempDir(), "snap")
	pauseAndSnapshot(t, p, c, snap)
	p.kill(t)
	tests := []struct {
		name   string
		damage func(t *testing.T) (undo func())
		want   string
	}{
		{"state byte flipped", func(t *testing.T) func() {
			return editBytes(t, filepath.Join(snap, "state.json"), func(b []byte) []byte { b[len(b)/3] ^= 0x01; return b })
		}, "corrupt snapshot"},
		{"memory truncated", func(t *testing.T) func() {
			path := filepath.Join(snap, "memory")
			st, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(path, st.Size()/2); err != nil {
				t.Fatal(err)
			}
			return func() {}
		}, "corrupt snapshot"},
		{"other format version", func(t *testing.T) func() {
			return editBytes(t, filepath.Join(snap, "manifest.json"), func(b []byte) []byte {
				return []byte(strings.Replace(string(b), `"format_version": 1`, `"format_version": 2`, 1))
			})
		}, "unsupported snapshot format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			undo := tc.damage(t)
			defer undo()
			r := runVMM(t, time.Minute, "--restore", snap)
			lines := strings.Split(strings.TrimSpace(r.stderr), "\n")
			if r.status != exitUsage || len(lines) != 1 || !strings.Contains(lines[0], tc.want) {
				t.Fatalf("status %d, stderr %q; want %d and one line saying %q", r.status, r.stderr, exitUsage, tc.want)
			}
			t.Logf("refused: %s", lines[0])
		})
	}
}

// editBytes rewrites a file through f and returns a function restoring it.
func editBytes(t *testing.T, path string, f func([]byte) []byte) func() {
	t.Helper()
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, f(append([]byte(nil), orig...)), 0o600); err != nil {
		t.Fatal(err)
	}
	return func() {
		if err := os.WriteFile(path, orig, 0o600); err != nil {
			t.Error(err)
		}
	}
}

var (
	restoredTook = regexp.MustCompile(`msg="machine restored".* (took=.*)`)
	snapshotTook = regexp.MustCompile(`msg="snapshot written".* took=(\S+)`)
	resumedLine  = regexp.MustCompile(`msg=resumed`)
)

var snapshotBench = flag.Bool("snapshot-bench", false, "run TestSnapshotRestoreTimes (boots 256 MiB and 1 GiB guests)")

// TestSnapshotRestoreTimes is the snapshot benchmark: for a 256 MiB and a
// 1 GiB kit guest it measures the snapshot (API call and vmm's own time),
// the memory file's size on disk, and restore to running: from starting
// `vmm --restore` to its "resumed" log line, and vmm's own restore time.
// It is a test, not a Benchmark, because tests/kvmhost runs tests by name
// in the nested test host; it only runs when asked:
//
//	go test -count=1 -v -run '^TestSnapshotRestoreTimes$' ./tests/e2e/ -args -snapshot-bench
func TestSnapshotRestoreTimes(t *testing.T) {
	if !*snapshotBench {
		t.Skip("measurement only: run with -args -snapshot-bench")
	}
	for _, mem := range []string{"256M", "1G"} {
		t.Run(mem, func(t *testing.T) {
			p, c := bootCounter(t, mem, "--log-level", "info")
			waitCount(t, p, 2)
			snap := filepath.Join(t.TempDir(), "snap")
			apiTook := pauseAndSnapshot(t, p, c, snap)
			p.kill(t)
			inner := snapshotTook.FindStringSubmatch(p.stderr.String())
			var st syscall.Stat_t
			if err := syscall.Stat(filepath.Join(snap, "memory"), &st); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			q := startVMM(t, bootTimeout, "--restore", snap, "--log-level", "info")
			for !resumedLine.MatchString(q.stderr.String()) {
				select {
				case <-q.done:
					t.Fatalf("vmm --restore ended: %s", q.stderr.String())
				case <-time.After(time.Millisecond):
				}
			}
			toRunning := time.Since(start)
			before := counts(p.console.String())
			waitCount(t, q, before[len(before)-1]+1)
			q.kill(t)
			restored := restoredTook.FindStringSubmatch(q.stderr.String())
			t.Logf("SNAPSHOT-BENCH %s guest: snapshot %v (vmm %s), memory file %d MiB apparent, %.1f MiB on disk; restore to running %v (vmm %s)",
				mem, apiTook.Round(time.Millisecond), submatch(inner), st.Size>>20, float64(st.Blocks*512)/(1<<20),
				toRunning.Round(time.Millisecond), submatch(restored))
		})
	}
}

func submatch(m []string) string {
	if len(m) < 2 {
		return "?"
	}
	return m[1]
}
