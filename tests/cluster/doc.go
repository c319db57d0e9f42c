// Package cluster holds the multi-process tests of the kvmstack control
// plane: three `kvmstack server` processes on 127.0.0.1, leader failures,
// linearizability (porcupine), catch-up and snapshot install, concurrent
// scheduling, and the security rules of the API.
package cluster
