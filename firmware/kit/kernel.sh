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
	# One awk pass (this runs on every kit build, also when the kernel is cached).
	awk -v frag="$FRAGMENT" '
		BEGIN {
			while ((getline line < frag) > 0) {
				if (line ~ /^CONFIG_[A-Za-z0-9_]+=/) {
					sym = substr(line, 1, index(line, "=") - 1)
					want[sym] = line
				} else if (line ~ /^# CONFIG_[A-Za-z0-9_]+ is not set$/) {
					split(line, f, " ")
					off[f[2]] = 1
				}
			}
		}
		/^CONFIG_[A-Za-z0-9_]+=/ { got[substr($0, 1, index($0, "=") - 1)] = $0 }
		END {
			bad = 0
			for (s in want) {
				g = (s in got) ? got[s] : "unset"
				if (g != want[s]) {
					printf "kit: config: wanted %s, got: %s\n", want[s], g > "/dev/stderr"
					bad = 1
				}
			}
			for (s in off) if (s in got) {
				printf "kit: config: wanted %s unset, got: %s\n", s, got[s] > "/dev/stderr"
				bad = 1
			}
			exit bad
		}' "$1"
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
