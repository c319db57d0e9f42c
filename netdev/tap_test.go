package netdev

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// needNetAdmin skips unless this process may create namespaces and TAPs.
func needNetAdmin(t *testing.T) *Namespace {
	t.Helper()
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("no TUN driver: %v", err)
	}
	ns, err := NewNamespace()
	if errors.Is(err, os.ErrPermission) {
		t.Skipf("not allowed to create a network namespace: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

var (
	guestMAC = net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	guestIP  = net.IPv4(10, 0, 2, 15).To4()
	hostIP   = net.IPv4(10, 0, 2, 1).To4()
)

// arpRequest is an Ethernet ARP who-has from the guest for the host.
func arpRequest() []byte {
	f := make([]byte, 42)
	copy(f[0:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	copy(f[6:], guestMAC)
	binary.BigEndian.PutUint16(f[12:], 0x0806)
	binary.BigEndian.PutUint16(f[14:], 1)      // Ethernet
	binary.BigEndian.PutUint16(f[16:], 0x0800) // IPv4
	f[18], f[19] = 6, 4
	binary.BigEndian.PutUint16(f[20:], 1) // request
	copy(f[22:], guestMAC)
	copy(f[28:], guestIP)
	copy(f[38:], hostIP)
	return f
}

// TestTapARP sends an ARP request into a TAP in a fresh namespace and reads
// the kernel's reply, with and without virtio-net headers.
func TestTapARP(t *testing.T) {
	for _, vnet := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "vnethdr"}[vnet]
		t.Run(name, func(t *testing.T) {
			ns := needNetAdmin(t)
			if err := ns.CreateTap("tap0"); err != nil {
				t.Fatal(err)
			}
			tap, err := ns.OpenTap("tap0", vnet)
			if err != nil {
				t.Fatal(err)
			}
			defer tap.Close()
			if tap.Name() != "tap0" || tap.VnetHdr() != vnet {
				t.Fatalf("tap %q vnet=%v", tap.Name(), tap.VnetHdr())
			}
			if err := ns.AddAddress("tap0", "10.0.2.1/24"); err != nil {
				t.Fatal(err)
			}
			if err := ns.SetUp("tap0"); err != nil {
				t.Fatal(err)
			}
			if vnet {
				want := OffloadCsum | OffloadTSO4 | OffloadTSO6
				if tap.SupportedOffloads()&want != want {
					t.Errorf("offloads %#x, want at least %#x", tap.SupportedOffloads(), want)
				}
				if err := tap.SetOffload(want); err != nil {
					t.Error(err)
				}
				if err := tap.SetOffload(1 << 20); err == nil {
					t.Error("SetOffload accepted an unknown flag")
				}
			} else if tap.SupportedOffloads() != 0 {
				t.Errorf("offloads %#x without vnet headers", tap.SupportedOffloads())
			}
			hdr := []byte{}
			if vnet {
				hdr = make([]byte, VnetHdrLen)
			}
			if _, err := tap.WritePacket([][]byte{hdr, arpRequest()}); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			if err := tap.SetDeadline(deadline); err != nil {
				t.Fatal(err)
			}
			for {
				buf := make([]byte, 2048)
				n, err := tap.ReadPacket([][]byte{buf}, nil)
				if err != nil {
					t.Fatalf("no ARP reply: %v", err)
				}
				f := buf[len(hdr):n]
				// Skip IPv6 router solicitations and the like.
				if len(f) < 42 || binary.BigEndian.Uint16(f[12:]) != 0x0806 {
					continue
				}
				if !bytes.Equal(f[0:6], guestMAC) || binary.BigEndian.Uint16(f[20:]) != 2 ||
					!bytes.Equal(f[28:32], hostIP) || !bytes.Equal(f[38:42], guestIP) {
					t.Fatalf("unexpected ARP frame % x", f)
				}
				mtu, err := tap.MTU()
				if err != nil || mtu != 1500 {
					t.Errorf("MTU = %d, %v", mtu, err)
				}
				return
			}
		})
	}
}

// TestVethBetweenNamespaces connects two namespaces with a veth pair and
// moves a TCP stream across.
func TestVethBetweenNamespaces(t *testing.T) {
	a := needNetAdmin(t)
	b, err := NewNamespace()
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := a.AddVeth("va", "vb", b); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		ns   *Namespace
		link string
		addr string
	}{{a, "va", "10.0.3.1/24"}, {b, "vb", "10.0.3.2/24"}} {
		if err := s.ns.AddAddress(s.link, s.addr); err != nil {
			t.Fatal(err)
		}
		if err := s.ns.SetUp(s.link); err != nil {
			t.Fatal(err)
		}
	}
	ln, err := b.Listen("tcp", "10.0.3.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msg := bytes.Repeat([]byte("kvmstack"), 1<<14)
	done := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- nil
			return
		}
		defer c.Close()
		got := make([]byte, len(msg))
		c.SetDeadline(time.Now().Add(10 * time.Second))
		n, _ := ioReadFull(c, got)
		done <- got[:n]
	}()
	c, err := a.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	if got := <-done; !bytes.Equal(got, msg) {
		t.Fatalf("received %d bytes, want %d", len(got), len(msg))
	}
}

func ioReadFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}
