// Package agent is the kvmstack host agent: it registers its host with the
// cluster, heartbeats, watches the instances placed on it with blocking
// queries and makes them real there. It owns the host's data directory:
// the image cache (DATA/images, files named by sha256 and verified before
// they are used), one directory per instance (DATA/instances/ID: the root
// disk, the vmm API socket, pid file, exit status and rotated serial
// console logs), and the vmm processes it starts. It reports every state
// change with a reason and carries out the power actions users ask for
// through each vmm's control API.
//
// vmm processes run in their own session, so an agent that dies or
// restarts leaves its guests running; a new agent on the same data
// directory re-adopts them (pid file, /proc/PID/cmdline and a GET /vm on
// the socket) instead of restarting them. Host network plumbing is not
// done here but through the Network interface.
package agent
