package seccomp

import (
	"errors"
	"fmt"
	"os"
	"slices"

	libseccomp "github.com/elastic/go-seccomp-bpf"
	"golang.org/x/sys/unix"
)

// Rule is one allowed system call and why vmm needs it after setup.
type Rule struct {
	// Name is the x86-64 system call name.
	Name string
	// Why is the reason it is allowed, as docs/SECCOMP.md gives it.
	Why string
	// args, if set, restricts the call's arguments; the call is allowed
	// only if every condition holds.
	args func(pid int) []libseccomp.Condition
}

// prSetVMA is PR_SET_VMA, the only prctl the Go runtime makes after start
// (it names its anonymous mappings).
const prSetVMA = 0x53564d41

// Rules is the allow-list. Its order is the order of docs/SECCOMP.md.
var Rules = []Rule{
	// Memory and threads of the Go runtime.
	{Name: "mmap", Why: "Go heap and stacks; guest memory is mapped before the filter"},
	{Name: "munmap", Why: "Go runtime returns memory; vmm unmaps at shutdown"},
	{Name: "madvise", Why: "Go runtime releases unused heap pages (MADV_DONTNEED/FREE)"},
	{Name: "mprotect", Why: "Go runtime (vDSO getrandom state pages)"},
	{Name: "prctl", Why: "Go runtime names anonymous mappings (PR_SET_VMA only)",
		args: func(int) []libseccomp.Condition {
			return []libseccomp.Condition{{Argument: 0, Operation: libseccomp.Equal, Value: prSetVMA}}
		}},
	{Name: "clone", Why: "Go runtime starts OS threads (CLONE_THREAD required: no new processes)",
		args: func(int) []libseccomp.Condition {
			return []libseccomp.Condition{{Argument: 0, Operation: libseccomp.BitsSet, Value: unix.CLONE_THREAD}}
		}},
	{Name: "exit", Why: "an OS thread ends"},
	{Name: "rseq", Why: "a C library registers each new thread (cgo or race-detector builds only)"},
	{Name: "set_robust_list", Why: "a C library registers each new thread (cgo or race-detector builds only)"},
	{Name: "exit_group", Why: "vmm exits"},
	{Name: "futex", Why: "Go runtime sleeps and wakes threads"},
	{Name: "sched_yield", Why: "Go runtime spin-waits"},
	{Name: "nanosleep", Why: "Go runtime usleep"},
	{Name: "restart_syscall", Why: "the kernel restarts a sleep a signal interrupted"},
	{Name: "sched_getaffinity", Why: "Go runtime re-reads the CPU count to adjust GOMAXPROCS"},
	{Name: "gettid", Why: "Go runtime and vCPU threads learn their thread ID"},
	{Name: "getpid", Why: "Go runtime addresses signals to its own threads"},
	{Name: "tgkill", Why: "goroutine preemption and vCPU kicks (SIGURG) to own threads only",
		args: func(pid int) []libseccomp.Condition {
			return []libseccomp.Condition{{Argument: 0, Operation: libseccomp.Equal, Value: uint64(pid)}}
		}},
	{Name: "kill", Why: "Go runtime re-raises a fatal signal at itself only",
		args: func(pid int) []libseccomp.Condition {
			return []libseccomp.Condition{{Argument: 0, Operation: libseccomp.Equal, Value: uint64(pid)}}
		}},
	{Name: "rt_sigaction", Why: "Go runtime and os/signal install handlers"},
	{Name: "rt_sigprocmask", Why: "Go runtime masks signals around thread creation"},
	{Name: "rt_sigreturn", Why: "return from every signal handler (SIGURG preemption, vCPU kicks)"},
	{Name: "sigaltstack", Why: "each new OS thread gets a signal stack"},
	{Name: "clock_gettime", Why: "time when the vDSO cannot answer (thread CPU clocks, fallbacks)"},
	{Name: "getrandom", Why: "virtio-rng fills guest buffers; Go runtime and crypto/rand"},
	// The network poller (eventfds, TAPs, the API socket).
	{Name: "epoll_pwait", Why: "Go network poller waits"},
	{Name: "epoll_pwait2", Why: "Go network poller waits (newer kernels)"},
	{Name: "epoll_ctl", Why: "Go network poller adds and removes fds"},
	{Name: "eventfd2", Why: "virtio-pci queue notification eventfds made at activation"},
	// File descriptors.
	{Name: "read", Why: "eventfds (queue kicks), the TAP, serial input, the API socket, files"},
	{Name: "write", Why: "irqfds (interrupts), serial output, logs, the API socket, files"},
	{Name: "readv", Why: "TAP frames straight into guest buffers"},
	{Name: "writev", Why: "TAP frames straight from guest buffers"},
	{Name: "pread64", Why: "disk reads; Go runtime reads cgroup CPU limits"},
	{Name: "pwrite64", Why: "disk writes, snapshot files"},
	{Name: "preadv", Why: "disk reads into guest buffers"},
	{Name: "pwritev", Why: "disk writes from guest buffers"},
	{Name: "lseek", Why: "os.File positioning, snapshot files"},
	{Name: "fsync", Why: "snapshot files made durable"},
	{Name: "fdatasync", Why: "virtio-blk flush"},
	{Name: "fallocate", Why: "virtio-blk discard and write-zeroes"},
	{Name: "ftruncate", Why: "snapshot memory file sized"},
	{Name: "openat", Why: "snapshot files; Go runtime reads cgroup files"},
	{Name: "close", Why: "files, connections, eventfds"},
	{Name: "fstat", Why: "os.File stat (snapshot, disks)"},
	{Name: "newfstatat", Why: "os.Stat (snapshot directory)"},
	{Name: "mkdirat", Why: "snapshot directory"},
	{Name: "renameat", Why: "snapshot files put in place atomically"},
	{Name: "renameat2", Why: "snapshot files put in place atomically (os.Rename on newer kernels)"},
	{Name: "unlinkat", Why: "snapshot temporary files removed"},
	{Name: "getdents64", Why: "reading a directory (snapshot)"},
	{Name: "fcntl", Why: "os.NewFile and the poller check fd flags"},
	{Name: "ioctl", Why: "KVM (KVM_RUN, IRQ lines, GSI routing, ioeventfd/irqfd, vCPU events) and TUNSETOFFLOAD"},
	// The control API on its unix socket.
	{Name: "accept4", Why: "API connections"},
	{Name: "getsockname", Why: "Go's net package on each accepted connection"},
	{Name: "shutdown", Why: "net/http closes the write side of a connection"},
}

