package netdev

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MaxIOVecs is the most buffers one ReadPacket or WritePacket may gather
// (the kernel's UIO_MAXIOV).
const MaxIOVecs = 1024

// ErrTooManyBuffers is returned for a gather list longer than MaxIOVecs.
var ErrTooManyBuffers = errors.New("netdev: more than 1024 buffers for one packet")

// PacketFile is a non-blocking descriptor that carries one packet per read
// and per write: a TAP device, or a SOCK_SEQPACKET socket standing in for
// one in tests. Waiting for readiness goes through the runtime's poller, so
// a blocked reader costs no thread and a deadline can interrupt it.
//
// One goroutine may read while another writes; two concurrent readers (or
// writers) are allowed by the poller but make no sense for packets.
type PacketFile struct {
	f   *os.File
	raw syscall.RawConn
}

// NewPacketFile takes ownership of f, which must be in non-blocking mode
// (opened with O_NONBLOCK) so that the runtime poller can wait on it.
func NewPacketFile(f *os.File) (*PacketFile, error) {
	// f.Fd would switch the descriptor to blocking mode: go through
	// RawConn instead.
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("netdev: %s: %w", f.Name(), err)
	}
	var flags int
	var ferr error
	if err := raw.Control(func(fd uintptr) { flags, ferr = unix.FcntlInt(fd, unix.F_GETFL, 0) }); err != nil {
		return nil, fmt.Errorf("netdev: %s: %w", f.Name(), err)
	}
	if ferr != nil {
		return nil, fmt.Errorf("netdev: %s: F_GETFL: %w", f.Name(), ferr)
	}
	if flags&unix.O_NONBLOCK == 0 {
		return nil, fmt.Errorf("netdev: %s is not in non-blocking mode", f.Name())
	}
	// A descriptor the poller refused (a regular file, say) cannot take a
	// deadline; without one a blocked reader could never be stopped.
	if err := f.SetDeadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("netdev: %s cannot be polled: %w", f.Name(), err)
	}
	return &PacketFile{f: f, raw: raw}, nil
}

// ReadPacket reads one packet into bufs (scatter) and returns its length.
// When no packet is waiting, beforeWait (if not nil) runs once before the
// goroutine parks, so a caller can flush batched work (such as a guest
// interrupt) exactly when it runs out of packets. A deadline set with
// SetDeadline ends the wait with an error wrapping os.ErrDeadlineExceeded.
func (p *PacketFile) ReadPacket(bufs [][]byte, beforeWait func()) (int, error) {
	if len(bufs) > MaxIOVecs {
		return 0, ErrTooManyBuffers
	}
	var n int
	var rerr error
	err := p.raw.Read(func(fd uintptr) bool {
		for {
			n, rerr = unix.Readv(int(fd), bufs)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			if beforeWait != nil {
				beforeWait()
			}
			return false
		}
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("netdev: read %s: %w", p.f.Name(), err)
	}
	if rerr != nil {
		return 0, fmt.Errorf("netdev: readv %s: %w", p.f.Name(), rerr)
	}
	return n, nil
}

// WritePacket writes bufs (gathered) as one packet.
func (p *PacketFile) WritePacket(bufs [][]byte) (int, error) {
	if len(bufs) > MaxIOVecs {
		return 0, ErrTooManyBuffers
	}
	var n int
	var werr error
	err := p.raw.Write(func(fd uintptr) bool {
		for {
			n, werr = unix.Writev(int(fd), bufs)
			if werr != unix.EINTR {
				break
			}
		}
		return werr != unix.EAGAIN
	})
	if err != nil {
		return 0, fmt.Errorf("netdev: write %s: %w", p.f.Name(), err)
	}
	if werr != nil {
		return 0, fmt.Errorf("netdev: writev %s: %w", p.f.Name(), werr)
	}
	return n, nil
}

// SetDeadline sets the read and write deadline; the zero time clears it.
// Setting a past deadline wakes a blocked ReadPacket or WritePacket.
func (p *PacketFile) SetDeadline(t time.Time) error {
	if err := p.f.SetDeadline(t); err != nil {
		return fmt.Errorf("netdev: %s: %w", p.f.Name(), err)
	}
	return nil
}

// Close closes the descriptor.
func (p *PacketFile) Close() error { return p.f.Close() }

// SocketPair returns the two ends of a non-blocking SOCK_SEQPACKET socket
// pair: packet boundaries are kept as on a TAP, so one end can stand in for a
// TAP device in tests and the other plays the host network.
func SocketPair() (*PacketFile, *PacketFile, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("netdev: socketpair: %w", err)
	}
	a, err := NewPacketFile(os.NewFile(uintptr(fds[0]), "seqpacket-a"))
	if err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, nil, err
	}
	b, err := NewPacketFile(os.NewFile(uintptr(fds[1]), "seqpacket-b"))
	if err != nil {
		a.Close()
		unix.Close(fds[1])
		return nil, nil, err
	}
	return a, b, nil
}
