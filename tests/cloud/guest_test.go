package cloud

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"kvmstack/orchestrator/api"
	"kvmstack/orchestrator/state"
)

// guestScript is what every guest runs (kit.run): bring eth0 up, lease its
// address from the host's DHCP server with busybox udhcpc (the script it
// calls sets the address and prints it), then read commands from the
// serial console and run them. `p IP` pings IP and prints the outcome, `d`
// asks for the lease again, `a TOKEN` prints TOKEN; the
// test sends those through the agent's console FIFO once it knows whom to
// ping. The tty echoes what is sent, so every result line is printed with a
// prefix that no command sent contains.
const guestScript = `ip link set eth0 up
printf '#!/bin/sh\n[ "$1" = bound ] || exit 0\nip addr add $ip/$mask dev $interface\necho "GUEST ADDR $ip"\n' >/tmp/dhcp
chmod +x /tmp/dhcp
d() { udhcpc -i eth0 -f -q -n -t 60 -T 1 -s /tmp/dhcp || echo "GUEST DHCP FAILED"; }
d
p() { if ping -c 3 -w 6 $1 >/dev/null 2>&1; then echo "GUEST PING $1 ok"; else echo "GUEST PING $1 fail"; fi; }
a() { echo "GUEST ALIVE $1"; }
while read -r l; do eval "$l"; done
`

// guestCmdline is the kernel command line of a guest running guestScript.
func guestCmdline() string {
	return "console=ttyS0 reboot=k panic=-1 kit.run=" + base64.StdEncoding.EncodeToString([]byte(guestScript))
}

// guest is an instance of the test.
type guest struct {
	c    *cloud
	id   string
	name string
	ip   string // its port's address (first NIC)
}

// createGuest creates an instance of the kit on the networks, in the server
// group if not "".
func (c *cloud) createGuest(t *testing.T, name, group string, networks ...string) *guest {
	t.Helper()
	return c.create(t, api.InstanceRequest{Name: name, ServerGroup: group, Networks: networks})
}

// create creates a guest running guestScript from req (the kit, the test
// flavor and cmdline filled in).
func (c *cloud) create(t *testing.T, req api.InstanceRequest) *guest {
	t.Helper()
	name := req.Name
	req.Flavor, req.Kernel, req.Initrd = flavor, c.kernel.ID, c.initrd.ID
	req.Metadata = map[string]string{"cmdline": guestCmdline()}
	var out []api.InstanceView
	if _, err := c.api.Do(context.Background(), http.MethodPost, "/v1/instances", nil, req, &out); err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	g := &guest{c: c, id: out[0].ID, name: name}
	if len(out[0].Ports) > 0 {
		g.ip = out[0].Ports[0].IP
	}
	return g
}

func (g *guest) view() (*api.InstanceView, error) {
	var v api.InstanceView
	_, err := g.c.api.Do(context.Background(), http.MethodGet, "/v1/instances/"+g.id, nil, nil, &v)
	return &v, err
}

// waitState waits until the instance is in st and pred (if not nil) holds.
func (g *guest) waitState(t *testing.T, st string, timeout time.Duration, pred func(*state.Instance) bool) *state.Instance {
	t.Helper()
	var in *state.Instance
	err := waitUntil(timeout, g.name+" "+st, func() error {
		v, err := g.view()
		if err != nil {
			return err
		}
		in = v.Instance
		if in.State == st && (pred == nil || pred(in)) {
			return nil
		}
		return fmt.Errorf("%s is %s (%s)", g.name, in.State, lastReason(in))
	})
	if err != nil {
		t.Fatal(err)
	}
	return in
}

func lastReason(in *state.Instance) string {
	if len(in.History) == 0 {
		return ""
	}
	return in.History[len(in.History)-1].Reason
}

// dir is the instance's directory on the host its agent runs on now.
func (g *guest) dir(t *testing.T) (string, *host) {
	t.Helper()
	v, err := g.view()
	if err != nil {
		t.Fatal(err)
	}
	h, err := g.c.hostOf(v.Instance)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(h.dataDir, "instances", g.id), h
}

