#!/usr/bin/env bash
# Builds the kvmstack guest kit from Debian packages into build/kit/ (see docs/KIT.md):
#   vmlinux         kit kernel: Debian linux-source-6.12 + kit.config + patches/ (ELF, PVH note)
#   vmlinux.config  its final .config
#   vmlinuz-debian  Debian's unmodified cloud kernel (newest linux-image-6.12.*-cloud-amd64-unsigned)
#   config-debian   that kernel's config
#   initrd.img      uncompressed newc cpio: busybox-static + init
#   initrd-debian.img  the same + the Debian kernel's virtio-blk/net/rng modules
#   rootfs.ext4     ext4 image with the same layout, for kit.root=/dev/vda
#   VERSIONS, SHA256SUMS
# The kernel (kernel.sh; minutes to build) is cached outside the repository in $KIT_CACHE/kernel-<hash>/, the
# hash covering everything that goes into it, so fresh clones on the same machine reuse it.
# Environment: KIT_CACHE (default /var/cache/kvmstack/kit), KIT_OUT (default <repo>/build/kit),
# KIT_JOBS (default: number of CPUs), KIT_KEEP_TREE=1 keeps the kernel build tree in the cache,
# KIT_ROOTFS_MB (default 64).
set -euo pipefail

KIT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$KIT_DIR/../.." && pwd)
OUT=${KIT_OUT:-$REPO/build/kit}
CACHE=${KIT_CACHE:-/var/cache/kvmstack/kit}
JOBS=${KIT_JOBS:-$(nproc)}
ROOTFS_MB=${KIT_ROOTFS_MB:-64}
SERIES=6.12
SRC_PKG=linux-source-$SERIES
# Fixed timestamp for everything the kit writes, so identical inputs give identical files.
EPOCH=1700000000
export DEBIAN_FRONTEND=noninteractive LC_ALL=C

log() { printf 'kit: %s\n' "$*" >&2; }
die() {
	printf 'kit: error: %s\n' "$*" >&2
	exit 1
}

