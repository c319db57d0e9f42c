package api

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrSocketInUse is returned by Listen when another process accepts
// connections on the path.
var ErrSocketInUse = errors.New("socket in use")

// Listen creates the API socket at path with mode 0600. A socket file left
// by a dead vmm is replaced; a live one (something accepts on it) or a
// file that is not a socket is an error, never removed.
//
// The socket is bound in a private directory (0700) beside path, set to
// 0600 there and renamed into place, so no other user can ever connect
// through a window with the umask's mode. Closing the listener removes
// path if it is still this socket.
func Listen(path string) (net.Listener, error) {
	if err := removeStale(path); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(path), ".vmm-api-")
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	defer os.RemoveAll(tmp)
	bound := filepath.Join(tmp, "s")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: bound, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	// The bound name moves; Close must not unlink whatever later sits at
	// the old one, and removes the final path itself.
	l.SetUnlinkOnClose(false)
	if err := os.Chmod(bound, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if err := os.Rename(bound, path); err != nil {
		l.Close()
		return nil, fmt.Errorf("api socket: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("api socket: %w", err)
	}
	return &socketListener{UnixListener: l, path: path, st: st}, nil
}

// removeStale removes path if it is a socket nobody accepts on.
func removeStale(path string) error {
	st, err := os.Lstat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("api socket: %w", err)
	}
	if st.Mode()&os.ModeSocket == 0 {
		return fmt.Errorf("api socket %s: exists and is not a socket", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("api socket %s: %w", path, ErrSocketInUse)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("api socket %s: probing an existing socket: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("api socket: removing stale %s: %w", path, err)
	}
	return nil
}

type socketListener struct {
	*net.UnixListener
	path string
	st   os.FileInfo
}

// Close stops accepting and removes the socket file unless another vmm
// has since replaced it.
func (l *socketListener) Close() error {
	err := l.UnixListener.Close()
	if st, serr := os.Lstat(l.path); serr == nil && os.SameFile(st, l.st) {
		if rerr := os.Remove(l.path); rerr != nil && err == nil {
			err = rerr
		}
	}
	return err
}
