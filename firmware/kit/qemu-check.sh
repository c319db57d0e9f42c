#!/usr/bin/env bash
# Sanity checks of build/kit under QEMU TCG (pure emulation, no /dev/kvm needed): the kit
# kernel and initrd keep their console contract (docs/KIT.md), SMP, kit.run and exit statuses,
# sysrq crash with panic=-1, reboot, the emulating-host cmdline, root on virtio-blk, virtio-net
# and virtio-rng; Debian's cloud kernel reaches the kit's userspace.
# Prints one PASS/FAIL line per check with the time it took; exits 1 if any check failed.
# Environment: KIT_OUT (default <repo>/build/kit), QEMU (default qemu-system-x86_64),
# KIT_CHECK_TIMEOUT (seconds per boot, default 180), KIT_CHECK_ONLY (space-separated names).
set -uo pipefail

KIT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$KIT_DIR/../.." && pwd)
OUT=${KIT_OUT:-$REPO/build/kit}
QEMU=${QEMU:-qemu-system-x86_64}
TIMEOUT=${KIT_CHECK_TIMEOUT:-180}
ONLY=${KIT_CHECK_ONLY:-}
# What vmm passes on an emulating KVM host (DESIGN.md "KVM on this host"); checked here too,
# so a kernel that stops accepting one of these names is noticed.
EMU_CPU_ARGS="noxsave clearcpuid=cx16,popcnt,xsave,avx,avx2,bmi1,bmi2,rdrand,rdseed,smap,fsgsbase,pcid,invpcid,rdpid"
BASE_CMDLINE="console=ttyS0 reboot=k panic=-1"

for f in vmlinux vmlinuz-debian initrd.img initrd-debian.img rootfs.ext4; do
	[ -f "$OUT/$f" ] || {
		echo "FAIL setup: $OUT/$f missing (run: bash firmware/kit/build.sh)"
		exit 1
	}
done
if ! command -v "$QEMU" >/dev/null; then
	if [ "$(id -u)" = 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >&2 ||
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 >&2; }
	fi
	command -v "$QEMU" >/dev/null || {
		echo "FAIL setup: $QEMU not found (apt-get install qemu-system-x86)"
		exit 1
	}
fi

