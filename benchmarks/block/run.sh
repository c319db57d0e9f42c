#!/usr/bin/env bash
# virtio-blk benchmark: vmm vs QEMU (virtio-blk-pci, raw file, cache=writeback, aio=threads) with
# the same kit kernel, initrd and disk images. Without /dev/kvm it runs in the nested test host
# (tests/kvmhost), where KVM is AMD-V emulated by QEMU TCG: compare ratios, not absolutes.
# Bounded: two boots, four phases of at most BLOCKBENCH_SECONDS (default 5) each per side.
set -euo pipefail
top=$(cd "$(dirname "$0")/../.." && pwd)
cd "$top"
mkdir -p build/bench build/bin
gcc -O2 -static -o build/bench/blkio benchmarks/block/guest/blkio.c
CGO_ENABLED=0 go build -o build/bench/blockbench ./benchmarks/block
[ -x build/bin/vmm ] || CGO_ENABLED=0 go build -o build/bin/vmm ./cmd/vmm
[ -x build/bin/kvmhost-run ] || go build -o build/bin/kvmhost-run ./tests/kvmhost/cmd/kvmhost-run
qemu=$(command -v qemu-system-x86_64)
args=(--vmm "$top/build/bin/vmm" --kit "$top/build/kit" --qemu "$qemu" --blkio "$top/build/bench/blkio"
	--seconds "${BLOCKBENCH_SECONDS:-5}" --size "${BLOCKBENCH_MIB:-64}")
if [ -e /dev/kvm ]; then
	exec build/bench/blockbench "${args[@]}"
fi
files=(--file build/bin/vmm --file build/bench/blockbench --file build/bench/blkio --file /usr/sbin/mke2fs
	--file build/kit/vmlinux --file build/kit/initrd.img --file "$qemu")
[ -e /etc/mke2fs.conf ] && files+=(--file /etc/mke2fs.conf)
# QEMU's pc firmware (SeaBIOS) and the option ROMs for -kernel.
for f in /usr/share/seabios/bios-256k.bin /usr/share/qemu/pvh.bin /usr/share/qemu/linuxboot_dma.bin \
	/usr/share/qemu/kvmvapic.bin; do
	[ -e "$f" ] && files+=(--file "$f")
done
timeout 900 build/bin/kvmhost-run "${files[@]}" -- "$top/build/bench/blockbench" "${args[@]}"
