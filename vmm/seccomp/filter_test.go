package seccomp

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	libseccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// helperEnv makes the test binary act as a filtered process: it names the
// scenario the child runs (see TestMain).
const helperEnv = "KVMSTACK_SECCOMP_HELPER"

func TestMain(m *testing.M) {
	if s := os.Getenv(helperEnv); s != "" {
		os.Exit(helper(s))
	}
	os.Exit(m.Run())
}

// helper installs the filter, shows that allowed work still works, then
// runs the scenario's last step. It prints a line per stage, so the parent
// sees how far it got.
func helper(scenario string) int {
	// A thread that exists before Install: TSYNC must cover it too.
	early := make(chan func())
	done := make(chan struct{})
	go func() {
		runtime.LockOSThread()
		(<-early)()
		close(done)
	}()
	f, err := os.CreateTemp("", "seccomp-helper")
	if err != nil {
		fmt.Println("setup:", err)
		return 3
	}
	// Unlinked at once: a killed helper leaves nothing behind, and the
	// open fd still takes writes.
	if err := os.Remove(f.Name()); err != nil {
		fmt.Println("setup:", err)
		return 3
	}
	if err := Install(); err != nil {
		fmt.Println("install:", err)
		return 3
	}
	fmt.Println("INSTALLED")
	// Allowed: goroutines on new threads, sleeping, GC, file I/O through
	// an fd opened before, randomness, signals to ourselves.
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			runtime.LockOSThread() // forces new OS threads (clone)
			defer runtime.UnlockOSThread()
			time.Sleep(time.Millisecond)
			b := make([]byte, 1<<20)
			_, err := unix.Getrandom(b[:64], 0)
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			fmt.Println("getrandom:", err)
			return 3
		}
	}
	runtime.GC()
	if _, err := f.WriteAt([]byte("kvmstack"), 0); err != nil {
		fmt.Println("write:", err)
		return 3
	}
	if err := f.Sync(); err != nil {
		fmt.Println("fsync:", err)
		return 3
	}
	if err := unix.Kill(os.Getpid(), syscall.SIGURG); err != nil {
		fmt.Println("kill self:", err)
		return 3
	}
	fmt.Println("ALLOWED OK")
	switch scenario {
	case "allowed":
		return 0
	case "clone3":
		// Refused, not fatal: a C library falls back to clone.
		_, _, errno := unix.Syscall(unix.SYS_CLONE3, 0, 0, 0)
		if errno != unix.ENOSYS {
			fmt.Println("clone3:", errno)
			return 3
		}
		fmt.Println("CLONE3 ENOSYS")
		return 0
	case "socket":
		// vmm opens no socket after setup: a fresh one is an escape
		// attempt (say, to reach the network).
		_, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		fmt.Println("AFTER FORBIDDEN", err)
	case "socket-early-thread":
		early <- func() {
			_, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
			fmt.Println("AFTER FORBIDDEN", err)
		}
		<-done
	case "ptrace":
		err := unix.PtraceAttach(1)
		fmt.Println("AFTER FORBIDDEN", err)
	case "fork":
		// os/exec clones without CLONE_THREAD.
		err := exec.Command("/bin/true").Run()
		fmt.Println("AFTER FORBIDDEN", err)
	case "kill-other":
		err := unix.Kill(1, 0)
		fmt.Println("AFTER FORBIDDEN", err)
	case "prctl-other":
		_, err := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
		fmt.Println("AFTER FORBIDDEN", err)
	}
	return 0
}

// TestInstall runs each scenario in a child process: allowed work goes
// through, and every forbidden call kills the whole process with SIGSYS
// before the call returns.
func TestInstall(t *testing.T) {
	if !libseccomp.Supported() {
		t.Skip("no seccomp in this kernel")
	}
	tests := []struct {
		scenario string
		killed   bool
	}{
		{"allowed", false},
		{"clone3", false},
		{"socket", true},
		{"socket-early-thread", true},
		{"ptrace", true},
		{"fork", true},
		{"kill-other", true},
		{"prctl-other", true},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append(os.Environ(), helperEnv+"="+tt.scenario)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			err := cmd.Run()
			got := out.String()
			if !strings.Contains(got, "ALLOWED OK") {
				t.Fatalf("allowed work failed under the filter: %v\n%s", err, got)
			}
			if !tt.killed {
				if tt.scenario == "clone3" && !strings.Contains(got, "CLONE3 ENOSYS") {
					t.Fatalf("clone3 not refused with ENOSYS\n%s", got)
				}
				if err != nil {
					t.Fatalf("exit %v\n%s", err, got)
				}
				return
			}
			if strings.Contains(got, "AFTER FORBIDDEN") {
				t.Fatalf("forbidden call returned\n%s", got)
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("child: %v, want killed by SIGSYS\n%s", err, got)
			}
			ws := ee.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
				t.Fatalf("child ended with %v, want killed by SIGSYS\n%s", ee, got)
			}
		})
	}
}

// TestFilterAssembles checks every name exists on this architecture and the
// program fits a classic BPF filter (at most 4096 instructions).
func TestFilterAssembles(t *testing.T) {
	for _, action := range []libseccomp.Action{libseccomp.ActionKillProcess, libseccomp.ActionLog} {
		f := filter(1234, action)
		insts, err := f.Policy.Assemble()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := bpf.Assemble(insts)
		if err != nil {
			t.Fatal(err)
		}
		if len(raw) > 4096 {
			t.Fatalf("%d BPF instructions, the kernel takes 4096", len(raw))
		}
		if !f.NoNewPrivs || f.Flag != libseccomp.FilterFlagTSync {
			t.Fatalf("filter %+v lacks no_new_privs or TSYNC", f)
		}
	}
	seen := map[string]bool{}
	for _, r := range Rules {
		if seen[r.Name] {
			t.Errorf("%s listed twice", r.Name)
		}
		seen[r.Name] = true
		if r.Why == "" {
			t.Errorf("%s has no reason", r.Name)
		}
	}
}

// TestDocumented keeps docs/SECCOMP.md and the list in step: every allowed
// call has a row in the doc's table, and every row is allowed.
func TestDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/SECCOMP.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `([a-z0-9_]+)` \\|")
	documented := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	for _, n := range Names() {
		if !documented[n] {
			t.Errorf("%s is allowed but has no row in docs/SECCOMP.md", n)
		}
		delete(documented, n)
	}
	for n := range documented {
		t.Errorf("docs/SECCOMP.md documents %s, which is not allowed", n)
	}
}
