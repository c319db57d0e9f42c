package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"kvmstack/netdev"
)

// Addresses inside the test's own network namespace; nothing outside it
// can see them.
const (
	netTap      = "kvmtap0"
	netHostAddr = "10.0.2.1"
	netGuestMAC = "52:54:00:12:34:56"
	netSize     = 8 << 20
	netUpPort   = 5001
	netDownPort = 5002
)

// netScript configures the guest NIC with busybox ip, reports the
// negotiated virtio features, sends 8 MiB to the host and receives 8 MiB,
// printing the sha256 of both.
var netScript = fmt.Sprintf(`set -e
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
echo "MAC $(cat /sys/class/net/eth0/address)"
for d in /sys/bus/virtio/devices/*; do read id <$d/device; read f <$d/features; echo "FEAT $id $f"; done
grep virtio /proc/interrupts | sed 's/^/IRQ /'
mkdir -p /tmp
dd if=/dev/urandom of=/tmp/up bs=65536 count=%d 2>/dev/null
s=$(sha256sum </tmp/up); echo "UP ${s%%%% *}"
nc %s %d </tmp/up
echo "UPLOAD DONE"
grep virtio /proc/interrupts | sed 's/^/IRQ /'
nc %s %d >/tmp/down
s=$(sha256sum </tmp/down); echo "DOWN ${s%%%% *} $(wc -c </tmp/down)"
for f in rx_bytes tx_bytes rx_dropped tx_dropped; do read v </sys/class/net/eth0/statistics/$f; echo "STAT $f $v"; done`,
	netSize/65536, netHostAddr, netUpPort, netHostAddr, netDownPort)

var (
	netUpRe   = regexp.MustCompile(`UP ([0-9a-f]{64})`)
	netDownRe = regexp.MustCompile(`DOWN ([0-9a-f]{64}) +(\d+)`)
	netFeatRe = regexp.MustCompile(`FEAT 0x0001 ([01]+)`)
	netMACRe  = regexp.MustCompile(`MAC (\S+)`)
)

// netNamespace creates a namespace with the tap the guest will use and the
// host's address on it; it and the tap vanish when the test ends.
func netNamespace(t *testing.T) *netdev.Namespace {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN driver (tests/kvmhost/build.sh provides tun.ko): %v", err)
	}
	ns, err := netdev.NewNamespace()
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("not allowed to create a network namespace: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	for _, step := range []func() error{
		func() error { return ns.CreateTap(netTap) },
		func() error { return ns.AddAddress(netTap, netHostAddr+"/24") },
		func() error { return ns.SetUp(netTap) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	return ns
}

// startVMMIn is startVMM with vmm running inside ns.
func startVMMIn(t *testing.T, ns *netdev.Namespace, timeout time.Duration, args ...string) *vmmProc {
	t.Helper()
	return startVMMWith(t, ns.Start, timeout, args...)
}

// serveOnce accepts one connection on ln and runs fn on it, reporting fn's
// result on the returned channel.
func serveOnce[T any](ln net.Listener, deadline time.Time, fn func(net.Conn) (T, error)) <-chan T {
	out := make(chan T, 1)
	go func() {
		var zero T
		if tl, ok := ln.(*net.TCPListener); ok {
			tl.SetDeadline(deadline)
		}
		c, err := ln.Accept()
		if err != nil {
			out <- zero
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		v, err := fn(c)
		if err != nil {
			out <- zero
			return
		}
		out <- v
	}()
	return out
}

// TestNetTransfer boots the kit with a virtio-net NIC on a tap inside a
// network namespace the test made: the guest sends 8 MiB to a listener in
// that namespace and receives 8 MiB from another, and both sides' sha256
// must agree. It also checks the MAC and that the checksum, TSO and
// mergeable-buffer features were negotiated.
func TestNetTransfer(t *testing.T) {
	needKit(t, kitVmlinux, kitInitrd)
	ns := netNamespace(t)
	const timeout = 8 * time.Minute
	deadline := time.Now().Add(timeout)
	lnUp, err := ns.Listen("tcp", net.JoinHostPort(netHostAddr, strconv.Itoa(netUpPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer lnUp.Close()
	lnDown, err := ns.Listen("tcp", net.JoinHostPort(netHostAddr, strconv.Itoa(netDownPort)))
	if err != nil {
		t.Fatal(err)
	}
	defer lnDown.Close()

	// Upload: read exactly netSize, then close, so the guest's nc ends
	// whether or not it half-closes on end of input.
	upSum := serveOnce(lnUp, deadline, func(c net.Conn) (string, error) {
		h := sha256.New()
		if _, err := io.CopyN(h, c, netSize); err != nil {
			return "", err
		}
		return hex.EncodeToString(h.Sum(nil)), nil
	})
	down := make([]byte, netSize)
	rng := rand.New(rand.NewChaCha8([32]byte{'k', 'v', 'm'}))
	for i := range down {
		down[i] = byte(rng.Uint32())
	}
	downSum := sha256.Sum256(down)
	downDone := serveOnce(lnDown, deadline, func(c net.Conn) (bool, error) {
		_, err := c.Write(down)
		return err == nil, err
	})

	args := append(kitArgs(1, "256M", kitRun(netScript)), "--net", "tap="+netTap+",mac="+netGuestMAC)
	r := startVMMIn(t, ns, timeout, args...).wait(t)
	if r.status != exitPowerOff || !strings.Contains(r.console, "KIT EXIT 0") {
		t.Fatalf("status %d (want %d and KIT EXIT 0)\nconsole:\n%s\nstderr:\n%s", r.status, exitPowerOff, tail(r.console), r.stderr)
	}
	if m := netMACRe.FindStringSubmatch(r.console); m == nil || m[1] != netGuestMAC {
		t.Errorf("guest MAC %v, want %s", m, netGuestMAC)
	}
	if m := netFeatRe.FindStringSubmatch(r.console); m == nil {
		t.Errorf("no virtio-net features line\nconsole:\n%s", tail(r.console))
	} else {
		// sysfs prints feature bit i as character i.
		for _, bit := range []struct {
			n    int
			name string
		}{{0, "CSUM"}, {1, "GUEST_CSUM"}, {5, "MAC"}, {7, "GUEST_TSO4"}, {11, "HOST_TSO4"}, {15, "MRG_RXBUF"}, {16, "STATUS"}, {32, "VERSION_1"}} {
			if len(m[1]) <= bit.n || m[1][bit.n] != '1' {
				t.Errorf("feature %s (bit %d) not negotiated: %s", bit.name, bit.n, m[1])
			}
		}
	}
	m := netUpRe.FindStringSubmatch(r.console)
	if m == nil {
		t.Fatalf("guest printed no upload checksum\nconsole:\n%s", tail(r.console))
	}
	if got := <-upSum; got != m[1] {
		t.Errorf("upload: host received sha256 %q, guest sent %s", got, m[1])
	}
	if !<-downDone {
		t.Error("download: host could not send its 8 MiB")
	}
	d := netDownRe.FindStringSubmatch(r.console)
	if d == nil || d[1] != hex.EncodeToString(downSum[:]) || d[2] != strconv.Itoa(netSize) {
		t.Errorf("download: guest got %v, want sha256 %x of %d bytes", d, downSum, netSize)
	}
	t.Logf("8 MiB each way in a %v run\n%s", r.elapsed.Round(time.Millisecond), strings.Join(regexp.MustCompile(`STAT \S+ \d+`).FindAllString(r.console, -1), "\n"))
}