WORK=$(mktemp -d /tmp/kit-qemu-check.XXXXXX)
HTTP_PID=
cleanup() {
	[ -n "$HTTP_PID" ] && kill "$HTTP_PID" 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT

failed=0
b64() { printf '%s' "$1" | base64 -w0; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
wanted() { [ -z "$ONLY" ] || [[ " $ONLY " == *" $1 "* ]]; }

# boot NAME KERNEL CMDLINE [QEMU ARGS...]: runs QEMU to completion (or TIMEOUT), leaving the
# console in $WORK/NAME.log, and sets BOOT_STATUS, BOOT_TOTAL (s) and BOOT_READY (s to the
# KIT READY line, "-" if it never came).
boot() {
	local name=$1 kernel=$2 cmdline=$3
	shift 3
	local log=$WORK/$name.log start pid
	start=$(now)
	BOOT_READY=-
	local initrd=(-initrd "${BOOT_INITRD:-$OUT/initrd.img}")
	[ "${BOOT_INITRD:-}" = none ] && initrd=()
	timeout -k 5 "$TIMEOUT" "$QEMU" -nodefaults -no-user-config -display none -no-reboot \
		-cpu max -m 128 -serial stdio -monitor none \
		-kernel "$kernel" "${initrd[@]}" -append "$cmdline" "$@" \
		</dev/null >"$log" 2>&1 &
	pid=$!
	while kill -0 "$pid" 2>/dev/null; do
		if [ "$BOOT_READY" = - ] && grep -q '^KIT READY' "$log"; then
			BOOT_READY=$(secs "$start" "$(now)")
		fi
		sleep 0.1
	done
	wait "$pid"
	BOOT_STATUS=$?
	BOOT_TOTAL=$(secs "$start" "$(now)")
	if [ "$BOOT_READY" = - ] && grep -q '^KIT READY' "$log"; then
		BOOT_READY=$BOOT_TOTAL
	fi
}

# verdict NAME CONDITION-DESCRIPTION: PASS when every expect* since the boot held.
ERRS=()
expect_line() { tr -d '\r' <"$WORK/$1.log" | grep -qxE "$2" || ERRS+=("no line matching /$2/"); }
expect_text() { tr -d '\r' <"$WORK/$1.log" | grep -qE "$2" || ERRS+=("no output matching /$2/"); }
expect_no_text() { ! tr -d '\r' <"$WORK/$1.log" | grep -qE "$2" || ERRS+=("unexpected output /$2/"); }
expect_exit() { [ "$BOOT_STATUS" = 0 ] || ERRS+=("qemu status $BOOT_STATUS (124 = timeout ${TIMEOUT}s)"); }
verdict() {
	local name=$1 what=$2
	if [ ${#ERRS[@]} -eq 0 ]; then
		echo "PASS $name: $what (KIT READY at ${BOOT_READY}s, exit at ${BOOT_TOTAL}s)"
	else
		failed=1
		echo "FAIL $name: $what: ${ERRS[*]} (after ${BOOT_TOTAL}s; console: $OUT/qemu-check-$name.log)"
		cp "$WORK/$name.log" "$OUT/qemu-check-$name.log"
	fi
	ERRS=()
}

# -M pc rather than microvm: under TCG on a loaded host the kernel's PIT calibration of the TSC
# fails, and microvm has no HPET or ACPI PM timer to fall back on (the boot then hangs after
# "tsc: Marking TSC unstable"). On KVM, kvm-clock gives the TSC frequency and none of this
# matters. pc boots the PVH ELF directly too (QEMU's pvh option ROM), and has PCI for virtio.
MACHINE=(-M pc)
K=$OUT/vmlinux

if wanted kit-1cpu; then
	boot kit-1cpu "$K" "$BASE_CMDLINE" "${MACHINE[@]}"
	expect_exit
	expect_line kit-1cpu 'KIT READY cpus=1 mem=[0-9]+'
	expect_text kit-1cpu 'reboot: Power down'
	verdict kit-1cpu "kit kernel, 1 vCPU, powers off without kit.run"
fi

if wanted kit-2cpu; then
	boot kit-2cpu "$K" "$BASE_CMDLINE" "${MACHINE[@]}" -smp 2
	expect_exit
	expect_line kit-2cpu 'KIT READY cpus=2 mem=[0-9]+'
	expect_text kit-2cpu 'reboot: Power down'
	verdict kit-2cpu "kit kernel, 2 vCPUs"
fi

if wanted kit-run; then
	boot kit-run "$K" "$BASE_CMDLINE kit.run=$(b64 'echo hello from $(uname -s); false || exit 7')" "${MACHINE[@]}"
	expect_exit
	expect_line kit-run 'hello from Linux'
	expect_line kit-run 'KIT EXIT 7'
	expect_text kit-run 'reboot: Power down'
	verdict kit-run "kit.run runs the command, its exit status is reported"
fi

if wanted kit-crash; then
	boot kit-crash "$K" "$BASE_CMDLINE kit.run=$(b64 'echo c > /proc/sysrq-trigger')" "${MACHINE[@]}"
	expect_exit
	expect_text kit-crash 'Kernel panic - not syncing: sysrq triggered crash'
	expect_no_text kit-crash 'reboot: Power down|KIT EXIT'
	verdict kit-crash "sysrq crash with panic=-1 resets the machine"
fi

if wanted kit-reboot; then
	boot kit-reboot "$K" "$BASE_CMDLINE kit.run=$(b64 'reboot -f')" "${MACHINE[@]}"
	expect_exit
	expect_text kit-reboot 'reboot: Restarting system'
	expect_no_text kit-reboot 'reboot: Power down|KIT EXIT'
	verdict kit-reboot "reboot -f resets the machine"
fi

if wanted kit-emuhost; then
	# Every flag the emulating host must hide is gone from the guest's view.
	cmd='n=$(grep -m1 "^flags" /proc/cpuinfo | tr " " "\n" | grep -cxE "cx16|popcnt|xsave|avx|avx2|bmi1|bmi2|rdrand|rdseed|smap|fsgsbase|pcid|invpcid|rdpid"); echo hidden-left=$n'
	boot kit-emuhost "$K" "$BASE_CMDLINE $EMU_CPU_ARGS kit.run=$(b64 "$cmd")" "${MACHINE[@]}" -smp 2
	expect_exit
	expect_line kit-emuhost 'KIT READY cpus=2 mem=[0-9]+'
	expect_line kit-emuhost 'hidden-left=0'
	expect_line kit-emuhost 'KIT EXIT 0'
	verdict kit-emuhost "emulating-host cmdline ($EMU_CPU_ARGS) boots and hides the flags"
fi

if wanted kit-rootfs; then
	cp --sparse=always "$OUT/rootfs.ext4" "$WORK/rootfs.ext4"
	cmd='grep -q "^/dev/vda / ext4 rw" /proc/mounts && echo root-on-vda;
dd if=/dev/urandom of=/data bs=1M count=4 2>/dev/null && sha256sum /data > /data.sum && sync &&
echo 3 > /proc/sys/vm/drop_caches && sha256sum -c /data.sum'
	boot kit-rootfs "$K" "$BASE_CMDLINE kit.root=/dev/vda kit.run=$(b64 "$cmd")" "${MACHINE[@]}" \
		-drive "file=$WORK/rootfs.ext4,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0
	expect_exit
	expect_line kit-rootfs 'root-on-vda'
	expect_line kit-rootfs '/data: OK'
	expect_line kit-rootfs 'KIT EXIT 0'
	if [ ${#ERRS[@]} -eq 0 ]; then
		# The data reached the image: check it on the host, outside the guest.
		dir=$WORK/rootfs-out
		mkdir -p "$dir"
		debugfs -R "dump /data $dir/data" "$WORK/rootfs.ext4" >/dev/null 2>&1
		debugfs -R "dump /data.sum $dir/data.sum" "$WORK/rootfs.ext4" >/dev/null 2>&1
		[ "$(sha256sum <"$dir/data" | cut -d' ' -f1)" = "$(cut -d' ' -f1 "$dir/data.sum" 2>/dev/null)" ] ||
			ERRS+=("checksum of /data in the image does not match the guest's")
	fi
	verdict kit-rootfs "kit.root=/dev/vda on virtio-blk-pci, 4 MiB written, checked on the host"
fi

if wanted kit-diskboot; then
	# No initrd: the kernel mounts the disk itself and runs /sbin/init (-> /init); kit.root is
	# ignored there (nothing to switch from).
	cp --sparse=always "$OUT/rootfs.ext4" "$WORK/rootfs-direct.ext4"
	cmd='grep -q "^/dev/root / ext4 rw" /proc/mounts && echo root-direct'
	BOOT_INITRD=none boot kit-diskboot "$K" "$BASE_CMDLINE root=/dev/vda rw kit.root=/dev/vda kit.run=$(b64 "$cmd")" \
		"${MACHINE[@]}" -drive "file=$WORK/rootfs-direct.ext4,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0
	expect_exit
	expect_line kit-diskboot 'KIT READY cpus=1 mem=[0-9]+'
	expect_line kit-diskboot 'root-direct'
	expect_no_text kit-diskboot 'KIT ERROR'
	verdict kit-diskboot "root=/dev/vda without initrd runs the disk's /init"
fi

if wanted kit-net && command -v python3 >/dev/null; then
	mkdir -p "$WORK/www"
	head -c 2097152 /dev/urandom >"$WORK/www/blob"
	sum=$(sha256sum <"$WORK/www/blob" | cut -d' ' -f1)
	port=$((20000 + RANDOM % 20000))
	python3 -m http.server "$port" --bind 127.0.0.1 --directory "$WORK/www" >/dev/null 2>&1 &
	HTTP_PID=$!
	sleep 0.5
	# udhcpc needs AF_PACKET; its lease is checked, then the address is set by hand (no script).
	cmd="ip link set lo up; ip link set eth0 up; udhcpc -q -n -i eth0 -s /bin/true -t 5 >/dev/null 2>&1;
echo dhcp=\$?; ip addr add 10.0.2.15/24 dev eth0;
wget -q -O - http://10.0.2.2:$port/blob | sha256sum; cat /sys/class/misc/hw_random/rng_current"
	boot kit-net "$K" "$BASE_CMDLINE kit.run=$(b64 "$cmd")" "${MACHINE[@]}" \
		-netdev user,id=n0 -device virtio-net-pci,netdev=n0 -device virtio-rng-pci
	kill "$HTTP_PID" 2>/dev/null
	wait "$HTTP_PID" 2>/dev/null
	HTTP_PID=
	expect_exit
	expect_line kit-net 'dhcp=0'
	expect_line kit-net "$sum  -"
	expect_line kit-net 'virtio_rng\.0'
	verdict kit-net "virtio-net-pci: DHCP lease, 2 MiB over TCP from the host, checksum matches; virtio-rng-pci bound"
fi

if wanted debian; then
	boot debian "$OUT/vmlinuz-debian" "$BASE_CMDLINE" "${MACHINE[@]}"
	expect_exit
	expect_text debian 'Run /init as init process'
	expect_line debian 'KIT READY cpus=1 mem=[0-9]+'
	expect_text debian 'reboot: Power down'
	verdict debian "Debian cloud kernel ($(sed -n 's/^debian-kernel-release //p' "$OUT/VERSIONS")) with the kit initrd"
fi

if wanted debian-root; then
	# initrd-debian.img loads Debian's virtio modules, then the kit switches to the ext4 disk.
	cp --sparse=always "$OUT/rootfs.ext4" "$WORK/rootfs-debian.ext4"
	cmd='grep -q "^/dev/vda / ext4 rw" /proc/mounts && echo root-on-vda; cat /sys/class/net/eth0/address'
	BOOT_INITRD=$OUT/initrd-debian.img boot debian-root "$OUT/vmlinuz-debian" \
		"$BASE_CMDLINE kit.root=/dev/vda kit.run=$(b64 "$cmd")" "${MACHINE[@]}" \
		-drive "file=$WORK/rootfs-debian.ext4,if=none,id=d0,format=raw" -device virtio-blk-pci,drive=d0 \
		-netdev user,id=n0 -device virtio-net-pci,netdev=n0,mac=52:54:00:12:34:99
	expect_exit
	expect_text debian-root 'EXT4-fs \(vda\): mounted filesystem'
	expect_line debian-root 'root-on-vda'
	expect_line debian-root '52:54:00:12:34:99'
	expect_no_text debian-root 'KIT ERROR'
	verdict debian-root "Debian cloud kernel + initrd-debian.img: virtio modules, kit.root=/dev/vda, virtio-net"
fi

exit $failed
