#!/usr/bin/env bash
# make bench: builds the benchmark inputs and prints the side-by-side tables. Without /dev/kvm the
# vmm measurements run in the nested test host (tests/kvmhost), where KVM is AMD-V emulated by QEMU
# TCG: compare the ratios there, not the absolute numbers.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
mkdir -p build/bench
gcc -O2 -static -o build/bench/pioexit-c benchmarks/csrc/pioexit.c
CGO_ENABLED=0 go build -o build/bench/vmmbench ./benchmarks/vmmbench
qemu=$(command -v qemu-system-x86_64)
files=(--file build/bin/vmm --file build/bench/vmmbench --file build/bench/pioexit-c
	--file build/kit/vmlinux --file build/kit/initrd.img --file "$qemu")
# QEMU's microvm firmware and option ROMs.
for f in /usr/share/qemu/qboot.rom /usr/share/qemu/bios-microvm.bin /usr/share/qemu/linuxboot_dma.bin /usr/share/qemu/pvh.bin; do
	[ -e "$f" ] && files+=(--file "$f")
done
echo "== vmm (issue 3): exits, boot time, memory"
build/bin/kvmhost-run "${files[@]}" -- "$top/build/bench/vmmbench" --vmm "$top/build/bin/vmm" \
	--pioexit-c "$top/build/bench/pioexit-c" --kit "$top/build/kit" --qemu "$qemu" ${VMMBENCH_ARGS:-}
echo "== kvmstack (issue 6): scheduler placements/s, raft write latency"
go run ./benchmarks/scheduler || echo "benchmarks/scheduler: FAILED (over-committed hosts or error)"
for d in benchmarks/*/; do
	[ -x "$d/run.sh" ] && { echo "== $(basename "$d")"; bash "$d/run.sh"; }
done
exit 0
