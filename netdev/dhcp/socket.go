package dhcp

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"kvmstack/netdev"
)

// requestFilter is a classic BPF program that passes only unfragmented
// IPv4 UDP frames to port 67 that were received, not sent, on the link: the
// socket wakes for DHCP requests and nothing else. handle checks all of it
// again; the filter only saves work.
var requestFilter = []unix.SockFilter{
	/* 0 */ {Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: 12}, // EtherType
	/* 1 */ {Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: etherTypeIP, Jt: 0, Jf: 10},
	/* 2 */ {Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: ethHdrLen + 9}, // IP protocol
	/* 3 */ {Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: protoUDP, Jt: 0, Jf: 8},
	/* 4 */ {Code: unix.BPF_LD | unix.BPF_H | unix.BPF_ABS, K: ethHdrLen + 6}, // flags, fragment offset
	/* 5 */ {Code: unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K, K: 0x3fff, Jt: 6, Jf: 0},
	/* 6 */ {Code: unix.BPF_LDX | unix.BPF_B | unix.BPF_MSH, K: ethHdrLen}, // X = IP header length
	/* 7 */ {Code: unix.BPF_LD | unix.BPF_H | unix.BPF_IND, K: ethHdrLen + 2}, // UDP destination port
	/* 8 */ {Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: serverPort, Jt: 0, Jf: 3},
	/* 9 */ {Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: skfAdOff + skfAdPkttype},
	/* 10 */ {Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, K: unix.PACKET_OUTGOING, Jt: 1, Jf: 0},
	/* 11 */ {Code: unix.BPF_RET | unix.BPF_K, K: maxFrameRead},
	/* 12 */ {Code: unix.BPF_RET | unix.BPF_K, K: 0},
}

// SKF_AD_OFF (-0x1000, as the unsigned K of a load) starts the ancillary
// data area of classic BPF.
const (
	skfAdOff     = 0xfffff000
	skfAdPkttype = 4 // SKF_AD_PKTTYPE: the socket buffer's packet type
)

// openPacketSocket opens a raw packet socket on link ifindex inside ns,
// filtered to DHCP requests, non-blocking for the runtime poller.
func openPacketSocket(ns *netdev.Namespace, ifindex int) (*netdev.PacketFile, error) {
	var fd int
	err := ns.Do(func() error {
		// Protocol 0 receives nothing until bind, so no frame gets in
		// before the filter is attached.
		var err error
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("dhcp: packet socket: %w", err)
		}
		prog := unix.SockFprog{Len: uint16(len(requestFilter)), Filter: &requestFilter[0]}
		if err := unix.SetsockoptSockFprog(fd, unix.SOL_SOCKET, unix.SO_ATTACH_FILTER, &prog); err != nil {
			unix.Close(fd)
			return fmt.Errorf("dhcp: attach filter: %w", err)
		}
		sa := &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifindex}
		if err := unix.Bind(fd, sa); err != nil {
			unix.Close(fd)
			return fmt.Errorf("dhcp: bind packet socket to ifindex %d: %w", ifindex, err)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	pf, err := netdev.NewPacketFile(os.NewFile(uintptr(fd), fmt.Sprintf("dhcp:if%d", ifindex)))
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	return pf, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
