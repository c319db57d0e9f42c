#!/usr/bin/env bash
# Control API benchmark (issue 5): request latency against vmm/api on a unix socket with an
# in-process machine, and vmm start → API socket accepting in CPU ms (vmm --api-socket alone needs
# no KVM, so this part runs on any Linux). With APIBENCH_KIT=1 it also measures latency against a
# real vmm running the kit guest, in the nested test host when there is no /dev/kvm.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
mkdir -p build/bench build/bin
CGO_ENABLED=0 go build -o build/bench/apibench ./benchmarks/api
CGO_ENABLED=0 go build -o build/bench/apifloor ./benchmarks/api/floor
CGO_ENABLED=0 go build -o build/bin/vmm ./cmd/vmm
n=${APIBENCH_N:-5000}
starts=${APIBENCH_STARTS:-20}
if [ "${APIBENCH_KIT:-0}" != 1 ]; then
	exec build/bench/apibench --vmm "$top/build/bin/vmm" --floor "$top/build/bench/apifloor" --n "$n" --starts "$starts"
fi
args=(--vmm "$top/build/bin/vmm" --kit "$top/build/kit" --floor "$top/build/bench/apifloor" --n "$n" --starts "$starts")
if [ -e /dev/kvm ]; then
	exec build/bench/apibench "${args[@]}"
fi
[ -x build/bin/kvmhost-run ] || go build -o build/bin/kvmhost-run ./tests/kvmhost/cmd/kvmhost-run
timeout 900 build/bin/kvmhost-run --file build/bin/vmm --file build/bench/apibench --file build/bench/apifloor \
	--file build/kit/vmlinux --file build/kit/initrd.img -- "$top/build/bench/apibench" "${args[@]}"
