#!/usr/bin/env bash
# The kit kernel recipe, called by build.sh. Its own hash is part of the kernel cache key, so
# only what is in this file, kit.config, patches/ and the source package version can change the
# kernel; edits elsewhere in the kit do not force a rebuild.
#   kernel.sh build SRC_TAR OUTDIR JOBS   extract, patch, configure, check, make vmlinux;
#                                         OUTDIR gets vmlinux, config, System.map, build.log
#   kernel.sh check CONFIG                check a .config against kit.config
set -euo pipefail

KIT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FRAGMENT=$KIT_DIR/kit.config
# Fixed build identity, so identical inputs give an identical vmlinux.
export KBUILD_BUILD_USER=kvmstack KBUILD_BUILD_HOST=kit
export KBUILD_BUILD_TIMESTAMP="Tue Nov 14 22:13:20 UTC 2023"

log() { printf 'kit: %s\n' "$*" >&2; }
die() {
	printf 'kit: error: %s\n' "$*" >&2
	exit 1
}

# Every CONFIG_X=value line of the fragment must be in the final .config verbatim and every
# "# CONFIG_X is not set" must stay unset: Kconfig drops options whose dependencies are missing
# without a word.
check_config() {
	local config=$1 bad=0 line sym
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*)
			if ! grep -qxF "$line" "$config"; then
				log "config: wanted $line, got: $(grep -E "^(# )?${line%%=*}[= ]" "$config" || echo 'absent')"
				bad=1
			fi
			;;
		"# CONFIG_"*" is not set")
			sym=${line#\# }
			sym=${sym%% *}
			if grep -q "^$sym=" "$config"; then
				log "config: wanted $sym unset, got: $(grep "^$sym=" "$config")"
				bad=1
			fi
			;;
		esac
	done <"$FRAGMENT"
	return $bad
}

build() {
	local src_tar=$1 out=$2 jobs=$3 tree=$2/src logf=$2/build.log p
	mkdir -p "$tree"
	: >"$logf"
	tar -xf "$src_tar" -C "$tree" --strip-components=1
	for p in "$KIT_DIR"/patches/*.patch; do
		patch -d "$tree" -p1 --forward --batch --quiet <"$p" >>"$logf" 2>&1 ||
			die "patch $(basename "$p") does not apply to $src_tar (see $logf)"
	done
	{
		make -C "$tree" tinyconfig &&
			"$tree/scripts/kconfig/merge_config.sh" -m -O "$tree" "$tree/.config" "$FRAGMENT" &&
			make -C "$tree" olddefconfig
	} >>"$logf" 2>&1 || die "kernel configuration failed (see $logf)"
	check_config "$tree/.config" ||
		die "kit.config options missing from the final .config (dependencies not met?)"
	if ! make -C "$tree" -j"$jobs" vmlinux >>"$logf" 2>&1; then
		tail -n 40 "$logf" >&2
		die "kernel build failed (see $logf)"
	fi
	cp "$tree/.config" "$out/config"
	cp "$tree/System.map" "$out/System.map"
	cp "$tree/vmlinux" "$out/vmlinux.tmp"
	mv "$out/vmlinux.tmp" "$out/vmlinux"
}

case "${1:-}" in
build)
	[ $# -eq 4 ] || die "usage: kernel.sh build SRC_TAR OUTDIR JOBS"
	build "$2" "$3" "$4"
	;;
check)
	[ $# -eq 2 ] || die "usage: kernel.sh check CONFIG"
	check_config "$2"
	;;
*) die "usage: kernel.sh build SRC_TAR OUTDIR JOBS | kernel.sh check CONFIG" ;;
esac