# Everything runs inside main, which bash parses whole before running it: editing this file
# while a build is running cannot change the running build halfway.
main() {
	[ "$(id -u)" = 0 ] || die "must run as root (installs Debian packages, creates device nodes)"

	# --- packages --------------------------------------------------------------------------------
	APT_UPDATED=0
	apt_update_once() {
		if [ "$APT_UPDATED" = 0 ]; then
			log "apt-get update"
			apt-get update -qq >&2 || die "apt-get update failed"
			APT_UPDATED=1
		fi
	}

	# Installs only what is missing; the package lists are refreshed only when apt cannot find or
	# fetch a package with the lists it has.
	ensure_packages() {
		local missing=() p
		local -A installed=()
		while read -r p status; do
			[ "$status" = "install ok installed" ] && installed[$p]=1
		done < <(dpkg-query -W -f='${Package} ${Status}\n' "$@" 2>/dev/null)
		for p in "$@"; do
			[ -n "${installed[$p]:-}" ] || missing+=("$p")
		done
		[ ${#missing[@]} -eq 0 ] && return 0
		log "installing ${missing[*]}"
		for p in "${missing[@]}"; do
			if ! apt-cache show "$p" >/dev/null 2>&1; then
				apt_update_once
				break
			fi
		done
		if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2; then
			[ "$APT_UPDATED" = 0 ] || die "apt-get install ${missing[*]} failed"
			apt_update_once
			apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
				die "apt-get install ${missing[*]} failed"
		fi
	}

	ensure_packages "$SRC_PKG" build-essential bc bison flex libelf-dev libssl-dev binutils \
		cpio xz-utils e2fsprogs busybox-static util-linux coreutils

	mkdir -p "$CACHE" "$OUT"
	# One build at a time per cache (two `make kit` in parallel would build the same tree twice).
	exec 9>"$CACHE/.lock"
	flock 9

	# --- kit kernel --------------------------------------------------------------------------------
	SRC_VERSION=$(dpkg-query -W -f='${Version}' "$SRC_PKG")
	SRC_TAR=/usr/src/$SRC_PKG.tar.xz
	[ -f "$SRC_TAR" ] || die "$SRC_TAR missing (package $SRC_PKG $SRC_VERSION installed?)"
	PATCHES=("$KIT_DIR"/patches/*.patch)
	[ -f "${PATCHES[0]}" ] || die "no patches in $KIT_DIR/patches"

	KERNEL_HASH=$(
		{
			echo "$SRC_PKG $SRC_VERSION"
			(cd "$KIT_DIR" && sha256sum kit.config kernel.sh patches/*.patch)
		} | sha256sum | cut -c1-16
	)
	KDIR=$CACHE/kernel-$KERNEL_HASH

	build_kernel() {
		local start=$SECONDS
		rm -rf "$KDIR"
		mkdir -p "$KDIR"
		log "building kernel $SRC_PKG $SRC_VERSION (cache $KDIR, log $KDIR/build.log, make -j$JOBS)"
		bash "$KIT_DIR/kernel.sh" build "$SRC_TAR" "$KDIR" "$JOBS"
		[ "${KIT_KEEP_TREE:-0}" = 1 ] || rm -rf "$KDIR/src"
		echo "$((SECONDS - start))" >"$KDIR/build-seconds"
		touch "$KDIR/complete"
		log "kernel built in $((SECONDS - start)) s"
	}

	if [ -f "$KDIR/complete" ] && [ -f "$KDIR/vmlinux" ]; then
		log "kernel: cached ($KDIR)"
	else
		build_kernel
	fi
	# Re-checked on every run: the output must be the uncompressed ELF with the PVH entry note
	# (Xen ELF note type 18, XEN_ELFNOTE_PHYS32_ENTRY) that the loaders rely on.
	readelf -h "$KDIR/vmlinux" | grep -q 'Machine:.*X86-64' || die "$KDIR/vmlinux is not an x86-64 ELF"
	readelf -n "$KDIR/vmlinux" | grep -qE '^[[:space:]]+Xen[[:space:]]+0x[0-9a-f]+[[:space:]]+(Unknown note type: \(0x00000012\)|.*PHYS32)' ||
		die "$KDIR/vmlinux has no PVH entry note"
	bash "$KIT_DIR/kernel.sh" check "$KDIR/config" || die "cached config does not match kit.config"

	# --- Debian cloud kernel -------------------------------------------------------------------------
	newest_cloud_pkg() {
		apt-cache pkgnames "linux-image-$SERIES." 2>/dev/null |
			grep -E "^linux-image-${SERIES//./\\.}\.[0-9]+\+deb[0-9]+-cloud-amd64-unsigned$" |
			sort -V | tail -n 1
	}
	# apt-cache takes seconds; its answer changes only when the package lists do.
	lists_stamp() { stat -c '%n %Y %s' /var/lib/apt/lists/*_Packages* 2>/dev/null | sha256sum | cut -c1-16; }
	SELECTION=$CACHE/debian/selection
	if [ -f "$SELECTION" ] && [ "$(head -n 1 "$SELECTION")" = "$(lists_stamp)" ]; then
		read -r DEB_PKG DEB_VERSION < <(sed -n 2p "$SELECTION")
	else
		DEB_PKG=$(newest_cloud_pkg)
		if [ -z "$DEB_PKG" ]; then
			apt_update_once
			DEB_PKG=$(newest_cloud_pkg)
		fi
		[ -n "$DEB_PKG" ] || die "no linux-image-$SERIES.*-cloud-amd64-unsigned package known to apt"
		DEB_VERSION=$(apt-cache show --no-all-versions "$DEB_PKG" | sed -n 's/^Version: //p' | head -n 1)
		mkdir -p "$CACHE/debian"
		printf '%s\n%s %s\n' "$(lists_stamp)" "$DEB_PKG" "$DEB_VERSION" >"$SELECTION"
	fi
	DEBIAN_MODULES="failover net_failover virtio_net virtio_blk virtio-rng"
	DDIR=$CACHE/debian/${DEB_PKG}_${DEB_VERSION}_$(echo "$DEBIAN_MODULES" | sha256sum | cut -c1-8)
	if [ -f "$DDIR/complete" ]; then
		log "debian kernel: cached ($DEB_PKG $DEB_VERSION)"
	else
		log "debian kernel: fetching $DEB_PKG $DEB_VERSION"
		rm -rf "$DDIR"
		mkdir -p "$DDIR/deb" "$DDIR/x"
		(cd "$DDIR/deb" && apt-get download -qq -o APT::Sandbox::User=root "$DEB_PKG=$DEB_VERSION" >&2) ||
			die "apt-get download $DEB_PKG failed"
		dpkg-deb -x "$DDIR"/deb/*.deb "$DDIR/x"
		set -- "$DDIR"/x/boot/vmlinuz-*
		[ -f "$1" ] || die "$DEB_PKG has no /boot/vmlinuz-*"
		cp "$1" "$DDIR/vmlinuz"
		cp "$DDIR"/x/boot/config-* "$DDIR/config"
		basename "$1" | sed 's/^vmlinuz-//' >"$DDIR/release"
		# Debian builds virtio-blk/net/rng as modules: keep them (decompressed, dependencies
		# first) for initrd-debian.img.
		rel=$(cat "$DDIR/release")
		mkdir -p "$DDIR/modules/$rel"
		for m in $DEBIAN_MODULES; do
			src=$(find "$DDIR/x/lib/modules/$rel/kernel" -name "$m.ko*" | head -n 1)
			[ -n "$src" ] || die "$DEB_PKG has no module $m"
			case "$src" in
			*.xz) xz -dc "$src" >"$DDIR/modules/$rel/$m.ko" ;;
			*.zst) zstd -qdc "$src" >"$DDIR/modules/$rel/$m.ko" ;;
			*) cp "$src" "$DDIR/modules/$rel/$m.ko" ;;
			esac
			echo "$m.ko" >>"$DDIR/modules/$rel/kit-modules"
		done
		rm -rf "$DDIR/x" "$DDIR/deb"
		touch "$DDIR/complete"
	fi

	# --- initrd and root disk ------------------------------------------------------------------------
	BUSYBOX=/bin/busybox
	BUSYBOX_VERSION=$(dpkg-query -W -f='${Version}' busybox-static)
	file_is_static() { ! readelf -l "$1" | grep -q 'Requesting program interpreter'; }
	file_is_static "$BUSYBOX" || die "$BUSYBOX is not the static busybox (busybox-static package)"

	STAGE=$(mktemp -d "$CACHE/stage.XXXXXX")
	trap 'rm -rf "$STAGE"' EXIT

	# Guest-side test tools (firmware/kit/tools/*.c, e.g. ringpoke for the hostile-ring test):
	# freestanding static C without libc, so each costs the emulated initrd unpack a few KB.
	mkdir -p "$STAGE/tools"
	for src in "$KIT_DIR"/tools/*.c; do
		[ -f "$src" ] || continue
		gcc -static -nostdlib -ffreestanding -fno-stack-protector -fno-pie -no-pie -O2 \
			-fno-tree-loop-distribute-patterns -Wall -Wextra -Werror -s -Wl,--build-id=none \
			-o "$STAGE/tools/$(basename "$src" .c)" "$src" >&2 || die "building $src failed"
	done

	# make_tree DIR: busybox, its applet links, /init and the directories init uses.
	make_tree() {
		local d=$1
		mkdir -p "$d"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,tmp,root,mnt,newroot,etc}
		chmod 1777 "$d/tmp"
		install -m 0755 "$BUSYBOX" "$d/bin/busybox"
		# One perl process for ~270 links (perl comes with build-essential): a fork per link
		# takes tens of seconds on a loaded machine.
		"$BUSYBOX" --list-full | KIT_TREE=$d perl -ne 'chomp; next if $_ eq "bin/busybox";
			symlink("/bin/busybox", "$ENV{KIT_TREE}/$_") or die "symlink $_: $!\n";' 2>&1 |
			grep . && die "applet links failed"
		[ -L "$d/bin/sh" ] && [ -L "$d/sbin/switch_root" ] || die "applet links missing"
		install -m 0755 "$KIT_DIR/init" "$d/init"
		for tool in "$STAGE"/tools/*; do
			[ -f "$tool" ] && install -m 0755 "$tool" "$d/bin/"
		done
		ln -sf /init "$d/sbin/init"
		printf 'root:x:0:0:root:/root:/bin/sh\n' >"$d/etc/passwd"
		printf 'root:x:0:\n' >"$d/etc/group"
		# The kernel opens /dev/console before it runs /init; devtmpfs is mounted over /dev later.
		mknod -m 0600 "$d/dev/console" c 5 1
		mknod -m 0666 "$d/dev/null" c 1 3
		find "$d" -print0 | xargs -0 touch -h -d "@$EPOCH"
	}

	# install_if_changed SRC DST: keeps DST (and its mtime) when the content is the same.
	install_if_changed() {
		if [ -f "$2" ] && cmp -s "$1" "$2"; then
			rm -f "$1"
		else
			mv -f "$1" "$2"
		fi
	}

	make_tree "$STAGE/initrd"
	(cd "$STAGE/initrd" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
		>"$STAGE/initrd.img"

	cp -a "$STAGE/initrd" "$STAGE/initrd-debian"
	mkdir -p "$STAGE/initrd-debian/lib"
	cp -a "$DDIR/modules" "$STAGE/initrd-debian/lib/modules"
	find "$STAGE/initrd-debian/lib" -exec touch -h -d "@$EPOCH" {} +
	(cd "$STAGE/initrd-debian" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) \
		>"$STAGE/initrd-debian.img"

	cp -a "$STAGE/initrd" "$STAGE/rootfs"
	truncate -s "${ROOTFS_MB}M" "$STAGE/rootfs.ext4"
	E2FSPROGS_FAKE_TIME=$EPOCH mkfs.ext4 -q -F -b 4096 -L kitroot \
		-U 6b766d73-7461-636b-0000-6b6974726f6f \
		-E root_owner=0:0,hash_seed=6b766d73-7461-636b-0001-6b6974726f6f \
		-d "$STAGE/rootfs" "$STAGE/rootfs.ext4" >&2 || die "mkfs.ext4 failed"

	# --- outputs -------------------------------------------------------------------------------------
	cp "$KDIR/vmlinux" "$STAGE/vmlinux"
	install_if_changed "$STAGE/vmlinux" "$OUT/vmlinux"
	cp "$KDIR/config" "$STAGE/vmlinux.config"
	install_if_changed "$STAGE/vmlinux.config" "$OUT/vmlinux.config"
	cp "$DDIR/vmlinuz" "$STAGE/vmlinuz-debian"
	install_if_changed "$STAGE/vmlinuz-debian" "$OUT/vmlinuz-debian"
	cp "$DDIR/config" "$STAGE/config-debian"
	install_if_changed "$STAGE/config-debian" "$OUT/config-debian"
	install_if_changed "$STAGE/initrd.img" "$OUT/initrd.img"
	install_if_changed "$STAGE/initrd-debian.img" "$OUT/initrd-debian.img"
	cp --sparse=always "$STAGE/rootfs.ext4" "$STAGE/rootfs.ext4.new"
	install_if_changed "$STAGE/rootfs.ext4.new" "$OUT/rootfs.ext4"

	cat >"$STAGE/VERSIONS" <<-EOF
	kit-kernel-source $SRC_PKG $SRC_VERSION
	kit-kernel-release $(strings "$OUT/vmlinux" | grep -m1 -oE '^Linux version [^ ]+' | cut -d' ' -f3)
	kit-kernel-cache-key $KERNEL_HASH
	debian-kernel-package $DEB_PKG $DEB_VERSION
	debian-kernel-release $(cat "$DDIR/release")
	busybox-static $BUSYBOX_VERSION
	EOF
	install_if_changed "$STAGE/VERSIONS" "$OUT/VERSIONS"
	(cd "$OUT" && sha256sum vmlinux vmlinuz-debian initrd.img initrd-debian.img rootfs.ext4) >"$STAGE/SHA256SUMS"
	install_if_changed "$STAGE/SHA256SUMS" "$OUT/SHA256SUMS"

	log "done: $OUT"
	(cd "$OUT" && ls -ls vmlinux vmlinuz-debian initrd.img initrd-debian.img rootfs.ext4 VERSIONS) >&2
}

main "$@"
