package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"kvmstack/tests/kvmhost"
)

var (
	repoRoot, _ = filepath.Abs("../..")
	vmmBin      = filepath.Join(repoRoot, "build", "bin", "vmm")
	kitDir      = filepath.Join(repoRoot, "build", "kit")
	kitVmlinux  = filepath.Join(kitDir, "vmlinux")
	kitInitrd   = filepath.Join(kitDir, "initrd.img")
	kitDebian   = filepath.Join(kitDir, "vmlinuz-debian")
)

// vmm exit statuses (cmd/vmm).
const (
	exitPowerOff = 0
	exitUsage    = 2
	exitReset    = 3
	exitCrash    = 4
	exitStopped  = 5
)

func TestMain(m *testing.M) {
	if os.Getenv(kvmhost.EnvInside) == "" {
		// Build vmm here: the test host has no Go toolchain.
		cmd := exec.Command("go", "build", "-o", vmmBin, "./cmd/vmm")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: building vmm: %v\n%s", err, out)
			os.Exit(2)
		}
	}
	var files []string
	for _, f := range append([]string{vmmBin, kitVmlinux, kitInitrd, kitDebian}, diskHostFiles...) {
		if _, err := os.Stat(f); err == nil {
			files = append(files, f)
		}
	}
	kvmhost.Main(m, repoRoot, files, nil)
}

// needKit skips when KVM or the guest kit is missing, saying which.
func needKit(t *testing.T, files ...string) {
	t.Helper()
	if err := kvmhost.HaveKVM(); err != nil {
		t.Skipf("no KVM here (%v) and the nested test host could not run: see tests/kvmhost", err)
	}
	for _, f := range append([]string{vmmBin}, files...) {
		if _, err := os.Stat(f); err != nil {
			t.Skipf("%s missing (run make kit): %v", f, err)
		}
	}
}

// kitRun encodes a shell command for the kit's init (kit.run=).
func kitRun(cmd string) string {
	return "kit.run=" + base64.StdEncoding.EncodeToString([]byte(cmd))
}

// syncBuffer is the console as the test watches it while vmm runs.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// result is one vmm run.
type result struct {
	console string
	stderr  string
	status  int
	elapsed time.Duration
}

// vmmProc is a running vmm.
type vmmProc struct {
	cmd     *exec.Cmd
	console *syncBuffer
	stderr  *syncBuffer
	start   time.Time
	done    chan struct{}
	cancel  context.CancelFunc
}

func startVMM(t *testing.T, timeout time.Duration, args ...string) *vmmProc {
	t.Helper()
	return startVMMWith(t, (*exec.Cmd).Start, timeout, args...)
}

// startVMMWith starts vmm through start (plain Start, or a start inside a
// network namespace) and ties its lifetime to the test.
func startVMMWith(t *testing.T, start func(*exec.Cmd) error, timeout time.Duration, args ...string) *vmmProc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	p := &vmmProc{console: &syncBuffer{}, stderr: &syncBuffer{}, done: make(chan struct{}), cancel: cancel}
	p.cmd = exec.CommandContext(ctx, vmmBin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.console, p.stderr
	p.cmd.WaitDelay = 5 * time.Second
	p.start = time.Now()
	if err := start(p.cmd); err != nil {
		cancel()
		t.Fatalf("start vmm: %v", err)
	}
	t.Cleanup(func() {
		p.cancel()
		<-p.done
	})
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	go p.reportUnkillable(ctx)
	return p
}

// reportUnkillable writes where vmm's threads sit in the kernel when it
// outlives its kill by far: a process stuck in KVM_RUN cannot be waited for,
// and that stack is the only clue the nested test host leaves.
func (p *vmmProc) reportUnkillable(ctx context.Context) {
	select {
	case <-p.done:
		return
	case <-ctx.Done():
	}
	select {
	case <-p.done:
		return
	case <-time.After(p.cmd.WaitDelay + 20*time.Second):
	}
	pid := p.cmd.Process.Pid
	fmt.Fprintf(os.Stderr, "e2e: vmm pid %d survives its kill; kernel stacks:\n", pid)
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		stat, _ := os.ReadFile(filepath.Join(task, "stat"))
		stack, _ := os.ReadFile(filepath.Join(task, "stack"))
		fmt.Fprintf(os.Stderr, "%s\n%s\n", strings.TrimSpace(string(stat)), stack)
	}
}

func (p *vmmProc) wait(t *testing.T) result {
	t.Helper()
	<-p.done
	p.cancel()
	r := result{console: p.console.String(), stderr: p.stderr.String(), status: p.cmd.ProcessState.ExitCode(), elapsed: time.Since(p.start)}
	if r.status < 0 {
		t.Fatalf("vmm did not finish in time (%v)\nconsole:\n%s\nstderr:\n%s", r.elapsed, tail(r.console), r.stderr)
	}
	return r
}

// waitFor polls the console until re matches or the process ends.
func (p *vmmProc) waitFor(t *testing.T, re *regexp.Regexp) bool {
	t.Helper()
	for {
		if re.MatchString(p.console.String()) {
			return true
		}
		select {
		case <-p.done:
			return re.MatchString(p.console.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// runVMM runs vmm to the end. A run that does not end in time is retried
// once, and only that: in the nested test host (tests/kvmhost) a guest
// sometimes stalls inside KVM_RUN with nothing to handle (docs/KVM-HOSTS.md);
// a wrong status or console is never retried.
func runVMM(t *testing.T, timeout time.Duration, args ...string) result {
	t.Helper()
	p := startVMM(t, timeout, args...)
	<-p.done
	if p.cmd.ProcessState.ExitCode() < 0 {
		t.Logf("vmm did not finish in %v (console ends: %q); retrying once", time.Since(p.start).Round(time.Second),
			lastLine(p.console.String()))
		p = startVMM(t, timeout, args...)
	}
	return p.wait(t)
}

func lastLine(s string) string {
	s = strings.TrimRight(s, "\n")
	return s[strings.LastIndex(s, "\n")+1:]
}

func tail(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > 60 {
		lines = lines[len(lines)-60:]
	}
	return strings.Join(lines, "\n")
}

func kitArgs(cpus int, memory string, cmdline ...string) []string {
	return []string{
		"--kernel", kitVmlinux, "--initrd", kitInitrd,
		"--cpus", fmt.Sprint(cpus), "--memory", memory,
		"--cmdline", strings.Join(append([]string{"console=ttyS0 reboot=k panic=-1"}, cmdline...), " "),
	}
}
