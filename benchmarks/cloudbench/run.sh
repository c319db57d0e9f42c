#!/usr/bin/env bash
# Cloud benchmark (issue 7): API create → "KIT READY" on the guest console, for one instance and for
# CLOUDBENCH_CONCURRENT (default 20) created at once, with `kvmstack dev` on one host. Without
# /dev/kvm it runs in the nested test host (tests/kvmhost), where KVM is AMD-V emulated by QEMU TCG
# on one vCPU: every guest and the control plane share that one emulated CPU.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
mkdir -p build/bench build/bin
CGO_ENABLED=0 go build -o build/bench/cloudbench ./benchmarks/cloudbench
[ -x build/bin/vmm ] || CGO_ENABLED=0 go build -o build/bin/vmm ./cmd/vmm
[ -x build/bin/kvmstack ] || CGO_ENABLED=0 go build -o build/bin/kvmstack ./cmd/kvmstack
[ -x build/bin/kvmhost-run ] || go build -o build/bin/kvmhost-run ./tests/kvmhost/cmd/kvmhost-run
args=(--kvmstack "$top/build/bin/kvmstack" --vmm "$top/build/bin/vmm" --kit "$top/build/kit"
	--singles "${CLOUDBENCH_SINGLES:-5}" --concurrent "${CLOUDBENCH_CONCURRENT:-20}")
if [ -e /dev/kvm ]; then
	exec build/bench/cloudbench "${args[@]}"
fi
timeout 1800 build/bin/kvmhost-run --file build/bin/vmm --file build/bin/kvmstack --file build/bench/cloudbench \
	--file build/kit/vmlinux --file build/kit/initrd.img -- "$top/build/bench/cloudbench" "${args[@]}"
