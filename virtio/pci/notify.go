package pci

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"

	"golang.org/x/sys/unix"

	"kvmstack/vmm/kvm"
)

// notifyWidth is the access Linux uses for a notification (iowrite16 of
// the queue index). Wider or narrower writes are not matched by the
// ioeventfd and arrive as MMIO exits instead, which kick the same queue.
const notifyWidth = 2

// notifier turns driver notifications into Kicks. Each queue has an
// eventfd that KVM signals on a write to the queue's notify address, so a
// kick never leaves the kernel on the vCPU thread; a goroutine per queue
// reads the eventfd and forwards a coalesced kick.
type notifier struct {
	// count, if set, is called once per notification received.
	count func()
	vm    VM
	log   *slog.Logger
	kicks []chan struct{}
	files []*os.File
	fds   []int
	wg    sync.WaitGroup

	mu         sync.Mutex
	registered bool
	base       uint64
	failed     bool // KVM refused an ioeventfd: MMIO exits carry the kicks
}

func newNotifier(vm VM, queues int, log *slog.Logger, count func()) (*notifier, error) {
	n := &notifier{vm: vm, log: log, count: count}
	for range queues {
		n.kicks = append(n.kicks, make(chan struct{}, 1))
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			_ = n.close()
			return nil, fmt.Errorf("virtio-pci: notify eventfd: %w", err)
		}
		n.fds = append(n.fds, fd)
		// A non-blocking fd in an os.File waits in the runtime's poller,
		// not on an OS thread.
		n.files = append(n.files, os.NewFile(uintptr(fd), "virtio-notify"))
	}
	for i, f := range n.files {
		n.wg.Add(1)
		go n.pump(i, f)
	}
	return n, nil
}

func (n *notifier) pump(i int, f *os.File) {
	defer n.wg.Done()
	var b [8]byte
	for {
		if _, err := f.Read(b[:]); err != nil {
			if !errors.Is(err, os.ErrClosed) {
				n.log.Warn("notify eventfd read", "queue", i, "err", err)
			}
			return
		}
		n.kick(i)
	}
}

// kick forwards one notification of queue i; out-of-range indexes (a guest
// writing past the notify addresses) are dropped.
func (n *notifier) kick(i int) {
	if i < 0 || i >= len(n.kicks) {
		return
	}
	if n.count != nil {
		n.count()
	}
	select {
	case n.kicks[i] <- struct{}{}:
	default: // a kick is already pending: coalesce
	}
}

func (n *notifier) channels() []<-chan struct{} {
	cs := make([]<-chan struct{}, len(n.kicks))
	for i, c := range n.kicks {
		cs[i] = c
	}
	return cs
}

// drain drops kicks left from before a reset.
func (n *notifier) drain() {
	for _, c := range n.kicks {
		select {
		case <-c:
		default:
		}
	}
}

func (n *notifier) ioeventfd(i int, addr uint64, deassign bool) error {
	e := kvm.IOEventFD{Addr: addr + uint64(i)*notifyMult, Len: notifyWidth, FD: int32(n.fds[i])}
	if deassign {
		e.Flags = kvm.IOEventFDFlagDeassign
	}
	return n.vm.IOEventFD(e)
}

// moveTo registers the ioeventfds at base (the notify area's guest address)
// or, with ok false, only removes them.
func (n *notifier) moveTo(base uint64, ok bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.registered && ok && base == n.base {
		return
	}
	if n.registered {
		for i := range n.fds {
			if err := n.ioeventfd(i, n.base, true); err != nil {
				n.log.Warn("removing notify ioeventfd", "queue", i, "err", err)
			}
		}
		n.registered = false
	}
	if !ok {
		return
	}
	for i := range n.fds {
		if err := n.ioeventfd(i, base, false); err != nil {
			for j := range i {
				_ = n.ioeventfd(j, base, true)
			}
			if !n.failed {
				n.log.Warn("KVM refused a notify ioeventfd; queue notifications take MMIO exits", "addr", fmt.Sprintf("%#x", base), "err", err)
			}
			n.failed = true
			return
		}
	}
	n.registered, n.base = true, base
}

// usingIOEventFD reports whether notifications currently bypass userspace.
func (n *notifier) usingIOEventFD() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.registered
}

func (n *notifier) close() error {
	n.moveTo(0, false)
	var errs []error
	for _, f := range n.files {
		errs = append(errs, f.Close())
	}
	n.wg.Wait()
	return errors.Join(errs...)
}
