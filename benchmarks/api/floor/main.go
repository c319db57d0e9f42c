// Command floor listens on the unix socket given as its argument and waits:
// the cost of starting the smallest Go program that gets as far as vmm
// --api-socket does, so benchmarks/api can tell vmm's own start-up work from
// the Go runtime's and the host's.
package main

import (
	"net"
	"os"
)

func main() {
	if len(os.Args) != 2 {
		os.Exit(2)
	}
	if _, err := net.Listen("unix", os.Args[1]); err != nil {
		os.Exit(1)
	}
	select {}
}
