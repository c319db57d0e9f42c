package dhcp

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestMain fails the run if a link named like the tests' own shows up in
// the namespace the tests started in: all of it belongs in theirs.
func TestMain(m *testing.M) {
	code := m.Run()
	if links, err := netlink.LinkList(); err == nil {
		for _, l := range links {
			n := l.Attrs().Name
			if strings.HasPrefix(n, "kvb-") || strings.HasPrefix(n, "kvx-") || strings.HasPrefix(n, "vg-") {
				fmt.Fprintf(os.Stderr, "FAIL: link %s left in the test process's namespace\n", n)
				code = 1
			}
		}
	}
	os.Exit(code)
}
