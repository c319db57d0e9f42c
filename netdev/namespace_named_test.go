package netdev

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// TestNamedNamespace pins a namespace by name without iproute2, finds it
// again by name and by path, and unpins it: a link made through one handle
// shows through the other, the namespace is not the test's own, and after
// the delete nothing is left in the directory.
func TestNamedNamespace(t *testing.T) {
	needNetAdmin(t) // skips where namespaces cannot be made
	name := fmt.Sprintf("netdev-test-%d", os.Getpid())
	t.Cleanup(func() { DeleteNamedNamespace(name) })

	ns, err := CreateNamedNamespace(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	path := NamedNamespacePath(name)
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil || st.Type != unix.NSFS_MAGIC {
		t.Fatalf("%s: statfs type %#x, err %v: not a pinned namespace", path, st.Type, err)
	}
	if same, err := sameNamespace(path, CurrentNamespace); err != nil || same {
		t.Fatalf("pinned namespace is the test's own (same=%v, err=%v)", same, err)
	}
	lo, err := ns.Netlink().LinkByName("lo")
	if err != nil || lo.Attrs().Flags&unix.IFF_UP == 0 {
		t.Fatalf("loopback not up: %v %+v", err, lo)
	}

	if _, err := CreateNamedNamespace(name); !errors.Is(err, os.ErrExist) {
		t.Errorf("second create: %v, want os.ErrExist", err)
	}
	again, err := EnsureNamedNamespace(name)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if err := again.CreatePersistentTap("named0", NoTapOwner); err != nil {
		t.Fatal(err)
	}
	if _, err := ns.Netlink().LinkByName("named0"); err != nil {
		t.Errorf("link made through the ensured handle is not in the created namespace: %v", err)
	}
	byPath, err := OpenNamespace(path)
	if err != nil {
		t.Fatal(err)
	}
	defer byPath.Close()
	if _, err := byPath.Netlink().LinkByName("named0"); err != nil {
		t.Errorf("link not seen through the path: %v", err)
	}

	if err := DeleteNamedNamespace(name); err != nil {
		t.Fatal(err)
	}
	// The handles still hold the namespace; the name is gone.
	if _, err := ns.Netlink().LinkByName("named0"); err != nil {
		t.Errorf("open handle lost the namespace on delete: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there after delete: %v", path, err)
	}
	if err := DeleteNamedNamespace(name); err != nil {
		t.Errorf("deleting a missing namespace: %v", err)
	}
}

// TestEnsureNamedNamespaceReplacesStaleFile: a mount point left by a
// creator that died before mounting is replaced by a real namespace.
func TestEnsureNamedNamespaceReplacesStaleFile(t *testing.T) {
	needNetAdmin(t)
	name := fmt.Sprintf("netdev-stale-%d", os.Getpid())
	t.Cleanup(func() { DeleteNamedNamespace(name) })
	if err := sharedNamespaceDir(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(NamedNamespacePath(name), nil, 0); err != nil {
		t.Fatal(err)
	}
	ns, err := EnsureNamedNamespace(name)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	var st unix.Statfs_t
	if err := unix.Statfs(NamedNamespacePath(name), &st); err != nil || st.Type != unix.NSFS_MAGIC {
		t.Fatalf("stale file not replaced by a namespace: type %#x, %v", st.Type, err)
	}
}

func TestNamedNamespaceBadNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b", "../etc", "x\x00y", string(make([]byte, 256))} {
		if _, err := CreateNamedNamespace(name); !errors.Is(err, ErrBadNamespaceName) {
			t.Errorf("create %q: %v, want ErrBadNamespaceName", name, err)
		}
		if _, err := EnsureNamedNamespace(name); !errors.Is(err, ErrBadNamespaceName) {
			t.Errorf("ensure %q: %v, want ErrBadNamespaceName", name, err)
		}
		if err := DeleteNamedNamespace(name); !errors.Is(err, ErrBadNamespaceName) {
			t.Errorf("delete %q: %v, want ErrBadNamespaceName", name, err)
		}
	}
}

// sameNamespace compares two namespace files by device and inode.
func sameNamespace(a, b string) (bool, error) {
	var sa, sb unix.Stat_t
	if err := unix.Stat(a, &sa); err != nil {
		return false, err
	}
	if err := unix.Stat(b, &sb); err != nil {
		return false, err
	}
	return sa.Dev == sb.Dev && sa.Ino == sb.Ino, nil
}
