package kvmhost

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// KVMPath is where the tests look for KVM.
const KVMPath = "/dev/kvm"

// HaveKVM reports whether /dev/kvm can be opened, and if not, why.
func HaveKVM() error {
	f, err := os.OpenFile(KVMPath, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	return f.Close()
}

// TestBudget is how long one top-level test may run in the test host
// before the host is taken for wedged. The nested host (TCG running KVM
// running a guest) very rarely stops making progress altogether — the
// whole L1 kernel, not one guest — and then only a fresh boot helps.
const TestBudget = 5 * time.Minute

// Main is a TestMain body for tests that need /dev/kvm. With KVM present
// (or already inside the test host) it runs the tests. Without it, it
// re-executes this test binary inside the nested test host, with extra
// files (the vmm binary, the guest kit) at their host paths, and exits with
// the status the tests had there. A test host that stops making progress
// (no top-level test finished within TestBudget) is killed and the tests
// it had not finished run in a fresh one; a test that wedges two hosts
// fails. If the test host cannot be started, the tests run here and skip,
// each saying why.
func Main(m *testing.M, repoRoot string, extraFiles []string, env []string) {
	if HaveKVM() == nil || os.Getenv(EnvInside) != "" {
		os.Exit(m.Run())
	}
	dir := filepath.Join(repoRoot, "build", "kvmhost")
	if err := Available(dir); err != nil {
		fmt.Fprintf(os.Stderr, "kvmhost: no /dev/kvm here and %v; KVM tests will skip\n", err)
		os.Exit(m.Run())
	}
	os.Exit(runNested(repoRoot, dir, extraFiles, env))
}

func runNested(repoRoot, dir string, extraFiles, env []string) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvmhost:", err)
		return 2
	}
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvmhost:", err)
		return 2
	}
	fmt.Fprintf(os.Stderr, "kvmhost: no /dev/kvm on this machine (%v); running %s inside a QEMU TCG test host with emulated AMD-V and kvm-amd\n",
		HaveKVM(), filepath.Base(self))
	flags, pattern := splitRunFlag(os.Args[1:])
	var tests []string
	if !strings.Contains(pattern, "/") {
		tests, err = listTests(self, pattern)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kvmhost:", err)
			return 2
		}
		if len(tests) == 0 {
			fmt.Fprintln(os.Stderr, "kvmhost: no tests match")
			return 0
		}
	}
	h, err := Prepare(Config{Dir: dir, Files: append([]string{self}, extraFiles...), Env: env, WorkDir: wd})
	if err != nil {
		fmt.Fprintln(os.Stderr, "kvmhost:", err)
		return 2
	}
	defer h.Close()
	start := time.Now()
	if tests == nil {
		// A subtest pattern cannot be split per test: one host, one budget.
		ctx, cancel := context.WithTimeout(context.Background(), 3*TestBudget)
		defer cancel()
		status, err := h.Exec(ctx, append([]string{self}, os.Args[1:]...), nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "kvmhost:", err)
			return 2
		}
		return status
	}
	status := runSplit(h.Exec, TestBudget, self, flags, tests)
	fmt.Fprintf(os.Stderr, "kvmhost: tests in the test host exited %d after %s\n", status, time.Since(start).Round(time.Second))
	return status
}

// runSplit runs tests in as few test hosts as it can: all in one, and after
// a wedged host, those not finished in a fresh one, the wedged test first.
// exec is one boot of the test host running args (Host.Exec).
func runSplit(exec func(ctx context.Context, args []string, watch func(string)) (int, error),
	budget time.Duration, self string, flags, tests []string) int {
	hung := map[string]int{}
	status := 0
	for remaining := tests; len(remaining) > 0; {
		p := newProgress(budget)
		args := append([]string{self}, flags...)
		args = append(args, "-test.v=true", "-test.run=^("+strings.Join(quoteMeta(remaining), "|")+")$")
		ctx, cancel := context.WithCancel(context.Background())
		go p.watchdog(ctx, cancel)
		st, err := exec(ctx, args, p.line)
		cancel()
		if err == nil {
			if st != 0 {
				status = st
			}
			break
		}
		running, finished, failed := p.state()
		if failed {
			status = 1
		}
		if running == "" {
			fmt.Fprintf(os.Stderr, "kvmhost: %v outside any test\n", err)
			return 2
		}
		hung[running]++
		fmt.Fprintf(os.Stderr, "kvmhost: %s: test host made no progress for %v (%v)\n", running, budget, err)
		var next []string
		for _, t := range remaining {
			switch {
			case finished[t] && t != running: // with -test.count, a test can finish and run again
			case t == running && hung[t] >= 2:
				fmt.Fprintf(os.Stderr, "--- FAIL: %s (wedged the test host twice)\n", t)
				status = 1
			case t == running:
				next = append([]string{t}, next...)
			default:
				next = append(next, t)
			}
		}
		if len(next) > 0 {
			fmt.Fprintf(os.Stderr, "kvmhost: running %d unfinished tests in a fresh test host\n", len(next))
		}
		remaining = next
	}
	return status
}

var (
	runLine    = regexp.MustCompile(`^=== RUN   (\S+)$`)
	resultLine = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+) `)
)

// progress follows go test -v output of the nested run: which top-level
// test runs, which finished, and whether the current one is past its
// budget.
type progress struct {
	mu       sync.Mutex
	budget   time.Duration
	running  string
	since    time.Time
	finished map[string]bool
	failed   bool
}

func newProgress(budget time.Duration) *progress {
	return &progress{budget: budget, since: time.Now(), finished: map[string]bool{}}
}

func (p *progress) line(l string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if m := runLine.FindStringSubmatch(l); m != nil && !strings.Contains(m[1], "/") {
		p.running, p.since = m[1], time.Now()
	}
	if m := resultLine.FindStringSubmatch(l); m != nil && !strings.Contains(m[2], "/") {
		p.finished[m[2]] = true
		if m[1] == "FAIL" {
			p.failed = true
		}
		if m[2] == p.running {
			p.running, p.since = "", time.Now()
		}
	}
}

func (p *progress) state() (running string, finished map[string]bool, failed bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.running, p.finished, p.failed
}

func (p *progress) overdue(now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return now.Sub(p.since) > p.budget
}

func (p *progress) watchdog(ctx context.Context, cancel context.CancelFunc) {
	t := time.NewTicker(min(5*time.Second, p.budget/4))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			if p.overdue(now) {
				cancel()
				return
			}
		}
	}
}

// splitRunFlag removes -test.run from args and returns its pattern ("" for
// all tests).
func splitRunFlag(args []string) (rest []string, pattern string) {
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-test.run" || a == "--test.run":
			if i+1 < len(args) {
				pattern = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "-test.run=") || strings.HasPrefix(a, "--test.run="):
			pattern = a[strings.Index(a, "=")+1:]
		case strings.HasPrefix(a, "-test.v") || strings.HasPrefix(a, "--test.v"):
			// always verbose inside: the output is how progress is followed
		default:
			rest = append(rest, a)
		}
	}
	return rest, pattern
}

// listTests asks this test binary which top-level tests match pattern.
func listTests(self, pattern string) ([]string, error) {
	if pattern == "" {
		pattern = "."
	}
	cmd := exec.Command(self, "-test.list", pattern)
	cmd.Env = append(os.Environ(), EnvInside+"=1")
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing tests: %w", err)
	}
	var tests []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Test") || strings.HasPrefix(l, "Example") || strings.HasPrefix(l, "Fuzz") {
			tests = append(tests, l)
		}
	}
	return tests, nil
}

func quoteMeta(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = regexp.QuoteMeta(n)
	}
	return out
}
