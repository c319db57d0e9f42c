package netdev

import (
	"fmt"
	"os/exec"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestOpenNamespaceByPath opens a namespace the way the agent opens its
// --netns (by path), creates a persistent owned TAP through it, and sees the
// TAP from the namespace's creator: both handles name the same namespace.
func TestOpenNamespaceByPath(t *testing.T) {
	ns := needNetAdmin(t)
	// A process holds the namespace so that /proc/PID/ns/net names it.
	sleeper := exec.Command("sleep", "60")
	if err := ns.Start(sleeper); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sleeper.Process.Kill()
		sleeper.Wait()
	})
	opened, err := OpenNamespace(fmt.Sprintf("/proc/%d/ns/net", sleeper.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	defer opened.Close()
	if err := opened.CreatePersistentTap("tapowned0", TapOwner{UID: 4242, GID: 4343}); err != nil {
		t.Fatal(err)
	}
	l, err := ns.Netlink().LinkByName("tapowned0")
	if err != nil {
		t.Fatalf("TAP made through the opened namespace is not in the original: %v", err)
	}
	tt, ok := l.(*netlink.Tuntap)
	if !ok || tt.Mode != netlink.TUNTAP_MODE_TAP || tt.NonPersist || tt.Owner != 4242 || tt.Group != 4343 {
		t.Fatalf("got %T %+v, want a persistent TAP owned by 4242:4343", l, l)
	}
	// Applied again to the existing TAP, a new owner replaces the old.
	if err := opened.CreatePersistentTap("tapowned0", TapOwner{UID: 4244, GID: -1}); err != nil {
		t.Fatal(err)
	}
	l, err = ns.Netlink().LinkByName("tapowned0")
	if err != nil {
		t.Fatal(err)
	}
	if tt := l.(*netlink.Tuntap); tt.Owner != 4244 || tt.Group != 4343 {
		t.Fatalf("owner %d:%d, want 4244:4343", tt.Owner, tt.Group)
	}
	if _, err := opened.Netlink().LinkByName("tapowned0"); err != nil {
		t.Fatal(err)
	}
	if err := opened.CreatePersistentTap("name-longer-than-15", NoTapOwner); err == nil {
		t.Error("accepted an over-long TAP name")
	}
}

func TestOpenNamespaceErrors(t *testing.T) {
	if _, err := OpenNamespace("/nonexistent/ns"); err == nil {
		t.Error("opened a namespace that does not exist")
	}
	cur, err := OpenNamespace(CurrentNamespace)
	if err != nil {
		t.Skipf("cannot open the current namespace: %v", err)
	}
	defer cur.Close()
	if _, err := cur.Netlink().LinkByName("lo"); err != nil {
		t.Errorf("no loopback in the current namespace: %v", err)
	}
}
