// Package seccomp owns vmm's system call allow-list: the calls vmm and the
// Go runtime make once the machine is set up (KVM fds open, guest memory
// mapped, disks and TAPs open, the API socket listening), compiled into a
// seccomp BPF filter (github.com/elastic/go-seccomp-bpf) that Install puts
// on every thread of the process at once (SECCOMP_FILTER_FLAG_TSYNC). Any
// other call kills the whole process (SECCOMP_RET_KILL_PROCESS): a
// compromised vmm can reach the host only through the calls listed here.
//
// The list, and why each entry is there, is in docs/SECCOMP.md; a test keeps
// the two in step.
package seccomp