// Refused are calls that fail with ENOSYS instead of killing: clone3 takes
// its flags in memory, where a filter cannot check CLONE_THREAD, and a C
// library (a cgo or race-detector build of vmm) falls back to clone, which
// the list does check.
var Refused = []string{"clone3"}

// errnoENOSYS is SECCOMP_RET_ERRNO with ENOSYS.
const errnoENOSYS = libseccomp.ActionErrno | libseccomp.Action(unix.ENOSYS)

// ErrUnsupported is returned when the kernel has no seccomp filters.
var ErrUnsupported = errors.New("seccomp filters not supported by this kernel")

// Names is the allowed system calls, sorted.
func Names() []string {
	n := make([]string, 0, len(Rules))
	for _, r := range Rules {
		n = append(n, r.Name)
	}
	slices.Sort(n)
	return n
}

// filter builds the BPF filter for a process with pid: the rules allow,
// anything else gets deflt.
func filter(pid int, deflt libseccomp.Action) libseccomp.Filter {
	var plain []string
	var cond []libseccomp.NameWithConditions
	for _, r := range Rules {
		if r.args == nil {
			plain = append(plain, r.Name)
			continue
		}
		cond = append(cond, libseccomp.NameWithConditions{Name: r.Name, Conditions: r.args(pid)})
	}
	groups := []libseccomp.SyscallGroup{{
		Action:             libseccomp.ActionAllow,
		Names:              plain,
		NamesWithCondtions: cond,
	}}
	if len(Refused) > 0 {
		groups = append(groups, libseccomp.SyscallGroup{Action: errnoENOSYS, Names: Refused})
	}
	return libseccomp.Filter{
		// vmm never gains privileges by exec after setup; the kernel
		// also requires this bit for a filter set without CAP_SYS_ADMIN.
		NoNewPrivs: true,
		Flag:       libseccomp.FilterFlagTSync,
		Policy: libseccomp.Policy{
			DefaultAction: deflt,
			Syscalls:      groups,
		},
	}
}

// Install puts the allow-list on every thread of the process; from then on
// any other system call kills the process with SIGSYS. Call it once setup
// is done. It cannot be undone.
func Install() error {
	return install(libseccomp.ActionKillProcess)
}

// InstallLog is Install with "log and allow" in place of "kill": calls off
// the list succeed and the kernel logs each (audit type 1326, "syscall=N"
// in dmesg). It is for finding what a new code path needs, never for
// production.
func InstallLog() error {
	return install(libseccomp.ActionLog)
}

func install(deflt libseccomp.Action) error {
	if !libseccomp.Supported() {
		return ErrUnsupported
	}
	if err := libseccomp.LoadFilter(filter(os.Getpid(), deflt)); err != nil {
		return fmt.Errorf("seccomp: %w", err)
	}
	return nil
}
