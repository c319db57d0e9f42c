package dhcp

import (
	"bytes"
	"testing"

	"github.com/insomniacslk/dhcp/dhcpv4"
)

// FuzzHandle feeds hostile frames to the responder: it must never panic,
// and whatever it sends must be a well-formed reply for a leased MAC, sent
// to that MAC or to broadcast, never offering another address.
func FuzzHandle(f *testing.F) {
	f.Add(clientFrame(knownMAC, zeroIP, discover(knownMAC).ToBytes()))
	f.Add(clientFrame(knownMAC, zeroIP, discover(knownMAC, dhcpv4.WithBroadcast(true)).ToBytes()))
	f.Add(clientFrame(knownMAC, zeroIP, message(knownMAC, dhcpv4.MessageTypeRequest,
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(leasedIP.AsSlice()))).ToBytes()))
	f.Add(clientFrame(knownMAC, leasedIP, message(knownMAC, dhcpv4.MessageTypeInform,
		dhcpv4.WithClientIP(leasedIP.AsSlice())).ToBytes()))
	f.Add(clientFrame(otherMAC, zeroIP, discover(otherMAC).ToBytes()))
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 64))
	r := testResponder(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		in := bytes.Clone(frame)
		o := r.handle(frame)
		if !bytes.Equal(in, frame) {
			t.Fatal("handle modified its input")
		}
		if o.reply == nil {
			return
		}
		s := parseReply(t, o.reply, bridgeMAC)
		if !bytes.Equal(s.msg.ClientHWAddr, knownMAC) {
			t.Fatalf("replied to chaddr %v, which has no lease", s.msg.ClientHWAddr)
		}
		if !bytes.Equal(s.dstMAC, knownMAC) && !bytes.Equal(s.dstMAC, bcast) {
			t.Fatalf("reply sent to MAC %v", s.dstMAC)
		}
		if y := s.msg.YourIPAddr; !y.IsUnspecified() && !y.Equal(leasedIP.AsSlice()) {
			t.Fatalf("offered %v, the lease is %v", y, leasedIP)
		}
		if len(o.reply) > 1500+14 {
			t.Fatalf("reply of %d bytes exceeds an Ethernet frame", len(o.reply))
		}
	})
}
