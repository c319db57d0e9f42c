package netdev

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NamedNamespaceDir is where named network namespaces are pinned, the
// directory `ip netns` uses, so that iproute2 and kvmstack see the same
// names.
const NamedNamespaceDir = "/var/run/netns"

// ErrBadNamespaceName means a namespace name cannot be a file name in
// NamedNamespaceDir.
var ErrBadNamespaceName = errors.New("netdev: bad namespace name")

// NamedNamespacePath is the file that pins the namespace name.
func NamedNamespacePath(name string) string { return filepath.Join(NamedNamespaceDir, name) }

func checkNamespaceName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 255 {
		return fmt.Errorf("%w: %q", ErrBadNamespaceName, name)
	}
	return nil
}

// CreateNamedNamespace creates an empty network namespace with its loopback
// up and pins it at NamedNamespacePath(name), as `ip netns add` does but
// without iproute2 (a test host or a minimal system may have only
// busybox, whose ip has no netns subcommand). The namespace outlives this
// process until DeleteNamedNamespace. A name already pinned fails with an
// error wrapping os.ErrExist. The returned Namespace is open; Close only
// drops this process's hold.
func CreateNamedNamespace(name string) (*Namespace, error) {
	if err := checkNamespaceName(name); err != nil {
		return nil, err
	}
	if err := sharedNamespaceDir(); err != nil {
		return nil, err
	}
	path := NamedNamespacePath(name)
	// The mount point: created exclusively, so two creators of one name
	// cannot both succeed.
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0)
	if err != nil {
		return nil, fmt.Errorf("netdev: namespace %s: %w", name, err)
	}
	f.Close()
	var h netns.NsHandle
	err = onLockedThread(func() error {
		var err error
		if h, err = netns.New(); err != nil {
			return fmt.Errorf("unshare: %w", err)
		}
		// The thread's own namespace file: /proc/self/ns/net would name
		// the main thread's, which never left the host's namespace.
		src := fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid())
		if err := unix.Mount(src, path, "none", unix.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s on %s: %w", src, path, err)
		}
		return nil
	})
	if err != nil {
		if h.IsOpen() {
			h.Close()
		}
		os.Remove(path)
		return nil, fmt.Errorf("netdev: create namespace %s: %w", name, err)
	}
	nl, err := netlink.NewHandleAt(h, unix.NETLINK_ROUTE)
	if err != nil {
		h.Close()
		return nil, errors.Join(fmt.Errorf("netdev: netlink in namespace %s: %w", name, err), DeleteNamedNamespace(name))
	}
	n := &Namespace{handle: h, nl: nl}
	if err := n.SetUp("lo"); err != nil {
		n.Close()
		return nil, errors.Join(err, DeleteNamedNamespace(name))
	}
	return n, nil
}

// EnsureNamedNamespace opens the namespace pinned at
// NamedNamespacePath(name), creating it (CreateNamedNamespace) if it is
// not there. A leftover file that pins nothing (a creator that died between
// creating the mount point and mounting) is replaced.
func EnsureNamedNamespace(name string) (*Namespace, error) {
	if err := checkNamespaceName(name); err != nil {
		return nil, err
	}
	path := NamedNamespacePath(name)
	var st unix.Statfs_t
	switch err := unix.Statfs(path, &st); {
	case err == nil && st.Type == unix.NSFS_MAGIC:
		return OpenNamespace(path)
	case err == nil:
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("netdev: stale namespace file %s: %w", path, err)
		}
	case !errors.Is(err, unix.ENOENT):
		return nil, fmt.Errorf("netdev: namespace %s: %w", path, err)
	}
	n, err := CreateNamedNamespace(name)
	if errors.Is(err, os.ErrExist) {
		// Another process created it meanwhile.
		return OpenNamespace(path)
	}
	return n, err
}

// DeleteNamedNamespace unpins the namespace name, as `ip netns del` does;
// it and its links vanish once no process runs in it and no descriptor
// holds it. A name that is not there is not an error.
func DeleteNamedNamespace(name string) error {
	if err := checkNamespaceName(name); err != nil {
		return err
	}
	path := NamedNamespacePath(name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("netdev: unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("netdev: remove %s: %w", path, err)
	}
	return nil
}

// sharedNamespaceDir makes NamedNamespaceDir a mount point with shared
// propagation, as iproute2 does: a process that later enters a mount
// namespace copied from this one still sees namespaces pinned after the
// copy, and their unmount on delete reaches every copy (else a copy keeps
// the namespace alive).
func sharedNamespaceDir() error {
	if err := os.MkdirAll(NamedNamespaceDir, 0o755); err != nil {
		return fmt.Errorf("netdev: %w", err)
	}
	err := unix.Mount("", NamedNamespaceDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) {
		// Not a mount point yet: bind it onto itself, then share it.
		if err := unix.Mount(NamedNamespaceDir, NamedNamespaceDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("netdev: bind %s on itself: %w", NamedNamespaceDir, err)
		}
		err = unix.Mount("", NamedNamespaceDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("netdev: make %s shared: %w", NamedNamespaceDir, err)
	}
	return nil
}
