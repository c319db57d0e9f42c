package plumb

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

// TestMain fails the run if a link named like the tests' own ever shows up
// in the namespace the tests started in: everything they make must stay in
// the namespaces they create.
func TestMain(m *testing.M) {
	code := m.Run()
	if leaked := hostLinks(); len(leaked) > 0 {
		fmt.Fprintf(os.Stderr, "FAIL: links left in the test process's namespace: %v\n", leaked)
		code = 1
	}
	os.Exit(code)
}

func hostLinks() []string {
	links, err := netlink.LinkList()
	if err != nil {
		return nil // no netlink (no privileges): nothing can have leaked
	}
	var out []string
	for _, l := range links {
		n := l.Attrs().Name
		for _, p := range append([]string{"vg-", "ul0", "eth9"}, testPrefixes...) {
			if strings.HasPrefix(n, p) {
				out = append(out, n)
			}
		}
	}
	return out
}