// console is what the guest printed on its serial console so far (the
// console log in its agent's data directory).
func (g *guest) console(t *testing.T) string {
	t.Helper()
	d, _ := g.dir(t)
	b, _ := os.ReadFile(filepath.Join(d, "console.log"))
	return string(b)
}

// waitConsole waits until re matches the console and returns the match.
func (g *guest) waitConsole(t *testing.T, re *regexp.Regexp, timeout time.Duration) []string {
	t.Helper()
	var m []string
	err := waitUntil(timeout, fmt.Sprintf("%s's console to match %q", g.name, re), func() error {
		if m = re.FindStringSubmatch(g.console(t)); m == nil {
			return errNotYet
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, tail(g.console(t), 40))
	}
	return m
}

// send writes a command line to the guest's console input (the FIFO the
// agent gives its vmm as stdin).
func (g *guest) send(t *testing.T, line string) {
	t.Helper()
	d, _ := g.dir(t)
	f, err := os.OpenFile(filepath.Join(d, "console.in"), os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatalf("%s console input: %v", g.name, err)
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		t.Fatalf("%s console input: %v", g.name, err)
	}
}

// leaseLine matches only a whole line: the console log is read while the
// guest writes it, and a line cut after "GUEST ADDR 10.60.0." must not count.
var leaseLine = regexp.MustCompile(`GUEST (ADDR (\S+)|DHCP FAILED)\r?\n`)

// waitAddress waits for the guest's DHCP lease and checks it is its
// port's address.
func (g *guest) waitAddress(t *testing.T, timeout time.Duration) {
	t.Helper()
	m := g.waitConsole(t, leaseLine, timeout)
	if m[2] != g.ip {
		t.Fatalf("%s: DHCP gave %q, its port has %s\nconsole:\n%s", g.name, m[2], g.ip, tail(g.console(t), 30))
	}
}

// renewLease has the running guest ask for its lease again and checks the
// answer: its host's DHCP server serves now.
func (g *guest) renewLease(t *testing.T) {
	t.Helper()
	before := len(leaseLine.FindAllString(g.console(t), -1))
	g.send(t, "d")
	var m []string
	err := waitUntil(90*time.Second, g.name+" leasing again", func() error {
		all := leaseLine.FindAllStringSubmatch(g.console(t), -1)
		if len(all) <= before {
			return errNotYet
		}
		m = all[before]
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, tail(g.console(t), 30))
	}
	if m[2] != g.ip {
		t.Fatalf("%s: DHCP gave %q on renewal, its port has %s", g.name, m[2], g.ip)
	}
}

// ping has the guest ping ip and returns whether it answered.
func (g *guest) ping(t *testing.T, ip string) bool {
	t.Helper()
	// The answer for this ip may be on the console from an earlier
	// ping: count them.
	re := regexp.MustCompile(`GUEST PING ` + regexp.QuoteMeta(ip) + ` (ok|fail)`)
	before := len(re.FindAllString(g.console(t), -1))
	g.send(t, "p "+ip)
	var res string
	err := waitUntil(60*time.Second, g.name+" pinging "+ip, func() error {
		all := re.FindAllStringSubmatch(g.console(t), -1)
		if len(all) <= before {
			return errNotYet
		}
		res = all[before][1]
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nconsole:\n%s", err, tail(g.console(t), 30))
	}
	return res == "ok"
}

// pingUntil pings until ip answers (ARP and the first frames across a
// fresh VXLAN may be lost) or tries run out.
func (g *guest) pingUntil(t *testing.T, ip string, tries int) bool {
	t.Helper()
	for range tries {
		if g.ping(t, ip) {
			return true
		}
	}
	return false
}

func (g *guest) delete(t *testing.T) {
	t.Helper()
	if _, err := g.c.api.Do(context.Background(), http.MethodDelete, "/v1/instances/"+g.id, nil, nil, nil); err != nil {
		t.Fatalf("delete %s: %v", g.name, err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
