#!/usr/bin/env bash
# virtio-net benchmark: vmm vs QEMU (virtio-net-pci without vhost) on the same tap, kit kernel and
# initrd, inside a network namespace netbench creates. Without /dev/kvm it runs in the nested test
# host (tests/kvmhost), where KVM is AMD-V emulated by QEMU TCG: compare ratios, not absolutes.
# Bounded: two boots and NETBENCH_SECONDS (default 10) per TCP phase and side.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
mkdir -p build/bench build/bin
CGO_ENABLED=0 go build -o build/bench/netbench ./benchmarks/net
[ -x build/bin/vmm ] || CGO_ENABLED=0 go build -o build/bin/vmm ./cmd/vmm
[ -x build/bin/kvmhost-run ] || go build -o build/bin/kvmhost-run ./tests/kvmhost/cmd/kvmhost-run
qemu=$(command -v qemu-system-x86_64)
args=(--vmm "$top/build/bin/vmm" --kit "$top/build/kit" --qemu "$qemu" --seconds "${NETBENCH_SECONDS:-10}")
if [ -e /dev/kvm ]; then
	exec build/bench/netbench "${args[@]}"
fi
files=(--file build/bin/vmm --file build/bench/netbench --file build/kit/vmlinux --file build/kit/initrd.img --file "$qemu")
# QEMU's pc firmware (SeaBIOS) and the option ROMs for -kernel.
for f in /usr/share/seabios/bios-256k.bin /usr/share/qemu/pvh.bin /usr/share/qemu/linuxboot_dma.bin \
	/usr/share/qemu/kvmvapic.bin; do
	[ -e "$f" ] && files+=(--file "$f")
done
timeout 900 build/bin/kvmhost-run "${files[@]}" -- "$top/build/bench/netbench" "${args[@]}"
