// Package dhcp owns the DHCPv4 server the agent runs on each network
// bridge: it answers guests whose MAC has a static lease in the desired
// state (and stays silent for every other MAC, which another host may
// serve), over a raw packet socket on the bridge, so the bridge needs no
// address and replies reach clients that have none yet. Message encoding is
// github.com/insomniacslk/dhcp/dhcpv4; Ethernet, IPv4 and UDP framing, and
// every check on what a guest sends, are here.
package dhcp
