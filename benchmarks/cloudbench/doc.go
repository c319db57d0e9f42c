// Command cloudbench measures the cloud end to end on one host in dev mode:
// it starts `kvmstack dev` on a fresh data directory, uploads the guest
// kit's kernel and initrd, and times each instance from its API create call
// to "KIT READY" on the guest's serial console (the kit's /init prints it
// once userspace runs), for one instance at a time and for many created at
// once, and derives instances started per second. It also splits each
// sample at the moment the agent reported the instance running (its vmm
// answers on the API socket), which separates the control plane's share
// from the guest's boot. Run it through benchmarks/cloudbench/run.sh, which
// puts it in the nested test host when there is no /dev/kvm.
package main
